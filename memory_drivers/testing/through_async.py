"""The conformance suite through the async API: a blocking facade over :class:`AsyncMemoryDriver`.

::

    class TestMyDriverAsync(MemoryDriverConformance):
        @pytest.fixture
        def driver_factory(self, tmp_path):
            yield through_async(my_factory(tmp_path))

:func:`through_async` turns a conformance ``driver_factory`` into one whose drivers answer every
call of the public API by running the :class:`~memory_drivers.aio.AsyncMemoryDriver` coroutine
of it on one event loop, in a thread of its own. The suite's tests are unchanged; a test that
calls from several threads at once (``test_concurrent_stores_all_land``) runs concurrent
coroutines on that loop. Attributes that are not calls (``settings``, ``embedder``,
``reranker``, ...) are the wrapped driver's.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from ..aio import AsyncMemoryDriver
from ..base import BaseMemoryDriver

__all__ = ["BlockingAsyncDriver", "EventLoopThread", "through_async"]

T = TypeVar("T")

#: The coroutines of AsyncMemoryDriver that the facade offers as blocking methods.
_CALLS = frozenset(
    name
    for name, value in vars(AsyncMemoryDriver).items()
    if not name.startswith("_") and asyncio.iscoroutinefunction(value)
)
#: Its async iterators (``iter_memories``, ...), offered as sync iterators.
_STREAMS = frozenset(
    name for name in vars(AsyncMemoryDriver) if name.startswith("iter_") and name not in _CALLS
)


class EventLoopThread:
    """An event loop running forever in a daemon thread; :meth:`run` waits for a coroutine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="memory-drivers-async-tests", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


@functools.cache
def shared_loop() -> EventLoopThread:
    """The one loop every facade of this process runs on (as an application has one loop)."""
    return EventLoopThread()


class BlockingAsyncDriver:
    """The sync API over an :class:`AsyncMemoryDriver`: each call awaits its coroutine on
    ``loop``. Not for applications (they call the sync driver directly); for running the sync
    conformance tests through the async API."""

    def __init__(self, driver: AsyncMemoryDriver, loop: EventLoopThread) -> None:
        object.__setattr__(self, "async_driver", driver)
        object.__setattr__(self, "_loop", loop)

    def __getattr__(self, name: str) -> Any:
        if name in _CALLS:
            method = getattr(self.async_driver, name)

            def call(*args: Any, **kwargs: Any) -> Any:
                return self._loop.run(method(*args, **kwargs))

            return call
        if name in _STREAMS:
            stream = getattr(self.async_driver, name)

            def iterate(*args: Any, **kwargs: Any) -> Iterator[Any]:
                # the arguments are checked now, at the call, as the sync API does
                return self._drain(stream(*args, **kwargs))

            return iterate
        return getattr(self.async_driver.sync, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.async_driver.sync, name, value)  # e.g. the suite's driver.reranker = ...

    def _drain(self, memories: AsyncIterator[Any]) -> Iterator[Any]:
        while True:
            try:
                yield self._loop.run(anext(memories))
            except StopAsyncIteration:
                return

    def __enter__(self) -> BlockingAsyncDriver:
        assert self._loop.run(self.async_driver.__aenter__()) is self.async_driver
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._loop.run(self.async_driver.__aexit__(*exc_info))

    def __repr__(self) -> str:
        return f"<BlockingAsyncDriver over {self.async_driver!r}>"


def through_async(
    factory: Callable[..., BaseMemoryDriver], *, max_threads: int | None = None
) -> Callable[..., Any]:
    """A conformance ``driver_factory`` whose drivers are ``factory``'s, opened and called
    through :class:`AsyncMemoryDriver` on :func:`shared_loop`."""

    def opened(*, embedder: Any, settings: Any) -> Any:
        loop = shared_loop()
        driver = loop.run(
            AsyncMemoryDriver.open(
                factory, embedder=embedder, settings=settings, max_threads=max_threads
            )
        )
        return BlockingAsyncDriver(driver, loop)

    return opened
