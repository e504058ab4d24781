"""Keyword scores: Okapi BM25 over the keyword terms, plus a share of the best neighbour's score.

One definition for every driver. A driver reads, for the recall's *scope* (the user's memories
that pass the filters), each memory's length and which memories hold each query term; the
scores are computed here (:class:`~memory_drivers.ranking.pipeline.KeywordEvidence`).

- A memory's *document* is the set of its indexed terms (:mod:`memory_drivers.ranking.context`):
  its own distinct terms and, in a conversation, those of the memories before it. Its *length*
  is the number of terms in that set. A term is in a document or not (tf is 0 or 1).
- ``bm25 = Σ idf(t) · (k1 + 1) / (1 + k1 · (1 - b + b · length / average length))`` over the
  query's distinct terms ``t`` that the document holds, with Lucene's
  ``idf(t) = ln(1 + (N - n + 0.5) / (n + 0.5))``: ``N`` memories in the scope, ``n`` of them
  holding ``t``. Statistics never reach past the scope, so one user's memories never change
  another user's scores.
- The *keyword score* adds ``share x max(bm25 of the previous, bm25 of the next memory)`` in the
  same conversation within the scope (``CONTEXT_NEIGHBOR_SHARE``), so a turn next to the one that
  names the topic is found too. A memory with no query term of its own can score through a
  neighbour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["bm25", "with_neighbours"]


def bm25(
    lengths: np.ndarray, postings: Sequence[np.ndarray], k1: float, b: float
) -> tuple[np.ndarray, float]:
    """BM25 of every memory of the scope, and the query's keyword weight (the sum of its
    terms' ``idf``, which hybrid search divides by; see :mod:`.hybrid`).

    ``lengths[i]``: the length of memory ``i``; ``postings``: for each distinct query term, the
    positions of the memories that hold it (empty for a term no memory holds).
    """
    size = len(lengths)
    scores = np.zeros(size, dtype=np.float64)
    if not size:
        return scores, 0.0
    lengths = np.asarray(lengths, dtype=np.float64)
    average = float(lengths.mean())
    relative = lengths / average if average > 0 else np.ones(size)
    gain = (k1 + 1.0) / (1.0 + k1 * (1.0 - b + b * relative))
    weight = 0.0
    for positions in postings:
        n = len(positions)
        idf = math.log(1.0 + (size - n + 0.5) / (n + 0.5))
        weight += idf
        if n:
            scores[positions] += idf * gain[positions]
    return scores, weight


def with_neighbours(scores: np.ndarray, continues: np.ndarray, share: float) -> np.ndarray:
    """Each memory's score plus ``share`` times the best score of its two neighbours.

    The memories are in conversation order; ``continues[i]`` says that memory ``i`` is in the
    same conversation as memory ``i - 1`` (so they are neighbours).
    """
    if share <= 0.0 or len(scores) < 2:
        return scores
    linked = np.asarray(continues[1:], dtype=bool)
    best = np.zeros_like(scores)
    best[1:] = np.where(linked, scores[:-1], 0.0)
    best[:-1] = np.maximum(best[:-1], np.where(linked, scores[1:], 0.0))
    return scores + share * best
