"""The ranking of keyword and hybrid recall, from what a driver reads to scored candidates.

A driver reads, for the recall's scope (the user's memories that pass the filters), a
:class:`KeywordEvidence` (keyword and hybrid search) and every memory's cosine similarity
(hybrid search), then calls :func:`rank_keyword` or :func:`rank_hybrid`. They return the
candidates for the hits, best first: the ``top_k`` best and every candidate that ties the k-th
within :data:`TIE`, so that the driver can order ties by the shared order (newest, then id)
after reading the memories.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import numpy as np

from .hybrid import fuse
from .keyword import bm25, with_neighbours
from .timeframe import Period, closeness

__all__ = [
    "MARGIN",
    "TIE",
    "KeywordEvidence",
    "RankingRules",
    "rank_hybrid",
    "rank_keyword",
    "scored_in_memory",
]

#: Scores this close to the k-th best are ties, broken by the shared order (newest, then id).
TIE = 1e-6

Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True)
class RankingRules:
    """The ranking settings (see ``.env.example``), read once per driver."""

    k1: float = 0.3
    b: float = 0.75
    vector_weight: float = 0.5
    neighbour_share: float = 0.5
    time_weight: float = 0.1
    recency_half_life_days: float | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> RankingRules:
        return cls(
            k1=settings.keyword_bm25_k1,
            b=settings.keyword_bm25_b,
            vector_weight=settings.hybrid_vector_weight,
            neighbour_share=settings.context_neighbor_share,
            time_weight=settings.time_preference_weight,
            recency_half_life_days=settings.recency_half_life_days,
        )


@dataclass(frozen=True)
class KeywordEvidence(Generic[Key]):
    """What keyword scoring needs from a backend, for one recall's scope.

    - ``keys``: every memory of the scope, in conversation order: the memories of one
      conversation together, by ``created_at`` then ``id`` (memories without a conversation
      anywhere);
    - ``lengths``: the length of each (the number of its indexed terms);
    - ``continues``: for each, whether it follows the one before it in the same conversation
      (only needed when ``CONTEXT_NEIGHBOR_SHARE`` is above 0; else all False);
    - ``postings``: for each query term, the memories of the scope that hold it.
    """

    keys: Sequence[Key]
    lengths: np.ndarray
    continues: np.ndarray
    postings: Mapping[str, Collection[Key]] = field(default_factory=dict)


@dataclass(frozen=True)
class KeywordScores(Generic[Key]):
    """The keyword side of a search, over ``keys`` (the scope, in evidence order)."""

    keys: Sequence[Key]
    #: BM25 alone, and with the neighbour share (the keyword score)
    bm25: np.ndarray
    total: np.ndarray
    #: the query's keyword weight (the sum of its terms' idf)
    weight: float
    #: each distinct query term, with the positions of the memories holding it
    postings: Mapping[str, np.ndarray]

    def terms_of(self, position: int) -> list[str]:
        """The query terms the memory at ``position`` holds."""
        return [term for term, at in self.postings.items() if position in at]

    def details(self, position: int) -> dict[str, Any]:
        return {
            "terms": self.terms_of(position),
            "keyword": float(self.total[position]),
            "neighbour": float(self.total[position] - self.bm25[position]),
        }


def keyword_scores(
    terms: Sequence[str], evidence: KeywordEvidence[Key], rules: RankingRules
) -> KeywordScores[Key]:
    """The keyword score of every memory of the scope, in ``evidence.keys`` order, and the
    query's keyword weight (see :func:`.keyword.bm25`)."""
    keys = evidence.keys
    position = dict(zip(keys, range(len(keys)), strict=True))
    postings: dict[str, np.ndarray] = {}
    for term in dict.fromkeys(terms):
        found = [position[k] for k in evidence.postings.get(term, ()) if k in position]
        postings[term] = np.asarray(found, dtype=np.int64)
    if not len(keys):
        empty = np.zeros(0)
        return KeywordScores(keys, empty, empty, 0.0, postings)
    scores, weight = bm25(evidence.lengths, list(postings.values()), rules.k1, rules.b)
    total = with_neighbours(scores, evidence.continues, rules.neighbour_share)
    return KeywordScores(keys, scores, total, weight, postings)


def _best(keys: Sequence[Key], scores: np.ndarray, top_k: int | None) -> list[tuple[Key, float]]:
    """The ``top_k`` best and whatever ties the k-th, best first."""
    if not len(keys):
        return []
    order = np.argsort(-scores, kind="stable")
    if top_k is not None and top_k < len(order):
        kth = scores[order[top_k - 1]]
        cut = int(np.searchsorted(-scores[order], -(kth - TIE), side="right"))
        order = order[: max(cut, top_k)]
    return [(keys[i], float(scores[i])) for i in order]


def rank_keyword(
    terms: Sequence[str],
    evidence: KeywordEvidence[Key],
    rules: RankingRules,
    top_k: int | None,
    details: dict[Key, dict[str, Any]] | None = None,
) -> list[tuple[Key, float]]:
    """Keyword search: the memories with a keyword score above 0, best first. With a
    ``details`` dict, the parts of each returned memory's score go in it (models.Explanation)."""
    found = keyword_scores(terms, evidence, rules)
    hits = np.flatnonzero(found.total > 0)
    ranked = _best([evidence.keys[int(i)] for i in hits], found.total[hits], top_k)
    if details is not None and ranked:
        position = dict(zip(evidence.keys, range(len(evidence.keys)), strict=True))
        for key, _ in ranked:
            details[key] = {"search": "keyword", **found.details(position[key])}
    return ranked


#: Extra memories asked of the nearest-neighbour search beyond ``top_k`` (ties at the cut).
MARGIN = 16


def rank_hybrid(
    terms: Sequence[str],
    evidence: KeywordEvidence[Key] | None,
    nearest: Callable[[int | None], Sequence[tuple[Key, float]]],
    cosines: Callable[[Sequence[Key]], Mapping[Key, float]],
    rules: RankingRules,
    top_k: int | None,
    *,
    periods: Sequence[Period] = (),
    now: datetime | None = None,
    created_at: Callable[[Sequence[Key]], Mapping[Key, datetime]] | None = None,
    details: dict[Key, dict[str, Any]] | None = None,
) -> list[tuple[Key, float]]:
    """Hybrid search (see :mod:`.hybrid`) over the scope, exactly, without scoring all of it.

    ``nearest(m)``: the ``m`` memories of the scope with the highest cosine similarity, best
    first (``None``: all of them); ``cosines(keys)``: the cosine similarity of these memories.
    A memory with no keyword score scores at most ``w * cosine`` (plus the time gain), so
    the candidates are the keyword-scored memories and the nearest ones, asked for more until
    no memory outside them could reach the ``top_k``-th score.

    With time ``periods`` in the query, or a recency half-life, each candidate gains up to
    ``time_weight`` for each (see :mod:`.timeframe`), through ``created_at``. With a
    ``details`` dict, the parts of each returned memory's score go in it.
    """
    coverage: dict[Key, float] = {}
    words: KeywordScores[Key] | None = None
    if evidence is not None and terms:
        words = keyword_scores(terms, evidence, rules)
        if words.weight > 0:
            for i in np.flatnonzero(words.total):
                coverage[evidence.keys[int(i)]] = float(words.total[i]) / words.weight
    w = rules.vector_weight
    recency = rules.recency_half_life_days
    timed = rules.time_weight > 0 and (bool(periods) or bool(recency))
    bound = rules.time_weight * ((1 if periods else 0) + (1 if recency else 0)) if timed else 0.0
    asked: int | None = None if top_k is None else top_k + MARGIN
    gains: dict[Key, float] = {}
    while True:
        near = list(nearest(asked))
        similarity = dict(near)
        missing = [key for key in coverage if key not in similarity]
        if missing:
            similarity.update(cosines(missing))
        keys = list(similarity)
        if timed:
            assert created_at is not None and now is not None, "time preference needs times"
            new = [key for key in keys if key not in gains]
            moments = created_at(new) if new else {}
            for key in new:
                gains[key] = rules.time_weight * _time_gain(moments[key], periods, now, recency)
        scores = fuse(
            np.fromiter((coverage.get(key, 0.0) for key in keys), np.float64, len(keys)),
            np.fromiter((similarity[key] for key in keys), np.float64, len(keys)),
            w,
        ) + np.fromiter((gains.get(key, 0.0) for key in keys), np.float64, len(keys))
        # Done when every memory of the scope was a candidate, or nothing left out could
        # reach the cut.
        done = asked is None or len(near) < asked or top_k is None
        if not done:
            assert top_k is not None
            kth = -float(np.partition(-scores, top_k - 1)[top_k - 1])
            done = w * near[-1][1] + bound < kth - TIE
        if done:
            ranked = _best(keys, scores, top_k)
            if details is not None:
                _explain_hybrid(ranked, words, coverage, similarity, gains, details)
            return ranked
        asked = asked * 4 if asked is not None else None


def _explain_hybrid(
    ranked: Sequence[tuple[Key, float]],
    words: KeywordScores[Key] | None,
    coverage: Mapping[Key, float],
    similarity: Mapping[Key, float],
    gains: Mapping[Key, float],
    details: dict[Key, dict[str, Any]],
) -> None:
    position = dict(zip(words.keys, range(len(words.keys)), strict=True)) if words else {}
    for key, _ in ranked:
        parts: dict[str, Any] = {"search": "hybrid", "keyword": 0.0, "neighbour": 0.0}
        if words is not None and key in position:
            parts.update(words.details(position[key]))
        parts.update(
            coverage=coverage.get(key, 0.0),
            cosine=similarity[key],
            time=gains.get(key, 0.0),
        )
        details[key] = parts


def scored_in_memory(
    keys: Sequence[Key], cosine: np.ndarray
) -> tuple[
    Callable[[int | None], list[tuple[Key, float]]],
    Callable[[Sequence[Key]], dict[Key, float]],
]:
    """``nearest`` and ``cosines`` for :func:`rank_hybrid` when a backend already has the
    cosine similarity of every memory of the scope."""
    cosine = np.asarray(cosine, dtype=np.float64)
    position: dict[Key, int] = {}

    def nearest(m: int | None) -> list[tuple[Key, float]]:
        chosen = np.arange(len(keys))
        if m is not None and m < len(keys):
            chosen = np.argpartition(-cosine, m - 1)[:m]
        best = sorted(chosen.tolist(), key=lambda i: -cosine[i])
        return [(keys[i], float(cosine[i])) for i in best]

    def cosines(wanted: Sequence[Key]) -> dict[Key, float]:
        if not position:
            position.update(zip(keys, range(len(keys)), strict=True))
        return {key: float(cosine[position[key]]) for key in wanted}

    return nearest, cosines


def _time_gain(
    moment: datetime, periods: Sequence[Period], now: datetime, recency: float | None
) -> float:
    gain = closeness(moment, periods) if periods else 0.0
    if recency:
        age = max((now - moment).total_seconds(), 0.0) / 86_400.0
        gain += 0.5 ** (age / recency)
    return gain
