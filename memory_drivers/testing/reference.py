"""The reference answer to a recall, computed from the shared semantics alone.

Given every memory a store holds, :func:`expected_hits` returns what any driver must return for
a filter, a search mode and a query. It is written to be obviously right rather than fast, and
on its own: it does not call the ranking code drivers use (``memory_drivers.ranking``), only
the term rules of :mod:`memory_drivers.text` and the time-expression parser. So a driver that
reads wrong statistics, and a ranking formula that drifts from its documentation, both fail.

:func:`assert_same_hits` compares a driver's answer with it, letting only hits whose scores tie
(within ``tie``) trade places.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import numpy as np

from ..base import hit_order
from ..embeddings import Embedder, check_vectors
from ..models import Memory, MemoryFilter, RecallHit
from ..ranking import RankingRules
from ..ranking.timeframe import closeness, find_periods, strip_periods
from ..text import QUESTION_WORDS, query_terms, terms

__all__ = ["assert_same_hits", "expected_hits", "indexed_terms"]

Mode = Literal["hybrid", "vector", "keyword"]


def _conversation_order(memories: Sequence[Memory]) -> dict[tuple[str, str], list[Memory]]:
    groups: dict[tuple[str, str], list[Memory]] = defaultdict(list)
    for m in memories:
        if m.conversation_id is not None:
            groups[(m.user_id, m.conversation_id)].append(m)
    for group in groups.values():
        group.sort(key=lambda m: (m.created_at, m.id))
    return groups


def indexed_terms(memories: Sequence[Memory], window: int) -> dict[str, set[str]]:
    """Each memory's indexed keyword terms: its own and those of the ``window`` memories before
    it in its conversation."""
    result = {m.id: set(terms(m.content)) for m in memories}
    if window <= 0:
        return result
    for group in _conversation_order(memories).values():
        for i, m in enumerate(group):
            for before in group[max(0, i - window) : i]:
                result[m.id] |= set(terms(before.content))
    return result


def _keyword_weight(
    scope: Sequence[Memory], indexed: dict[str, set[str]], wanted: Sequence[str]
) -> float:
    """The sum of the query's distinct terms' idf over the scope."""
    size = len(scope)
    total = 0.0
    for term in set(wanted):
        n = sum(1 for m in scope if term in indexed[m.id])
        total += math.log(1 + (size - n + 0.5) / (n + 0.5))
    return total


def _keyword_scores(
    scope: Sequence[Memory],
    indexed: dict[str, set[str]],
    wanted: Sequence[str],
    rules: RankingRules,
) -> dict[str, float]:
    if not scope or not wanted:
        return {}
    size = len(scope)
    average = sum(len(indexed[m.id]) for m in scope) / size
    scores: dict[str, float] = {}
    for m in scope:
        document = indexed[m.id]
        score = 0.0
        for term in set(wanted) & document:
            n = sum(1 for other in scope if term in indexed[other.id])
            idf = math.log(1 + (size - n + 0.5) / (n + 0.5))
            length = len(document) / average if average else 1.0
            score += idf * (rules.k1 + 1) / (1 + rules.k1 * (1 - rules.b + rules.b * length))
        if score > 0:
            scores[m.id] = score
    if rules.neighbour_share <= 0:
        return scores
    boosted = dict(scores)
    for group in _conversation_order(scope).values():
        for i, m in enumerate(group):
            around = [group[j].id for j in (i - 1, i + 1) if 0 <= j < len(group)]
            best = max((scores.get(other, 0.0) for other in around), default=0.0)
            if best > 0:
                boosted[m.id] = scores.get(m.id, 0.0) + rules.neighbour_share * best
    return boosted


def expected_hits(
    memories: Sequence[Memory],
    memory_filter: MemoryFilter,
    *,
    top_k: int,
    query: str | None = None,
    use_vector: bool = True,
    search: Mode | None = None,
    embedder: Embedder | None = None,
    rules: RankingRules | None = None,
    context_window: int = 2,
    question_words: frozenset[str] = QUESTION_WORDS,
    now: datetime | None = None,
) -> list[RecallHit]:
    """Every matching memory, scored and in the shared order (not cut to ``top_k``).

    ``search`` is the mode; without it, ``use_vector`` picks vector (True) or keyword search,
    as the seed signature did.
    """
    rules = rules or RankingRules()
    mode: Mode = search or ("vector" if use_vector else "keyword")
    scope = [m for m in memories if memory_filter.matches(m)]
    if query is None:
        return sorted((RecallHit(memory=m, score=None) for m in scope), key=hit_order)
    if not scope:
        return []
    periods = find_periods(query, now) if now is not None and mode == "hybrid" else []
    wanted = query_terms(strip_periods(query, periods), question_words)
    indexed = indexed_terms(memories, context_window)
    keyword = _keyword_scores(scope, indexed, wanted, rules)
    if mode == "keyword":
        hits = [RecallHit(memory=m, score=keyword[m.id]) for m in scope if m.id in keyword]
        return sorted(hits, key=hit_order)
    assert embedder is not None, "vector and hybrid recall need the embedder"
    q = check_vectors(embedder.embed_query(query), 1, embedder)[0].astype(np.float64)
    docs = check_vectors(
        embedder.embed_documents([m.content for m in scope]), len(scope), embedder
    ).astype(np.float64)
    cosine = [float(s) for s in docs @ q]
    if mode == "vector":
        return sorted(
            (RecallHit(memory=m, score=s) for m, s in zip(scope, cosine, strict=True)),
            key=hit_order,
        )
    weight = _keyword_weight(scope, indexed, wanted) if wanted else 0.0
    w = rules.vector_weight
    hits = []
    for m, c in zip(scope, cosine, strict=True):
        coverage = keyword.get(m.id, 0.0) / weight if weight > 0 else 0.0
        score = (1 - w) * coverage + w * c
        if now is not None and rules.time_weight > 0:
            if periods:
                score += rules.time_weight * closeness(m.created_at, periods)
            if rules.recency_half_life_days:
                age = max((now - m.created_at).total_seconds(), 0) / 86400
                score += rules.time_weight * 0.5 ** (age / rules.recency_half_life_days)
        hits.append(RecallHit(memory=m, score=score))
    return sorted(hits, key=hit_order)


def assert_same_hits(
    actual: Sequence[RecallHit],
    expected: Sequence[RecallHit],
    top_k: int,
    *,
    tol: float = 1e-5,
    tie: float = 1e-6,
    context: str = "",
) -> None:
    """Assert ``actual`` is the first ``top_k`` of ``expected``, scores within ``tol``.

    Hits whose expected scores differ by less than ``tie`` may appear in either order (float
    rounding differs between backends); everything else must match exactly, id for id.
    """
    where = f" ({context})" if context else ""
    want = list(expected[:top_k])
    assert len(actual) == len(want), (
        f"expected {len(want)} hits, got {len(actual)}{where}: {[h.memory.content for h in actual]}"
    )
    ids = [h.memory.id for h in actual]
    assert len(set(ids)) == len(ids), f"the same memory was returned twice{where}"
    expected_score = {h.memory.id: h.score for h in expected}
    for position, (got, wanted) in enumerate(zip(actual, want, strict=False)):
        assert got.memory.id in expected_score, (
            f"hit #{position} {got.memory.content!r} should not have matched{where}"
        )
        if wanted.score is None:
            assert got.score is None, f"hit #{position} has a score without a query{where}"
            assert got.memory.id == wanted.memory.id, (
                f"hit #{position} is {got.memory.content!r}, expected "
                f"{wanted.memory.content!r}{where}"
            )
            continue
        assert got.score is not None, f"hit #{position} has no score{where}"
        assert abs(got.score - wanted.score) <= tol, (
            f"hit #{position} has score {got.score:.6f}, expected {wanted.score:.6f}{where}"
        )
        own = expected_score[got.memory.id]
        assert own is not None and abs(own - wanted.score) <= tie + tol, (
            f"hit #{position} is {got.memory.content!r} (score {own}), expected "
            f"{wanted.memory.content!r} (score {wanted.score}){where}"
        )
        if abs(own - wanted.score) > tie:
            assert got.memory.id == wanted.memory.id, f"hit #{position} out of order{where}"
