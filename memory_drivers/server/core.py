"""What every group of routes shares: the driver, and how memories, chunks and the store info
are shown to AutoMem clients."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any, TypeVar

import numpy as np

from .. import automem_wire as wire
from .. import validation as check
from ..base import BaseMemoryDriver, MemorySearch
from ..embeddings import check_vectors
from ..errors import EmbeddingError
from ..models import KnowledgeChunk, Memory, MemoryFilter
from .parsing import ApiError, coerce_embedding
from .responses import has_surrogates, replace_surrogates

__all__ = ["ServiceBase"]

log = logging.getLogger("memory_drivers.server")

Record = TypeVar("Record", Memory, KnowledgeChunk)

#: The text fields of memories and chunks (a record's ids are UUIDs).
_TEXT_FIELDS = (
    "user_id",
    "conversation_id",
    "doc_id",
    "category",
    "title",
    "content",
    "memory_type",
    "tags",
    "metadata",
    "source",
)


def _servable(record: Record) -> Record:
    """``record``, or a copy with U+FFFD for text UTF-8 cannot encode (a lone surrogate the
    store already held), so that one bad record never makes every answer that reaches it a
    500. The server refuses such text in requests; other writers of the store may not."""
    present = {f: getattr(record, f) for f in _TEXT_FIELDS if hasattr(record, f)}
    if not has_surrogates(present):
        return record
    log.warning("%s holds text that is not valid Unicode; shown with U+FFFD", record.id)
    return record.model_copy(update=replace_surrogates(present))


class ServiceBase:
    """The driver behind the routes, and how its records look in AutoMem's shape."""

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
            {
                "to": r.memory.id,
                "type": r.relationship_type,
                "strength": r.strength,
                **({"created_at": wire.iso(r.created_at)} if r.created_at else {}),
            }
            for r in self.driver._related(memory_id, None)
            if r.direction == "outgoing"
        ]

    def render_memory(self, memory: Memory, *, links: bool = False) -> dict[str, Any]:
        """A memory as AutoMem shows it (a graph node), the block included."""
        memory = _servable(memory)
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
        chunk = _servable(chunk)
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

    def _search(self, memory_filter: MemoryFilter) -> list[Memory]:
        hits = self.driver._search_memories(MemorySearch(memory_filter, None, "recent"))
        return [hit.memory for hit in hits]
