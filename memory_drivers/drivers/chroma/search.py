"""How the chroma driver ranks, within the user's collection: vector recall (exact up to
``CHROMA_EXACT_SEARCH_LIMIT`` memories of the user, Chroma's HNSW index above), keyword and
hybrid recall over every record of the scope (scored by memory_drivers.ranking), recent recall
over the filtered candidates.

Candidates are re-checked with :meth:`MemoryFilter.matches` before ``top_k`` is cut, and ties at
the cut follow the shared order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ...base import KnowledgeSearch, MemorySearch, hit_order
from ...models import KnowledgeChunk, KnowledgeHit, Memory, MemoryFilter, RecallHit
from ...ranking import rank_hybrid, rank_keyword
from ...ranking.pipeline import scored_in_memory
from .keywords import ChromaKeywords, moment
from .records import (
    DISTANCE_SLACK,
    HNSW_MARGIN,
    ID_BATCH,
    K_CATEGORY,
    K_CREATED,
    RECENT_WINDOWS,
    Where,
    all_of,
    batches,
    chunk_from_record,
    memory_from_record,
    memory_where,
    micros,
)
from .vectors import CachedVectors

__all__ = ["ChromaSearch"]


def _scores(embeddings: Any, vector: np.ndarray) -> np.ndarray:
    """Cosine similarities of stored unit vectors with the unit query ``vector``.

    Row by row in float64 with the same summation order for every row, so two identical
    stored vectors always get bit-identical scores (ties are then broken by the shared order).
    """
    matrix = np.asarray(embeddings, dtype=np.float64)
    return np.asarray((matrix * np.asarray(vector, dtype=np.float64)).sum(axis=1))


@dataclass(frozen=True)
class _Ranked:
    """A candidate found by vector search: its id, score, and decoded record."""

    id: str
    score: float
    item: Any


class ChromaSearch(ChromaKeywords):
    """The search primitives, over the collections of :class:`ChromaUsers`."""

    def _search_memories(self, search: MemorySearch) -> list[RecallHit]:
        f = search.filter
        if f.user_id is None:  # cleanup of every user: recent, every match
            if search.mode != "recent" or search.top_k is not None:
                raise ValueError("only a recent search of every match may span users")
            hits = [
                hit
                for _, collection in self._user_collections()
                for hit in self._ordered(collection, f, memory_where(f), None)
            ]
            return sorted(hits, key=lambda h: (-micros(h.memory.created_at), h.memory.id))
        collection = self._user_collection(f.user_id)
        if collection is None:
            return []
        where = memory_where(f)
        if search.mode == "vector":
            assert search.vector is not None and search.top_k is not None

            def decode(mid: str, doc: str | None, meta: Mapping[str, Any]) -> Memory | None:
                memory = memory_from_record(mid, doc, meta)
                return memory if f.matches(memory) else None

            ranked = self._rank(collection, where, search.vector, search.top_k, decode)
            found = [RecallHit(memory=r.item, score=r.score) for r in ranked]
            return sorted(found, key=hit_order)[: search.top_k]

        if search.mode in ("keyword", "hybrid"):
            return self._ranked(collection, search)
        if search.top_k is not None:
            recent = self._recent_in_windows(collection, f, where, search.top_k)
            if recent is not None:
                return recent
        return self._ordered(collection, f, where, search.top_k)

    def _ranked(self, collection: Any, search: MemorySearch) -> list[RecallHit]:
        """Keyword and hybrid recall: every record of the scope in one request (one snapshot),
        scored by the shared ranking; then the hits' documents."""
        f = search.filter
        terms = search.terms or ()
        hybrid = search.mode == "hybrid"
        cached = None
        if hybrid and self.settings.chroma_exact_search_limit > 0:
            cached = self._cached_vectors(collection, self.settings.chroma_exact_search_limit)
        ids, metas, read = self._scope(
            collection, f, memory_where(f), embeddings=hybrid and cached is None
        )
        vectors: Any = read
        if cached is not None:  # the scope's vectors from the cache, unless it lacks one
            if all(rid in cached.rows for rid in ids):
                vectors = cached.matrix[[cached.rows[rid] for rid in ids]]
            else:
                self._forget_vectors(collection.name)
                ids, metas, vectors = self._scope(collection, f, memory_where(f), embeddings=True)
        evidence = self._evidence(ids, metas, terms, conversations=True)
        if not hybrid:
            ranked = rank_keyword(terms, evidence, self.ranking, search.top_k, search.details)
        else:
            assert search.vector is not None
            cosine = _scores(vectors, search.vector) if ids else np.zeros(0)
            position = {mid: i for i, mid in enumerate(ids)}
            nearest, cosines = scored_in_memory(ids, cosine)
            ranked = rank_hybrid(
                terms,
                evidence if terms else None,
                nearest,
                cosines,
                self.ranking,
                search.top_k,
                periods=search.periods,
                now=search.now,
                created_at=lambda keys: {k: moment(metas[position[k]][K_CREATED]) for k in keys},
                details=search.details,
            )
        at = {mid: i for i, mid in enumerate(ids)}
        docs = self._documents(collection, [k for k, _ in ranked])
        hits = [
            RecallHit(
                memory=memory_from_record(k, docs[k], metas[at[k]]),
                score=score,
                explanation=search.explanation(k),
            )
            for k, score in ranked
            if k in docs  # else deleted since the scope was read
        ]
        return sorted(hits, key=hit_order)[: search.top_k]

    def _documents(self, collection: Any, ids: Sequence[str]) -> dict[str, str]:
        """The documents (contents) of these records, by id."""
        found: dict[str, str] = {}
        for batch in batches(list(ids), ID_BATCH):
            page = self._get(collection, ids=list(batch), include=["documents"])
            found.update(
                (rid, doc or "") for rid, doc in zip(page["ids"], page["documents"], strict=True)
            )
        return found

    def _ordered(
        self, collection: Any, f: MemoryFilter, where: Where | None, top_k: int | None
    ) -> list[RecallHit]:
        """Recent recall over every candidate: one request (one consistent snapshot), the
        shared order applied here, records decoded and re-checked newest first until ``top_k``
        passed."""
        result = self._get(collection, where=where, include=["metadatas", "documents"])
        candidates = sorted(
            (-meta[K_CREATED], mid, position)
            for position, (mid, meta) in enumerate(
                zip(result["ids"], result["metadatas"], strict=True)
            )
        )
        hits: list[RecallHit] = []
        for _, mid, position in candidates:
            memory = memory_from_record(
                mid, result["documents"][position], result["metadatas"][position]
            )
            if f.matches(memory):
                hits.append(RecallHit(memory=memory, score=None))
                if len(hits) == top_k:
                    break
        return hits

    def _recent_in_windows(
        self, collection: Any, f: MemoryFilter, where: Where | None, top_k: int
    ) -> list[RecallHit] | None:
        """The ``top_k`` newest candidates, read from the last day, month or year only.

        Reading every candidate's record costs Chroma about 0.1 ms each, so when there are
        more than ``recent_scan`` candidates, windows ``created_at >= now - span`` are counted
        (ids only, cheap) and the first holding ``top_k`` is read: everything outside it is
        older than everything in it, so its ``top_k`` newest are the answer. None: read all.
        """
        everything = self._get(collection, where=where, include=[], limit=self.recent_scan + 1)
        if len(everything["ids"]) <= self.recent_scan:
            return None
        now = micros(datetime.now(timezone.utc))
        for span in RECENT_WINDOWS:
            window = all_of([*([where] if where else []), {K_CREATED: {"$gte": now - span}}])
            count = len(self._get(collection, where=window, include=[])["ids"])
            if count >= top_k:
                hits = self._ordered(collection, f, window, top_k)
                if len(hits) == top_k:
                    return hits
        return None

    def _rank(
        self,
        collection: Any,
        where: Where | None,
        vector: np.ndarray,
        top_k: int,
        decode: Callable[[str, str | None, Mapping[str, Any]], Any | None],
    ) -> list[_Ranked]:
        """The ``top_k`` best records passing ``where`` (and the check in ``decode``, which
        returns None for a record that fails it), plus every record tied with the last of them.

        Exact when the collection holds at most ``CHROMA_EXACT_SEARCH_LIMIT`` records (see
        :meth:`_walk_all`) or at most that many pass ``where`` (:meth:`_score_all`); above,
        Chroma's HNSW index picks the best (approximate).
        """
        limit = self.settings.chroma_exact_search_limit
        query = np.asarray(vector, dtype=np.float32)
        if limit > 0:
            cached = self._cached_vectors(collection, limit)
            if cached is not None:
                ranked = self._rank_cached(collection, cached, where, query, top_k, decode)
                if ranked is not None:
                    return ranked
            size = int(self._call(collection.count))
            if size == 0:
                return []
            if size <= limit:
                ranked = self._walk_all(collection, query, size, top_k, decode, where is not None)
                if ranked is not None:
                    return ranked
            if size <= limit or where is not None:
                ids = self._get(collection, where=where, include=[], limit=limit + 1)["ids"]
                if len(ids) <= limit:
                    if not ids:
                        return []
                    ranked_ids, scores = self._score_all(collection, query, ids)
                    return self._walk(collection, ranked_ids, scores, top_k, decode)
        return self._rank_hnsw(collection, where, query, top_k, decode)

    def _cached_vectors(self, collection: Any, limit: int) -> CachedVectors | None:
        """The collection's ids and vectors from the embedded mode's cache (see
        :mod:`.vectors`): read from Chroma on first use, when it has at most ``limit`` records
        and they fit the budget. None: no cache (server mode), or not cached."""
        cache = self._vectors
        if cache is None:
            return None
        name = collection.name
        entry = cache.get(name)
        if entry is not None:
            return entry if len(entry.ids) <= limit else None
        generation = cache.generation(name)
        size = int(self._call(collection.count))
        if size > limit or size * (self.embedder.dimension * 4 + 100) > cache.room():
            return None  # filling it would evict others, to be read again in turn
        # One request: one consistent snapshot. Kept only if no write of this process came
        # in between (the generation); no other process writes an embedded store.
        result = self._get(collection, include=["embeddings"])
        entry = CachedVectors.of(result["ids"], result["embeddings"], self.embedder.dimension)
        cache.install(name, entry, generation)
        return entry

    def _rank_cached(
        self,
        collection: Any,
        cached: CachedVectors,
        where: Where | None,
        query: np.ndarray,
        top_k: int,
        decode: Callable[[str, str | None, Mapping[str, Any]], Any | None],
    ) -> list[_Ranked] | None:
        """Exact ranking from the cached vectors: every record scored here, then the records
        of the best read (and checked by ``decode``) until ``top_k`` passed. With a filter that
        rejected more than ``walk_limit`` records read, Chroma evaluates the ``where`` (ids
        only) and the walk goes on over those. None when Chroma knows a candidate the cache
        does not (the cache is then dropped, and the caller asks Chroma)."""
        if not cached.ids:
            return []
        ranked = self._walk_cached(
            collection, cached.ids, cached.matrix, query, top_k, decode, where is not None
        )
        if ranked is not None:
            return ranked
        ids = self._get(collection, where=where, include=[])["ids"]
        if not ids:
            return []
        if any(rid not in cached.rows for rid in ids):
            self._forget_vectors(collection.name)
            return None
        matrix = cached.matrix[[cached.rows[rid] for rid in ids]]
        return self._walk_cached(collection, ids, matrix, query, top_k, decode, False)

    def _walk_cached(
        self,
        collection: Any,
        ids: Sequence[str],
        matrix: np.ndarray,
        query: np.ndarray,
        top_k: int,
        decode: Callable[[str, str | None, Mapping[str, Any]], Any | None],
        filtered: bool,
    ) -> list[_Ranked] | None:
        """Read records best first by their float32 scores (one matrix-vector product; within
        384 x 2**-24 < DISTANCE_SLACK of the exact ones for unit vectors), check and score
        each exactly, until ``top_k`` passed and the next one is more than DISTANCE_SLACK
        below the cut: nothing unread can reach it. None when ``filtered`` and more than
        ``walk_limit`` records were read before ``top_k`` passed."""
        approximate = matrix @ query
        order = np.argsort(-approximate, kind="stable")
        descending = -approximate[order]  # ascending, for searchsorted
        ranked: list[_Ranked] = []
        position, wanted = 0, top_k * 4 + 4
        while position < len(order):
            if len(ranked) >= top_k:
                cut = sorted((r.score for r in ranked), reverse=True)[top_k - 1]
            else:
                if filtered and position >= self.walk_limit:
                    return None
                # As if the next ones all passed: every record that could reach that cut.
                count = wanted if filtered else top_k - len(ranked)
                wanted *= 2
                cut = float(-descending[min(len(order), position + count) - 1])
            end = int(np.searchsorted(descending, DISTANCE_SLACK - cut, side="right"))
            if end <= position:
                if len(ranked) >= top_k:
                    break
                end = position + 1
            batch = order[position:end]
            position = end
            exact = dict(
                zip((ids[i] for i in batch), _scores(matrix[batch], query).tolist(), strict=True)
            )
            page = self._get(
                collection, ids=[ids[i] for i in batch], include=["metadatas", "documents"]
            )
            for rid, doc, meta in zip(
                page["ids"], page["documents"], page["metadatas"], strict=True
            ):
                item = decode(rid, doc, meta)
                if item is not None:
                    ranked.append(_Ranked(rid, exact[rid], item))
        return ranked

    def _walk_all(
        self,
        collection: Any,
        query: np.ndarray,
        size: int,
        top_k: int,
        decode: Callable[[str, str | None, Mapping[str, Any]], Any | None],
        filtered: bool,
    ) -> list[_Ranked] | None:
        """Rank every record of the collection with one unfiltered query (Chroma's distances,
        float32), then read records best first, checking and scoring each exactly from its
        stored vector, until ``top_k`` passed and the next one's distance puts it more than
        ``DISTANCE_SLACK`` below the last of them: nothing unread can reach the cut.

        None when the query did not return every record (the index left some out, or the
        collection changed since it was counted) or, ``filtered``, when more than
        ``walk_limit`` records were read: the caller then lets Chroma evaluate the filter.
        """
        result = self._call(
            collection.query, query_embeddings=[query], n_results=size, include=["distances"]
        )
        ids = result["ids"][0]
        if len(ids) < size:
            return None
        approximate = 1.0 - np.asarray(result["distances"][0], dtype=np.float64)
        order = np.argsort(-approximate, kind="stable")
        descending = -approximate[order]  # ascending, for searchsorted
        ranked: list[_Ranked] = []
        position, wanted = 0, top_k * (4 if filtered else 1) + 4
        while position < len(order):
            if len(ranked) >= top_k:
                # Everything left that could reach the cut, in one read; nothing else can.
                cut = sorted((r.score for r in ranked), reverse=True)[top_k - 1]
                end = int(np.searchsorted(descending, DISTANCE_SLACK - cut, side="right"))
                if end <= position:
                    break
            else:
                if filtered and position >= self.walk_limit:
                    return None
                end, wanted = position + wanted, wanted * 2
            batch = [ids[i] for i in order[position:end]]
            position += len(batch)
            ranked += self._read_scored(collection, batch, query, decode)
        return ranked

    def _read_scored(
        self,
        collection: Any,
        ids: Sequence[str],
        query: np.ndarray,
        decode: Callable[[str, str | None, Mapping[str, Any]], Any | None],
    ) -> list[_Ranked]:
        """These records, decoded (those ``decode`` accepts) and scored exactly."""
        page = self._get(
            collection, ids=list(ids), include=["metadatas", "documents", "embeddings"]
        )
        if not page["ids"]:
            return []
        scores = _scores(page["embeddings"], query)
        found = []
        for rid, doc, meta, score in zip(
            page["ids"], page["documents"], page["metadatas"], scores, strict=True
        ):
            item = decode(rid, doc, meta)
            if item is not None:
                found.append(_Ranked(rid, float(score), item))
        return found

    def _score_all(
        self, collection: Any, query: np.ndarray, ids: Sequence[str]
    ) -> tuple[list[str], np.ndarray]:
        """The cosine similarity of every candidate with ``query``, from their stored vectors
        (a candidate deleted since it was counted is simply not returned)."""
        found: list[str] = []
        vectors: list[Any] = []
        for batch in batches(list(ids), ID_BATCH):
            page = self._get(collection, ids=list(batch), include=["embeddings"])
            found += page["ids"]
            vectors += list(page["embeddings"])
        if not found:
            return [], np.zeros(0)
        return found, _scores(vectors, query)

    def _walk(
        self,
        collection: Any,
        ids: Sequence[str],
        scores: np.ndarray,
        top_k: int,
        decode: Callable[[str, str | None, Mapping[str, Any]], Any | None],
    ) -> list[_Ranked]:
        """Walk scored candidates best first, reading and checking records a batch at a time,
        until ``top_k`` passed and the next candidate scores strictly lower than the last."""
        # Ties keep their input order here: every record tied at a batch's end is read with
        # it, and the hits are put in the shared order afterwards.
        order = np.argsort(-scores, kind="stable")
        ranked: list[_Ranked] = []
        position = 0
        while position < len(order) and len(ranked) < top_k:
            end = min(len(order), position + top_k - len(ranked))
            while end < len(order) and scores[order[end]] == scores[order[end - 1]]:
                end += 1  # a tie at the cut: the shared order decides, so fetch them all
            batch = [ids[i] for i in order[position:end]]
            page = self._get(collection, ids=batch, include=["metadatas", "documents"])
            records = {
                rid: (doc, meta)
                for rid, doc, meta in zip(
                    page["ids"], page["documents"], page["metadatas"], strict=True
                )
            }
            for i in order[position:end]:
                if ids[i] in records:
                    item = decode(ids[i], *records[ids[i]])
                    if item is not None:
                        ranked.append(_Ranked(ids[i], float(scores[i]), item))
            position = end
        return ranked

    def _rank_hnsw(
        self,
        collection: Any,
        where: Where | None,
        vector: np.ndarray,
        top_k: int,
        decode: Callable[[str, str | None, Mapping[str, Any]], Any | None],
    ) -> list[_Ranked]:
        """Chroma's HNSW index: score = 1 - cosine distance. Asks for more results until
        ``top_k`` candidates passed and no tie with the last one can be left out."""
        wanted = top_k + HNSW_MARGIN
        while True:
            result = self._call(
                collection.query,
                query_embeddings=[vector],
                n_results=wanted,
                where=where,
                include=["metadatas", "documents", "distances"],
            )
            ids = result["ids"][0]
            ranked = []
            for rid, doc, meta, distance in zip(
                ids,
                result["documents"][0],
                result["metadatas"][0],
                result["distances"][0],
                strict=True,
            ):
                item = decode(rid, doc, meta)
                if item is not None:
                    ranked.append(_Ranked(rid, 1.0 - float(distance), item))
            exhausted = len(ids) < wanted
            if exhausted:
                return ranked
            last = 1.0 - float(result["distances"][0][-1])
            if len(ranked) >= top_k and last < ranked[top_k - 1].score:
                return ranked
            wanted *= 2

    def _search_knowledge(self, search: KnowledgeSearch) -> list[KnowledgeHit]:
        category, top_k = search.category, search.top_k
        where = {K_CATEGORY: {"$eq": category}} if category is not None else None

        def decode(cid: str, doc: str | None, meta: Mapping[str, Any]) -> KnowledgeChunk | None:
            chunk = chunk_from_record(cid, doc, meta)
            return chunk if category is None or chunk.category == category else None

        if search.mode == "vector":
            assert search.vector is not None
            ranked = self._rank(self._knowledge, where, search.vector, top_k, decode)
            return [KnowledgeHit(chunk=r.item, score=r.score) for r in ranked]
        hybrid = search.mode == "hybrid"
        include = ["metadatas", *(["embeddings"] if hybrid else [])]
        result = self._get(self._knowledge, where=where, include=include)
        ids, metas = result["ids"], result["metadatas"]
        evidence = self._evidence(ids, metas, search.terms, conversations=False)
        if hybrid:
            assert search.vector is not None
            cosine = _scores(result["embeddings"], search.vector) if ids else np.zeros(0)
            nearest, cosines = scored_in_memory(ids, cosine)
            scored = rank_hybrid(
                search.terms,
                evidence if search.terms else None,
                nearest,
                cosines,
                self.ranking,
                top_k,
            )
        else:
            scored = rank_keyword(search.terms, evidence, self.ranking, top_k)
        at = {cid: i for i, cid in enumerate(ids)}
        docs = self._documents(self._knowledge, [k for k, _ in scored])
        return [
            KnowledgeHit(chunk=chunk_from_record(k, docs[k], metas[at[k]]), score=score)
            for k, score in scored
            if k in docs
        ]
