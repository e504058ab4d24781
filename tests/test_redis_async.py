"""The Redis features through the async API, on ``redis.asyncio``, against real Redis servers:
the cache, the working memory (AsyncSessionMemory) and consolidation (AsyncStreamConsolidator).

The cache in front of a native driver (pgvector) awaits its Redis commands on the event loop:
its async answers are its sync ones, the loop keeps running while Redis does not answer, and
many calls wait on Redis at once with one worker thread. The whole conformance suite runs
through the async cache in test_async_conformance.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from redis_support import (  # noqa: F401 - fixtures
    REDIS_URL,
    namespace,
    redis_client,
    redis_server,
)

from memory_drivers import (
    AsyncMemoryDriver,
    BackendUnavailableError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    ValidationError,
)
from memory_drivers.config import build_settings
from memory_drivers.drivers.pgvector import PgVectorDriver
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.redis import (
    AsyncSessionMemory,
    AsyncStreamConsolidator,
    CachedMemoryDriver,
    StreamConsolidator,
    connect,
)
from memory_drivers.redis.consolidation import parse_event_id
from memory_drivers.testing import fast_embedder

FACTS = [
    "The user drinks green tea every morning",
    "The user's sister lives in Lisbon",
    "The user is allergic to peanuts",
]


def cached_pgvector(database_url: str, redis_url: str, prefix: str, **options: Any) -> Any:
    settings = build_settings(_env_file=None, database_url=database_url, memory_auto_migrate=True)
    inner = PgVectorDriver(settings, embedder=fast_embedder())
    return CachedMemoryDriver(inner, redis_url, namespace=prefix, **options)


async def while_paused(admin: Any, calls: Any, expected: int) -> tuple[Any, int]:
    """Run ``calls`` (an awaitable) while Redis pauses writes; the answer and the most clients
    seen blocked in Redis at once (up to ``expected``). Fails if the calls finished during the
    pause, i.e. did not wait in Redis."""
    admin.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
    task = asyncio.ensure_future(calls)
    most_waiting = 0
    deadline = time.monotonic() + 4
    while most_waiting < expected and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.02)
        waiting = await asyncio.to_thread(lambda: admin.info("clients")["blocked_clients"])
        most_waiting = max(most_waiting, waiting)
    assert not task.done(), "the calls did not wait for the paused Redis"
    await asyncio.to_thread(admin.execute_command, "CLIENT", "UNPAUSE")
    return await task, most_waiting


async def ticks_during(call: Any) -> tuple[Any, int]:
    """``call``'s result, and how often a coroutine sleeping 10 ms at a time ran meanwhile."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        return await call, ticks
    finally:
        task.cancel()


def test_the_cache_is_native_only_in_front_of_a_native_driver(tmp_path: Path, namespace: str):  # noqa: F811 - the fixture
    settings = build_settings(_env_file=None, memory_db_url=f"sqlite:///{tmp_path}/m.db")
    cache = CachedMemoryDriver(
        SQLiteDriver(settings, embedder=fast_embedder()), REDIS_URL, namespace=namespace
    )
    try:
        assert not AsyncMemoryDriver(cache).native  # sqlite has no async I/O: a thread per call
    finally:
        cache.close()


async def test_async_answers_are_the_sync_ones(pg_database: str, namespace: str):  # noqa: F811 - the fixture
    """Misses, hits, invalidation by an async write: the same answers as the sync cache's."""
    driver = await asyncio.to_thread(cached_pgvector, pg_database, REDIS_URL, namespace)
    adriver = AsyncMemoryDriver(driver, max_threads=1)
    assert adriver.native
    try:
        stored = [await adriver.store("u1", fact) for fact in FACTS]
        query = {"user_id": "u1", "query": "What does the user drink?", "search": "vector"}
        first = await adriver.recall(**query)  # a miss, filled from pgvector
        hits_before = driver.counters["hits"]
        second = await adriver.recall(**query)  # a hit, from Redis
        assert driver.counters["hits"] == hits_before + 1
        assert first == second == await asyncio.to_thread(driver.recall, **query)
        assert await adriver.get(stored[0].id) == driver.get(stored[0].id) == stored[0]

        updated = await adriver.update(stored[0].id, content="The user drinks black coffee")
        assert (await adriver.get(stored[0].id)).content == updated.content
        after = await adriver.recall(**query)
        assert after == await asyncio.to_thread(driver.recall, **query)
        assert next(h for h in after if h.memory.id == stored[0].id).memory == updated

        health = await adriver.health_check()
        assert health["cache"]["status"] == "ok"
    finally:
        await adriver.close()
    assert driver._closed and driver.inner._closed


async def test_the_loop_runs_and_calls_overlap_while_redis_is_paused(
    pg_database: str,
    redis_server: Any,  # noqa: F811 - the fixture
):
    """Redis stops answering the cache (``CLIENT PAUSE ... WRITE`` from another connection:
    the cache's read script is paused, ``INFO`` is not): 20 cached recalls with one worker
    thread all wait in Redis at once, and the event loop keeps ticking meanwhile. Through
    threads only one would wait there."""
    driver = await asyncio.to_thread(
        cached_pgvector, pg_database, redis_server.url, "md-async", timeout=10
    )
    adriver = AsyncMemoryDriver(driver, max_threads=1)
    admin = connect(redis_server.url, timeout=5)
    try:
        for fact in FACTS:
            await adriver.store("u1", fact)
        queries = [f"question {i}" for i in range(20)]

        async def recalls() -> Any:
            return await asyncio.gather(
                *(adriver.recall("u1", query=q, search="vector", top_k=2) for q in queries)
            )

        expected = await recalls()  # opens 20 connections (a read during one is not cached)
        assert await recalls() == expected  # fills the cache
        hits_before = driver.counters["hits"]

        answers, most_waiting = await while_paused(admin, recalls(), len(queries))
        assert most_waiting == len(queries), f"{most_waiting} recalls waited in Redis at once"
        assert answers == expected
        assert driver.counters["hits"] == hits_before + len(queries), "served from Redis"
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
        await adriver.close()


async def test_the_event_loop_ticks_while_a_native_call_waits_for_redis(
    pg_database: str,
    redis_server: Any,  # noqa: F811 - the fixture
):
    """A cached get waits 0.5 s for a paused Redis without stopping the event loop."""
    driver = await asyncio.to_thread(
        cached_pgvector, pg_database, redis_server.url, "md-async", timeout=10
    )
    adriver = AsyncMemoryDriver(driver, max_threads=1)
    admin = connect(redis_server.url, timeout=5)
    try:
        stored = await adriver.store("u1", FACTS[0])
        assert await adriver.get(stored.id) == stored
        admin.execute_command("CLIENT", "PAUSE", 500, "ALL")
        started = time.monotonic()
        found, ticks = await ticks_during(adriver.get(stored.id))
        took = time.monotonic() - started
        assert found == stored
        assert took >= 0.3, f"the get did not wait for the paused Redis ({took:.2f}s)"
        assert ticks >= 10, f"the event loop ticked {ticks} times in {took:.2f}s"
    finally:
        admin.close()
        await adriver.close()


async def test_a_redis_outage_in_a_native_call_falls_back_to_the_driver(
    pg_database: str,
    redis_server: Any,  # noqa: F811 - the fixture
):
    """With Redis gone, native calls are answered by the driver (the cache reports degraded),
    as sync calls are."""
    driver = await asyncio.to_thread(
        cached_pgvector, pg_database, redis_server.url, "md-async", timeout=0.5
    )
    adriver = AsyncMemoryDriver(driver)
    try:
        stored = await adriver.store("u1", FACTS[0])
        redis_server.stop()
        assert await adriver.get(stored.id) == stored
        hits = await adriver.recall("u1", query="tea", search="vector")
        assert [h.memory.id for h in hits] == [stored.id]
        health = await adriver.health_check()
        assert health["status"] == "ok" and health["cache"]["status"] == "degraded"
        assert driver.counters["errors"] >= 1
    finally:
        await adriver.close()


@pytest.mark.parametrize("native", [True, False])
async def test_native_and_threaded_calls_share_one_cache(
    pg_database: str,
    namespace: str,  # noqa: F811 - the fixture
    native: bool,
):
    """An entry written by an async call is served to the sync API and the other way round."""
    driver = await asyncio.to_thread(cached_pgvector, pg_database, REDIS_URL, namespace)
    adriver = AsyncMemoryDriver(driver)
    try:
        stored = driver.store("u1", FACTS[1])
        if native:
            first = await adriver.get(stored.id)
            hits = driver.counters["hits"]
            assert driver.get(stored.id) == first
        else:
            first = driver.get(stored.id)
            hits = driver.counters["hits"]
            assert await adriver.get(stored.id) == first
        assert driver.counters["hits"] == hits + 1
    finally:
        await adriver.close()


# ======================================================================== working memory


def async_sessions(url: str, prefix: str, **options: Any) -> AsyncSessionMemory:
    return AsyncSessionMemory(
        url, settings=build_settings(_env_file=None), prefix=prefix, **options
    )


async def test_async_sessions_answer_as_the_sync_ones(namespace: str):  # noqa: F811 - the fixture
    """Each coroutine is the sync method: same results, same errors, same keys."""
    async with async_sessions(REDIS_URL, namespace, history_limit=3) as sessions:
        assert sessions.native
        sync = sessions.sync
        s = await sessions.create("alice", data={"topic": "travel"})
        assert await sessions.get(s.session_id, refresh=False) == sync.get(
            s.session_id, refresh=False
        )
        with pytest.raises(ConflictError):
            await sessions.create("alice", session_id=s.session_id)
        with pytest.raises(ValidationError):
            await sessions.get("")
        updated = await sessions.update(s.session_id, {"budget": 900}, remove=["topic"])
        assert updated.data == {"budget": 900} == sync.get(s.session_id).data
        for i in range(5):
            assert await sessions.add_message(s.session_id, "user", f"m{i}") == min(i + 1, 3)
        history = await sessions.history(s.session_id)
        assert [m.content for m in history] == ["m2", "m3", "m4"]
        assert history == sync.history(s.session_id)
        assert await sessions.active_sessions("alice") == [s.session_id]
        health = await sessions.health()
        assert health["status"] == "ok"
        assert health["keys"]["sessions"] == health["keys"]["histories"] == 1
        assert health["keys"] == sync.health()["keys"]
        assert await sessions.touch(s.session_id)
        assert await sessions.end(s.session_id)
        assert not await sessions.end(s.session_id)
        with pytest.raises(NotFoundError):
            await sessions.add_message(s.session_id, "user", "too late")
        assert sync.get(s.session_id) is None


async def test_async_sessions_wait_in_redis_at_once(redis_server: Any):  # noqa: F811
    """20 session reads wait in a paused Redis at the same time (no thread each), and then
    answer; through a passed-in sync client they run in threads instead."""
    sessions = async_sessions(redis_server.url, "md-async")
    admin = connect(redis_server.url, timeout=5)
    try:
        ids = [(await sessions.create(f"user{i}")).session_id for i in range(20)]
        # The session scripts write (they refresh the TTL), so a write pause holds them.
        reads = asyncio.gather(*(sessions.get(i) for i in ids))
        found, most_waiting = await while_paused(admin, reads, len(ids))
        assert most_waiting == len(ids), f"{most_waiting} reads waited in Redis at once"
        assert [s.session_id for s in found] == ids
        assert [s.user_id for s in found] == [f"user{i}" for i in range(20)]

        threaded = AsyncSessionMemory(admin, prefix="md-async")
        assert not threaded.native
        assert (await threaded.get(ids[0])).user_id == "user0"
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
        await sessions.close()


async def test_async_sessions_report_an_unreachable_redis(tmp_path: Path):
    from redis_support import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    async with async_sessions(url, "md-async") as sessions:
        with pytest.raises(BackendUnavailableError, match="creating a session"):
            await sessions.create("alice")
        assert (await sessions.health())["status"] == "error"


# ======================================================================== consolidation


def add_events(client: Any, stream: str, n: int) -> list[str]:
    return [
        client.xadd(stream, {"role": "user", "content": f"Event {i}: the user likes topic {i}."})
        for i in range(n)
    ]


def summaries_of(driver: Any, user: str) -> list[Any]:
    found = [m for m in driver.iter_memories(user) if m.metadata.get("consolidator")]
    return sorted(found, key=lambda m: parse_event_id(m.metadata["first_event_id"]))


async def test_async_consolidation_is_the_sync_one(
    pg_database: str,
    namespace: str,  # noqa: F811 - the fixture
    redis_client: Any,  # noqa: F811 - the fixture
):
    """Natively (pgvector), windows become the summaries the sync consolidator writes: same
    windows, same text; the sync one then finds nothing left (one checkpoint, in the store)."""
    settings = build_settings(_env_file=None, database_url=pg_database, memory_auto_migrate=True)
    driver = await asyncio.to_thread(PgVectorDriver, settings, embedder=fast_embedder())
    try:
        texts = {}
        for name in ("async", "sync"):
            stream = f"{namespace}:{name}"
            events = add_events(redis_client, stream, 11)
            options = {"stream": stream, "batch_size": 5, "user_id": name}
            if name == "async":
                async with AsyncStreamConsolidator(
                    AsyncMemoryDriver(driver), REDIS_URL, **options
                ) as consolidator:
                    assert consolidator.native
                    assert await consolidator.run(once=True) == 2
                    assert consolidator.checkpoint == events[9]
                    assert await consolidator.step() is None  # the 11th waits for 4 more
            else:
                sync = StreamConsolidator(driver, REDIS_URL, **options)
                assert sync.run(once=True) == 2
                sync.close()
            found = summaries_of(driver, name)
            windows = [(m.metadata["first_event_id"], m.metadata["last_event_id"]) for m in found]
            assert windows == [(events[0], events[4]), (events[5], events[9])]
            texts[name] = [m.content.split("\n", 1)[1] for m in found]  # after the header
            pending = redis_client.xpending_range(stream, "memory-drivers", "-", "+", 100)
            assert [p["message_id"] for p in pending] == [events[10]]
        assert texts["async"] == texts["sync"]

        again = AsyncStreamConsolidator(
            consolidator=StreamConsolidator(
                driver, REDIS_URL, stream=f"{namespace}:async", user_id="async"
            )
        )
        checkpoint = redis_client.xrange(f"{namespace}:async")[9][0]
        assert await again.load_checkpoint() == checkpoint
        await again.close()
        with pytest.raises(ConfigurationError, match="needs a memory driver"):
            AsyncStreamConsolidator("not a driver", REDIS_URL, stream="s")
    finally:
        driver.close()


@pytest.mark.parametrize("native", [True, False])
async def test_async_run_waits_for_events_without_blocking_the_loop(
    pg_database: str,
    tmp_path: Path,
    namespace: str,  # noqa: F811 - the fixture
    redis_client: Any,  # noqa: F811 - the fixture
    native: bool,
):
    """``run(stop)`` waits for events (a blocking read of 0.3 s at a time) while the loop
    ticks, summarises them as they come, and ends when ``stop`` is set: natively in front of
    pgvector, in a worker thread in front of sqlite."""
    if native:
        settings = build_settings(
            _env_file=None, database_url=pg_database, memory_auto_migrate=True
        )
        driver: Any = await asyncio.to_thread(PgVectorDriver, settings, embedder=fast_embedder())
    else:
        settings = build_settings(_env_file=None, memory_db_url=f"sqlite:///{tmp_path}/m.db")
        driver = SQLiteDriver(settings, embedder=fast_embedder())
    stream = f"{namespace}:live"
    consolidator = AsyncStreamConsolidator(
        driver, REDIS_URL, stream=stream, batch_size=3, user_id="live", block=0.3
    )
    assert consolidator.native is native
    stop = asyncio.Event()
    try:

        async def feed_then_stop() -> None:
            await asyncio.sleep(0.5)
            await asyncio.to_thread(add_events, redis_client, stream, 6)
            deadline = time.monotonic() + 20
            while len(summaries_of(driver, "live")) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            stop.set()

        feeder = asyncio.ensure_future(feed_then_stop())
        written, ticks = await ticks_during(consolidator.run(stop))
        await feeder
        assert written == 2
        assert [m.metadata["event_count"] for m in summaries_of(driver, "live")] == [3, 3]
        assert ticks >= 30, f"the event loop ticked {ticks} times while run() waited"
    finally:
        await consolidator.close()
        driver.close()
