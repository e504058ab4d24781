"""The LangChain vector stores a user would pick instead of each driver, as benchmark targets.

Each gets the same texts, ids and vectors as our driver (through the same replay embedder,
wrapped as LangChain ``Embeddings``), with the memory's fields as metadata
(:meth:`~memory_drivers.bench.dataset.Item.metadata`), loaded with ``add_texts`` in the same
batches, and queried with ``similarity_search`` and the store's own metadata filter. Defaults are
the ones the LangChain documentation shows; where the benchmark had to choose, the choice is
recorded in the target's notes and so in the report.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..embeddings import Embedder
from .dataset import Item, Query
from .targets import (
    Target,
    TargetConfig,
    analyze,
    database_bytes,
    directory_bytes,
    sqlalchemy_psycopg_url,
)

__all__ = ["ChromaPeer", "FaissPeer", "PGVectorPeer", "langchain_embeddings"]

warnings.filterwarnings("ignore", message=".*langchain-community.*", category=DeprecationWarning)


def langchain_embeddings(embedder: Embedder) -> Any:
    """``embedder`` as LangChain ``Embeddings`` (lists of floats, as the interface requires)."""
    from langchain_core.embeddings import Embeddings

    class Adapter(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            vectors = np.asarray(embedder.embed_documents(texts), dtype=np.float32)
            result: list[list[float]] = vectors.tolist()
            return result

        def embed_query(self, text: str) -> list[float]:
            result: list[float] = np.asarray(embedder.embed_query(text), dtype=np.float32).tolist()
            return result

    return Adapter()


class _Peer(Target):
    kind = "peer"

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        self.embeddings = langchain_embeddings(config.embedder)
        self.store: Any = None

    def ingest(self, items: Sequence[Item]) -> None:
        self.store.add_texts(
            [i.content for i in items],
            metadatas=[i.metadata() for i in items],
            ids=[i.id for i in items],
        )

    def _search(self, query: Query, where: Any, **kwargs: Any) -> list[str]:
        docs = self.store.similarity_search(query.text, k=self.config.top_k, filter=where, **kwargs)
        return [str(d.id) for d in docs]

    def get(self, memory_id: str) -> bool:
        return bool(self.store.get_by_ids([memory_id]))


class FaissPeer(_Peer):
    """``langchain_community.vectorstores.FAISS`` on a flat (exact) L2 index, as in the LangChain
    docs; saved with ``save_local`` at the end of the load (timed: it is not on disk before).

    Its metadata filter runs after the search, over the ``fetch_k`` nearest neighbours of the
    whole index: a user's memories beyond them are never seen.
    """

    name = "langchain-faiss"

    @property
    def directory(self) -> Path:
        return self.config.workdir / "faiss"

    def open(self) -> None:
        import faiss
        from langchain_community.docstore.in_memory import InMemoryDocstore
        from langchain_community.vectorstores import FAISS

        self.store = FAISS(
            embedding_function=self.embeddings,
            index=faiss.IndexFlatL2(self.config.embedder.dimension),
            docstore=InMemoryDocstore(),
            index_to_docstore_id={},
        )
        self.notes.append(
            "IndexFlatL2 (exact), filter applied after the search, "
            f"fetch_k={self.config.faiss_fetch_k}"
        )

    def finish_ingest(self) -> None:
        self.store.save_local(str(self.directory))

    def recall_vector(self, query: Query) -> list[str]:
        return self._search(query, {"user_id": query.user_id}, fetch_k=self.config.faiss_fetch_k)

    def recall_filtered(self, query: Query) -> list[str]:
        user, tag, since = query.user_id, query.tag, query.since_ts

        def where(m: dict[str, Any]) -> bool:
            return bool(m["user_id"] == user and tag in m["tags"] and m["created_ts"] >= since)

        return self._search(query, where, fetch_k=self.config.faiss_fetch_k)

    def close(self) -> None:
        self.store = None

    def disk_bytes(self) -> int:
        return directory_bytes(self.directory)


class PGVectorPeer(_Peer):
    """``langchain_postgres.PGVector`` (JSONB metadata, cosine distance), created as the LangChain
    docs show: it makes no vector index, so every search scans the collection exactly."""

    name = "langchain-pgvector"

    def open(self) -> None:
        from langchain_postgres import PGVector

        if not self.config.pg_url:
            raise RuntimeError("the langchain-pgvector target needs a PostgreSQL database URL")
        self._empty_bytes = database_bytes(self.config.pg_url)
        self.store = PGVector(
            embeddings=self.embeddings,
            connection=sqlalchemy_psycopg_url(self.config.pg_url),
            collection_name="bench",
            embedding_length=self.config.embedder.dimension,
            use_jsonb=True,
        )
        self.notes.append("use_jsonb=True, no vector index (the default), exact scan")

    def after_ingest(self) -> None:
        assert self.config.pg_url
        analyze(self.config.pg_url)

    def recall_vector(self, query: Query) -> list[str]:
        return self._search(query, {"user_id": {"$eq": query.user_id}})

    def recall_filtered(self, query: Query) -> list[str]:
        # jsonpath comparisons unwrap arrays, so "tags == tag" means "tag is one of tags".
        where = {
            "$and": [
                {"user_id": {"$eq": query.user_id}},
                {"tags": {"$eq": query.tag}},
                {"created_ts": {"$gte": query.since_ts}},
            ]
        }
        return self._search(query, where)

    def close(self) -> None:
        if self.store is not None:
            self.store._engine.dispose()
            self.store = None

    def disk_bytes(self) -> int:
        assert self.config.pg_url
        return database_bytes(self.config.pg_url) - self._empty_bytes


class ChromaPeer(_Peer):
    """``langchain_chroma.Chroma`` on an embedded persistent client (telemetry off), with the
    collection's defaults (HNSW, L2 distance: the same order as cosine on unit vectors)."""

    name = "langchain-chroma"

    @property
    def directory(self) -> Path:
        return self.config.workdir / "langchain-chroma"

    def open(self) -> None:
        import chromadb
        from chromadb.config import Settings as ChromaSettings
        from langchain_chroma import Chroma

        self.client: Any = chromadb.PersistentClient(
            path=str(self.directory), settings=ChromaSettings(anonymized_telemetry=False)
        )
        self.store = Chroma(
            collection_name="bench", embedding_function=self.embeddings, client=self.client
        )
        self.notes.append("embedded PersistentClient, collection defaults (HNSW, l2)")

    def recall_vector(self, query: Query) -> list[str]:
        return self._search(query, {"user_id": query.user_id})

    def recall_filtered(self, query: Query) -> list[str]:
        where = {
            "$and": [
                {"user_id": query.user_id},
                {"tags": {"$contains": query.tag}},
                {"created_ts": {"$gte": query.since_ts}},
            ]
        }
        return self._search(query, where)

    def close(self) -> None:
        self.store = None
        client, self.client = self.client, None
        if client is not None:
            client.close()

    def disk_bytes(self) -> int:
        return directory_bytes(self.directory)
