"""The Redis working memory as coroutines: :class:`AsyncSessionMemory`.

::

    from memory_drivers.redis import AsyncSessionMemory
    async with AsyncSessionMemory() as sessions:          # the arguments of SessionMemory
        s = await sessions.create("alice", data={"topic": "travel"})
        await sessions.add_message(s.session_id, "user", "Find me a flight to Lisbon")
        messages = await sessions.history(s.session_id)

Each coroutine runs the sync method of the wrapped :class:`~.sessions.SessionMemory`
(``.sync``), so every rule is written once there. With a client it made from a URL the call
runs on the event loop as a greenlet (:func:`memory_drivers.bridge.run_native`) and its Redis
commands are awaited on a ``redis.asyncio`` client of that loop (:class:`.client.Clients`);
given a ``redis.Redis`` client instead, each call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

from .. import bridge
from .client import Clients
from .sessions import SessionMemory

__all__ = ["AsyncSessionMemory", "run"]

P = ParamSpec("P")
R = TypeVar("R")


def _offload(function: Callable[..., Any], *args: Any) -> Any:
    return asyncio.to_thread(function, *args)


async def run(clients: Clients, function: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """``function(*args, **kwargs)`` (sync code whose Redis commands go through ``clients``):
    natively on the event loop when ``clients`` has async clients, else in a worker thread."""
    call = functools.partial(function, *args, **kwargs)
    if clients.native:
        return await bridge.run_native(_offload, call)
    return await asyncio.to_thread(call)


def _coroutine(
    method: Callable[Concatenate[SessionMemory, P], R],
) -> Callable[Concatenate[AsyncSessionMemory, P], Coroutine[Any, Any, R]]:
    name = method.__name__

    @functools.wraps(method)
    async def call(self: AsyncSessionMemory, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await run(self.sync._redis, getattr(self.sync, name), *args, **kwargs)

    call.__qualname__ = f"AsyncSessionMemory.{name}"
    return call


class AsyncSessionMemory:
    """:class:`~.sessions.SessionMemory`'s methods as coroutines (see the module docstring).
    Takes the arguments of ``SessionMemory``, or one ``SessionMemory`` to wrap (``sessions=``).
    Creating it does not connect."""

    def __init__(self, *args: Any, sessions: SessionMemory | None = None, **kwargs: Any) -> None:
        #: the wrapped working memory, whose methods every coroutine runs
        self.sync = sessions if sessions is not None else SessionMemory(*args, **kwargs)

    @property
    def native(self) -> bool:
        """Whether calls await Redis on the event loop (else they run in a worker thread)."""
        return self.sync._redis.native

    create = _coroutine(SessionMemory.create)
    get = _coroutine(SessionMemory.get)
    touch = _coroutine(SessionMemory.touch)
    update = _coroutine(SessionMemory.update)
    end = _coroutine(SessionMemory.end)
    active_sessions = _coroutine(SessionMemory.active_sessions)
    add_message = _coroutine(SessionMemory.add_message)
    history = _coroutine(SessionMemory.history)
    health = _coroutine(SessionMemory.health)
    close = _coroutine(SessionMemory.close)

    async def __aenter__(self) -> AsyncSessionMemory:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
