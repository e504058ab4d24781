"""The cache when Redis fails: stopped, hung, restarted empty or from a snapshot, unreachable
from one process only. Each test runs a ``redis-server`` of its own on a free loopback port
(:class:`redis_support.RedisServer`) and stops, freezes and restarts it for real.

What must hold: no call fails because of the cache; ``health_check()`` says the cache is
degraded while Redis is away (the driver's own status stays ``ok``); the cache is used again
once Redis is back; and nothing stale is ever served, in particular not an entry that survived
in Redis while a write could not invalidate it.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from automem_support import live_server  # noqa: F401 - a fixture
from redis_support import (  # noqa: F401 - fixtures
    Backend,
    RedisServer,
    free_port,
    open_backend,
    redis_server,
)

from memory_drivers.base import BaseMemoryDriver
from memory_drivers.config import build_settings
from memory_drivers.embeddings.hashing import HashingEmbedder
from memory_drivers.redis import CachedMemoryDriver, connect
from memory_drivers.redis.cache import LEDGER_KEY

TIMEOUT = 0.2  # MEMORY_CACHE_TIMEOUT of the caches here
RETRY = 0.3  # MEMORY_CACHE_RETRY_INTERVAL

MakeCached = Callable[..., CachedMemoryDriver]


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The driver behind the cache: sqlite, unless a test asks for others (indirect)."""
    with open_backend(request.param, request, tmp_path) as opened:
        yield opened


@pytest.fixture
def make(backend: Backend, redis_server: RedisServer) -> Iterator[MakeCached]:  # noqa: F811
    """``make(url=None, **options)``: a cached driver on the test's store, using the test's
    own Redis server (or ``url``), with short timeouts. Like a separate process: its own
    driver and Redis connections."""
    opened: list[CachedMemoryDriver] = []
    settings = build_settings(_env_file=None)

    def open_one(url: str | None = None, **options: Any) -> CachedMemoryDriver:
        inner = backend.factory(embedder=HashingEmbedder(256), settings=settings)
        options = {"timeout": TIMEOUT, "retry_interval": RETRY, **options}
        driver = CachedMemoryDriver(inner, url or redis_server.url, namespace="t", **options)
        opened.append(driver)
        return driver

    yield open_one
    for driver in opened:
        driver.close()


def seed(d: BaseMemoryDriver) -> dict[str, str]:
    a = d.store("u1", "green tea in the morning", tags=["drink"])
    b = d.store("u1", "black coffee at night", tags=["drink"])
    d.associate(a.id, b.id)
    d.store_global_knowledge("The refund window is thirty days", category="policy", doc_id="K")
    return {"a": a.id, "b": b.id}


READS: dict[str, Callable[[BaseMemoryDriver, dict[str, str]], Any]] = {
    "recall": lambda d, ids: d.recall("u1", query="tea coffee"),
    "keyword": lambda d, ids: d.recall("u1", query="tea", use_vector=False),
    "recent": lambda d, ids: d.recall("u1"),
    "get": lambda d, ids: d.get(ids["a"]),
    "get b": lambda d, ids: d.get(ids["b"]),
    "related": lambda d, ids: d.related(ids["a"], user_id="u1"),
    "knowledge": lambda d, ids: d.recall_global_knowledge("refund window"),
    "document": lambda d, ids: d.get_global_knowledge("K"),
}


def assert_fresh(d: CachedMemoryDriver, ids: dict[str, str], when: str) -> None:
    for name, read in READS.items():
        assert read(d, ids) == read(d.inner, ids), f"stale {name!r} {when}"


def assert_served_from_redis(d: CachedMemoryDriver, ids: dict[str, str]) -> None:
    assert_fresh(d, ids, "filling")
    hits = d.counters["hits"]
    assert_fresh(d, ids, "filled")
    assert d.counters["hits"] - hits == len(READS), "the cache is not in use"


def every_call(d: CachedMemoryDriver, ids: dict[str, str]) -> list[str]:
    """Call the whole API once; return the names of the calls that took over 2 s."""
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("store", lambda: ids.__setitem__("c", d.store("u1", "tea with lemon").id)),
        ("store_many", lambda: d.store_many([{"user_id": "u2", "content": "water"}])),
        ("get", lambda: d.get(ids["a"])),
        ("recall", lambda: d.recall("u1", query="tea")),
        ("update", lambda: d.update(ids["a"], content="green tea, no sugar")),
        ("associate", lambda: d.associate(ids["c"], ids["a"])),
        ("related", lambda: d.related(ids["a"], user_id="u1")),
        ("knowledge", lambda: d.store_global_knowledge("Shipping is free", "policy", doc_id="S")),
        ("recall knowledge", lambda: d.recall_global_knowledge("shipping")),
        ("get knowledge", lambda: d.get_global_knowledge("S")),
        ("delete knowledge", lambda: d.delete_global_knowledge("S")),
        ("cleanup", lambda: d.cleanup("u2", min_importance=0.6, dry_run=False)),
        ("delete", lambda: d.delete(ids.pop("c"))),
        ("count", lambda: d.count("u1")),
        ("stats", lambda: d.stats()),
    ]
    slow = []
    for name, call in steps:
        started = time.monotonic()
        call()
        if time.monotonic() - started > 2.0:
            slow.append(name)
    return slow


# ---------------------------------------------------------------------------------- stopped
def test_redis_stopped_then_restarted(make: MakeCached, redis_server: RedisServer) -> None:  # noqa: F811
    """Redis stops mid-run: every call still works (and quickly), health says the cache is
    degraded. Redis comes back (empty): the cache is used again, nothing stale."""
    d = make()
    ids = seed(d)
    assert_served_from_redis(d, ids)
    redis_server.stop()

    assert every_call(d, ids) == [], "calls waited on the dead cache"
    assert_fresh(d, ids, "while Redis is down")
    report = d.health_check()
    assert report["status"] == "ok", "the driver itself is fine"
    assert report["cache"]["status"] == "degraded"
    assert "Error" in report["cache"]["error"] and report["cache"]["down_since"]
    assert d.counters["failed_invalidations"] > 0 and d.counters["bypassed"] > 0

    redis_server.start()
    time.sleep(RETRY)
    assert_fresh(d, ids, "after the restart")
    assert_served_from_redis(d, ids)
    assert d.health_check()["cache"]["status"] == "ok"


def test_redis_down_at_start(make: MakeCached, redis_server: RedisServer) -> None:  # noqa: F811
    """A driver created while Redis is down works, and starts caching once Redis is up."""
    redis_server.stop()
    d = make()
    ids = seed(d)
    assert_fresh(d, ids, "Redis never seen")
    assert d.health_check()["cache"]["status"] == "degraded"
    redis_server.start()
    assert d.health_check()["cache"]["status"] == "ok", "health probes Redis at once"
    assert_served_from_redis(d, ids)


# ---------------------------------------------------------------------------------- hung
def test_hung_redis_costs_one_timeout_per_retry_interval(
    make: MakeCached,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """A frozen Redis (accepts nothing, answers nothing): the first call waits for the socket
    timeout, the calls after it do not touch Redis until the retry interval has passed."""
    d = make(retry_interval=5.0)
    ids = seed(d)
    assert_served_from_redis(d, ids)
    started = time.monotonic()
    for _ in range(5):
        for read in READS.values():
            read(d.inner, ids), read(d.inner, ids)
    baseline = time.monotonic() - started  # the same reads, without any cache
    redis_server.pause()
    try:
        started = time.monotonic()
        assert_fresh(d, ids, "Redis frozen")
        first = time.monotonic() - started
        started = time.monotonic()
        for _ in range(5):
            assert_fresh(d, ids, "Redis frozen")
        rest = time.monotonic() - started
        assert first < 10 * TIMEOUT, f"the first reads took {first:.2f}s"
        assert rest < 4 * baseline + 1.0, f"later reads waited ({rest:.2f}s, {baseline:.2f}s)"
        assert d.counters["errors"] == 1, "only the first call may wait for Redis"
    finally:
        redis_server.resume()


def test_writes_while_redis_is_frozen_never_serve_the_entries_it_kept(
    make: MakeCached,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """Redis freezes (keeping every entry), writes go through without invalidating, Redis
    thaws: the entries that those writes made stale are never served."""
    d = make()
    ids = seed(d)
    assert_served_from_redis(d, ids)
    redis_server.pause()
    try:
        d.update(ids["a"], content="green tea and mint")  # the invalidation times out
        d.delete(ids["b"])
        d.store_global_knowledge("The refund window is ninety days", "policy", doc_id="K")
        assert_fresh(d, ids, "while frozen")
    finally:
        redis_server.resume()
    time.sleep(RETRY)
    assert_fresh(d, ids, "after thawing")
    assert_served_from_redis(d, ids)


# ---------------------------------------------------------------------------------- snapshot
def test_restart_from_a_snapshot_with_stale_entries(
    make: MakeCached,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """Redis is stopped after saving a snapshot and restarted from it, so it comes back with
    the old entries. A write made meanwhile by another process must not be hidden by them,
    neither in that process nor in one that never noticed the outage."""
    writer, reader = make(), make(sync_interval=3600)
    ids = seed(writer)
    assert_served_from_redis(reader, ids)
    redis_server.stop(save=True)
    writer.update(ids["a"], content="now green tea with honey")
    writer.delete(ids["b"])
    assert writer.counters["failed_invalidations"] == 2
    assert writer.inner._read_store_info()[LEDGER_KEY]
    redis_server.start()
    client = connect(redis_server.url, timeout=1)
    try:
        assert client.dbsize() > 0, "the snapshot must bring the old entries back"
    finally:
        client.close()
    # The reader made no call during the outage: its first call reconnects, which makes it
    # check the store's outage stamp before trusting anything.
    assert_fresh(reader, ids, "in a process that did not see the outage")
    time.sleep(RETRY)
    assert_fresh(writer, ids, "in the writing process")
    newcomer = make(sync_interval=3600)
    assert_fresh(newcomer, ids, "in a process started after the outage")
    assert_served_from_redis(reader, ids)


@pytest.mark.parametrize("backend", ["sqlite", "pgvector"], indirect=True)
def test_a_partitioned_writer_is_caught_up_within_the_sync_interval(
    make: MakeCached,
) -> None:
    """Only the writing process loses Redis (a partition): its write is recorded in the store
    (through each driver's store info), and every other process invalidates within
    MEMORY_CACHE_SYNC_INTERVAL (at once with 0)."""
    strict, periodic = make(sync_interval=0), make(sync_interval=0.5)
    ids = seed(strict)
    assert_served_from_redis(strict, ids)
    assert_served_from_redis(periodic, ids)
    cut_off = make(url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    cut_off.update(ids["a"], content="green tea, partitioned")
    cut_off.close()  # and the writing process is gone, too
    assert_fresh(strict, ids, "with MEMORY_CACHE_SYNC_INTERVAL=0")
    time.sleep(0.6)
    assert_fresh(periodic, ids, "after the sync interval")
    assert_served_from_redis(periodic, ids)


# ---------------------------------------------------------------------------------- chaos
def test_random_outages_during_a_workload(make: MakeCached, redis_server: RedisServer) -> None:  # noqa: F811
    """A thread works (writes and reads, each read checked against the store) while Redis is
    stopped, frozen, restarted empty and restarted from a snapshot, again and again."""
    d = make(retry_interval=0.1, sync_interval=3600)
    ids = seed(d)
    errors: list[BaseException] = []
    done = threading.Event()
    rng = random.Random(3)
    live = [ids["a"], ids["b"]]

    def work() -> None:
        try:
            step = 0
            while not done.is_set():
                step += 1
                op = rng.random()
                if op < 0.25 or not live:
                    live.append(d.store("u1", f"note {step} about tea").id)
                elif op < 0.45:
                    d.update(rng.choice(live), content=f"edited {step} tea and coffee")
                elif op < 0.55:
                    d.delete(live.pop(rng.randrange(len(live))))
                target = rng.choice(live) if live else str(uuid.uuid4())
                assert d.get(target) == d.inner.get(target), f"stale get at step {step}"
                got = d.recall("u1", query="tea coffee", top_k=20)
                assert got == d.inner.recall("u1", query="tea coffee", top_k=20), step
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    try:
        for cycle in range(3):
            time.sleep(0.4)
            redis_server.stop(save=cycle % 2 == 1)
            time.sleep(0.4)
            redis_server.start()
            time.sleep(0.4)
            redis_server.pause()
            time.sleep(0.4)
            redis_server.resume()
    finally:
        done.set()
        thread.join(30)
    assert not errors, errors[0]
    assert d.counters["errors"] > 0 and d.counters["hits"] > 0


@pytest.mark.parametrize("backend", ["automem"], indirect=True)
def test_a_store_whose_info_clients_cannot_write_is_reported(
    make: MakeCached, caplog: pytest.LogCaptureFixture
) -> None:
    """The automem driver in front of ``memory-drivers serve`` cannot write the served store's
    info, so a partitioned writer cannot leave the outage stamp: the write still succeeds, the
    failure is logged as an error naming the bound (MEMORY_CACHE_TTL), and the writer's own
    process is never stale (docs/redis.md, "When Redis fails")."""
    reader = make(sync_interval=0)
    ids = seed(reader)
    assert_served_from_redis(reader, ids)
    cut_off = make(url=f"redis://127.0.0.1:{free_port()}/0")
    cut_off.update(ids["a"], content="green tea, partitioned")
    assert cut_off.get(ids["a"]).content == "green tea, partitioned"  # type: ignore[union-attr]
    assert cut_off.counters["failed_invalidations"] == 1
    assert any(
        r.levelname == "ERROR" and "MEMORY_CACHE_TTL" in r.getMessage() for r in caplog.records
    )
