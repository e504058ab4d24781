"""``GET /recall``: vector search when there is a query or an embedding, otherwise by
importance or time; AutoMem's tag filters become driver filters where they can. Results with
the same content are merged as AutoMem merges them (:func:`_add_or_merge`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from .. import automem_wire as wire
from ..base import KnowledgeSearch, MemorySearch
from ..models import KnowledgeChunk, Memory, MemoryFilter
from .core import ServiceBase
from .parsing import (
    NARROWING,
    ApiError,
    NoMatch,
    TagFilter,
    elapsed_ms,
    narrow,
    normalize_tag_list,
    parse_int,
    parse_time_expression,
    split_multi,
    timestamp,
)

__all__ = ["RecallRoutes"]

#: The latest time there is: an ``end`` there bounds nothing.
_LATEST = datetime.max.replace(tzinfo=timezone.utc)

#: Sorts ``GET /recall`` accepts (anything else means ``score``, as in AutoMem).
SORTS = ("score", "time_desc", "time_asc", "updated_desc", "updated_asc")


def _time_key(item: Mapping[str, Any]) -> tuple[str, str, str]:
    """AutoMem's time order: ``updated_at`` (else ``timestamp``), then ``timestamp``, then id.
    Times are UTC ISO strings, so comparing them as strings compares the times."""
    memory = item["memory"]
    primary = memory.get("updated_at") or memory.get("timestamp") or ""
    return (primary, memory.get("timestamp") or "", str(item["id"]))


class RecallRoutes(ServiceBase):
    """``GET /recall`` over memories or knowledge chunks."""

    def recall(self, args: Any) -> dict[str, Any]:
        """``GET /recall``: vector search when there is a query or an embedding; otherwise
        by importance (``sort=score``) or by time. Filters apply before ``limit`` is cut."""
        started = time.perf_counter()
        query = (args.get("query") or "").strip()
        queries = [q for q in split_multi(args.getlist("queries")) if q]  # AutoMem: they win
        sort = (args.get("sort") or args.get("order_by") or "score").strip().lower()
        sort = sort if sort in SORTS else "score"
        limit = parse_int(args.get("limit"), 5, 1, wire.AUTOMEM_RECALL_LIMIT)
        embedding = args.get("embedding")
        start, end = parse_time_expression(args.get("time_query") or args.get("time"))
        if args.get("start"):
            start = timestamp(args.get("start"), "start", "Invalid start time: ")
        if args.get("end"):
            end = timestamp(args.get("end"), "end", "Invalid end time: ")
        state_mode = (args.get("state_mode") or "").strip().lower()
        if state_mode and state_mode not in ("current", "history"):
            raise ApiError(400, "'state_mode' must be 'current' or 'history'")
        semantic = bool(query or queries or (embedding and str(embedding).strip()))
        if sort == "score" and not semantic and (start or end):
            sort = "time_desc"
        tag_mode = (args.get("tag_mode") or "any").strip().lower()
        tag_match = (args.get("tag_match") or "prefix").strip().lower()
        tag_filter = TagFilter(
            tags=normalize_tag_list(args.getlist("tags") or args.get("tags")),
            mode=tag_mode if tag_mode in ("any", "all") else "any",
            match=tag_match if tag_match in ("exact", "prefix") else "prefix",
            exclude=split_multi(args.getlist("exclude_tags")),
        )
        vectors = [self._query_vector(embedding, q) for q in (queries or [query])]
        usable = [v for v in vectors if v is not None]
        required = tag_filter.required()
        if any(kind == "knowledge" for kind, _ in required):
            results = self._recall_knowledge(usable, tag_filter, start, end, limit, sort)
        else:
            results = self._recall_memories(usable, tag_filter, start, end, limit, sort)
        body: dict[str, Any] = {
            "status": "success",
            "query": query,
            "results": results,
            "count": len(results),
            "dedup_removed": 0,
            "sort": sort,
            "state_mode": state_mode or "current",
            "vector_search": {"enabled": True, "matched": bool(usable and results)},
        }
        if queries:
            body["queries"] = queries
        if start or end:
            body["time_window"] = {
                "start": wire.iso(start) if start else None,
                "end": wire.iso(end) if end else None,
            }
        if tag_filter.tags:
            body["tags"] = tag_filter.tags
        if tag_filter.exclude:
            body["exclude_tags"] = tag_filter.exclude
        body["tag_mode"] = tag_filter.mode
        body["tag_match"] = tag_filter.match
        body["query_time_ms"] = elapsed_ms(started)
        return body

    def _recall_memories(
        self,
        vectors: Sequence[tuple[str | None, np.ndarray]],
        tag_filter: TagFilter,
        start: datetime | None,
        end: datetime | None,
        limit: int,
        sort: str,
    ) -> list[dict[str, Any]]:
        try:
            fields = narrow(tag_filter.required(), self._types)
        except NoMatch:
            return []
        if start is not None:
            fields["since"] = start
        if end is not None and end < _LATEST:
            fields["until"] = end + timedelta(microseconds=1)  # AutoMem's end is inclusive
        if start is not None and end is not None and start > end:
            return []
        memory_filter = MemoryFilter(**fields)
        # When every tag filter became a driver filter, the driver's first `limit` are the
        # answer; otherwise every candidate is ranked and checked here.
        required = tag_filter.required()
        exact = (
            not tag_filter.exclude
            and len(required) == len(tag_filter.tags)
            and all(kind in NARROWING for kind, _ in required)
        )
        scored: dict[str, tuple[Memory, float]] = {}
        if vectors:
            top_k = limit if exact else max(self.driver._count_memories(fields.get("user_id")), 1)
            for text, vector in vectors:
                search = MemorySearch(memory_filter, top_k, "vector", vector=vector, text=text)
                for hit in self.driver._search_memories(search):
                    score = float(hit.score or 0.0)
                    if hit.memory.id not in scored or scored[hit.memory.id][1] < score:
                        scored[hit.memory.id] = (hit.memory, score)
            ranked = sorted(
                scored.values(), key=lambda p: (-p[1], -p[0].created_at.timestamp(), p[0].id)
            )
        else:
            memories = self._search(memory_filter)
            ranked = [(m, m.importance) for m in memories]
            ranked.sort(key=_selection_key(sort))
        results: list[dict[str, Any]] = []
        fingerprints: dict[str, dict[str, Any]] = {}
        for memory, score in ranked:
            rendered = self.render_memory(memory)
            if not tag_filter.passes(rendered["tags"]):
                continue
            result = _result(rendered, score, "vector" if vectors else "trending")
            _add_or_merge(results, fingerprints, result)
            if len(results) == limit:
                break
        return _final_order(results, sort)

    def _recall_knowledge(
        self,
        vectors: Sequence[tuple[str | None, np.ndarray]],
        tag_filter: TagFilter,
        start: datetime | None,
        end: datetime | None,
        limit: int,
        sort: str,
    ) -> list[dict[str, Any]]:
        categories = {v for k, v in tag_filter.required() if k == "category"}
        if len(categories) > 1:
            return []
        category = next(iter(categories), None)
        scored: dict[str, tuple[KnowledgeChunk, float]] = {}
        if vectors:
            total = sum(1 for _ in self.driver._iter_knowledge(1000))
            for text, vector in vectors:
                search = KnowledgeSearch("vector", max(total, 1), category, text or "", vector)
                for hit in self.driver._search_knowledge(search):
                    if hit.chunk.id not in scored or scored[hit.chunk.id][1] < hit.score:
                        scored[hit.chunk.id] = (hit.chunk, float(hit.score))
            ranked = sorted(scored.values(), key=lambda p: (-p[1], p[0].doc_id, p[0].chunk_index))
        else:
            chunks = sorted(
                self.driver._iter_knowledge(1000),
                key=lambda c: (-c.created_at.timestamp(), c.doc_id, c.chunk_index),
            )
            ranked = [(c, 0.5) for c in chunks]
        results: list[dict[str, Any]] = []
        fingerprints: dict[str, dict[str, Any]] = {}
        for chunk, score in ranked:
            if (start and chunk.created_at < start) or (end and chunk.created_at > end):
                continue
            rendered = self.render_chunk(chunk)
            if not tag_filter.passes(rendered["tags"]):
                continue
            result = _result(rendered, score, "vector" if vectors else "trending")
            _add_or_merge(results, fingerprints, result)
            if len(results) == limit:
                break
        return _final_order(results, sort)


def _add_or_merge(
    results: list[dict[str, Any]], fingerprints: dict[str, dict[str, Any]], result: dict[str, Any]
) -> None:
    """Add ``result``, or merge it into an earlier (better ranked) one with the same content
    fingerprint, as AutoMem does: the kept result lists the ids of all of them in
    ``deduped_from``, the merged one is left out, and ``dedup_removed`` does not count it (so
    merged results do not count towards ``limit`` either)."""
    fingerprint = wire.content_fingerprint(result["memory"]["content"])
    kept = fingerprints.get(fingerprint) if fingerprint else None
    if kept is None:
        results.append(result)
        if fingerprint:
            fingerprints[fingerprint] = result
    else:
        kept["deduped_from"] = sorted({*kept.get("deduped_from", [kept["id"]]), result["id"]})


def _result(rendered: dict[str, Any], score: float, match_type: str) -> dict[str, Any]:
    component = "vector" if match_type == "vector" else "importance"
    return {
        "id": rendered["id"],
        "score": score,
        "final_score": score,
        "original_score": score,
        "match_score": score,
        "match_type": match_type,
        "source": "memory-drivers",
        "memory": rendered,
        "relations": [],
        "score_components": {component: score},
    }


def _selection_key(sort: str) -> Callable[[tuple[Memory, float]], Any]:
    """Which memories a recall without a query picks first (before ``limit``)."""
    if sort == "time_asc":
        return lambda p: (p[0].created_at, p[0].id)
    if sort == "updated_desc":
        return lambda p: (-p[0].updated_at.timestamp(), p[0].id)
    if sort == "updated_asc":
        return lambda p: (p[0].updated_at, p[0].id)
    if sort == "time_desc":
        return lambda p: (-p[0].created_at.timestamp(), p[0].id)
    return lambda p: (-p[1], -p[0].created_at.timestamp(), p[0].id)


def _final_order(results: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    if sort == "score":
        return results
    return sorted(results, key=_time_key, reverse=sort in ("time_desc", "updated_desc"))
