"""Hybrid scores: a weighted average of keyword coverage and cosine similarity.

``hybrid = (1 - w) * coverage + w * cosine`` with ``w = HYBRID_VECTOR_WEIGHT`` (0.5), where

- ``coverage`` is the memory's keyword score divided by the query's keyword weight, the sum of
  its terms' ``idf`` (:mod:`.keyword`): 1 for a memory of average length holding every query
  term, 0 for one holding none; a shorter memory gains up to ``g = (k1 + 1) / (1 + k1 (1 - b))``
  per term (1.21 by default), and a neighbour's share adds up to ``CONTEXT_NEIGHBOR_SHARE``
  times that again, so coverage stays below ``g * (1 + share)`` (1.81 by default);
- ``cosine`` is the cosine similarity of the query's and the memory's embeddings, in [-1, 1].

So the score lies in [-w, (1 - w) * g * (1 + share) + w] (-0.5 to 1.41 by default), higher is
better, and a memory's score does not depend on how the other memories scored. Both sides are
divided by a bound fixed before the search (the query's weight; cosine's own range) rather
than standardised over the results: with z-scores or min-max over the results, one incidental
match of a common word in a small scope, or of any word in a large one, outweighed a memory
that answers the question (on the development set the two tie, 71.7 vs 71.3 evidence recall@5;
on paraphrased questions over a few facts, 12 of 17 against 17 of 17 answered first).
Reciprocal-rank fusion lost 8-12 points of recall@5 on the development set.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fuse"]


def fuse(coverage: np.ndarray, cosine: np.ndarray, vector_weight: float) -> np.ndarray:
    """The hybrid score of each memory from its keyword coverage and cosine similarity."""
    return (1.0 - vector_weight) * np.asarray(coverage, dtype=np.float64) + vector_weight * (
        np.asarray(cosine, dtype=np.float64)
    )
