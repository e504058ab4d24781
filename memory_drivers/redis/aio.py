"""The Redis working memory and the stream consolidator as coroutines:
:class:`AsyncSessionMemory` and :class:`AsyncStreamConsolidator`.

::

    from memory_drivers.redis import AsyncSessionMemory
    async with AsyncSessionMemory() as sessions:          # the arguments of SessionMemory
        s = await sessions.create("alice", data={"topic": "travel"})
        await sessions.add_message(s.session_id, "user", "Find me a flight to Lisbon")
        messages = await sessions.history(s.session_id)

Each coroutine runs the sync method of the wrapped :class:`~.sessions.SessionMemory` or
:class:`~.consolidation.StreamConsolidator` (``.sync``), so every rule is written once there.
With a client it made from a URL the call runs on the event loop as a greenlet
(:func:`memory_drivers.bridge.run_native`) and its Redis commands are awaited on a
``redis.asyncio`` client of that loop (:class:`.client.Clients`); given a ``redis.Redis``
client instead, each call runs in a worker thread. The consolidator also needs a driver with
native async I/O (pgvector, automem; ``ASYNC_NATIVE``) to run natively, since it stores
through it; the summariser runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

from .. import bridge
from ..base import BaseMemoryDriver
from ..errors import ConfigurationError
from .consolidation import StreamConsolidator
from .sessions import SessionMemory

__all__ = ["AsyncSessionMemory", "AsyncStreamConsolidator", "run"]

P = ParamSpec("P")
R = TypeVar("R")


def _offload(function: Callable[..., Any], *args: Any) -> Any:
    return asyncio.to_thread(function, *args)


async def run(native: bool, function: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """``function(*args, **kwargs)``: natively on the event loop (its Redis commands awaited
    through :class:`.client.Clients`), else in a worker thread."""
    call = functools.partial(function, *args, **kwargs)
    if native:
        return await bridge.run_native(_offload, call)
    return await asyncio.to_thread(call)


def _coroutine(
    method: Callable[Concatenate[Any, P], R],
) -> Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]:
    """The coroutine of ``method``: the wrapped object's (``self.sync``) own method, run as
    ``self.native`` says."""
    name = method.__name__

    @functools.wraps(method)
    async def call(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await run(self.native, getattr(self.sync, name), *args, **kwargs)

    call.__qualname__ = f"{method.__qualname__.split('.')[0]}.{name}"
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


class AsyncStreamConsolidator:
    """:class:`~.consolidation.StreamConsolidator` as coroutines (see the module docstring).

    ``driver`` is a :class:`~memory_drivers.base.BaseMemoryDriver` or an
    :class:`~memory_drivers.aio.AsyncMemoryDriver`; the other arguments are those of
    ``StreamConsolidator`` (or ``consolidator=`` one to wrap). :meth:`run` stops when the
    ``asyncio.Event`` ``stop`` is set, or when its task is cancelled.
    """

    def __init__(
        self,
        driver: Any = None,
        *args: Any,
        consolidator: StreamConsolidator | None = None,
        **kwargs: Any,
    ) -> None:
        if consolidator is None:
            # an AsyncMemoryDriver stores through the driver it wraps
            sync = driver if isinstance(driver, BaseMemoryDriver) else getattr(driver, "sync", None)
            if not isinstance(sync, BaseMemoryDriver):
                raise ConfigurationError(
                    "AsyncStreamConsolidator needs a memory driver (or an AsyncMemoryDriver), "
                    f"got {type(driver).__name__}; pass get_memory_driver() or one you opened"
                )
            consolidator = StreamConsolidator(sync, *args, **kwargs)
        #: the wrapped consolidator, whose methods every coroutine runs
        self.sync = consolidator

    @property
    def native(self) -> bool:
        """Whether calls run on the event loop: Redis from a URL and a driver with native
        async I/O. Else each call runs in a worker thread."""
        driver = self.sync.driver
        return self.sync._clients.native and driver.native_async and driver.settings.async_native

    setup = _coroutine(StreamConsolidator.setup)
    load_checkpoint = _coroutine(StreamConsolidator.load_checkpoint)
    deliver = _coroutine(StreamConsolidator.deliver)
    step = _coroutine(StreamConsolidator.step)
    close = _coroutine(StreamConsolidator.close)

    @property
    def checkpoint(self) -> str | None:
        return self.sync.checkpoint

    async def run(self, stop: asyncio.Event | None = None, *, once: bool = False) -> int:
        """Summarise windows until ``stop`` is set (``once=True``: until no full window is
        left), as :meth:`StreamConsolidator.run`; returns how many summaries it wrote."""
        stop = stop or asyncio.Event()
        if self.native:
            return await run(True, self.sync.run, stop, once=once)
        flag = threading.Event()  # the thread's copy of ``stop``

        async def mirror() -> None:
            await stop.wait()
            flag.set()

        mirroring = asyncio.ensure_future(mirror())
        thread = asyncio.ensure_future(asyncio.to_thread(self.sync.run, flag, once=once))
        try:
            return await asyncio.shield(thread)
        finally:  # cancelled: stop the thread's loop and let it finish its window
            flag.set()
            mirroring.cancel()
            with contextlib.suppress(BaseException):
                await thread

    async def __aenter__(self) -> AsyncStreamConsolidator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
