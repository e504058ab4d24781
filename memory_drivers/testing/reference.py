"""The reference answer to a recall, computed from the shared semantics alone.

Given every memory a store holds, :func:`expected_hits` returns what any driver must return for
a filter, a mode and a query: the filter from :meth:`MemoryFilter.matches`, the scores from the
embedder (cosine similarity) or from :func:`memory_drivers.text.keyword_score`, and the shared
order. :func:`assert_same_hits` compares a driver's answer with it, letting only hits whose scores
tie (within ``tie``) trade places.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..base import hit_order
from ..embeddings import Embedder, check_vectors
from ..models import Memory, MemoryFilter, RecallHit
from ..text import keyword_score, query_terms, terms

__all__ = ["assert_same_hits", "expected_hits"]


def expected_hits(
    memories: Sequence[Memory],
    memory_filter: MemoryFilter,
    *,
    top_k: int,
    query: str | None = None,
    use_vector: bool = True,
    embedder: Embedder | None = None,
) -> list[RecallHit]:
    """Every matching memory, scored and in the shared order (not cut to ``top_k``)."""
    candidates = [m for m in memories if memory_filter.matches(m)]
    if query is None:
        hits = [RecallHit(memory=m, score=None) for m in candidates]
    elif use_vector:
        assert embedder is not None, "vector recall needs the embedder"
        if not candidates:
            return []
        q = check_vectors(embedder.embed_query(query), 1, embedder)[0].astype(np.float64)
        docs = check_vectors(
            embedder.embed_documents([m.content for m in candidates]), len(candidates), embedder
        ).astype(np.float64)
        scores = docs @ q
        pairs = zip(candidates, scores, strict=True)
        hits = [RecallHit(memory=m, score=float(s)) for m, s in pairs]
    else:
        wanted = query_terms(query)
        hits = []
        for m in candidates:
            score = keyword_score(wanted, terms(m.content))
            if score > 0:
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
