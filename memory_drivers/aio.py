"""The public API as coroutines: :class:`AsyncMemoryDriver` and :func:`aget_memory_driver`.

::

    from memory_drivers import aget_memory_driver

    driver = await aget_memory_driver()          # the driver named by MEMORY_DRIVER, async
    m = await driver.store(user_id="u1", content="The user's favorite color is blue")
    hits = await driver.recall(user_id="u1", query="What color does the user like?")
    async for memory in driver.iter_memories("u1"):
        ...

Every method has the name, parameters, result and errors of the same method of
:class:`~memory_drivers.base.BaseMemoryDriver`, because it *is* that method: the async driver
wraps a driver and runs each call of it, so validation, ranking and scoping stay written once,
in ``base.py``. A call runs one of two ways:

- natively, for a driver with ``native_async = True`` (automem, pgvector) unless
  ``ASYNC_NATIVE=false``: on the event loop, as a greenlet that awaits the driver's async I/O
  where the sync code would wait (:mod:`memory_drivers.bridge`); the embedding model and a
  reranker run in a worker thread;
- in a worker thread, for every other driver (and the cache in front of any).

At most ``ASYNC_MAX_THREADS`` threads of one async driver run at once (the others wait without
blocking the loop); every driver's own pool (``PGVECTOR_POOL_SIZE``, httpx's connections to
AutoMem, Redis' pool) bounds what reaches its backend.

Cancelling a call that waits for a thread means it never starts; cancelling one that runs in
a thread lets it finish before the cancellation goes on; a native call is interrupted where it
awaits (a transaction rolls back). A write is either whole or never happened, as in the sync
API.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any, Concatenate, ParamSpec, TypeVar

from . import bridge
from .base import BaseMemoryDriver
from .config import Settings
from .errors import ConfigurationError
from .manager import MemoryDriverManager, get_memory_driver, set_memory_driver
from .models import Association, KnowledgeChunk, Memory

__all__ = ["AsyncMemoryDriver", "aget_memory_driver", "aset_memory_driver"]

P = ParamSpec("P")
R = TypeVar("R")


def _offloaded(
    method: Callable[Concatenate[BaseMemoryDriver, P], R],
) -> Callable[Concatenate[AsyncMemoryDriver, P], Coroutine[Any, Any, R]]:
    """The coroutine of ``method``: the wrapped driver's own method (a subclass's override,
    such as the cache's, included) in a worker thread."""
    name = method.__name__

    @functools.wraps(method)
    async def call(self: AsyncMemoryDriver, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._run(getattr(self.sync, name), *args, **kwargs)

    call.__qualname__ = f"AsyncMemoryDriver.{name}"
    return call


class AsyncMemoryDriver:
    """A memory driver's whole public API as coroutines (see the module docstring).

    ``driver`` is any :class:`~memory_drivers.base.BaseMemoryDriver` (a cached one too);
    ``max_threads`` defaults to its ``ASYNC_MAX_THREADS``. Opening a driver does I/O (it
    connects, migrates, loads indexes): open one with :func:`aget_memory_driver`,
    :meth:`create` or :meth:`open`, which do it in a worker thread.
    """

    def __init__(self, driver: BaseMemoryDriver, *, max_threads: int | None = None) -> None:
        if not isinstance(driver, BaseMemoryDriver):
            raise ConfigurationError(
                f"AsyncMemoryDriver wraps a BaseMemoryDriver, got {type(driver).__name__}"
            )
        size = driver.settings.async_max_threads if max_threads is None else max_threads
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError(f"max_threads must be a whole number >= 1, got {size!r}")
        #: the wrapped driver, whose methods every coroutine runs
        self.sync = driver
        self._threads = ThreadPoolExecutor(size, thread_name_prefix=f"memory-drivers-{driver.name}")
        self._size = size

    @classmethod
    async def open(
        cls,
        factory: Callable[..., BaseMemoryDriver],
        /,
        *args: Any,
        max_threads: int | None = None,
        **kwargs: Any,
    ) -> AsyncMemoryDriver:
        """``factory(*args, **kwargs)`` (a driver class, or any callable returning a driver),
        called in a worker thread, wrapped."""
        driver = await asyncio.to_thread(factory, *args, **kwargs)
        try:
            return cls(driver, max_threads=max_threads)
        except BaseException:
            driver.close()
            raise

    @classmethod
    async def create(
        cls, name: str, settings: Settings | None = None, **options: Any
    ) -> AsyncMemoryDriver:
        """A new, uncached driver, as :meth:`MemoryDriverManager.create` makes it, wrapped."""
        return await cls.open(MemoryDriverManager.create, name, settings, **options)

    # ------------------------------------------------------------------ what is not a call
    @property
    def name(self) -> str:
        """The registry name of the wrapped driver."""
        return self.sync.name

    @property
    def settings(self) -> Settings:
        return self.sync.settings

    @property
    def max_threads(self) -> int:
        """How many calls of this driver run at once (the others wait for a thread)."""
        return self._size

    @property
    def native(self) -> bool:
        """Whether calls await the driver's own async I/O on the event loop (automem and
        pgvector, unless ``ASYNC_NATIVE=false``) rather than run in a worker thread."""
        return self.sync.native_async and self.sync.settings.async_native

    @property
    def closed(self) -> bool:
        return self.sync._closed

    async def _run(self, function: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """``function(*args, **kwargs)``: on the event loop with the driver's native async I/O
        when it has it, else in one of this driver's threads (see the module docstring)."""
        if self.closed:  # a closed driver only refuses (or reports it), with no I/O
            return function(*args, **kwargs)
        if self.native:
            call = functools.partial(function, *args, **kwargs)
            return await bridge.run_native(self._in_thread, call)
        return await self._in_thread(function, *args, **kwargs)

    async def _in_thread(self, function: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        context = contextvars.copy_context()
        try:
            future = self._threads.submit(context.run, function, *args, **kwargs)
        except RuntimeError:  # closed (and its threads stopped) since the check in _run
            return function(*args, **kwargs)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            if not future.cancel():  # it runs: let it finish, so a write is whole
                await asyncio.wait([asyncio.wrap_future(future)])
            raise

    # ------------------------------------------------------------------ the public API
    store = _offloaded(BaseMemoryDriver.store)
    store_many = _offloaded(BaseMemoryDriver.store_many)
    get = _offloaded(BaseMemoryDriver.get)
    update = _offloaded(BaseMemoryDriver.update)
    delete = _offloaded(BaseMemoryDriver.delete)
    recall = _offloaded(BaseMemoryDriver.recall)
    count = _offloaded(BaseMemoryDriver.count)
    list_users = _offloaded(BaseMemoryDriver.list_users)
    cleanup = _offloaded(BaseMemoryDriver.cleanup)
    associate = _offloaded(BaseMemoryDriver.associate)
    related = _offloaded(BaseMemoryDriver.related)
    store_global_knowledge = _offloaded(BaseMemoryDriver.store_global_knowledge)
    recall_global_knowledge = _offloaded(BaseMemoryDriver.recall_global_knowledge)
    get_global_knowledge = _offloaded(BaseMemoryDriver.get_global_knowledge)
    list_global_knowledge = _offloaded(BaseMemoryDriver.list_global_knowledge)
    delete_global_knowledge = _offloaded(BaseMemoryDriver.delete_global_knowledge)
    health_check = _offloaded(BaseMemoryDriver.health_check)
    stats = _offloaded(BaseMemoryDriver.stats)
    rebuild_index = _offloaded(BaseMemoryDriver.rebuild_index)
    reembed = _offloaded(BaseMemoryDriver.reembed)
    store_info = _offloaded(BaseMemoryDriver.store_info)
    get_vectors = _offloaded(BaseMemoryDriver.get_vectors)
    import_memories = _offloaded(BaseMemoryDriver.import_memories)
    import_knowledge = _offloaded(BaseMemoryDriver.import_knowledge)
    import_associations = _offloaded(BaseMemoryDriver.import_associations)

    async def close(self) -> None:
        """Release connections and persist what needs persisting. Safe to call twice."""
        await self._run(self.sync.close)
        self._threads.shutdown(wait=False)

    def iter_memories(
        self, user_id: str | None = None, *, batch_size: int = 500
    ) -> AsyncIterator[Memory]:
        """Every memory (of ``user_id``, or of everyone), oldest first, read in batches of
        ``batch_size``, each in a worker thread. Arguments are checked at the call, as in the
        sync API."""
        self.sync._check_open()
        # The sync method only checks its arguments and returns a lazy iterator.
        memories = self.sync.iter_memories(user_id, batch_size=batch_size)
        return self._batches(memories, batch_size)

    def iter_associations(self, *, batch_size: int = 500) -> AsyncIterator[Association]:
        """Every association of the store, read in batches, each in a worker thread."""
        self.sync._check_open()
        return self._batches(self.sync.iter_associations(batch_size=batch_size), batch_size)

    def iter_global_knowledge(self, *, batch_size: int = 500) -> AsyncIterator[KnowledgeChunk]:
        """Every knowledge chunk of every document, read in batches, each in a worker thread."""
        self.sync._check_open()
        return self._batches(self.sync.iter_global_knowledge(batch_size=batch_size), batch_size)

    async def _batches(self, items: Any, size: int) -> AsyncIterator[Any]:
        while batch := await self._run(lambda: list(islice(items, size))):
            for item in batch:
                yield item

    async def __aenter__(self) -> AsyncMemoryDriver:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncMemoryDriver of {self.sync!r}>"


_wrappers: dict[int, AsyncMemoryDriver] = {}
_wrappers_lock = threading.Lock()


def _wrapper(driver: BaseMemoryDriver) -> AsyncMemoryDriver:
    """One async driver per cached driver, so its calls share one limit of threads."""
    with _wrappers_lock:
        for key, stale in list(_wrappers.items()):
            if stale.closed:  # closed by reset_cache() or the sync API: stop its threads
                stale._threads.shutdown(wait=False)
                del _wrappers[key]
        found = _wrappers.get(id(driver))
        if found is None or found.sync is not driver:
            found = _wrappers[id(driver)] = AsyncMemoryDriver(driver)
        return found


async def aget_memory_driver(name: str | None = None) -> AsyncMemoryDriver:
    """The cached driver named by ``name``, or by ``MEMORY_DRIVER`` (default ``sqlite``), as an
    :class:`AsyncMemoryDriver`; the same driver :func:`get_memory_driver` returns."""
    return _wrapper(await asyncio.to_thread(get_memory_driver, name))


async def aset_memory_driver(name: str) -> AsyncMemoryDriver:
    """Switch the default driver at runtime (for sync and async callers); returns it."""
    return _wrapper(await asyncio.to_thread(set_memory_driver, name))
