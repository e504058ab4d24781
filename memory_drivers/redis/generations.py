"""The cache's machinery: generation keys, cached reads, invalidation, and outages of Redis.

:class:`GenerationCache` is the half of :class:`~.cache.CachedMemoryDriver` that keeps the
invariant (docs/redis.md): **a cached answer is served only when it was read from the store
after every write acknowledged before the read that serves it.** The driver API in ``cache.py``
says, per call, which generations an answer depends on and which a write affects.

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

Every Redis command goes through ``self._redis`` (a :class:`.client.Clients`): to the sync
client, or in a native call of the async API (:mod:`memory_drivers.bridge`) to the event loop's
``redis.asyncio`` client, awaited on the loop. The logic above is written once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

from pydantic import TypeAdapter

from .. import metrics
from .. import validation as check
from ..base import BaseMemoryDriver
from ..errors import (
    ConflictError,
    DriverClosedError,
    EmbeddingError,
    NotFoundError,
    ValidationError,
)
from .client import Clients, Commands

__all__ = ["LEDGER_KEY", "GenerationCache", "arguments_key", "valid_user_id"]

#: The cache's logger (the name it had when all of the cache was cache.py).
log = logging.getLogger("memory_drivers.redis.cache")

T = TypeVar("T")

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


def arguments_key(arguments: Mapping[str, Any]) -> str | None:
    """A key for a call's arguments, or None when they cannot be represented exactly."""
    try:
        image = _canon(dict(arguments))
    except _Uncacheable:
        return None
    text = json.dumps(image, separators=(",", ":"), ensure_ascii=False)
    # surrogatepass: text the driver refuses (a lone surrogate) still has a key; it is never
    # cached, since the call fails validation.
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def valid_user_id(value: Any) -> str | None:
    """``value`` if it is a valid user id, else None (the call then goes to the driver)."""
    try:
        return check.identifier(value, "user_id")
    except ValidationError:
        return None


def _token() -> str:
    return secrets.token_hex(8)


class GenerationCache:
    """Generations, availability and invalidation, for :class:`~.cache.CachedMemoryDriver`.

    The driver's constructor sets the attributes declared here, then calls
    :meth:`_init_generations` with, if it has one, how to make a ``redis.asyncio`` client of
    the same server (for native calls of the async API).
    """

    inner: BaseMemoryDriver
    url: str
    namespace: str
    ttl: int
    retry_interval: float
    sync_interval: float
    _client: Any
    _redis_errors: tuple[type[BaseException], ...]
    _gen_ttl: int

    def _init_generations(self, connect_async: Callable[[], Any] | None = None) -> None:
        #: every Redis command goes through it (see the module docstring)
        self._redis = Clients(self._client, connect_async, {"read": _READ, "reconcile": _RECONCILE})
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

    @property
    def native_async(self) -> bool:
        """Whether the async API runs calls natively: when the wrapped driver does (automem,
        pgvector) and the cache made its client from a URL; then its Redis commands are
        awaited on the event loop too (``redis.asyncio``). Else each call runs in a thread."""
        return self.inner.native_async and self._redis.native

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
        metrics.cache_event(self.inner.name, name, n)

    def _mark_down(self, exc: BaseException) -> None:
        metrics.cache_event(self.inner.name, "errors")
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
            self._redis(lambda r: r.client.ping())
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
        keys = [self._gen_all, self._key("outage")]
        args = [stamp, _token(), self._gen_ttl, "1" if force else "0"]
        bumped = self._redis(lambda r: r.scripts["reconcile"](keys=keys, args=args))
        if bumped:
            log.info("cache namespace %s invalidated after an outage", self.namespace)
        with self._state:
            self._dirty_done = max(self._dirty_done, dirty)
            self._reconciled = connections
            self._next_sync = time.monotonic() + self.sync_interval

    def _note_dirty(self) -> None:
        """A write went through but its invalidation did not reach Redis: remember it here and
        in the store, so nothing cached before it is served again."""
        metrics.cache_event(self.inner.name, "failed_invalidations")
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
                stamp, raw = self._redis(
                    lambda r: r.scripts["read"](
                        keys=[*generations, key], args=[_token(), self._gen_ttl]
                    )
                )
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
                entry = stamp + "\n" + data.decode()
                self._redis(lambda r: r.client.set(key, entry, ex=self.ttl))
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

        def invalidate(r: Commands) -> Any:
            pipe = r.client.pipeline(transaction=False)
            for key in sorted(keys):
                pipe.set(key, token, ex=self._gen_ttl)
            if entries:
                pipe.delete(*sorted(entries))
            return pipe.execute()

        try:
            self._redis(invalidate)
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
                memory = self._redis(lambda r: r.client.info("memory"))
                report["redis_used_memory"] = memory.get("used_memory")
            except self._redis_errors as exc:
                self._mark_down(exc)
                report.update(status="degraded", error=self._last_error)
        return report

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


def _glob_escape(text: str) -> str:
    """``text`` with Redis glob characters escaped, for ``SCAN MATCH``."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
