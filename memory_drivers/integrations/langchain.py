"""LangChain over any memory-drivers driver: a ``VectorStore``, a retriever, and embeddings in
both directions.

::

    from memory_drivers import get_memory_driver
    from memory_drivers.integrations.langchain import MemoryRetriever, MemoryVectorStore

    store = MemoryVectorStore(get_memory_driver(), user_id="alice")
    store.add_texts(["Alice drinks green tea"], metadatas=[{"source": "chat"}], ids=["tea"])
    store.similarity_search_with_score("what does Alice drink?", k=1)   # [(Document, score)]
    MemoryRetriever(driver=get_memory_driver(), user_id="alice", k=3, search="vector")

How documents map onto memories (docs/integrations.md):

- One store (or retriever) acts for one user (``user_id``): it sees and writes only that user's
  memories, through the driver's scoping.
- ``page_content`` is the memory's content, ``metadata`` its metadata (a JSON object, read back
  exactly). ``tags``, ``memory_type``, ``importance`` and ``conversation_id`` are keyword
  arguments of ``add_texts``/``add_documents``; the store's ``tags`` are added to every
  document it writes.
- Ids are kept. A document id that is a UUID in canonical form is the memory's id; any other id
  (``"1"``, ``"doc-7"``) becomes a memory id derived from the user and the id (UUID 5) and is
  kept in the memory's tag ``langchain-id:<id>``. Documents without ids get new memory ids.
  Adding an id that exists replaces that memory's content, metadata and tags (``update``).
- Search is ``recall``: ``search="hybrid"`` (the default, ``RECALL_SEARCH``), ``"vector"`` or
  ``"keyword"``; ``filter`` (LangChain's name) is the metadata filter, and recall's own filters
  are keyword arguments (``tags``, ``tag_mode``, ``exclude_tags``, ``memory_types``, ``since``,
  ``until``, ``min_importance``, ``conversation_id``, ``now``). Scores are recall's, as
  docs/semantics.md defines them: higher is better in every mode.
- ``similarity_search_with_relevance_scores`` runs vector search, and its score is the cosine
  similarity (LangChain's cosine relevance, ``1 - cosine distance``; in [-1, 1]).
- Async methods are LangChain's defaults: the sync method in the event loop's executor.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..base import BaseMemoryDriver, SearchMode
from ..errors import MissingDependencyError, ValidationError
from ..models import Memory, RecallHit
from ..validation import content as check_content
from ..validation import metadata as check_metadata
from ..validation import tags as check_tags

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.vectorstores import VectorStore
    from pydantic import ConfigDict
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise MissingDependencyError(
        f"memory_drivers.integrations.langchain needs langchain-core ({exc}). "
        'Install with: pip install "memory-drivers[langchain]"'
    ) from exc

__all__ = [
    "ID_TAG_PREFIX",
    "DriverEmbeddings",
    "LangChainEmbedder",
    "MemoryRetriever",
    "MemoryVectorStore",
    "document_id",
    "memory_id_for",
    "to_document",
]

#: The tag that keeps a document id which is not a canonical UUID.
ID_TAG_PREFIX = "langchain-id:"
_ID_NAMESPACE = uuid.UUID("6f1c1f0e-3a52-5d8e-9a4e-2b7c0d9e4f11")


def memory_id_for(user_id: str, document_id: str) -> str:
    """The memory id of ``document_id`` in ``user_id``'s memories: the id itself when it is a
    canonical UUID, else a UUID 5 of the user and the id."""
    try:
        if str(uuid.UUID(document_id)) == document_id:
            return document_id
    except ValueError:
        pass
    return str(uuid.uuid5(_ID_NAMESPACE, f"{user_id}\n{document_id}"))


def document_id(memory: Memory) -> str:
    """The document id of ``memory``: the id its ``langchain-id:`` tag keeps, else its own."""
    for tag in memory.tags:
        if tag.startswith(ID_TAG_PREFIX):
            return tag[len(ID_TAG_PREFIX) :]
    return memory.id


def to_document(memory: Memory) -> Document:
    """``memory`` as a LangChain document: its content, its metadata, its document id."""
    return Document(id=document_id(memory), page_content=memory.content, metadata=memory.metadata)


def _user_tags(memory: Memory) -> list[str]:
    return [t for t in memory.tags if not t.startswith(ID_TAG_PREFIX)]


class LangChainEmbedder:
    """A LangChain ``Embeddings`` as a memory-drivers embedder (``Driver(embedder=...)``).

    ``name`` identifies the vector space in the store's stamp (default: the class and its
    ``model`` attribute, when it has one); ``dimension`` is measured with one query when not
    given.
    """

    def __init__(
        self, embeddings: Embeddings, *, name: str | None = None, dimension: int | None = None
    ) -> None:
        self.embeddings = embeddings
        model = getattr(embeddings, "model", None) or getattr(embeddings, "model_name", None)
        self._name = name or f"langchain:{type(embeddings).__name__}" + (
            f":{model}" if isinstance(model, str) else ""
        )
        self._dimension = dimension

    @property
    def name(self) -> str:
        return self._name

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = len(self.embeddings.embed_query("dimension"))
        return self._dimension

    def embed_documents(self, texts: Sequence[str]) -> Any:
        return self.embeddings.embed_documents(list(texts))

    def embed_query(self, text: str) -> Any:
        return self.embeddings.embed_query(text)


class DriverEmbeddings(Embeddings):
    """A driver's embedder as LangChain ``Embeddings`` (what :attr:`MemoryVectorStore.embeddings`
    returns when the driver's embedder is not a LangChain one)."""

    def __init__(self, driver: BaseMemoryDriver) -> None:
        self.driver = driver

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return np.asarray(self.driver.embedder.embed_documents(texts), dtype=float).tolist()

    def embed_query(self, text: str) -> list[float]:
        return np.asarray(self.driver.embedder.embed_query(text), dtype=float).ravel().tolist()


class MemoryVectorStore(VectorStore):
    """A LangChain ``VectorStore`` over ``driver``, holding ``user_id``'s memories.

    ``tags`` are added to every document this store writes; ``search`` is the default search
    mode of its similarity searches (default: the driver's ``RECALL_SEARCH``).
    """

    def __init__(
        self,
        driver: BaseMemoryDriver,
        user_id: str,
        *,
        tags: Sequence[str] | None = None,
        search: SearchMode | None = None,
    ) -> None:
        from ..validation import identifier

        self.driver = driver
        self.user_id = identifier(user_id, "user_id")
        self.tags = check_tags(list(tags) if tags is not None else None, limits=driver.limits)
        self.search_mode = search

    @property
    def embeddings(self) -> Embeddings:
        embedder = self.driver.embedder
        if isinstance(embedder, LangChainEmbedder):
            return embedder.embeddings
        return DriverEmbeddings(self.driver)

    # ------------------------------------------------------------------ writes
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Store ``texts`` as memories and return their document ids.

        Keyword arguments: ``tags`` (added to the store's), ``memory_type``, ``importance`` and
        ``conversation_id``, for every text. An id that exists is replaced. Every text is
        checked before anything is written; new memories are written in one transaction.
        """
        texts = list(texts)
        options = _write_options(kwargs)
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValidationError(f"{len(metadatas)} metadatas for {len(texts)} texts")
        if ids is not None and len(ids) != len(texts):
            raise ValidationError(f"{len(ids)} ids for {len(texts)} texts")
        doc_ids = [
            i if i is not None else str(uuid.uuid4())
            for i in (ids if ids is not None else [None] * len(texts))
        ]
        for doc in doc_ids:
            if not isinstance(doc, str) or not doc:
                raise ValidationError(f"document ids must be non-empty strings, got {doc!r}")
        if len(set(doc_ids)) != len(doc_ids):
            duplicate = next(i for i in doc_ids if doc_ids.count(i) > 1)
            raise ValidationError(f"the id {duplicate!r} appears twice in one call")
        extra_tags = check_tags(options.pop("tags", None), limits=self.driver.limits)
        items = []
        for index, text in enumerate(texts):
            doc = doc_ids[index]
            mid = memory_id_for(self.user_id, doc)
            tags = list(dict.fromkeys([*self.tags, *extra_tags]))
            if mid != doc:
                tags.append(ID_TAG_PREFIX + doc)
            items.append(
                {
                    "id": mid,
                    "user_id": self.user_id,
                    "content": text,
                    "metadata": metadatas[index] if metadatas is not None else None,
                    "tags": tags,
                    **options,
                }
            )
        given = set(ids or [])  # ids made here are new; only given ones may exist
        existing = {
            item["id"]
            for item, doc in zip(items, doc_ids, strict=True)
            if doc in given and self.driver.get(item["id"], self.user_id) is not None
        }
        limit = self.driver.settings.memory_max_content_length
        for index, item in enumerate(items):  # the replacements are checked before any write
            if item["id"] in existing:
                try:
                    check_content(item["content"], limit)
                    check_metadata(item["metadata"], limits=self.driver.limits)
                    check_tags(item["tags"], limits=self.driver.limits)
                except ValidationError as exc:
                    raise ValidationError(f"text #{index}: {exc}; nothing was stored") from None
        self.driver.store_many([item for item in items if item["id"] not in existing])
        for item in items:
            if item["id"] in existing:
                self.driver.update(
                    item["id"],
                    user_id=self.user_id,
                    content=item["content"],
                    tags=item["tags"],
                    metadata=item["metadata"] or {},
                    importance=item.get("importance"),
                    memory_type=item.get("memory_type"),
                )
        return doc_ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete the memories of these document ids (missing ones are ignored)."""
        if ids is None:
            raise ValidationError(
                "delete needs the ids to delete; this store never deletes all of a user's "
                "memories at once"
            )
        if kwargs:
            raise ValidationError(f"unknown argument {sorted(kwargs)[0]!r} of delete")
        for doc in ids:
            self.driver.delete(memory_id_for(self.user_id, doc), self.user_id)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents with these ids, in that order; missing ones are left out."""
        found = []
        for doc in ids:
            memory = self.driver.get(memory_id_for(self.user_id, doc), self.user_id)
            if memory is not None:
                found.append(to_document(memory))
        return found

    # ------------------------------------------------------------------ search
    def recall(self, query: str, k: int = 4, **kwargs: Any) -> list[RecallHit]:
        """``driver.recall`` for this store's user; ``filter`` is the metadata filter."""
        if "filter" in kwargs:
            if "metadata" in kwargs:
                raise ValidationError("give filter or metadata (the same filter), not both")
            kwargs["metadata"] = kwargs.pop("filter")
        kwargs.setdefault("search", self.search_mode)
        return self.driver.recall(self.user_id, query=query, top_k=k, **kwargs)

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """The ``k`` documents that best answer ``query`` (see :meth:`recall`)."""
        return [to_document(hit.memory) for hit in self.recall(query, k, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Documents with recall's scores (higher is better; docs/semantics.md)."""
        return [
            (to_document(h.memory), float(h.score or 0.0)) for h in self.recall(query, k, **kwargs)
        ]

    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Vector search; the relevance is the cosine similarity (1 - cosine distance)."""
        if kwargs.get("search", "vector") != "vector":
            raise ValidationError(
                "relevance scores are cosine similarities, from vector search; use "
                "similarity_search_with_score for hybrid or keyword scores"
            )
        kwargs["search"] = "vector"
        return self.similarity_search_with_score(query, k, **kwargs)

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[Document]:
        """Not supported: recall searches by text (its hybrid and keyword modes need the
        words). Use ``similarity_search(query, search="vector")``."""
        raise NotImplementedError(
            "memory-drivers recalls by text, not by a vector: use "
            'similarity_search(query, search="vector") for cosine similarity'
        )

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        driver: BaseMemoryDriver | None = None,
        user_id: str | None = None,
        **kwargs: Any,
    ) -> MemoryVectorStore:
        """A store over ``driver`` (required) for ``user_id`` (required), with ``texts``
        added. ``embedding`` must be the driver's own (the driver embeds every memory)."""
        if driver is None or user_id is None:
            raise ValidationError(
                "MemoryVectorStore.from_texts needs driver= and user_id=; build the driver with "
                "embedder=LangChainEmbedder(embedding) to embed with a LangChain model"
            )
        embedder = driver.embedder
        if isinstance(embedder, LangChainEmbedder) and embedder.embeddings is not embedding:
            raise ValidationError("embedding is not the driver's: the driver embeds every memory")
        store_options = {k: kwargs.pop(k) for k in ("tags", "search") if k in kwargs}
        store = cls(driver, user_id, **store_options)
        store.add_texts(texts, metadatas, ids=ids, **kwargs)
        return store


def _write_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    known = ("tags", "memory_type", "importance", "conversation_id")
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValidationError(
            f"unknown argument {unknown[0]!r} of add_texts; known: {', '.join(known)}"
        )
    return {k: v for k, v in kwargs.items() if v is not None}


class MemoryRetriever(BaseRetriever):
    """A LangChain retriever: ``driver.recall`` for ``user_id``, ``k`` documents.

    ``search`` picks the mode (``hybrid``, ``vector``, ``keyword``; default ``RECALL_SEARCH``),
    ``filters`` are recall's filters (``tags``, ``metadata``, ``since``, ...). ``invoke(query,
    k=..., search=..., **filters)`` overrides them for one call.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    driver: BaseMemoryDriver
    user_id: str
    k: int = 4
    search: SearchMode | None = None
    filters: dict[str, Any] = {}

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k = kwargs.pop("k", self.k)
        search = kwargs.pop("search", self.search)
        options = {**self.filters, **kwargs}
        hits = self.driver.recall(self.user_id, query=query, top_k=k, search=search, **options)
        return [to_document(hit.memory) for hit in hits]
