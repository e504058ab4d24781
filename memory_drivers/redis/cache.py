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

How: every cached answer depends on a few *generation* keys (``gen:all``; the user's
``gen:u:<user>``; the memory's ``gen:m:<id>``; ``gen:k`` for knowledge). A generation holds a
random token. A read (1) fetches the current tokens of its generations together with the cached
entry, in one atomic script, (2) serves the entry if it was stamped with exactly those tokens,
(3) otherwise reads the driver and stores the answer stamped with the tokens of step 1. A write
(1) writes to the driver, (2) replaces the tokens of every generation it affects with new random
ones, and only then returns. Tokens are never reused, so an entry filled from a read that raced
with a write carries a token that no later read will ever see again; a lost (evicted, expired)
generation key comes back with a new token, which invalidates rather than revives old entries.

When Redis is unreachable, calls go straight to the driver (nothing fails because of the cache),
the cache is left alone for ``MEMORY_CACHE_RETRY_INTERVAL`` seconds, then one ``PING`` decides
whether to use it again. A write whose invalidation cannot reach Redis is recorded twice: in this
process, and in the store itself (a ``cache_outage`` stamp via the driver's store info). Before
the cache is used again, ``gen:all`` gets a new token if either says so, which invalidates
everything cached before the outage; other processes check the store's stamp when they notice
the outage themselves, whenever they open a new connection to Redis, and at least every
``MEMORY_CACHE_SYNC_INTERVAL`` seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import TypeAdapter

from .. import validation as check
from ..base import BaseMemoryDriver, KnowledgeRecord, MemoryRecord, MemorySearch
from ..config import Settings
from ..embeddings import Embedder
from ..errors import (
    ConfigurationError,
    ConflictError,
    DriverClosedError,
    EmbeddingError,
    NotFoundError,
    ValidationError,
)
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
)
from .client import connect, redacted, redis_errors

__all__ = ["LEDGER_KEY", "CachedMemoryDriver"]

log = logging.getLogger(__name__)

T = TypeVar("T")
N = TypeVar("N", int, float)

#: The store-info key in which a write that could not invalidate the cache leaves a new token.
LEDGER_KEY = "cache_outage"

#: Errors after which, by the shared semantics, nothing was written: no invalidation needed.
NOTHING_WRITTEN: tuple[type[Exception], ...] = (
    ValidationError,
    EmbeddingError,
    NotFoundError,
    ConflictError,
    DriverClosedError,
)

#: Answers larger than this (JSON bytes) are not cached.
MAX_ENTRY_BYTES = 4 * 1024 * 1024

_RECALL_DEFAULTS: dict[str, Any] = {
    "memory_types": None,
    "tags": None,
    "tag_mode": "any",
    "since": None,
    "until": None,
    "min_importance": None,
    "metadata": None,
}

# KEYS: generation keys..., then the entry. ARGV: a fresh token, the generations' TTL.
# Returns the current tokens joined by "|" (creating missing generations with new tokens) and
# the entry, read atomically.
_READ = """
local stamps = {}
for i = 1, #KEYS - 1 do
  local token = redis.call('GET', KEYS[i])
  if not token then
    token = ARGV[1] .. '.' .. i
    redis.call('SET', KEYS[i], token, 'EX', ARGV[2])
  end
  stamps[i] = token
end
return {table.concat(stamps, '|'), redis.call('GET', KEYS[#KEYS])}
"""

# KEYS: gen:all, the key holding the last store outage token dealt with.
# ARGV: the store's outage token ('' if none), a fresh token, the TTL, '1' to bump regardless.
_RECONCILE = """
if ARGV[4] == '1' or (ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  if ARGV[1] ~= '' then redis.call('SET', KEYS[2], ARGV[1]) end
  return 1
end
return 0
"""

_MEMORY: TypeAdapter[Memory | None] = TypeAdapter(Memory | None)
_HITS: TypeAdapter[list[RecallHit]] = TypeAdapter(list[RecallHit])
_RELATED: TypeAdapter[list[RelatedMemory]] = TypeAdapter(list[RelatedMemory])
_KNOWLEDGE_HITS: TypeAdapter[list[KnowledgeHit]] = TypeAdapter(list[KnowledgeHit])
_DOCUMENT: TypeAdapter[KnowledgeDocument | None] = TypeAdapter(KnowledgeDocument | None)


class _Uncacheable(Exception):
    """An argument of a type the cache key cannot represent exactly: the call bypasses it."""


def _canon(value: Any) -> Any:
    """An exact, JSON-able image of an argument: two arguments get the same image only if they
    are equal values of the same types. Anything else is :class:`_Uncacheable`."""
    kind = type(value)
    if value is None or kind is str:
        return value
    if kind is bool:
        return {"b": value}
    if kind is int:
        return {"i": str(value)}
    if kind is float:
        return {"f": value.hex()}
    if kind is list or kind is tuple:
        return {"l" if kind is list else "t": [_canon(v) for v in value]}
    if kind is dict:
        if not all(type(k) is str for k in value):
            raise _Uncacheable
        return {"d": [[k, _canon(value[k])] for k in sorted(value)]}
    if kind is datetime:
        return {"dt": value.isoformat(), "fold": value.fold}
    raise _Uncacheable


def _digest(arguments: Mapping[str, Any]) -> str | None:
    """A key for a call's arguments, or None when they cannot be represented exactly."""
    try:
        image = _canon(dict(arguments))
    except _Uncacheable:
        return None
    text = json.dumps(image, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _identifier(value: Any) -> str | None:
    """``value`` if it is a valid user id, else None (the call then goes to the driver)."""
    try:
        return check.identifier(value, "user_id")
    except ValidationError:
        return None


def _number(value: Any, name: str, minimum: float, kind: type[N]) -> N:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= minimum:
        raise ConfigurationError(f"the cache's {name} must be a number >= {minimum}, got {value!r}")
    if kind is int and value != int(value):
        raise ConfigurationError(f"the cache's {name} must be a whole number, got {value!r}")
    return kind(value)


def _token() -> str:
    return secrets.token_hex(8)


class CachedMemoryDriver(BaseMemoryDriver):
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
        if redis is None or isinstance(redis, str):
            self.url = redacted(redis or s.redis_url)
            self._client = connect(
                redis or s.redis_url,
                timeout=timeout if timeout is not None else s.memory_cache_timeout,
                on_connect=self._connected,
            )
            self._owns_client = True
        else:
            kwargs = getattr(getattr(redis, "connection_pool", None), "connection_kwargs", {})
            self.url = f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
            self._client = redis
            self._owns_client = False
        self.namespace = namespace or f"{s.redis_prefix}:cache:{inner.name}"
        self._read = self._client.register_script(_READ)
        self._reconcile_script = self._client.register_script(_RECONCILE)
        self._state = threading.Lock()
        self._connections = 0  # connections opened so far (see _connected)
        self._down_until: float | None = None
        self._down_since: datetime | None = None
        self._last_error: str | None = None
        self._reconciled = -1  # the value of _connections at the last reconcile
        self._next_sync = 0.0
        self._dirty = 0  # writes whose invalidation failed, in this process
        self._dirty_done = 0  # of those, how many a reconcile has dealt with
        self.counters = {
            "hits": 0,
            "misses": 0,
            "bypassed": 0,
            "errors": 0,
            "invalidations": 0,
            "failed_invalidations": 0,
        }

    @classmethod
    def from_settings(cls, inner: BaseMemoryDriver, settings: Settings) -> CachedMemoryDriver:
        """``inner`` behind the cache the settings describe (``REDIS_URL``, ``MEMORY_CACHE_*``)."""
        return cls(inner, settings=settings)

    # ------------------------------------------------------------------ keys
    def _key(self, *parts: str) -> str:
        return ":".join((self.namespace, *parts))

    @property
    def _gen_all(self) -> str:
        return self._key("gen", "all")

    def _gen_user(self, user: str) -> str:
        return self._key("gen", "u", user)

    def _gen_memory(self, memory_id: str) -> str:
        return self._key("gen", "m", memory_id)

    @property
    def _gen_knowledge(self) -> str:
        return self._key("gen", "k")

    # ------------------------------------------------------------------ availability
    def _connected(self) -> None:
        """A new connection to Redis: it may be a server restarted from a snapshot that holds
        entries older than writes made while it was away, so check before trusting them."""
        with self._state:
            self._connections += 1

    def _count(self, name: str, n: int = 1) -> None:
        with self._state:
            self.counters[name] += n

    def _mark_down(self, exc: BaseException) -> None:
        with self._state:
            self.counters["errors"] += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            first = self._down_until is None
            if first:
                self._down_since = datetime.now(timezone.utc)
            self._down_until = time.monotonic() + self.retry_interval
        if first:
            log.warning(
                "Redis cache at %s is unavailable (%s); serving from the %s driver and "
                "trying again in %.1fs",
                self.url,
                self._last_error,
                self.inner.name,
                self.retry_interval,
            )

    def _available(self, *, probe: bool = False) -> bool:
        """Whether Redis may be used now: true unless it failed recently; after the retry
        interval (or with ``probe``), one PING decides."""
        with self._state:
            down_until = self._down_until
        if down_until is None:
            return True
        if not probe and time.monotonic() < down_until:
            self._count("bypassed")
            return False
        try:
            self._client.ping()
        except self._redis_errors as exc:
            self._mark_down(exc)
            return False
        with self._state:
            if self._down_until is not None:
                log.warning("Redis cache at %s is reachable again", self.url)
            self._down_until = None
            self._down_since = None
            self._reconciled = -1
        return True

    def _ready(self) -> bool:
        """Whether a cached answer may be served now: Redis is available and everything
        written while it was not has been invalidated."""
        if not self._available():
            return False
        with self._state:
            due = (
                self._reconciled != self._connections
                or self._dirty != self._dirty_done
                or time.monotonic() >= self._next_sync
            )
        if not due:
            return True
        try:
            self._reconcile()
        except self._redis_errors as exc:
            self._mark_down(exc)
            return False
        except Exception as exc:  # the store's stamp could not be read: do not trust the cache
            log.warning("cannot read the cache outage stamp from the store: %s", exc)
            self._count("bypassed")
            return False
        return True

    def _reconcile(self) -> None:
        """Invalidate everything if this process, or the store's outage stamp, says a write
        could not invalidate what it affected."""
        with self._state:
            dirty = self._dirty
            force = dirty != self._dirty_done
            connections = self._connections
        stamp = self.inner._read_store_info().get(LEDGER_KEY, "")
        bumped = self._reconcile_script(
            keys=[self._gen_all, self._key("outage")],
            args=[stamp, _token(), self._gen_ttl, "1" if force else "0"],
        )
        if bumped:
            log.info("cache namespace %s invalidated after an outage", self.namespace)
        with self._state:
            self._dirty_done = max(self._dirty_done, dirty)
            self._reconciled = connections
            self._next_sync = time.monotonic() + self.sync_interval

    def _note_dirty(self) -> None:
        """A write went through but its invalidation did not reach Redis: remember it here and
        in the store, so nothing cached before it is served again."""
        with self._state:
            self._dirty += 1
            self.counters["failed_invalidations"] += 1
        try:
            self.inner._write_store_info({LEDGER_KEY: uuid.uuid4().hex})
        except Exception as exc:
            log.error(
                "a write could not invalidate the Redis cache, and recording that in the store "
                "failed too (%s); other processes may serve stale answers until their entries "
                "expire (MEMORY_CACHE_TTL)",
                exc,
            )

    # ------------------------------------------------------------------ reads and writes
    def _cached(
        self, key: str, generations: Sequence[str], adapter: TypeAdapter[T], load: Callable[[], T]
    ) -> T:
        """The answer stored under ``key`` if it is current, else ``load()`` (stored)."""
        for _attempt in range(2):
            if not self._ready():
                return load()
            with self._state:
                connections = self._connections
            try:
                stamp, raw = self._read(keys=[*generations, key], args=[_token(), self._gen_ttl])
            except self._redis_errors as exc:
                self._mark_down(exc)
                return load()
            with self._state:
                if self._connections == connections:
                    break
            # A connection was opened during the read: reconcile first, then read again.
        else:
            self._count("bypassed")
            return load()
        if raw is not None:
            entry_stamp, _, payload = raw.partition("\n")
            if entry_stamp == stamp:
                try:
                    value = adapter.validate_json(payload)
                except ValueError:
                    log.warning("ignoring an unreadable cache entry %s", key)
                else:
                    self._count("hits")
                    return value
        self._count("misses")
        value = load()
        data = adapter.dump_json(value)
        if len(data) <= MAX_ENTRY_BYTES:
            try:
                self._client.set(key, stamp + "\n" + data.decode(), ex=self.ttl)
            except self._redis_errors as exc:
                self._mark_down(exc)
        return value

    def _invalidate(
        self,
        *,
        users: Iterable[str | None] = (),
        ids: Iterable[str] = (),
        knowledge: bool = False,
        everything: bool = False,
    ) -> None:
        """Give every generation a write affected a new token. Called after the write."""
        keys = {self._gen_user(u) for u in users if u is not None}
        entries = set()
        for memory_id in ids:
            keys.add(self._gen_memory(memory_id))
            entries.add(self._key("m", memory_id))
        if knowledge:
            keys.add(self._gen_knowledge)
        if everything:
            keys.add(self._gen_all)
        if not keys:
            return
        if not self._available():
            self._note_dirty()
            return
        token = _token()
        try:
            pipe = self._client.pipeline(transaction=False)
            for key in sorted(keys):
                pipe.set(key, token, ex=self._gen_ttl)
            if entries:
                pipe.delete(*sorted(entries))
            pipe.execute()
        except self._redis_errors as exc:
            self._mark_down(exc)
            self._note_dirty()
            return
        self._count("invalidations")

    def _write(self, call: Callable[[], T], **unknown_scope: Any) -> T:
        """Run a write on the driver; if it fails in a way that may have written something,
        invalidate ``unknown_scope`` (default: everything) before raising."""
        try:
            return call()
        except NOTHING_WRITTEN:
            raise
        except Exception:
            self._invalidate(**(unknown_scope or {"everything": True}))
            raise

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
        use_vector: bool = True,
        exclude_tags: list[str] | None = None,
        **filters: Any,
    ) -> list[RecallHit]:
        self._check_open()

        def load() -> list[RecallHit]:
            return self.inner.recall(
                user_id, conversation_id, query, top_k, use_vector, exclude_tags, **filters
            )

        user = _identifier(user_id)
        arguments = {
            **_RECALL_DEFAULTS,
            **filters,
            "conversation_id": conversation_id,
            "query": query,
            "top_k": top_k,
            "use_vector": use_vector,
            "exclude_tags": exclude_tags,
        }
        digest = _digest(arguments)
        if user is None or digest is None:
            return load()
        return self._cached(
            self._key("r", user, digest), [self._gen_all, self._gen_user(user)], _HITS, load
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

        user = _identifier(user_id)
        digest = _digest({"memory_id": memory_id, "relationship_type": relationship_type})
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
    ) -> KnowledgeDocument:
        self._check_open()
        document = self._write(
            lambda: self.inner.store_global_knowledge(content, category, title, doc_id, metadata),
            knowledge=True,
        )
        self._invalidate(knowledge=True)
        return document

    def recall_global_knowledge(
        self, query: str, top_k: int = 5, category: str | None = None
    ) -> list[KnowledgeHit]:
        self._check_open()

        def load() -> list[KnowledgeHit]:
            return self.inner.recall_global_knowledge(query, top_k, category)

        digest = _digest({"query": query, "top_k": top_k, "category": category})
        if digest is None:
            return load()
        return self._cached(
            self._key("k", digest), [self._gen_all, self._gen_knowledge], _KNOWLEDGE_HITS, load
        )

    def get_global_knowledge(self, doc_id: str) -> KnowledgeDocument | None:
        self._check_open()

        def load() -> KnowledgeDocument | None:
            return self.inner.get_global_knowledge(doc_id)

        digest = _digest({"doc_id": doc_id})
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
    def cache_health(self, *, probe: bool = True) -> dict[str, Any]:
        """The cache's part of :meth:`health_check`: ``status`` is ``ok`` or ``degraded``
        (Redis unreachable: every call goes to the driver), with counters since start."""
        up = self._available(probe=probe)
        with self._state:
            report: dict[str, Any] = {
                "status": "ok" if up else "degraded",
                "backend": "redis",
                "url": self.url,
                "namespace": self.namespace,
                "ttl": self.ttl,
                **self.counters,
            }
            if not up:
                report["down_since"] = self._down_since.isoformat() if self._down_since else None
                report["error"] = self._last_error
        if up:
            try:
                memory = self._client.info("memory")
                report["redis_used_memory"] = memory.get("used_memory")
            except self._redis_errors as exc:
                self._mark_down(exc)
                report.update(status="degraded", error=self._last_error)
        return report

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

    def clear(self) -> int:
        """Delete every key of this cache's namespace; returns how many. (Never needed for
        correctness; frees memory.)"""
        deleted = 0
        batch: list[str] = []
        for key in self._client.scan_iter(match=_glob_escape(self.namespace) + ":*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(self._client.delete(*batch))
                batch = []
        if batch:
            deleted += int(self._client.delete(*batch))
        return deleted

    def __repr__(self) -> str:
        closed = " closed" if self._closed else ""
        return f"<CachedMemoryDriver {self.name!r} redis={self.url}{closed}>"

    # ------------------------------------------------------------------ primitives
    # The public methods above delegate to the wrapped driver's public methods, so these are
    # only reached by code that calls primitives directly; writes invalidate everything.
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

    def _search_knowledge(
        self, vector: np.ndarray, top_k: int, category: str | None, text: str | None
    ) -> list[KnowledgeHit]:
        return self.inner._search_knowledge(vector, top_k, category, text)

    def _iter_knowledge(self, batch_size: int) -> Iterator[KnowledgeChunk]:
        return self.inner._iter_knowledge(batch_size)

    def _upsert_association(self, association: Association) -> Association:
        try:
            return self.inner._upsert_association(association)
        finally:
            self._invalidate(everything=True)

    def _related(self, memory_id: str, relationship_type: str | None) -> list[RelatedMemory]:
        return self.inner._related(memory_id, relationship_type)

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
            if self._owns_client:
                with contextlib.suppress(*self._redis_errors):
                    self._client.close()


def _glob_escape(text: str) -> str:
    """``text`` with Redis glob characters escaped, for ``SCAN MATCH``."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
