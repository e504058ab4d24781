"""AutoMem's REST semantics on top of a memory-drivers driver, without HTTP.

:class:`MemoryService` takes what AutoMem's endpoints take (a parsed JSON body, query
parameters) and returns what they return (a JSON-ready dict and a status code), or raises
:class:`ApiError` with AutoMem's status code and message. ``app.py`` wraps it in HTTP.

How AutoMem's memories map onto the driver's (see ``docs/server.md``):

- a memory written by the ``automem`` driver carries the memory-drivers block
  (:mod:`memory_drivers.automem_wire`): its id, user, conversation, type and source come from
  the block, so the store behind the server holds it exactly as the driver would;
- a memory from any other AutoMem client belongs to ``MEMORY_SERVER_DEFAULT_USER``, gets a new
  id (AutoMem never takes the client's), and its AutoMem ``type`` is mapped onto the store's
  memory types;
- convention tags (``mdrv:...``) are never stored: they are derived from each memory when it is
  shown, and filters on them become the driver's own filters (user, conversation, type, tags,
  metadata), applied before ``limit`` is cut.

Ranking: vector recall ranks by the cosine similarity of the store's embedder; without a query,
memories come by importance (``sort=score``) or by time. AutoMem's blend (keyword, recency,
relation and entity boosts), deduplication, current-state filtering and enrichment are not
reproduced; their parameters are accepted and ignored.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from .. import automem_wire as wire
from .. import validation as check
from ..base import BaseMemoryDriver, KnowledgeRecord, MemorySearch
from ..embeddings import check_vectors
from ..errors import (
    BackendUnavailableError,
    ConflictError,
    DriverClosedError,
    EmbeddingError,
    NotFoundError,
    ValidationError,
)
from ..models import (
    RELATIONSHIP_TYPES,
    KnowledgeChunk,
    Memory,
    MemoryFilter,
    RelatedMemory,
    Scalar,
)
from ..text import document_terms

__all__ = ["ApiError", "MemoryService"]

log = logging.getLogger(__name__)

#: Sorts ``GET /recall`` accepts (anything else means ``score``, as in AutoMem).
SORTS = ("score", "time_desc", "time_asc", "updated_desc", "updated_asc")
#: AutoMem's default ``limit`` of ``GET /memories/<id>/related`` (``RECALL_RELATION_LIMIT``).
RELATED_DEFAULT_LIMIT = 5


class ApiError(Exception):
    """An AutoMem error answer: ``{"status": "error", "code": status, "message": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------- AutoMem's parsing
def normalize_tags(value: Any) -> list[str]:
    """Tags of a stored memory: a list of strings or one string (AutoMem's ``normalize_tags``)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(tag, str) for tag in value):
        return list(value)
    raise ApiError(400, "'tags' must be a list of strings or a single string")


def normalize_tag_list(raw: Any) -> list[str]:
    """Tags of a filter or an update: a comma-separated string or a list; blanks dropped."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if isinstance(raw, list | tuple):
        return [item.strip() for item in raw if isinstance(item, str) and item.strip()]
    return []


def split_multi(values: Sequence[str]) -> list[str]:
    """Repeated parameters whose values may also be comma-separated (``exclude_tags``)."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def coerce_unit(value: Any, name: str = "importance", default: float = 0.5) -> float:
    """A number from 0 to 1 (AutoMem's ``coerce_importance``; NaN is refused too)."""
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"'{name}' must be a number") from None
    if not math.isfinite(number) or number < 0 or number > 1:
        raise ApiError(400, f"'{name}' must be between 0 and 1")
    return number


def normalize_timestamp(raw: Any) -> datetime:
    """An ISO 8601 time in UTC (naive means UTC); ``ValueError`` with AutoMem's message."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("Timestamp must be a non-empty ISO formatted string")
    candidate = raw.strip()
    if candidate.endswith("Z"):
        candidate = candidate[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        raise ValueError("Invalid ISO timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def parse_time_expression(
    expression: str | None, now: datetime | None = None
) -> tuple[datetime | None, datetime | None]:
    """AutoMem's ``time_query`` phrases as a (start, end) window; (None, None) when unknown.

    ``today``, ``yesterday``, ``last 24 hours``, ``last 48 hours``, ``this week``, ``last
    week``, ``this month``, ``last month``, ``last N days``, ``this year``, ``last year``
    (``past`` works for ``last``). Weeks start on Monday; times are UTC.
    """
    if not expression or not expression.strip():
        return None, None
    expr = expression.strip().lower()
    now = now or datetime.now(timezone.utc)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if expr in ("today", "this day"):
        return day, day + timedelta(days=1)
    if expr == "yesterday":
        return day - timedelta(days=1), day
    for hours in (24, 48):
        if expr in (f"last {hours} hours", f"past {hours} hours"):
            return now - timedelta(hours=hours), now
    week = day - timedelta(days=now.weekday())
    if expr == "this week":
        return week, week + timedelta(days=7)
    if expr in ("last week", "past week"):
        return week - timedelta(days=7), week
    month = day.replace(day=1)
    next_month = month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)
    if expr == "this month":
        return month, next_month
    if expr in ("last month", "past month"):
        previous = month.replace(
            year=month.year - (month.month == 1), month=(month.month - 2) % 12 + 1
        )
        return previous, month
    words = expr.split()
    if len(words) == 3 and words[0] in ("last", "past") and words[2] == "days":
        try:
            days = int(words[1])
        except ValueError:
            return None, None
        return now - timedelta(days=days), now
    year = month.replace(month=1)
    if expr == "this year":
        return year, year.replace(year=year.year + 1) if year.year < 9999 else now
    if expr in ("last year", "past year"):
        return year.replace(year=year.year - 1), year
    return None, None


def parse_bool(raw: Any, default: bool = False) -> bool:
    if raw is None:
        return default
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "off", "n"):
        return False
    return default


def parse_int(raw: Any, default: int, low: int, high: int) -> int:
    try:
        value = int(raw) if raw is not None else default
    except (TypeError, ValueError):
        value = default
    return max(low, min(value, high))


def valid_memory_id(value: str, message: str = "memory_id must be a valid UUID") -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise ApiError(400, message) from None


# ---------------------------------------------------------------------- tag filters
@dataclass
class TagFilter:
    """AutoMem's tag filtering: ``tags`` with ``tag_mode`` any/all and ``tag_match``
    exact/prefix, and ``exclude_tags``; all case-insensitive, as AutoMem does it."""

    tags: list[str] = field(default_factory=list)
    mode: str = "any"
    match: str = "prefix"
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tags = [t.strip().lower() for t in self.tags if t.strip()]
        self.exclude = [t.strip().lower() for t in self.exclude if t.strip()]

    def passes(self, tags: Sequence[str]) -> bool:
        lowered = [t.strip().lower() for t in tags if t.strip()]
        if self.tags:
            pool = set(lowered) if self.match == "exact" else set(wire.tag_prefixes(lowered))
            test = all if self.mode == "all" else any
            if not test(wanted in pool for wanted in self.tags):
                return False
        return not any(tag.startswith(excluded) for excluded in self.exclude for tag in lowered)

    def required(self) -> list[tuple[str, Any]]:
        """Convention tags every match must carry, parsed (only those can narrow the search
        in the driver; everything is checked again by :meth:`passes`)."""
        if not self.tags or (self.mode != "all" and len(self.tags) > 1):
            return []
        return [parsed for parsed in map(wire.parse_tag, self.tags) if parsed is not None]


class _NoMatch(Exception):
    """Raised while narrowing a filter when two required tags contradict each other."""


#: Convention tags that :func:`narrow` turns into driver filters completely.
NARROWING = frozenset({"memory", "user", "conv", "type", "tag", "meta"})


def narrow(required: Iterable[tuple[str, Any]], memory_types: Sequence[str]) -> dict[str, Any]:
    """The driver filter (``MemoryFilter`` fields) that required convention tags imply. Kinds
    outside :data:`NARROWING` (an id) narrow nothing; they are checked tag by tag."""
    fields: dict[str, Any] = {}

    def put(name: str, value: Any) -> None:
        if name in fields and fields[name] != value:
            raise _NoMatch
        fields[name] = value

    tags: list[str] = []
    metadata: dict[str, Scalar] = {}
    for kind, value in required:
        if kind == "user":
            put("user_id", value)
        elif kind == "conv":
            put("conversation_id", value)
        elif kind == "type":
            if value not in memory_types:
                raise _NoMatch
            put("memory_types", (value,))
        elif kind == "tag":
            tags.append(value)
        elif kind == "meta":
            key, scalar = value
            if key in metadata and wire.meta_tag(key, metadata[key]) != wire.meta_tag(key, scalar):
                raise _NoMatch
            metadata[key] = scalar
        elif kind in ("knowledge", "doc", "category", "store-info"):
            raise _NoMatch  # memories never carry these
    if tags:
        fields["tags"] = tuple(dict.fromkeys(tags))
        fields["tag_mode"] = "all"
    if metadata:
        fields["metadata"] = metadata
    return fields


def _memory_order(item: Mapping[str, Any]) -> tuple[float, float, str]:
    """``/memory/by-tag``'s order: importance, then newest, then id."""
    created = datetime.fromisoformat(item["timestamp"]).timestamp()
    return (-float(item.get("importance") or 0.0), -created, str(item["id"]))


def _time_key(item: Mapping[str, Any]) -> tuple[str, str, str]:
    """AutoMem's time order: ``updated_at`` (else ``timestamp``), then ``timestamp``, then id.
    Times are UTC ISO strings, so comparing them as strings compares the times."""
    memory = item["memory"]
    primary = memory.get("updated_at") or memory.get("timestamp") or ""
    return (primary, memory.get("timestamp") or "", str(item["id"]))


# ---------------------------------------------------------------------- the service
class MemoryService:
    """AutoMem's endpoints over ``driver``. Thread-safe as far as the driver is."""

    def __init__(self, driver: BaseMemoryDriver, *, default_user: str = "automem") -> None:
        self.driver = driver
        self.default_user = check.identifier(default_user, "MEMORY_SERVER_DEFAULT_USER")
        self.started = time.time()

    # ------------------------------------------------------------------ rendering
    @property
    def _types(self) -> tuple[str, ...]:
        return self.driver.settings.memory_types

    def _links(self, memory_id: str) -> list[dict[str, Any]]:
        return [
            {"to": r.memory.id, "type": r.relationship_type, "strength": r.strength}
            for r in self.driver._related(memory_id, None)
            if r.direction == "outgoing"
        ]

    def render_memory(self, memory: Memory, *, links: bool = False) -> dict[str, Any]:
        """A memory as AutoMem shows it (a graph node), the block included."""
        body = wire.memory_payload(memory, self._links(memory.id) if links else None)
        return {
            "id": memory.id,
            **body,
            "content": memory.content,
            "tag_prefixes": wire.tag_prefixes(body["tags"]),
            "t_valid": body["timestamp"],
            "t_invalid": None,
            "last_accessed": body["updated_at"],
        }

    def render_chunk(self, chunk: KnowledgeChunk) -> dict[str, Any]:
        body = wire.chunk_payload(chunk)
        return {
            "id": chunk.id,
            **body,
            "content": chunk.content,
            "tag_prefixes": wire.tag_prefixes(body["tags"]),
        }

    def _store_info(self) -> dict[str, str]:
        return {k: v for k, v in self.driver._read_store_info().items() if v}

    def render_store_info(self) -> dict[str, Any]:
        body = wire.store_info_payload(self._store_info())
        moment = wire.iso(datetime.fromtimestamp(self.started, timezone.utc))
        return {
            "id": wire.STORE_INFO_ID,
            **body,
            "timestamp": moment,
            "updated_at": moment,
            "tag_prefixes": wire.tag_prefixes(body["tags"]),
        }

    # ------------------------------------------------------------------ decoding writes
    def _query_vector(self, embedding: Any, query: str) -> tuple[str | None, np.ndarray] | None:
        """(the query text when known, its vector): a client's ``embedding`` wins."""
        embedder = self.driver.embedder
        provided = coerce_embedding(embedding, embedder.dimension)
        if provided is not None:
            try:
                return None, check_vectors(provided, 1, embedder)[0]
            except EmbeddingError as exc:
                raise ApiError(400, f"Embedding is not usable: {exc}") from None
        if query:
            return query, self.driver._embed_query(query)
        return None

    def _decode_new(self, payload: Mapping[str, Any]) -> _Write:
        """What one stored AutoMem memory becomes: a memory, a knowledge chunk or the stamp."""

        def fail(message: str) -> ApiError:
            return ApiError(400, message)

        content = payload.get("content")
        if content is not None and not isinstance(content, str):
            raise fail("'content' must be a string")
        content = (content or "").strip()
        if not content:
            raise fail("'content' is required")
        metadata = payload.get("metadata")
        if metadata is None:
            metadata = {}
        elif not isinstance(metadata, dict):
            raise fail("'metadata' must be an object")
        metadata = dict(metadata)
        block = metadata.pop(wire.BLOCK_KEY, None)
        kind = block.get("kind") if isinstance(block, dict) and block.get("v") == 1 else None
        if block is not None and kind is None:
            raise fail(f"metadata.{wire.BLOCK_KEY} is reserved for the memory-drivers convention")
        if len(content) > wire.AUTOMEM_CONTENT_LIMIT and kind != "knowledge":
            raise fail(
                f"Content exceeds maximum length of {wire.AUTOMEM_CONTENT_LIMIT} characters "
                f"({len(content)} provided). Please split into smaller memories or summarize."
            )
        tags = [t for t in normalize_tags(payload.get("tags")) if not _reserved(t)]
        importance = coerce_unit(payload.get("importance"))
        raw_type = payload.get("type")
        if raw_type is not None and not isinstance(raw_type, str):
            raise fail("'type' must be a string")
        if payload.get("confidence") is not None:
            coerce_unit(payload.get("confidence"), "confidence")
        for name in ("t_valid", "t_invalid", "last_accessed"):
            if payload.get(name):
                _timestamp(payload[name], f"Invalid {name}: ")
        coerce_embedding(payload.get("embedding"), self.driver.embedder.dimension)
        created = _timestamp(payload.get("timestamp"), "") if payload.get("timestamp") else None
        updated = (
            _timestamp(payload["updated_at"], "Invalid updated_at: ")
            if payload.get("updated_at")
            else None
        )
        if kind == "store_info":
            values = block.get("values") if isinstance(block, dict) else None
            if not isinstance(values, dict):
                raise fail("the store-info block has no values")
            return _Write("store_info", values={str(k): str(v) for k, v in values.items()})
        if kind == "knowledge":
            assert isinstance(block, dict)
            full = block.get("content")
            if not (isinstance(full, str) and full.strip().startswith(content)):
                full = content
            try:
                chunk = wire.chunk_from_block(
                    {
                        **block,
                        "content": full,
                        "metadata": metadata,
                        "created_at": block.get("created_at") or created or check.utcnow(),
                    }
                )
            except ValueError as exc:
                raise fail(f"invalid knowledge chunk: {exc}") from None
            return _Write("knowledge", chunk=chunk)
        if kind is not None and kind != "memory":
            raise fail(f"unknown memory-drivers block kind {kind!r}")
        item: dict[str, Any] = {
            "content": content,
            "tags": tags,
            "importance": importance,
            "metadata": metadata,
            "memory_type": from_type(raw_type, self._types, self.driver.settings),
            "user_id": self.default_user,
        }
        if isinstance(block, dict):
            exact = block.get("content")
            if isinstance(exact, str) and exact.strip() == content:
                item["content"] = exact
            block_type = block.get("memory_type")
            if isinstance(block_type, str) and (
                raw_type is None or wire.to_automem_type(block_type) == raw_type
            ):
                item["memory_type"] = block_type
            try:
                item["id"] = check.memory_id(block.get("id"), "memory_drivers.id")
            except ValidationError as exc:
                raise fail(str(exc)) from None
            for name in ("user_id", "conversation_id", "source"):
                item[name] = block.get(name)
            created = created or _block_time(block, "created_at")
            updated = updated or _block_time(block, "updated_at")
        created = created or check.utcnow()
        item["created_at"] = created
        item["updated_at"] = updated or created
        return _Write("memory", item=item)

    # ------------------------------------------------------------------ writes
    def _store(self, writes: Sequence[_Write]) -> list[str]:
        """Store decoded writes: memories in one transaction, chunks per document."""
        items = [w.item for w in writes if w.kind == "memory" and w.item is not None]
        chunks = [w.chunk for w in writes if w.kind == "knowledge" and w.chunk is not None]
        for w in writes:
            if w.kind == "store_info":
                self._check_store_info(w.values or {})
        stored = iter(self.driver.store_many(items) if items else [])
        if chunks:
            self._store_chunks(chunks)
        ids = []
        for w in writes:
            if w.kind == "memory":
                ids.append(next(stored).id)
            elif w.chunk is not None:
                ids.append(w.chunk.id)
            else:
                ids.append(wire.STORE_INFO_ID)
        return ids

    def _store_chunks(self, chunks: Sequence[KnowledgeChunk]) -> None:
        """A batch with chunk 0 of a document replaces the document; later batches (documents
        of more than 500 chunks) add to it."""
        by_doc: dict[str, list[KnowledgeChunk]] = defaultdict(list)
        for chunk in chunks:
            by_doc[chunk.doc_id].append(chunk)
        for doc_id, new in by_doc.items():
            if not any(c.chunk_index == 0 for c in new):
                indexes = {c.chunk_index for c in new}
                kept = [
                    c for c in self.driver._get_knowledge(doc_id) if c.chunk_index not in indexes
                ]
                new = kept + new
            new.sort(key=lambda c: c.chunk_index)
            vectors = self.driver._embed_documents([c.content for c in new])
            records = [KnowledgeRecord(c, vectors[i]) for i, c in enumerate(new)]
            self.driver._replace_knowledge(doc_id, records)

    def _check_store_info(self, values: Mapping[str, str]) -> None:
        own = self._store_info()
        for key, value in values.items():
            if value and own.get(key) != value:
                raise ApiError(
                    409,
                    f"this server's store has {key}={own.get(key)!r}, the client sent "
                    f"{value!r}; a client cannot change it. Configure the client's embedder "
                    "like the server's (EMBEDDING_PROVIDER, EMBEDDING_MODEL), or re-embed the "
                    "server's store with `memory-drivers reembed`.",
                )

    def store(self, payload: Any) -> tuple[dict[str, Any], int]:
        """``POST /memory``."""
        started = time.perf_counter()
        if not isinstance(payload, dict):
            raise ApiError(400, "JSON body is required")
        write = self._decode_new(payload)
        [memory_id] = self._store([write])
        body: dict[str, Any] = {"status": "success", "memory_id": memory_id}
        if write.kind == "memory":
            memory = self.driver.get(memory_id)
            if memory is None:  # deleted by someone else in between
                raise ApiError(500, "Failed to store memory")
            rendered = self.render_memory(memory)
            body.update(
                stored_at=rendered["timestamp"],
                type=rendered["type"],
                confidence=coerce_unit(payload.get("confidence"), "confidence", 0.9),
                qdrant="stored",
                embedding_status="generated",
                enrichment="disabled",
                metadata=rendered["metadata"],
                timestamp=rendered["timestamp"],
                updated_at=rendered["updated_at"],
                last_accessed=rendered["last_accessed"],
            )
        body["query_time_ms"] = _elapsed(started)
        return body, 201

    def store_batch(self, payload: Any) -> tuple[dict[str, Any], int]:
        """``POST /memory/batch``: every item is checked before any is stored."""
        started = time.perf_counter()
        if not isinstance(payload, dict):
            raise ApiError(400, "JSON body with 'memories' array required")
        items = payload.get("memories", [])
        if not isinstance(items, list) or not items:
            raise ApiError(400, "'memories' must be a non-empty array")
        if len(items) > wire.AUTOMEM_BATCH_LIMIT:
            raise ApiError(
                400, f"Batch size limit is {wire.AUTOMEM_BATCH_LIMIT} memories per request"
            )
        writes = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise ApiError(400, f"Memory at index {index} must be an object")
            try:
                writes.append(self._decode_new(item))
            except ApiError as exc:
                raise ApiError(exc.status, f"Memory at index {index}: {exc.message}") from None
        ids = self._store(writes)
        return {
            "status": "success",
            "stored": len(ids),
            "memory_ids": ids,
            "qdrant": f"stored ({len(ids)})",
            "enrichment": "disabled",
            "query_time_ms": _elapsed(started),
        }, 201

    def get(self, memory_id: str) -> dict[str, Any]:
        """``GET /memory/<id>``, with the links the memory starts in its block."""
        mid = valid_memory_id(memory_id)
        if mid == wire.STORE_INFO_ID:
            return {"status": "success", "memory": self.render_store_info()}
        memory = self.driver.get(mid)
        if memory is None:
            raise ApiError(404, "Memory not found")
        return {"status": "success", "memory": self.render_memory(memory, links=True)}

    def update(self, memory_id: str, payload: Any) -> dict[str, Any]:
        """``PATCH /memory/<id>``: the fields given change, the others stay (``updated_at``
        too, unless given, as in AutoMem)."""
        mid = valid_memory_id(memory_id)
        if not isinstance(payload, dict):
            raise ApiError(400, "JSON body is required")
        metadata = payload.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise ApiError(400, "'metadata' must be an object")
        block = metadata.get(wire.BLOCK_KEY) if isinstance(metadata, dict) else None
        block = block if isinstance(block, dict) and block.get("v") == 1 else None
        if mid == wire.STORE_INFO_ID:
            values = block.get("values") if block else None
            if isinstance(values, dict):
                self._check_store_info({str(k): str(v) for k, v in values.items()})
            return {"status": "success", "memory_id": mid}
        current = self.driver.get(mid)
        if current is None:
            raise ApiError(404, "Memory not found")
        changes: dict[str, Any] = {}
        if "content" in payload:
            content = payload["content"]
            if not isinstance(content, str) or not content.strip():
                raise ApiError(400, "'content' is required")
            content = content.strip()
            if len(content) > wire.AUTOMEM_CONTENT_LIMIT:
                raise ApiError(
                    400,
                    f"Content exceeds maximum length of {wire.AUTOMEM_CONTENT_LIMIT} "
                    f"characters ({len(content)} provided).",
                )
            exact = block.get("content") if block else None
            changes["content"] = (
                exact if isinstance(exact, str) and exact.strip() == content else content
            )
        if "tags" in payload:
            changes["tags"] = [t for t in normalize_tag_list(payload["tags"]) if not _reserved(t)]
        if "importance" in payload:
            changes["importance"] = coerce_unit(payload["importance"])
        if "type" in payload:
            raw = payload["type"]
            if raw is not None and not isinstance(raw, str):
                raise ApiError(400, "'type' must be a string")
            block_type = block.get("memory_type") if block else None
            if isinstance(block_type, str) and wire.to_automem_type(block_type) == raw:
                changes["memory_type"] = block_type
            elif raw != wire.to_automem_type(current.memory_type):
                changes["memory_type"] = from_type(raw, self._types, self.driver.settings)
        if "metadata" in payload:
            changes["metadata"] = {k: v for k, v in (metadata or {}).items() if k != wire.BLOCK_KEY}
        if payload.get("timestamp"):
            created = _timestamp(payload["timestamp"], "Invalid timestamp: ")
            if created != current.created_at:
                raise ApiError(
                    400,
                    "changing 'timestamp' (when the memory was created) is not supported by "
                    "this server",
                )
        if payload.get("updated_at"):
            changes["updated_at"] = _timestamp(payload["updated_at"], "Invalid updated_at: ")
        if payload.get("confidence") is not None:
            coerce_unit(payload["confidence"], "confidence")
        for name in ("t_valid", "t_invalid", "last_accessed"):
            if payload.get(name):
                _timestamp(payload[name], f"Invalid {name}: ")
        if changes:
            self._apply(current, changes)
        return {"status": "success", "memory_id": mid}

    def _apply(self, current: Memory, changes: dict[str, Any]) -> None:
        s = self.driver.settings
        checked: dict[str, Any] = {}
        try:
            if "content" in changes:
                checked["content"] = check.content(changes["content"], s.memory_max_content_length)
            if "tags" in changes:
                checked["tags"] = check.tags(changes["tags"])
            if "metadata" in changes:
                checked["metadata"] = check.metadata(changes["metadata"])
            if "importance" in changes:
                checked["importance"] = check.importance(changes["importance"])
            if "memory_type" in changes:
                checked["memory_type"] = check.memory_type(changes["memory_type"], s.memory_types)
        except ValidationError as exc:
            raise ApiError(400, str(exc)) from None
        if "updated_at" in changes:
            checked["updated_at"] = changes["updated_at"]
        vector = terms = None
        if checked.get("content", current.content) != current.content:
            vector = self.driver._embed_documents([checked["content"]])[0]
            terms = document_terms(checked["content"])
        if self.driver._update_memory(current.id, None, checked, vector, terms) is None:
            raise ApiError(404, "Memory not found")

    def delete(self, memory_id: str) -> dict[str, Any]:
        """``DELETE /memory/<id>`` (its associations go with it)."""
        mid = valid_memory_id(memory_id)
        if mid == wire.STORE_INFO_ID:
            raise ApiError(400, "the store info cannot be deleted")
        if not self.driver.delete(mid):
            raise ApiError(404, "Memory not found")
        return {"status": "success", "memory_id": mid}

    # ------------------------------------------------------------------ by tag
    def _tagged(self, tags: Sequence[str]) -> list[dict[str, Any]]:
        """Every memory, chunk or stamp carrying any of ``tags`` (exact, case-insensitive),
        rendered, in ``/memory/by-tag``'s order."""
        wanted = {t.lower() for t in tags}
        parsed = [wire.parse_tag(t) for t in wanted]
        kinds = {p[0] if p else "plain" for p in parsed}
        found: dict[str, dict[str, Any]] = {}
        memory_kinds = kinds - {"knowledge", "doc", "category", "store-info"}
        if memory_kinds:
            for memory in self._memories_for(parsed, memory_kinds):
                found[memory.id] = self.render_memory(memory)
        if kinds & {"knowledge", "doc", "category"}:
            docs = [p[1] for p in parsed if p and p[0] == "doc"]
            pool: Iterable[KnowledgeChunk]
            if kinds & {"knowledge", "category"}:
                pool = self.driver._iter_knowledge(500)
            else:
                pool = (c for doc in docs for c in self.driver._get_knowledge(doc))
            for chunk in pool:
                found[chunk.id] = self.render_chunk(chunk)
        if "store-info" in kinds:
            found[wire.STORE_INFO_ID] = self.render_store_info()
        matching = [
            item
            for item in found.values()
            if wanted & {t.strip().lower() for t in item.get("tags", [])}
        ]
        return sorted(matching, key=_memory_order)

    def _memories_for(
        self, parsed: Sequence[tuple[str, Any] | None], kinds: set[str]
    ) -> Iterable[Memory]:
        if kinds <= {"id", "user"}:
            ids = [p[1] for p in parsed if p and p[0] == "id"]
            if ids:
                yield from self.driver._get_memories(ids, None).values()
            for p in parsed:
                if p and p[0] == "user":
                    yield from self._search(MemoryFilter(user_id=p[1]))
            return
        yield from self._search(MemoryFilter())

    def _search(self, memory_filter: MemoryFilter) -> list[Memory]:
        hits = self.driver._search_memories(MemorySearch(memory_filter, None, "recent"))
        return [hit.memory for hit in hits]

    def _by_tag_args(self, args: Any) -> tuple[list[str], int, int]:
        tags = normalize_tag_list(args.getlist("tags") or args.get("tags"))
        if not tags:
            raise ApiError(400, "'tags' query parameter is required")
        limit = parse_int(args.get("limit"), 20, 1, wire.AUTOMEM_BY_TAG_LIMIT)
        offset = parse_int(args.get("offset"), 0, 0, 2**62)
        return tags, limit, offset

    def by_tag(self, args: Any) -> dict[str, Any]:
        """``GET /memory/by-tag``: memories with any of ``tags``, by importance, a page."""
        tags, limit, offset = self._by_tag_args(args)
        matching = self._tagged(tags)
        page = matching[offset : offset + limit]
        return {
            "status": "success",
            "tags": tags,
            "count": len(page),
            "limit": limit,
            "offset": offset,
            "has_more": len(matching) > offset + limit,
            "memories": page,
        }

    def delete_by_tag(self, args: Any) -> dict[str, Any]:
        """``DELETE /memory/by-tag``: every memory with any of ``tags``. Knowledge chunks go
        by whole documents; the store-info memory stays."""
        tags, _, _ = self._by_tag_args(args)
        matching = self._tagged(tags)
        memory_ids = []
        docs: dict[str, int] = defaultdict(int)
        for item in matching:
            block = wire.read_block(item) or {}
            if block.get("kind") == "memory":
                memory_ids.append(str(item["id"]))
            elif block.get("kind") == "knowledge":
                docs[str(block["doc_id"])] += 1
        for doc_id, count in docs.items():
            if count != len(self.driver._get_knowledge(doc_id)):
                raise ApiError(
                    400,
                    f"knowledge chunks are deleted by whole documents; tag "
                    f"{wire.doc_tag(doc_id)!r} selects all of document {doc_id!r}",
                )
        deleted = len(self.driver._delete_memories(memory_ids, None)) if memory_ids else 0
        for doc_id, count in docs.items():
            if self.driver._delete_knowledge(doc_id):
                deleted += count
        return {"status": "success", "tags": tags, "deleted_count": deleted}

    # ------------------------------------------------------------------ recall
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
            start = _timestamp(args.get("start"), "Invalid start time: ")
        if args.get("end"):
            end = _timestamp(args.get("end"), "Invalid end time: ")
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
        body["query_time_ms"] = _elapsed(started)
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
        except _NoMatch:
            return []
        if start is not None:
            fields["since"] = start
        if end is not None:
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
        results = []
        for memory, score in ranked:
            rendered = self.render_memory(memory)
            if not tag_filter.passes(rendered["tags"]):
                continue
            results.append(_result(rendered, score, "vector" if vectors else "trending"))
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
                for hit in self.driver._search_knowledge(vector, max(total, 1), category, text):
                    if hit.chunk.id not in scored or scored[hit.chunk.id][1] < hit.score:
                        scored[hit.chunk.id] = (hit.chunk, float(hit.score))
            ranked = sorted(scored.values(), key=lambda p: (-p[1], p[0].doc_id, p[0].chunk_index))
        else:
            chunks = sorted(
                self.driver._iter_knowledge(1000),
                key=lambda c: (-c.created_at.timestamp(), c.doc_id, c.chunk_index),
            )
            ranked = [(c, 0.5) for c in chunks]
        results = []
        for chunk, score in ranked:
            if (start and chunk.created_at < start) or (end and chunk.created_at > end):
                continue
            rendered = self.render_chunk(chunk)
            if not tag_filter.passes(rendered["tags"]):
                continue
            results.append(_result(rendered, score, "vector" if vectors else "trending"))
            if len(results) == limit:
                break
        return _final_order(results, sort)

    # ------------------------------------------------------------------ associations
    def associate(self, payload: Any) -> tuple[dict[str, Any], int]:
        """``POST /associate``: one link, or ``{"associations": [...]}`` (up to 500)."""
        if not isinstance(payload, dict):
            raise ApiError(400, "JSON body is required")
        if isinstance(payload.get("associations"), list):
            return self._associate_batch(payload["associations"])
        link = self._link(payload)
        return {
            "status": "success",
            "message": f"Association created between {link['memory1_id']} and {link['memory2_id']}",
            "relation_type": link["relation_type"],
            "strength": link["strength"],
            "created_at": link["created_at"],
        }, 201

    def _link(self, item: Mapping[str, Any]) -> dict[str, Any]:
        first = item.get("memory1_id")
        second = item.get("memory2_id")
        first = first.strip() if isinstance(first, str) else ""
        second = second.strip() if isinstance(second, str) else ""
        raw_type = item.get("type") or "RELATES_TO"
        if not isinstance(raw_type, str):
            raise ApiError(400, "'type' must be a string")
        relation = raw_type.strip().upper()
        strength = coerce_unit(item.get("strength", 0.5), "strength")
        if not first or not second:
            raise ApiError(400, "'memory1_id' and 'memory2_id' are required")
        first = valid_memory_id(first, "'memory1_id' must be a valid UUID")
        second = valid_memory_id(second, "'memory2_id' must be a valid UUID")
        if first == second:
            raise ApiError(400, "Cannot associate a memory with itself")
        if relation not in RELATIONSHIP_TYPES:
            raise ApiError(400, f"Relation type must be one of {sorted(RELATIONSHIP_TYPES)}")
        try:
            link = self.driver.associate(first, second, relation, strength)
        except NotFoundError:
            raise ApiError(404, "One or both memories do not exist") from None
        return {
            "memory1_id": first,
            "memory2_id": second,
            "relation_type": relation,
            "strength": strength,
            "created_at": wire.iso(link.created_at),
        }

    def _associate_batch(self, items: list[Any]) -> tuple[dict[str, Any], int]:
        if not items:
            raise ApiError(400, "'associations' must be a non-empty array")
        if len(items) > wire.AUTOMEM_BATCH_LIMIT:
            raise ApiError(400, "Batch size limit is 500 associations per request")
        succeeded, failed = [], []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                failed.append({"index": index, "reason": "Association item must be an object"})
                continue
            try:
                link = self._link(item)
            except ApiError as exc:
                failed.append({"index": index, "reason": exc.message})
                continue
            except ValidationError as exc:
                failed.append({"index": index, "reason": str(exc)})
                continue
            succeeded.append({"index": index, **{k: v for k, v in link.items()}})
        total = len(items)
        return {
            "status": "success" if not failed else "partial_success",
            "created_count": len(succeeded),
            "failed_count": len(failed),
            "succeeded": succeeded,
            "failed": failed,
            "summary": f"{len(succeeded)}/{total} associations created successfully",
        }, (201 if not failed else 207)

    def related(self, memory_id: str, args: Any) -> dict[str, Any]:
        """``GET /memories/<id>/related``: memories linked in either direction, up to
        ``max_depth`` links away, by importance, summarized as AutoMem does (id, type, time,
        importance, the first 160 characters, five tags); ``GET /memory/<id>`` has the rest."""
        allowed = sorted(RELATIONSHIP_TYPES)
        requested = [
            part.strip().upper()
            for part in (args.get("relationship_types") or "").split(",")
            if part.strip()
        ]
        types = [t for t in dict.fromkeys(requested) if t in allowed] or allowed
        depth = parse_int(args.get("max_depth"), 1, 1, 3)
        limit = parse_int(args.get("limit"), RELATED_DEFAULT_LIMIT, 1, wire.AUTOMEM_RELATED_LIMIT)
        try:
            mid = str(uuid.UUID(memory_id))
        except ValueError:
            mid = None
        found: dict[str, Memory] = {}
        if mid is not None and self.driver.get(mid) is not None:
            seen = {mid}
            frontier = [mid]
            for _ in range(depth):
                following = []
                for current in frontier:
                    links: list[RelatedMemory] = self.driver._related(current, None)
                    for link in links:
                        other = link.memory
                        if link.relationship_type in types and other.id not in seen:
                            seen.add(other.id)
                            found[other.id] = other
                            following.append(other.id)
                frontier = following
        ordered = sorted(
            found.values(), key=lambda m: (-m.importance, -m.created_at.timestamp(), m.id)
        )[:limit]
        related = [_summary(self.render_memory(m)) for m in ordered]
        return {
            "status": "success",
            "memory_id": memory_id,
            "count": len(related),
            "related_memories": related,
            "relationship_types": types,
            "max_depth": depth,
            "limit": limit,
        }

    # ------------------------------------------------------------------ health
    def health(self) -> dict[str, Any]:
        """``GET /health`` (never needs the token): AutoMem's shape, plus what serves it."""
        report = self.driver.health_check()
        healthy = report.get("status") == "ok"
        count: int | None = None
        if healthy:
            try:
                count = self.driver.count()
            except Exception as exc:  # a health check reports, it does not fail
                log.warning("counting memories for /health failed: %s", exc)
                healthy = False
        dimension = self.driver.embedder.dimension if healthy else None
        return {
            "status": "healthy" if healthy else "degraded",
            "falkordb": "not used",
            "qdrant": "not used",
            "memory_count": count,
            "vector_count": count,
            "sync_status": "synced" if healthy else "unknown",
            "vector_dimensions": {
                "configured": dimension,
                "effective": dimension,
                "collection": dimension,
                "mismatch": False,
            },
            "enrichment": {
                "status": "disabled",
                "queue_depth": 0,
                "pending": 0,
                "inflight": 0,
                "processed": 0,
                "failed": 0,
            },
            "timestamp": wire.iso(datetime.now(timezone.utc)),
            "graph": None,
            "memory_drivers": {
                "server": "memory-drivers",
                "convention": wire.VERSION,
                "driver": self.driver.name,
                "embedder": self.driver.embedder.name if healthy else None,
                "status": report.get("status"),
                **({"error": report["error"]} if "error" in report else {}),
            },
        }


# ---------------------------------------------------------------------- small helpers
@dataclass
class _Write:
    kind: str
    item: dict[str, Any] | None = None
    chunk: KnowledgeChunk | None = None
    values: dict[str, str] | None = None


def _reserved(tag: str) -> bool:
    return tag.strip().lower().startswith(wire.RESERVED_PREFIX)


def _timestamp(raw: Any, prefix: str) -> datetime:
    try:
        return normalize_timestamp(raw)
    except ValueError as exc:
        raise ApiError(400, f"{prefix}{exc}") from None


def _block_time(block: Mapping[str, Any], key: str) -> datetime | None:
    try:
        return normalize_timestamp(block.get(key))
    except ValueError:
        return None


def from_type(raw: str | None, types: Sequence[str], settings: Any) -> str:
    return wire.from_automem_type(raw, types, settings.memory_default_type)


def coerce_embedding(value: Any, dimension: int) -> list[float] | None:
    """A client's embedding: a list of numbers or a comma-separated string, of the store's
    dimension (AutoMem's ``coerce_embedding``)."""
    if value is None or value == "":
        return None
    if isinstance(value, list):
        parts: list[Any] = value
    elif isinstance(value, str):
        parts = [part.strip() for part in value.split(",") if part.strip()]
    else:
        raise ApiError(400, "Embedding must be a list of floats or a comma-separated string")
    if len(parts) != dimension:
        raise ApiError(400, f"Embedding must contain exactly {dimension} values")
    try:
        numbers = [float(part) for part in parts]
    except (TypeError, ValueError):
        raise ApiError(400, "Embedding must contain numeric values") from None
    if not all(math.isfinite(n) for n in numbers):
        raise ApiError(400, "Embedding must contain numeric values")
    return numbers


def _summary(rendered: Mapping[str, Any]) -> dict[str, Any]:
    """AutoMem's summary of a related memory."""
    summary = {key: rendered[key] for key in ("id", "type", "timestamp", "importance")}
    snippet = str(rendered.get("content") or "").strip()
    if len(snippet) > 160:
        snippet = snippet[:157].rsplit(" ", 1)[0] + "\u2026"
    summary["content"] = snippet
    if rendered.get("tags"):
        summary["tags"] = list(rendered["tags"])[:5]
    return summary


def _elapsed(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


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


# Errors of the driver behind the server, as AutoMem status codes.
DRIVER_ERRORS: tuple[tuple[type[Exception], int], ...] = (
    (ValidationError, 400),
    (NotFoundError, 404),
    (ConflictError, 409),
    (BackendUnavailableError, 503),
    (DriverClosedError, 503),
)
