"""The async API (memory_drivers.aio): the whole public API as coroutines, the event loop never
blocked, the thread limit, cancellation, the registry, and 100 concurrent recalls on pgvector
and automem that the backend serves at once rather than one after another.

The conformance suite runs in full through the async API in test_async_conformance.py.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from automem_support import TOKEN, sqlite_store

from memory_drivers import (
    AsyncMemoryDriver,
    BaseMemoryDriver,
    ConfigurationError,
    DriverClosedError,
    NotFoundError,
    ValidationError,
    aget_memory_driver,
    aset_memory_driver,
    get_memory_driver,
)
from memory_drivers.config import build_settings, get_settings
from memory_drivers.drivers.automem import AutoMemDriver
from memory_drivers.drivers.pgvector import PgVectorDriver
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.manager import MemoryDriverManager
from memory_drivers.server import ServerThread, create_app
from memory_drivers.server.limits import ServerLimits
from memory_drivers.testing import RecordingEmbedder, fast_embedder, through_async


class SlowEmbedder(RecordingEmbedder):
    """The fast test embedder, taking ``delay`` seconds per call and recording how many calls
    run at once (embedding is CPU work that the async API must keep off the event loop)."""

    def __init__(self, delay: float) -> None:
        super().__init__(fast_embedder())
        self.delay = delay
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def _slowly(self, call: Any) -> Any:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(self.delay)
            return call()
        finally:
            with self._lock:
                self.running -= 1

    def embed_documents(self, texts: Sequence[str]) -> Any:
        return self._slowly(lambda: super(SlowEmbedder, self).embed_documents(texts))

    def embed_query(self, text: str) -> Any:
        return self._slowly(lambda: super(SlowEmbedder, self).embed_query(text))


def sqlite_driver(path: Path, embedder: Any = None, **settings: Any) -> SQLiteDriver:
    return SQLiteDriver(
        build_settings(_env_file=None, memory_db_url=f"sqlite:///{path}/m.db", **settings),
        embedder=embedder or fast_embedder(),
    )


@pytest.fixture
def adriver(tmp_path: Path) -> Iterator[AsyncMemoryDriver]:
    driver = sqlite_driver(tmp_path)
    try:
        yield AsyncMemoryDriver(driver)
    finally:
        driver.close()


# ======================================================================== the API


def test_every_public_method_is_a_coroutine_with_the_same_parameters():
    """Adding a public method to BaseMemoryDriver without its coroutine fails here."""
    public = {
        name: value
        for name, value in vars(BaseMemoryDriver).items()
        if not name.startswith("_") and inspect.isfunction(value)
    }
    assert public, "BaseMemoryDriver has no public methods?"
    for name, method in public.items():
        ours = getattr(AsyncMemoryDriver, name, None)
        assert ours is not None, f"AsyncMemoryDriver has no {name}"
        if name.startswith("iter_"):  # an async iterator, not a coroutine
            assert not inspect.iscoroutinefunction(ours)
        else:
            assert inspect.iscoroutinefunction(ours), f"{name} is not a coroutine function"
            assert ours.__doc__ == method.__doc__
        theirs = list(inspect.signature(method).parameters.values())[1:]
        mine = list(inspect.signature(ours).parameters.values())[1:]
        assert [(p.name, p.kind, p.default) for p in mine] == [
            (p.name, p.kind, p.default) for p in theirs
        ], name


async def test_results_and_errors_are_the_sync_ones(adriver: AsyncMemoryDriver):
    m = await adriver.store("u1", "The user drinks green tea", tags=["food"])
    assert await adriver.get(m.id) == adriver.sync.get(m.id) == m
    hits = await adriver.recall("u1", query="green tea", search="keyword")
    assert [h.memory.id for h in hits] == [m.id]
    assert hits == adriver.sync.recall("u1", query="green tea", search="keyword")
    with pytest.raises(ValidationError, match="Did you mean 'tags'"):
        await adriver.recall("u1", query="tea", tagz=["food"])
    with pytest.raises(NotFoundError):
        await adriver.update("00000000-0000-4000-8000-000000000000", content="x")
    updated = await adriver.update(m.id, user_id="u1", importance=0.9)
    assert updated.importance == 0.9
    assert await adriver.count("u1") == 1
    assert await adriver.delete(m.id, "u1") is True
    assert await adriver.count() == 0


async def test_iter_memories_streams_in_batches_and_checks_arguments_at_the_call(
    adriver: AsyncMemoryDriver,
):
    stored = await adriver.store_many(
        [{"user_id": "u1", "content": f"memory {i}"} for i in range(7)]
    )
    with pytest.raises(ValidationError, match="batch_size"):
        adriver.iter_memories(batch_size=0)
    streamed = [m async for m in adriver.iter_memories("u1", batch_size=3)]
    assert streamed == sorted(stored, key=lambda m: (m.created_at, m.id))


async def test_imports_and_the_other_streams(adriver: AsyncMemoryDriver):
    """The import methods and the association and knowledge streams, as in the sync API."""
    items = [
        {"id": str(uuid.UUID(int=i + 1)), "user_id": "u1", "content": f"m {i}"} for i in range(3)
    ]
    assert await adriver.import_memories(items) == {"stored": 3, "replaced": 0, "skipped": 0}
    assert await adriver.import_memories(items) == {"stored": 0, "replaced": 0, "skipped": 3}
    link = {
        "source_id": items[0]["id"],
        "target_id": items[1]["id"],
        "relationship_type": "LEADS_TO",
        "strength": 0.5,
        "created_at": "2024-01-01T00:00:00Z",
    }
    stored = await adriver.import_associations([link])
    assert [a async for a in adriver.iter_associations(batch_size=1)] == stored
    assert stored[0].created_at.year == 2024
    await adriver.store_global_knowledge("a short policy", "policies", doc_id="p")
    chunks = [c async for c in adriver.iter_global_knowledge()]
    assert [c.doc_id for c in chunks] == ["p"]
    vectors = await adriver.get_vectors([items[0]["id"]])
    assert list(vectors) == [items[0]["id"]]
    assert (await adriver.store_info())["embedder"] == adriver.sync.embedder.name
    with pytest.raises(ValidationError, match="batch_size"):
        adriver.iter_associations(batch_size=0)


async def test_async_with_closes_the_driver(tmp_path: Path):
    async with await AsyncMemoryDriver.open(sqlite_driver, tmp_path) as adriver:
        await adriver.store("u1", "kept")
    assert adriver.closed
    with pytest.raises(DriverClosedError):
        await adriver.store("u1", "after close")
    with pytest.raises(DriverClosedError):
        adriver.iter_memories()
    assert (await adriver.health_check())["status"] == "error"


def test_bad_thread_limits_are_configuration_errors(tmp_path: Path):
    driver = sqlite_driver(tmp_path)
    try:
        with pytest.raises(ConfigurationError, match="max_threads"):
            AsyncMemoryDriver(driver, max_threads=0)
        with pytest.raises(ConfigurationError, match="BaseMemoryDriver"):
            AsyncMemoryDriver(object())  # type: ignore[arg-type]
        assert AsyncMemoryDriver(driver).max_threads == driver.settings.async_max_threads
    finally:
        driver.close()
    with pytest.raises(ConfigurationError, match="ASYNC_MAX_THREADS"):
        build_settings(_env_file=None, async_max_threads=0)


# ======================================================================== the event loop


async def ticks_during(call: Any) -> int:
    """How often a coroutine that sleeps 10 ms at a time ran while ``call`` was awaited."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await call
    finally:
        task.cancel()
    return ticks


async def test_the_event_loop_keeps_running_while_a_call_works(tmp_path: Path):
    """A recall whose embedding takes 0.5 s must not stop other coroutines for 0.5 s."""
    embedder = SlowEmbedder(0.5)
    async with await AsyncMemoryDriver.open(sqlite_driver, tmp_path, embedder) as adriver:
        ticks = await ticks_during(adriver.recall("u1", query="anything", search="vector"))
        # 0.5 s of embedding: about 50 ticks of 10 ms; a blocked loop gets none
        assert ticks >= 10, f"the event loop ticked only {ticks} times during a 0.5 s call"


async def test_at_most_max_threads_calls_run_at_once(tmp_path: Path):
    embedder = SlowEmbedder(0.05)
    driver = sqlite_driver(tmp_path, embedder)
    try:
        adriver = AsyncMemoryDriver(driver, max_threads=3)
        await asyncio.gather(
            *(adriver.recall("u1", query=f"q{i}", search="vector") for i in range(12))
        )
        assert embedder.most_at_once == 3
    finally:
        driver.close()


async def test_a_cancelled_store_is_whole(tmp_path: Path):
    """Cancelling a call waits for its thread: the store is whole, never half-written."""
    slow = SlowEmbedder(0.3)
    adriver = await AsyncMemoryDriver.open(sqlite_driver, tmp_path, slow)
    task = asyncio.create_task(adriver.store_many([{"user_id": "u1", "content": "whole"}]))
    while slow.running == 0:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [m.content async for m in adriver.iter_memories()] == ["whole"]
    await adriver.close()


# ======================================================================== the registry


async def test_aget_memory_driver_wraps_the_cached_driver(clean_env, monkeypatch):
    monkeypatch.setenv("MEMORY_DB_URL", f"sqlite:///{clean_env}/default.db")
    monkeypatch.setenv("EMBEDDING_PROVIDER", "hashing")
    monkeypatch.setenv("ASYNC_MAX_THREADS", "4")
    get_settings.cache_clear()
    MemoryDriverManager.reset_cache()
    try:
        first = await aget_memory_driver()
        assert first.sync is get_memory_driver()
        assert await aget_memory_driver() is first, "one async driver per cached driver"
        assert first.max_threads == 4
        m = await first.store("u1", "via async")
        assert get_memory_driver().get(m.id) == m
        await first.close()
        again = await aget_memory_driver()
        assert again is not first and not again.closed
        switched = await aset_memory_driver("sqlite")
        assert switched.sync is get_memory_driver() and switched is again
    finally:
        MemoryDriverManager.reset_cache()


# ======================================================================== concurrency


async def _concurrent_recalls(adriver: AsyncMemoryDriver, n: int = 100) -> list[Any]:
    return await asyncio.gather(
        *(adriver.recall("u1", query="green tea", search="vector", top_k=3) for _ in range(n))
    )


async def test_100_concurrent_recalls_reach_postgres_at_once(pg_database: str):
    """While a lock holds the memories table, PostgreSQL sees the recalls waiting side by side:
    as many at once as the pool has connections (not one: they do not serialise), with one
    thread for the async driver (psycopg's async connections, no thread per call)."""
    settings = build_settings(
        _env_file=None, database_url=pg_database, memory_auto_migrate=True, pgvector_pool_size=5
    )
    adriver = await AsyncMemoryDriver.open(
        PgVectorDriver, settings, embedder=fast_embedder(), max_threads=1
    )
    assert adriver.native
    url = sqlalchemy.engine.make_url(pg_database).set(drivername="postgresql+psycopg")
    blocker = sqlalchemy.create_engine(url)
    try:
        stored = await adriver.store("u1", "The user drinks green tea")
        pool = 2 * settings.pgvector_pool_size  # pool size plus as many again under load
        with blocker.connect() as lock_holder:
            lock_holder.exec_driver_sql("LOCK TABLE memories IN ACCESS EXCLUSIVE MODE")
            recalls = asyncio.create_task(_concurrent_recalls(adriver))
            waiting = 0
            deadline = time.monotonic() + 20
            with blocker.connect() as observer:
                while waiting < pool and time.monotonic() < deadline and not recalls.done():
                    await asyncio.sleep(0.05)
                    waiting = observer.exec_driver_sql(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                    ).scalar_one()
                    observer.rollback()
            lock_holder.rollback()
        results = await recalls
        assert waiting == pool, f"{waiting} recalls waited at once, expected {pool}"
        assert all([h.memory.id for h in hits] == [stored.id] for hits in results)
    finally:
        blocker.dispose()
        await adriver.close()


async def test_a_cancelled_native_write_is_absent(pg_database: str):
    """A native pgvector store cancelled while it waits on the database rolls back: nothing
    of it is stored, and the driver goes on working."""
    settings = build_settings(_env_file=None, database_url=pg_database, memory_auto_migrate=True)
    adriver = await AsyncMemoryDriver.open(PgVectorDriver, settings, embedder=fast_embedder())
    url = sqlalchemy.engine.make_url(pg_database).set(drivername="postgresql+psycopg")
    blocker = sqlalchemy.create_engine(url)
    try:
        assert adriver.native
        with blocker.connect() as lock_holder:
            lock_holder.exec_driver_sql("LOCK TABLE memories IN ACCESS EXCLUSIVE MODE")
            task = asyncio.create_task(adriver.store_many([{"user_id": "u1", "content": "x"}]))
            with blocker.connect() as observer:
                while not observer.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                ).scalar_one():
                    observer.rollback()
                    await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            lock_holder.rollback()
        assert await adriver.count() == 0
        kept = await adriver.store("u1", "after the cancelled one")
        assert [m.id async for m in adriver.iter_memories()] == [kept.id]
    finally:
        blocker.dispose()
        await adriver.close()


class InFlight:
    """ASGI middleware: each /recall takes ``delay`` more seconds (server-side latency) and
    the most requests in flight at once are counted."""

    def __init__(self, app: Any, delay: float) -> None:
        self.app = app
        self.state = app.state  # the server's limits (ServerThread reads them)
        self.delay = delay
        self.now = 0
        self.most = 0
        self.served = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/recall":
            await self.app(scope, receive, send)
            return
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(self.delay)
            await self.app(scope, receive, send)
            self.served += 1
        finally:
            self.now -= 1


@pytest.fixture
def automem_server(tmp_path: Path) -> Iterator[tuple[InFlight, Any, SQLiteDriver]]:
    """``memory-drivers serve`` on loopback in front of a sqlite store, each /recall 0.5 s
    slower: (the counting middleware, the automem client's settings, the store)."""
    settings = build_settings(_env_file=None, embedding_provider="hashing")
    store = sqlite_store(tmp_path, settings)
    app = InFlight(
        create_app(store, api_token=TOKEN, limits=ServerLimits(max_connections=500)), 0.5
    )
    try:
        with ServerThread(app) as server:
            yield app, settings.replace(automem_url=server.url, automem_api_token=TOKEN), store
    finally:
        store.close()


@pytest.mark.slow
async def test_100_concurrent_recalls_on_automem_overlap(automem_server):
    """Each recall takes 0.5 s at the server: 100 of them one after another would take 50 s.
    The automem driver's async I/O (httpx's AsyncClient, no thread per call) has many more in
    flight at once than the async driver has threads (2, for the embeddings)."""
    app, client, store = automem_server
    async with await AsyncMemoryDriver.open(
        AutoMemDriver, client, embedder=store.embedder, max_threads=2
    ) as adriver:
        assert adriver.native
        stored = await adriver.store("u1", "The user drinks green tea")
        started = time.monotonic()
        results = await _concurrent_recalls(adriver)
        elapsed = time.monotonic() - started
    assert all(stored.id in [h.memory.id for h in hits] for hits in results)
    assert app.most >= 20, f"only {app.most} recalls were in flight at once"
    serial = app.served * app.delay
    print(f"100 recalls: {elapsed:.1f} s, at most {app.most} in flight; serial: {serial:g} s")
    assert elapsed < serial / 4, f"100 recalls took {elapsed:.1f} s; one after another: {serial} s"


@pytest.mark.slow
async def test_without_native_io_each_call_holds_a_thread(automem_server):
    """ASYNC_NATIVE=false: every call runs in a worker thread, so at most max_threads
    recalls are in flight."""
    app, client, store = automem_server
    async with await AsyncMemoryDriver.open(
        AutoMemDriver, client.replace(async_native=False), embedder=store.embedder, max_threads=2
    ) as adriver:
        assert not adriver.native
        await adriver.store("u1", "The user drinks green tea")
        await _concurrent_recalls(adriver, 8)
    assert app.most == 2


@pytest.mark.slow
async def test_native_calls_embed_off_the_event_loop(automem_server):
    """In a native call the I/O is awaited on the loop, and the embedding goes to a thread:
    a 0.5 s embedding must not stop other coroutines."""
    _, client, _ = automem_server
    slow = SlowEmbedder(0.5)
    async with await AsyncMemoryDriver.open(AutoMemDriver, client, embedder=slow) as adriver:
        assert adriver.native
        ticks = await ticks_during(adriver.recall("u1", query="anything", search="vector"))
    assert ticks >= 10, f"the event loop ticked only {ticks} times during a 0.5 s embedding"


# ======================================================================== the test kit's facade


def test_the_facade_streams_every_iterator_through_the_async_api(tmp_path: Path):
    """memory_drivers.testing.through_async: the conformance suite's calls, iterators too, go
    through AsyncMemoryDriver, not to the wrapped driver directly."""
    facade = through_async(lambda **kw: sqlite_driver(tmp_path, kw["embedder"]))(
        embedder=fast_embedder(), settings=None
    )
    try:
        a, b = facade.store_many([{"user_id": "u1", "content": c} for c in ("one", "two")])
        facade.associate(a.id, b.id)
        facade.store_global_knowledge("a document", "docs", doc_id="d1")
        streamed: list[int] = []
        original = facade.async_driver._batches

        def recording(items: Any, size: int) -> Any:
            streamed.append(size)
            return original(items, size)

        facade.async_driver._batches = recording
        assert [m.id for m in facade.iter_memories("u1")] == [a.id, b.id]
        assert [(x.source_id, x.target_id) for x in facade.iter_associations()] == [(a.id, b.id)]
        assert [c.doc_id for c in facade.iter_global_knowledge(batch_size=7)] == ["d1"]
        assert streamed == [500, 500, 7], "an iterator bypassed the async driver"
        with pytest.raises(ValidationError, match="batch_size"):
            facade.iter_associations(batch_size=0)
    finally:
        facade.close()
