"""A write-through Redis cache in front of any memory driver.

::

    from memory_drivers.redis import CachedMemoryDriver
    driver = CachedMemoryDriver(SQLiteDriver(), "redis://127.0.0.1:6379/0")
    # or: MEMORY_CACHE=redis, and get_memory_driver() returns the configured driver wrapped

``get`` by id, ``recall``, ``related`` (with a ``user_id``), ``recall_global_knowledge`` and
``get_global_knowledge`` are answered from Redis when the same call was answered before and
nothing it depends on has been written since. Everything else goes to the wrapped driver.

The invariant (docs/redis.md explains it at length): **a cached answer is served only when it
was read from the store after every write acknowledged before the read that serves it.**

The machinery behind it (generation keys, outages of Redis) is :mod:`.generations`; this module
is the driver API on top of it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import TypeAdapter

from .. import metrics
from .. import validation as check
from ..base import BaseMemoryDriver, KnowledgeRecord, KnowledgeSearch, MemoryRecord, MemorySearch
from ..config import Settings
from ..embeddings import Embedder
from ..errors import ConfigurationError, ValidationError
from ..models import (
    Association,
    CleanupResult,
    KnowledgeChunk,
    KnowledgeDocument,
    KnowledgeHit,
    Memory,
    MemoryInput,
    RecallHit,
    RelatedMemory,
    UserSummary,
)
from ..ranking import find_periods
from ..validation import utcnow
from .client import connect, redacted, redis_errors
from .generations import LEDGER_KEY, GenerationCache, arguments_key, valid_user_id

__all__ = ["LEDGER_KEY", "CachedMemoryDriver"]

N = TypeVar("N", int, float)

_RECALL_DEFAULTS: dict[str, Any] = {
    "search": None,
    "now": None,
    "explain": False,
    "memory_types": None,
    "tags": None,
    "tag_mode": "any",
    "since": None,
    "until": None,
    "min_importance": None,
    "metadata": None,
}

_MEMORY: TypeAdapter[Memory | None] = TypeAdapter(Memory | None)
_HITS: TypeAdapter[list[RecallHit]] = TypeAdapter(list[RecallHit])
_RELATED: TypeAdapter[list[RelatedMemory]] = TypeAdapter(list[RelatedMemory])
_KNOWLEDGE_HITS: TypeAdapter[list[KnowledgeHit]] = TypeAdapter(list[KnowledgeHit])
_DOCUMENT: TypeAdapter[KnowledgeDocument | None] = TypeAdapter(KnowledgeDocument | None)


def _number(value: Any, name: str, minimum: float, kind: type[N]) -> N:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= minimum:
        raise ConfigurationError(f"the cache's {name} must be a number >= {minimum}, got {value!r}")
    if kind is int and value != int(value):
        raise ConfigurationError(f"the cache's {name} must be a whole number, got {value!r}")
    return kind(value)


class CachedMemoryDriver(GenerationCache, BaseMemoryDriver):  # type: ignore[override]  # native_async
    """Any driver with a Redis cache in front; the whole public API, same semantics.

    ``redis`` is a ``redis.Redis`` client or a URL (default ``REDIS_URL``); a client built from
    a URL gets ``MEMORY_CACHE_TIMEOUT`` as its socket timeout and is closed with the driver.
    Keys live under ``{REDIS_PREFIX}:cache:{driver name}`` (or ``namespace``): every process
    that writes to the store must use this cache with the same namespace, and two stores must
    not share one.
    """

    def __init__(
        self,
        inner: BaseMemoryDriver,
        redis: Any = None,
        *,
        settings: Settings | None = None,
        namespace: str | None = None,
        ttl: int | None = None,
        timeout: float | None = None,
        retry_interval: float | None = None,
        sync_interval: float | None = None,
    ) -> None:
        if isinstance(inner, CachedMemoryDriver):
            raise ValueError("this driver already has a cache in front of it")
        s = settings or inner.settings
        super().__init__(s)
        self.inner = inner
        metrics.forget(inner)  # this driver reports the stored counts for it
        # The wrapper is the inner driver as far as names go (health, stats, the registry).
        self.__dict__["name"] = inner.name
        self._redis_errors = redis_errors()  # MissingDependencyError without redis-py
        self.ttl = _number(ttl if ttl is not None else s.memory_cache_ttl, "ttl", 1, int)
        self._gen_ttl = self.ttl * 2 + 60
        self.retry_interval = _number(
            retry_interval if retry_interval is not None else s.memory_cache_retry_interval,
            "retry_interval",
            0,
            float,
        )
        self.sync_interval = _number(
            sync_interval if sync_interval is not None else s.memory_cache_sync_interval,
            "sync_interval",
            0,
            float,
        )
        if timeout is not None:
            _number(timeout, "timeout", 0.001, float)
        connect_async = None
        if redis is None or isinstance(redis, str):
            self.url = redacted(redis or s.redis_url)
            timeout = timeout if timeout is not None else s.memory_cache_timeout
            own = functools.partial(connect, redis or s.redis_url, timeout=timeout)
            self._client = own(on_connect=self._connected)
            connect_async = functools.partial(own, on_connect=self._connected, asynchronous=True)
            self._owns_client = True
        else:
            kwargs = getattr(getattr(redis, "connection_pool", None), "connection_kwargs", {})
            self.url = f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
            self._client = redis
            self._owns_client = False
        self.namespace = namespace or f"{s.redis_prefix}:cache:{inner.name}"
        self._init_generations(connect_async)

    @classmethod
    def from_settings(cls, inner: BaseMemoryDriver, settings: Settings) -> CachedMemoryDriver:
        """``inner`` behind the cache the settings describe (``REDIS_URL``, ``MEMORY_CACHE_*``)."""
        return cls(inner, settings=settings)

    # ------------------------------------------------------------------ the embedder
    @property
    def embedder(self) -> Embedder:
        return self.inner.embedder

    # ------------------------------------------------------------------ memories
    def store_many(self, items: Iterable[Mapping[str, Any] | MemoryInput | Memory]) -> list[Memory]:
        self._check_open()
        stored = self._write(lambda: self.inner.store_many(items))
        self._invalidate(users={m.user_id for m in stored}, ids=[m.id for m in stored])
        return stored

    def get(self, memory_id: str, user_id: str | None = None) -> Memory | None:
        self._check_open()
        try:
            mid = check.memory_id(memory_id)
            user = check.identifier(user_id, "user_id", optional=True)
        except ValidationError:
            return self.inner.get(memory_id, user_id)
        memory = self._cached(
            self._key("m", mid),
            [self._gen_all, self._gen_memory(mid)],
            _MEMORY,
            lambda: self.inner.get(mid),
        )
        if memory is not None and user is not None and memory.user_id != user:
            return None
        return memory

    def update(
        self,
        memory_id: str,
        *,
        user_id: str | None = None,
        content: str | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        importance: float | None = None,
        memory_type: str | None = None,
    ) -> Memory:
        self._check_open()
        scope: dict[str, Any] = {"everything": True}
        with contextlib.suppress(ValidationError):
            scope["ids"] = [check.memory_id(memory_id)]
        updated = self._write(
            lambda: self.inner.update(
                memory_id,
                user_id=user_id,
                content=content,
                tags=tags,
                metadata=metadata,
                importance=importance,
                memory_type=memory_type,
            ),
            **scope,
        )
        self._invalidate(users=[updated.user_id], ids=[updated.id])
        return updated

    def delete(self, memory_id: str, user_id: str | None = None) -> bool:
        self._check_open()
        try:
            mid = check.memory_id(memory_id)
            user = check.identifier(user_id, "user_id", optional=True)
        except ValidationError:
            return self.inner.delete(memory_id, user_id)
        owner = user
        if owner is None:  # the owner of an id never changes; the cache is never stale
            found = self.get(mid)
            owner = found.user_id if found is not None else None
        deleted = self._write(lambda: self.inner.delete(mid, user), ids=[mid], everything=True)
        if deleted:
            self._invalidate(users=[owner], ids=[mid], everything=owner is None)
        return deleted

    def recall(
        self,
        user_id: str,
        conversation_id: str | None = None,
        query: str | None = None,
        top_k: int = 10,
        use_vector: bool | None = None,
        exclude_tags: list[str] | None = None,
        **filters: Any,
    ) -> list[RecallHit]:
        self._check_open()

        def load() -> list[RecallHit]:
            return self.inner.recall(
                user_id, conversation_id, query, top_k, use_vector, exclude_tags, **filters
            )

        if self._depends_on_the_clock(query, use_vector, filters):
            return load()
        user = valid_user_id(user_id)
        arguments = {
            **_RECALL_DEFAULTS,
            **filters,
            "conversation_id": conversation_id,
            "query": query,
            "top_k": top_k,
            "use_vector": use_vector,
            "exclude_tags": exclude_tags,
            "ranking": self._ranking_key(),
        }
        digest = arguments_key(arguments)
        if user is None or digest is None:
            return load()
        return self._cached(
            self._key("r", user, digest), [self._gen_all, self._gen_user(user)], _HITS, load
        )

    def _ranking_key(self) -> str:
        """What recall's answer depends on besides its arguments and the data: the ranking
        settings and the reranker. Part of every recall's cache key, so two processes (or two
        openings) ranking differently never share an entry."""
        inner = self.inner
        reranker = inner.reranker.name if inner.reranker is not None else ""
        words = ",".join(sorted(inner.settings.keyword_query_stopwords))
        return (
            f"{inner.ranking}|{inner.context_window}|{inner.settings.recall_search}|"
            f"{inner.settings.rerank_depth}|{reranker}|{words}"
        )

    @property  # type: ignore[override]
    def reranker(self) -> Any:
        """The inner driver's reranker (recall runs there)."""
        inner = self.__dict__.get("inner")
        return inner.reranker if inner is not None else None

    @reranker.setter
    def reranker(self, value: Any) -> None:
        inner = self.__dict__.get("inner")
        if inner is not None:
            inner.reranker = value

    def _depends_on_the_clock(
        self, query: Any, use_vector: bool | None, filters: Mapping[str, Any]
    ) -> bool:
        """A hybrid recall without ``now`` whose answer moves with the current time (recency
        preference, or a time expression in the query) is never cached."""
        search = filters.get("search")
        if filters.get("now") is not None or not isinstance(query, str):
            return False
        if search is None and use_vector is not None:
            return False
        if (search or self.inner.settings.recall_search) != "hybrid":
            return False
        return bool(self.inner.ranking.recency_half_life_days) or bool(
            find_periods(query, utcnow())
        )

    def count(self, user_id: str | None = None) -> int:
        self._check_open()
        return self.inner.count(user_id)

    def iter_memories(
        self, user_id: str | None = None, *, batch_size: int = 500
    ) -> Iterator[Memory]:
        self._check_open()
        return self.inner.iter_memories(user_id, batch_size=batch_size)

    def cleanup(
        self,
        user_id: str | None = None,
        max_age_days: float | None = None,
        min_importance: float | None = None,
        dry_run: bool = True,
    ) -> CleanupResult:
        self._check_open()
        result = self._write(
            lambda: self.inner.cleanup(user_id, max_age_days, min_importance, dry_run)
        )
        if not result.dry_run and result.memories:
            self._invalidate(
                users={m.user_id for m in result.memories}, ids=[m.id for m in result.memories]
            )
        return result

    # ------------------------------------------------------------------ associations
    def associate(
        self,
        memory_id: str,
        related_memory_id: str,
        relationship_type: str = "RELATES_TO",
        strength: float = 0.5,
        user_id: str | None = None,
    ) -> Association:
        self._check_open()
        link = self._write(
            lambda: self.inner.associate(
                memory_id, related_memory_id, relationship_type, strength, user_id
            )
        )
        owner = user_id
        if owner is None:
            source = self.get(link.source_id)
            owner = source.user_id if source is not None else None
        self._invalidate(users=[owner], everything=owner is None)
        return link

    def related(
        self,
        memory_id: str,
        relationship_type: str | None = None,
        user_id: str | None = None,
    ) -> list[RelatedMemory]:
        self._check_open()

        def load() -> list[RelatedMemory]:
            return self.inner.related(memory_id, relationship_type, user_id)

        user = valid_user_id(user_id)
        digest = arguments_key({"memory_id": memory_id, "relationship_type": relationship_type})
        if user is None or digest is None:
            return load()
        return self._cached(
            self._key("l", user, digest), [self._gen_all, self._gen_user(user)], _RELATED, load
        )

    # ------------------------------------------------------------------ global knowledge
    def store_global_knowledge(
        self,
        content: str,
        category: str,
        title: str | None = None,
        doc_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> KnowledgeDocument:
        self._check_open()
        document = self._write(
            lambda: self.inner.store_global_knowledge(
                content, category, title, doc_id, metadata, progress=progress
            ),
            knowledge=True,
        )
        self._invalidate(knowledge=True)
        return document

    def recall_global_knowledge(
        self,
        query: str,
        top_k: int = 5,
        category: str | None = None,
        *,
        search: Literal["hybrid", "vector", "keyword"] | None = None,
    ) -> list[KnowledgeHit]:
        self._check_open()

        def load() -> list[KnowledgeHit]:
            return self.inner.recall_global_knowledge(query, top_k, category, search=search)

        digest = arguments_key(
            {
                "query": query,
                "top_k": top_k,
                "category": category,
                "search": search,
                "ranking": self._ranking_key(),
            }
        )
        if digest is None:
            return load()
        return self._cached(
            self._key("k", digest), [self._gen_all, self._gen_knowledge], _KNOWLEDGE_HITS, load
        )

    def get_global_knowledge(self, doc_id: str) -> KnowledgeDocument | None:
        self._check_open()

        def load() -> KnowledgeDocument | None:
            return self.inner.get_global_knowledge(doc_id)

        digest = arguments_key({"doc_id": doc_id})
        if digest is None:
            return load()
        return self._cached(
            self._key("d", digest), [self._gen_all, self._gen_knowledge], _DOCUMENT, load
        )

    def delete_global_knowledge(self, doc_id: str) -> bool:
        self._check_open()
        deleted = self._write(lambda: self.inner.delete_global_knowledge(doc_id), knowledge=True)
        if deleted:
            self._invalidate(knowledge=True)
        return deleted

    # ------------------------------------------------------------------ operations
    def health_check(self) -> dict[str, Any]:
        """The driver's report with a ``cache`` section. The top-level ``status`` is the
        driver's: an unreachable Redis makes only ``cache.status`` ``degraded``, because
        every call is still answered, correctly, by the driver."""
        if self._closed:
            return {"status": "error", "driver": self.name, "error": "the driver is closed"}
        report = self.inner.health_check()
        try:
            report["cache"] = self.cache_health()
        except Exception as exc:  # a health check reports failures instead of raising them
            report["cache"] = {"status": "degraded", "error": f"{type(exc).__name__}: {exc}"}
        return report

    def stats(self) -> dict[str, Any]:
        self._check_open()
        with self._state:
            counters = dict(self.counters)
        return {**self.inner.stats(), "cache": {"namespace": self.namespace, **counters}}

    def rebuild_index(self, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        self._check_open()
        try:
            return self.inner.rebuild_index(progress)
        finally:
            self._invalidate(everything=True)

    def reembed(self, *, batch_size: int = 256, progress: Any = None) -> dict[str, int]:
        self._check_open()
        try:
            return self.inner.reembed(batch_size=batch_size, progress=progress)
        finally:
            self._invalidate(everything=True)

    def __repr__(self) -> str:
        closed = " closed" if self._closed else ""
        return f"<CachedMemoryDriver {self.name!r} redis={self.url}{closed}>"

    # ------------------------------------------------------------------ primitives
    # The public methods above delegate to the wrapped driver's public methods, so these are
    # only reached by code that calls primitives directly; writes invalidate everything.
    @property  # type: ignore[override]
    def vectors_readable(self) -> bool:  # type: ignore[override]
        return self.inner.vectors_readable

    def _read_store_info(self) -> dict[str, str]:
        return self.inner._read_store_info()

    def _write_store_info(self, values: Mapping[str, str]) -> None:
        self.inner._write_store_info(values)

    def _insert_memories(self, records: Sequence[MemoryRecord]) -> None:
        try:
            self.inner._insert_memories(records)
        finally:
            self._invalidate(everything=True)

    def _get_memories(self, ids: Sequence[str], user_id: str | None) -> dict[str, Memory]:
        return self.inner._get_memories(ids, user_id)

    def _update_memory(
        self,
        memory_id: str,
        user_id: str | None,
        changes: Mapping[str, Any],
        vector: np.ndarray | None,
        terms: str | None,
    ) -> Memory | None:
        try:
            return self.inner._update_memory(memory_id, user_id, changes, vector, terms)
        finally:
            self._invalidate(everything=True)

    def _delete_memories(self, ids: Sequence[str], user_id: str | None) -> list[str]:
        try:
            return self.inner._delete_memories(ids, user_id)
        finally:
            self._invalidate(everything=True)

    def _search_memories(self, search: MemorySearch) -> list[RecallHit]:
        return self.inner._search_memories(search)

    def _count_memories(self, user_id: str | None) -> int:
        return self.inner._count_memories(user_id)

    def _iter_memories(self, user_id: str | None, batch_size: int) -> Iterator[Memory]:
        return self.inner._iter_memories(user_id, batch_size)

    def _user_summaries(self) -> list[UserSummary]:
        return self.inner._user_summaries()

    def _replace_knowledge(self, doc_id: str, records: Sequence[KnowledgeRecord]) -> None:
        try:
            self.inner._replace_knowledge(doc_id, records)
        finally:
            self._invalidate(everything=True)

    def _get_knowledge(self, doc_id: str) -> list[KnowledgeChunk]:
        return self.inner._get_knowledge(doc_id)

    def _delete_knowledge(self, doc_id: str) -> bool:
        try:
            return self.inner._delete_knowledge(doc_id)
        finally:
            self._invalidate(everything=True)

    def _search_knowledge(self, search: KnowledgeSearch) -> list[KnowledgeHit]:
        return self.inner._search_knowledge(search)

    def _iter_knowledge(self, batch_size: int) -> Iterator[KnowledgeChunk]:
        return self.inner._iter_knowledge(batch_size)

    def _upsert_association(self, association: Association) -> Association:
        try:
            return self.inner._upsert_association(association)
        finally:
            self._invalidate(everything=True)

    def _related(self, memory_id: str, relationship_type: str | None) -> list[RelatedMemory]:
        return self.inner._related(memory_id, relationship_type)

    def _iter_associations(self, batch_size: int) -> Iterator[Association]:
        return self.inner._iter_associations(batch_size)

    def _read_vectors(
        self, kind: Literal["memories", "knowledge_chunks"], ids: Sequence[str]
    ) -> dict[str, np.ndarray]:
        return self.inner._read_vectors(kind, ids)

    def _set_vectors(
        self, kind: Literal["memories", "knowledge_chunks"], ids: Sequence[str], vectors: np.ndarray
    ) -> None:
        try:
            self.inner._set_vectors(kind, ids, vectors)
        finally:
            self._invalidate(everything=True)

    def _before_reembed(self) -> None:
        self.inner._before_reembed()

    def _after_reembed(self) -> None:
        self.inner._after_reembed()

    def _health(self) -> dict[str, Any]:
        return self.inner._health()

    def _stats(self) -> dict[str, Any]:
        return self.inner._stats()

    def _close(self) -> None:
        try:
            self.inner.close()
        finally:
            self._redis.close(sync=self._owns_client)
