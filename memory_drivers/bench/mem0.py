"""mem0 (the ``mem0ai`` package, open-source ``Memory``) as a benchmark peer, on the backend of
each of our drivers: FAISS beside sqlite, pgvector beside pgvector, Chroma beside chroma.

mem0 is the memory layer users weigh us against, so it is measured as a user runs it: one
``Memory.add(..., infer=False)`` per memory (user and metadata are per call; ``infer=False``
stores the text as it is, without an LLM), ``Memory.search`` with ``filters`` and its default
``threshold`` (0.1), ``Memory.get`` by id. Its history database (SQLite, one row per add) is
part of it and so of the figures.

Storage is measured, not the model: the ``Memory`` is built with an embedder that loads nothing
(OpenAI's, never called) and its ``embedding_model`` is then replaced by an adapter over the
run's embedder (replayed vectors, or the real model end to end), the same vectors every target
gets. Our item id is kept in the metadata (``item_id``) to map results back for recall@10;
mem0 gives each memory a UUID of its own, which :meth:`get` looks up.

Filters each store can express (``recall_filtered``; otherwise n/a, with the reason in the
notes): mem0's FAISS store compares each filter value with ``==`` (a list means "one of"), so
neither "tag is one of the memory's tags" nor ``created_ts >= since`` can be said; pgvector
translates ``contains`` to ``LIKE`` on the JSON text of ``tags`` (the tag is given with its
quotes, so it matches whole tags only) and ``gte`` to a numeric comparison; on Chroma, mem0
maps ``contains`` (and any operator it does not know, ``$contains`` included) to ``$eq``, and
neither ``$eq`` nor ``$in`` matches an element of a list-valued field, so the tag cannot be
said there either.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..embeddings import Embedder
from .dataset import Item, Query
from .targets import Target, TargetConfig, analyze, database_bytes, directory_bytes, libpq_url

__all__ = ["Mem0ChromaPeer", "Mem0FaissPeer", "Mem0PgVectorPeer", "mem0_embedder"]

#: The metadata key that keeps our item id (mem0 ids are its own UUIDs).
ITEM_ID = "item_id"
#: Memories whose one-by-one ``add`` is timed as mem0's ingest rate (the rest: bulk_load).
TIMED_ADDS = 2000


def mem0_embedder(embedder: Embedder) -> Any:
    """``embedder`` as a mem0 embedding model (``EmbeddingBase``: lists of floats)."""
    from mem0.embeddings.base import EmbeddingBase

    class Adapter(EmbeddingBase):
        def embed(self, text: str, memory_action: str | None = None) -> list[float]:
            vector: list[float] = np.asarray(embedder.embed_query(text), np.float32).tolist()
            return vector

        def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
            vectors: list[list[float]] = np.asarray(
                embedder.embed_documents(texts), np.float32
            ).tolist()
            return vectors

    return Adapter()


class _Mem0Peer(Target):
    kind = "peer"
    #: mem0's name of the vector store
    provider: ClassVar[str]
    #: how the store is set up and what it cannot do, for the report
    note: ClassVar[str]

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        self.memory: Any = None
        #: our item id -> mem0's id
        self.ids: dict[str, str] = {}

    @property
    def directory(self) -> Path:
        return self.config.workdir / self.name

    def vector_store(self) -> dict[str, Any]:
        """The ``vector_store.config`` of mem0's configuration."""
        raise NotImplementedError

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Read when mem0 is first imported: no telemetry, and its home in the job's directory.
        os.environ["MEM0_TELEMETRY"] = "False"
        os.environ["MEM0_DIR"] = str(self.directory / "home")
        logging.getLogger("mem0").setLevel(logging.ERROR)  # "spaCy is not installed", per call
        from mem0 import Memory

        dimension = self.config.embedder.dimension
        self.memory = Memory.from_config(
            {
                "vector_store": {"provider": self.provider, "config": self.vector_store()},
                # Loads nothing and is never called: replaced by the adapter below.
                "embedder": {
                    "provider": "openai",
                    "config": {"api_key": "unused", "embedding_dims": dimension},
                },
                "llm": {"provider": "openai", "config": {"api_key": "unused"}},
                "history_db_path": str(self.directory / "history.db"),
            }
        )
        self.memory.embedding_model = mem0_embedder(self.config.embedder)
        self.notes += [
            self.note,
            "one add(infer=False) per memory, search(filters, top_k, default threshold 0.1); "
            "the run's vectors through a mem0 embedder adapter",
            f"ingest is timed over the first {TIMED_ADDS:,} adds; the rest are the same adds "
            "with the vector store's inserts gathered into one insert per batch (one-by-one "
            "adds of 100k memories take hours)",
        ]

    #: mem0 has no bulk call and its stores write each add on its own (FAISS rewrites its whole
    #: index file each time), so 100k one-by-one adds take hours: ingest is timed over the first
    #: TIMED_ADDS; :meth:`bulk_load` stores the rest.
    timed_ingest_limit = TIMED_ADDS

    def ingest(self, items: Sequence[Item]) -> None:
        self._add(items)

    def bulk_load(self, items: Sequence[Item]) -> None:
        """The same ``add(infer=False)`` calls (so the same records and history rows), with the
        vector store's inserts gathered and written as one batch ``insert``."""
        store = self.memory.vector_store
        gathered: dict[str, list[Any]] = {"vectors": [], "ids": [], "payloads": []}

        def gather(vectors: list[Any], payloads: Any = None, ids: Any = None) -> None:
            gathered["vectors"] += vectors
            gathered["ids"] += ids
            gathered["payloads"] += payloads

        store.insert = gather  # an instance attribute, shadowing the class's method
        try:
            self._add(items)
        finally:
            del store.insert
        store.insert(**gathered)

    def _add(self, items: Sequence[Item]) -> None:
        for item in items:
            metadata = item.metadata()
            del metadata["user_id"]  # mem0 scopes by its own user_id argument
            metadata[ITEM_ID] = item.id
            added = self.memory.add(
                [{"role": "user", "content": item.content}],
                user_id=item.user_id,
                metadata=metadata,
                infer=False,
            )
            self.ids[item.id] = added["results"][0]["id"]

    def _search(self, query: Query, filters: dict[str, Any]) -> list[str]:
        found = self.memory.search(query.text, filters=filters, top_k=self.config.top_k)
        return [str(r["metadata"][ITEM_ID]) for r in found["results"]]

    def recall_vector(self, query: Query) -> list[str]:
        return self._search(query, {"user_id": query.user_id})

    def filters(self, query: Query) -> dict[str, Any] | None:
        """mem0's filter for "the query's user, its tag, created since": None when the store
        cannot express it."""
        return None

    def recall_filtered(self, query: Query) -> list[str] | None:
        where = self.filters(query)
        return None if where is None else self._search(query, where)

    def get(self, memory_id: str) -> bool:
        return self.memory.get(self.ids[memory_id]) is not None

    def close(self) -> None:
        if self.memory is not None:
            self.memory.db.close()
            self.memory = None

    def disk_bytes(self) -> int | None:
        return directory_bytes(self.directory)


class Mem0FaissPeer(_Mem0Peer):
    """mem0 on its FAISS store (``IndexFlatIP``, cosine), beside sqlite."""

    name = "mem0-faiss"
    provider = "faiss"
    note = (
        "FAISS IndexFlatIP (cosine, exact); each insert rewrites the index file and the JSON "
        "docstore; a filtered search fetches 2 x 60 neighbours of the whole index, then keeps "
        "the user's; its filters are equalities, so vector + tag + since is n/a"
    )

    def vector_store(self) -> dict[str, Any]:
        return {
            "collection_name": "bench",
            "path": str(self.directory / "faiss"),
            "distance_strategy": "cosine",
            "embedding_model_dims": self.config.embedder.dimension,
        }


class Mem0PgVectorPeer(_Mem0Peer):
    """mem0 on its pgvector store (JSONB payload, HNSW index by default), beside pgvector."""

    name = "mem0-pgvector"
    provider = "pgvector"
    note = (
        "HNSW (cosine, the default), JSONB payload; search mixes in full-text (BM25-like) "
        "scores from PostgreSQL"
    )

    def vector_store(self) -> dict[str, Any]:
        if not self.config.pg_url:
            raise RuntimeError("the mem0-pgvector target needs a PostgreSQL database URL")
        self._empty_bytes = database_bytes(self.config.pg_url)
        return {
            "collection_name": "bench",
            "connection_string": libpq_url(self.config.pg_url),
            "embedding_model_dims": self.config.embedder.dimension,
        }

    def filters(self, query: Query) -> dict[str, Any]:
        # LIKE on the JSON text of the list: with its quotes, the tag matches whole tags only.
        return {
            "user_id": query.user_id,
            "tags": {"contains": f'"{query.tag}"'},
            "created_ts": {"gte": query.since_ts},
        }

    def after_ingest(self) -> None:
        assert self.config.pg_url
        analyze(self.config.pg_url)

    def close(self) -> None:
        store = self.memory.vector_store if self.memory is not None else None
        super().close()
        if store is not None:
            store.connection_pool.close()

    def disk_bytes(self) -> int:
        assert self.config.pg_url
        return (
            database_bytes(self.config.pg_url) - self._empty_bytes + directory_bytes(self.directory)
        )


class Mem0ChromaPeer(_Mem0Peer):
    """mem0 on Chroma (embedded persistent client, collection defaults), beside chroma."""

    name = "mem0-chroma"
    provider = "chroma"
    note = (
        "embedded persistent client, collection defaults (HNSW, l2); mem0 turns a contains "
        "filter into $eq, which matches no element of the tags list, so vector + tag + since "
        "is n/a"
    )

    def vector_store(self) -> dict[str, Any]:
        return {"collection_name": "bench", "path": str(self.directory / "chroma")}
