"""The memory routes: ``POST /memory``, ``POST /memory/batch``, ``GET``/``PATCH``/``DELETE
/memory/<id>`` and ``GET``/``DELETE /memory/by-tag``."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .. import automem_wire as wire
from .. import validation as check
from ..base import KnowledgeRecord
from ..errors import ValidationError
from ..models import KnowledgeChunk, Memory, MemoryFilter
from ..text import document_terms
from .core import ServiceBase
from .parsing import (
    ApiError,
    block_time,
    coerce_embedding,
    coerce_unit,
    elapsed_ms,
    from_type,
    normalize_tag_list,
    normalize_tags,
    parse_int,
    reserved_tag,
    timestamp,
    valid_memory_id,
)

__all__ = ["MemoryRoutes"]


@dataclass
class _Write:
    kind: str
    item: dict[str, Any] | None = None
    chunk: KnowledgeChunk | None = None
    values: dict[str, str] | None = None


def _memory_order(item: Mapping[str, Any]) -> tuple[float, float, str]:
    """``/memory/by-tag``'s order: importance, then newest, then id."""
    created = datetime.fromisoformat(item["timestamp"]).timestamp()
    return (-float(item.get("importance") or 0.0), -created, str(item["id"]))


class MemoryRoutes(ServiceBase):
    """Storing, reading, changing and deleting memories (and chunks, and the store info)."""

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
        tags = [t for t in normalize_tags(payload.get("tags")) if not reserved_tag(t)]
        importance = coerce_unit(payload.get("importance"))
        raw_type = payload.get("type")
        if raw_type is not None and not isinstance(raw_type, str):
            raise fail("'type' must be a string")
        if payload.get("confidence") is not None:
            coerce_unit(payload.get("confidence"), "confidence")
        for name in ("t_valid", "t_invalid", "last_accessed"):
            if payload.get(name):
                timestamp(payload[name], name)
        coerce_embedding(payload.get("embedding"), self.driver.embedder.dimension)
        created = (
            timestamp(payload["timestamp"], "timestamp", prefix="")  # AutoMem's bare message
            if payload.get("timestamp")
            else None
        )
        updated = (
            timestamp(payload["updated_at"], "updated_at") if payload.get("updated_at") else None
        )
        if kind == "store_info":
            values = block.get("values") if isinstance(block, dict) else None
            if not isinstance(values, dict):
                raise fail("the store-info block has no values")
            return _Write("store_info", values={str(k): str(v) for k, v in values.items()})
        if kind == "knowledge":
            assert isinstance(block, dict)
            if block.get("created_at"):
                created = timestamp(block["created_at"], f"metadata.{wire.BLOCK_KEY}.created_at")
            full = block.get("content")
            if not (isinstance(full, str) and full.strip().startswith(content)):
                full = content
            try:
                chunk = wire.chunk_from_block(
                    {
                        **block,
                        "content": full,
                        "metadata": metadata,
                        "created_at": created or check.utcnow(),
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
            created = created or block_time(block, "created_at")
            updated = updated or block_time(block, "updated_at")
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
            records = [
                KnowledgeRecord(c, vectors[i], document_terms(c.content)) for i, c in enumerate(new)
            ]
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
        body["query_time_ms"] = elapsed_ms(started)
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
            "query_time_ms": elapsed_ms(started),
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
            changes["tags"] = [
                t for t in normalize_tag_list(payload["tags"]) if not reserved_tag(t)
            ]
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
            created = timestamp(payload["timestamp"], "timestamp")
            if created != current.created_at:
                raise ApiError(
                    400,
                    "changing 'timestamp' (when the memory was created) is not supported by "
                    "this server",
                )
        if payload.get("updated_at"):
            changes["updated_at"] = timestamp(payload["updated_at"], "updated_at")
        if payload.get("confidence") is not None:
            coerce_unit(payload["confidence"], "confidence")
        for name in ("t_valid", "t_invalid", "last_accessed"):
            if payload.get(name):
                timestamp(payload[name], name)
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
