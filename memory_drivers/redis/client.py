"""Connecting to Redis: the lazy import of redis-py, clients with explicit timeouts, errors.

redis-py is an optional dependency (``pip install "memory-drivers[redis]"``); nothing here
imports it before a client is asked for, so ``import memory_drivers.redis`` always works.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from .. import bridge
from ..errors import BackendUnavailableError, ConfigurationError, MissingDependencyError

__all__ = [
    "Clients",
    "Commands",
    "connect",
    "import_redis",
    "redacted",
    "redis_errors",
    "unavailable",
]

INSTALL = 'pip install "memory-drivers[redis]"'


def import_redis() -> ModuleType:
    """The ``redis`` package (redis-py), or a :class:`MissingDependencyError` saying how to
    install it."""
    try:
        return importlib.import_module("redis")
    except ImportError as exc:
        raise MissingDependencyError(
            f"the Redis features (working memory, MEMORY_CACHE=redis, stream consolidation) "
            f"need the redis package, which is not installed ({exc}). Install with: {INSTALL}"
        ) from exc


def redis_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "Redis did not do it": every redis-py error and socket errors."""
    redis = import_redis()
    return (redis.RedisError, OSError)


def redacted(url: str) -> str:
    """``url`` without its password, for messages and health reports."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid Redis URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, ""))


def connect(
    url: str,
    *,
    timeout: float,
    connect_timeout: float | None = None,
    on_connect: Callable[[], None] | None = None,
    asynchronous: bool = False,
) -> Any:
    """A ``redis.Redis`` client for ``url`` that answers strings (UTF-8), never retries on its
    own and gives up after ``timeout`` seconds per command (``connect_timeout`` to connect,
    default the same). ``on_connect`` is called each time it opens a connection (at first use,
    and again after a connection was lost). Creating it does not connect. ``asynchronous``:
    a ``redis.asyncio.Redis`` with the same behaviour instead (for one event loop)."""
    redis = import_redis()
    from redis.backoff import NoBackoff

    if asynchronous:
        import redis.asyncio as module
        from redis.asyncio.retry import Retry as AsyncRetry

        retry: Any = AsyncRetry(NoBackoff(), 0)
    else:
        from redis.retry import Retry

        module, retry = redis, Retry(NoBackoff(), 0)
    options: dict[str, Any] = {}
    if on_connect is not None and asynchronous:

        async def connected_async(connection: Any) -> None:
            await connection.on_connect()
            on_connect()

        options["redis_connect_func"] = connected_async
    elif on_connect is not None:

        def connected(connection: Any) -> None:
            connection.on_connect()
            on_connect()

        options["redis_connect_func"] = connected
    try:
        return module.Redis.from_url(
            url,
            **options,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=connect_timeout if connect_timeout is not None else timeout,
            retry=retry,
            retry_on_timeout=False,
            health_check_interval=0,
        )
    except ValueError as exc:
        raise ConfigurationError(
            f"REDIS_URL {redacted(url)!r} is not a Redis URL ({exc}); "
            "expected e.g. redis://127.0.0.1:6379/0"
        ) from None


def unavailable(url: str, exc: BaseException, doing: str) -> BackendUnavailableError:
    """The error to raise when Redis at ``url`` failed while ``doing`` something."""
    return BackendUnavailableError(
        f"Redis at {redacted(url)} failed while {doing}: {type(exc).__name__}: {exc}. "
        "Check REDIS_URL and that the server is running."
    )


class Commands(NamedTuple):
    """A Redis client with scripts registered on it: the sync client, or one event loop's
    ``redis.asyncio`` client (whose commands and scripts return awaitables)."""

    client: Any
    scripts: dict[str, Any]


class Clients:
    """A Redis feature's clients: the sync ``client`` and, given ``connect_async`` (how to make
    a ``redis.asyncio`` client of the same server), one async client per event loop for native
    calls of the async API (:mod:`memory_drivers.bridge`). ``scripts`` (name -> Lua source)
    are registered on each.

    Calling it with ``command`` (a function of :class:`Commands`) is the one way the feature
    sends Redis commands: with the sync client, or in a native call with the running loop's
    async client, awaited on the loop; so its logic is written once, for both APIs.
    """

    def __init__(
        self,
        client: Any,
        connect_async: Callable[[], Any] | None = None,
        scripts: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self._sources = dict(scripts or {})
        self._sync = self._commands(client)
        self._async = (
            bridge.PerLoop(lambda: self._commands(connect_async()), lambda c: c.client.aclose())
            if connect_async is not None
            else None
        )

    def _commands(self, client: Any) -> Commands:
        return Commands(client, {n: client.register_script(s) for n, s in self._sources.items()})

    @property
    def native(self) -> bool:
        """Whether native calls of the async API can await Redis (an async client is made)."""
        return self._async is not None

    def __call__(self, command: Callable[[Commands], Any]) -> Any:
        if self._async is not None and bridge.active():
            return bridge.wait_for(command(self._async.get()))
        return command(self._sync)

    def close(self, *, sync: bool = True) -> None:
        """Close the sync client (unless ``sync=False``: the caller's), and in a native call the
        running loop's async client (the others' go with their loops)."""
        errors = redis_errors()
        if sync:
            with contextlib.suppress(*errors):
                self.client.close()
        if self._async is not None:
            with contextlib.suppress(*errors):
                self._async.close()
