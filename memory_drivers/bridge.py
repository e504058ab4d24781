"""Native async I/O inside the library's sync code: what a call of the async API runs with.

:class:`~memory_drivers.aio.AsyncMemoryDriver` runs a call of a driver that has native async
I/O (``native_async = True``: automem, pgvector) on the event loop itself, as a greenlet
(SQLAlchemy's ``greenlet_spawn``, the machinery its asyncio extension runs its sync core
with), instead of in a worker thread. The code that runs is the one the sync API runs
(``base.py``'s validation and ranking, the driver's primitives); at the few places where it
waits, it asks this module:

- :func:`active`: whether it runs in such a call;
- :func:`wait_for`: an awaitable of the driver's async I/O (httpx's ``AsyncClient``,
  psycopg's async connections), awaited on the loop;
- :func:`blocking`: CPU work (embedding, reranking) in a worker thread, awaited, so the loop
  keeps running;
- :func:`sleep`: a pause (a retry's backoff) that does not stop the loop.

Everywhere else (the sync API, a call in a worker thread) these call straight through.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

__all__ = ["PerLoop", "active", "blocking", "run_native", "sleep", "wait_for"]

R = TypeVar("R")
T = TypeVar("T")

Offload = Callable[..., Awaitable[Any]]

#: Set while a native call runs: how to run CPU work in a worker thread (awaitable).
_OFFLOAD: contextvars.ContextVar[Offload | None] = contextvars.ContextVar(
    "memory_drivers_offload", default=None
)


def active() -> bool:
    """Whether this code runs in a native call of the async API (on the event loop)."""
    return _OFFLOAD.get() is not None


def wait_for(awaitable: Awaitable[R]) -> R:
    """The result of ``awaitable``, awaited on the event loop; only in a native call."""
    from sqlalchemy.util import await_only

    return await_only(awaitable)  # type: ignore[no-any-return]


def _plain(function: Callable[..., R], args: Any, kwargs: Any) -> R:
    _OFFLOAD.set(None)  # in the worker thread's copy of the context: a plain sync call
    return function(*args, **kwargs)


def blocking(function: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """``function(*args, **kwargs)``: in a native call, in a worker thread (awaited)."""
    offload = _OFFLOAD.get()
    if offload is None:
        return function(*args, **kwargs)
    return wait_for(offload(_plain, function, args, kwargs))  # type: ignore[no-any-return]


def sleep(seconds: float) -> None:
    """Pause; in a native call, without stopping the event loop."""
    if active():
        wait_for(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)


async def run_native(offload: Offload, function: Callable[..., R], /, *args: Any) -> R:
    """Run ``function(*args)`` on the event loop as a greenlet, with ``offload`` for its CPU
    work (see the module docstring)."""
    from sqlalchemy.util import greenlet_spawn

    token = _OFFLOAD.set(offload)
    try:
        return await greenlet_spawn(function, *args)  # type: ignore[no-any-return]
    finally:
        _OFFLOAD.reset(token)


class PerLoop(Generic[T]):
    """A driver's async resource (a client, an engine), one per event loop: its connections
    belong to the loop that made them. ``make()`` makes one; ``aclose(resource)`` closes one."""

    def __init__(self, make: Callable[[], T], aclose: Callable[[T], Awaitable[Any]]) -> None:
        self._make = make
        self._aclose = aclose
        self._made: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> T:
        """The running loop's (in a native call)."""
        loop = asyncio.get_running_loop()
        resource = self._made.get(loop)
        if resource is None:
            resource = self._made[loop] = self._make()
        return resource

    def close(self) -> None:
        """Forget every one; in a native call, close the running loop's first. Another loop's
        cannot be awaited from here: its connections go when it is collected."""
        made, self._made = dict(self._made), weakref.WeakKeyDictionary()
        if active():
            resource = made.get(asyncio.get_running_loop())
            if resource is not None:
                wait_for(self._aclose(resource))
