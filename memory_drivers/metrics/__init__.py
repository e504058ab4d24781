"""Prometheus metrics of every driver, off unless asked for.

Turn them on with one call, or with ``MEMORY_METRICS=prometheus`` (read when a driver is made),
and serve them with prometheus_client's own server (``MEMORY_METRICS_PORT`` starts it without
code), or ``memory-drivers serve --metrics``::

    from prometheus_client import start_http_server
    import memory_drivers.metrics

    memory_drivers.metrics.enable()       # pip install "memory-drivers[metrics]"
    start_http_server(9464, addr="127.0.0.1")

What is measured (docs/metrics.md lists the names, labels and example queries): each public
operation of a driver (calls, errors by error type, latency), the embedder's batches (size and
time), the Redis cache's hits, misses and the rest of its counters, and, collected on each
scrape, the stored counts and the state of the sqlite driver's vector index (from ``stats()``).

The hooks below are what the rest of the package calls. They cost one global read while metrics
are off, and ``prometheus_client`` is imported only by :func:`enable`. An operation that calls
another (``store`` calls ``store_many``; the Redis cache calls the driver it wraps) is measured
once, as the outer one: a context variable remembers that an operation is under way.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigurationError, MissingDependencyError

if TYPE_CHECKING:
    from .prometheus import Recorder

__all__ = [
    "cache_event",
    "disable",
    "embedded",
    "enable",
    "enabled",
    "exposition",
    "forget",
    "listen",
    "measure",
    "observe",
    "opened",
    "registry",
]

T = TypeVar("T")

#: The Prometheus side, while metrics are on.
_recorder: Recorder | None = None
_lock = threading.Lock()
#: The operation under way in this thread or task (its nested operations are not measured).
_current: ContextVar[str | None] = ContextVar("memory_drivers_operation", default=None)
#: Every driver made in this process, for the stored counts (closed ones are skipped).
_drivers: weakref.WeakSet[Any] = weakref.WeakSet()


# ---------------------------------------------------------------------- on and off
def enable(registry: Any = None) -> Any:
    """Turn metrics on and return the ``prometheus_client`` registry they are in.

    ``registry`` defaults to prometheus_client's default ``REGISTRY``, so
    ``start_http_server(port)`` serves them beside the process metrics and your own. Calling
    it again returns the same registry; to move to another one, :func:`disable` first.
    """
    global _recorder
    with _lock:
        if _recorder is not None:
            if registry is not None and registry is not _recorder.registry:
                raise ConfigurationError(
                    "memory-drivers metrics are already enabled in another registry; call "
                    "memory_drivers.metrics.disable() first to move them"
                )
            return _recorder.registry
        try:
            from .prometheus import Recorder
        except ImportError as exc:
            raise MissingDependencyError(
                f"metrics need prometheus_client ({exc}). "
                'Install with: pip install "memory-drivers[metrics]"'
            ) from exc
        _recorder = Recorder(registry, _live_drivers, _unmeasured)
        return _recorder.registry


def listen(host: str, port: int) -> tuple[str, int]:
    """Serve the metrics over HTTP with prometheus_client's own server, in a daemon thread, at
    ``http://host:port/`` (any path; no token: keep it on loopback or a private network).
    Returns the address it listens on; again with the same address, it is the same server.
    ``MEMORY_METRICS_PORT`` does this when metrics are turned on by the settings."""
    recorder = _recorder
    if recorder is None:
        raise ConfigurationError(
            "metrics are off; turn them on with memory_drivers.metrics.enable() first"
        )
    return recorder.listen(host, port)


def disable() -> None:
    """Turn metrics off, remove them from their registry and stop the server :func:`listen`
    started. Safe to call when off."""
    global _recorder
    with _lock:
        recorder, _recorder = _recorder, None
    if recorder is not None:
        recorder.unregister()


def enabled() -> bool:
    """Whether metrics are on."""
    return _recorder is not None


def registry() -> Any:
    """The registry the metrics are in, or None while they are off."""
    recorder = _recorder
    return recorder.registry if recorder is not None else None


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """The metrics in the text format the ``Accept`` header asks for (Prometheus' or
    OpenMetrics), with its content type. For a front-end serving ``/metrics``."""
    recorder = _recorder
    if recorder is None:
        raise ConfigurationError(
            "metrics are off; turn them on with memory_drivers.metrics.enable()"
        )
    return recorder.exposition(accept)


# ---------------------------------------------------------------------- hooks
def opened(driver: Any) -> None:
    """A driver was made: remember it for the stored counts, and turn metrics on when its
    settings say ``MEMORY_METRICS=prometheus`` (serving them when ``MEMORY_METRICS_PORT``)."""
    settings = driver.settings
    if settings.memory_metrics == "prometheus":
        enable()
        if settings.memory_metrics_port is not None:
            listen(settings.memory_metrics_host, settings.memory_metrics_port)
    with _lock:
        _drivers.add(driver)


def forget(driver: Any) -> None:
    """``driver`` is wrapped by another driver (the Redis cache), which reports for it."""
    with _lock:
        _drivers.discard(driver)


def measure(operation: str, driver: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)``, measured as ``operation`` of ``driver`` unless another
    operation is under way (then it is part of that one)."""
    recorder = _recorder
    if recorder is None or _current.get() is not None:
        return call(*args, **kwargs)
    token = _current.set(operation)
    started = time.perf_counter()
    try:
        result = call(*args, **kwargs)
    except Exception as exc:
        recorder.operation(operation, driver, time.perf_counter() - started, type(exc).__name__)
        raise
    finally:
        _current.reset(token)
    recorder.operation(operation, driver, time.perf_counter() - started, None)
    return result


def observe(cls: type, operations: Collection[str]) -> None:
    """Measure the methods named in ``operations`` that ``cls`` itself defines (each driver
    class calls this for its own versions of the public methods)."""
    for name in operations:
        method = cls.__dict__.get(name)
        if inspect.isfunction(method) and not hasattr(method, "__measured__"):
            setattr(cls, name, _measured(method))


def _measured(method: Callable[..., T]) -> Callable[..., T]:
    operation = method.__name__

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> T:
        if _recorder is None:  # off: one global read
            return method(self, *args, **kwargs)
        return measure(operation, self.name, method, self, *args, **kwargs)

    call.__measured__ = True  # type: ignore[attr-defined]
    return call


def embedded(embedder: str, kind: str, texts: int, started: float) -> None:
    """The embedder ``embedder`` embedded ``texts`` texts (``kind``: "documents" or "query")
    in one call that began at ``time.perf_counter()`` = ``started``."""
    recorder = _recorder
    if recorder is not None:
        recorder.embedding(embedder, kind, texts, time.perf_counter() - started)


def cache_event(driver: str, event: str, n: int = 1) -> None:
    """The Redis cache in front of ``driver`` counted ``n`` of ``event`` (hits, misses, ...)."""
    recorder = _recorder
    if recorder is not None:
        recorder.cache_event(driver, event, n)


# ---------------------------------------------------------------------- for the collector
def _live_drivers() -> list[Any]:
    with _lock:
        drivers = list(_drivers)
    return [d for d in drivers if not d._closed]


@contextmanager
def _unmeasured() -> Iterator[None]:
    """Calls made by a scrape (``stats()``) are not operations of the application."""
    token = _current.set("scrape")
    try:
        yield
    finally:
        _current.reset(token)
