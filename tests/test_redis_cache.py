"""The Redis cache in front of a driver, against the real Redis server: what it serves from
Redis, that a read after an acknowledged write is never stale (every write method, racing
reads, a second process), argument handling, health, configuration.

The driver behind the cache comes from ``inner_factory`` (a conformance-style factory); add
other drivers to its ``params`` to run all of this against them. Fault tests (Redis stopped,
hung, restarted) are in test_redis_cache_faults.py.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from automem_support import live_server  # noqa: F401 - a fixture
from redis_cache_worker import CacheWorker
from redis_support import (  # noqa: F401 - fixtures
    BACKENDS,
    REDIS_URL,
    Backend,
    chroma_service,
    count_calls,
    namespace,
    open_backend,
    redis_client,
)

from memory_drivers import (
    BackendUnavailableError,
    MemoryDriverManager,
    MissingDependencyError,
    ValidationError,
    get_memory_driver,
    get_settings,
)
from memory_drivers.base import BaseMemoryDriver
from memory_drivers.config import build_settings
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.embeddings.hashing import HashingEmbedder
from memory_drivers.redis import CachedMemoryDriver

MakeCached = Callable[..., CachedMemoryDriver]

READS = ["get", "recall", "related", "recall_global_knowledge", "get_global_knowledge"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each driver that exists (redis_support.BACKENDS), on a fresh store."""
    with open_backend(request.param, request, tmp_path) as opened:
        yield opened


@pytest.fixture
def make(backend: Backend, namespace: str) -> Iterator[MakeCached]:  # noqa: F811
    """``make(**options)``: a new cached driver on the test's store and namespace (like a new
    process would open), hashing embedder. Closed afterwards."""
    opened: list[CachedMemoryDriver] = []

    def open_one(**options: Any) -> CachedMemoryDriver:
        inner = backend.factory(
            embedder=HashingEmbedder(256), settings=build_settings(_env_file=None)
        )
        driver = CachedMemoryDriver(inner, REDIS_URL, namespace=namespace, **options)
        opened.append(driver)
        return driver

    yield open_one
    for driver in opened:
        driver.close()


# ---------------------------------------------------------------------------------- probes
Probe = Callable[[BaseMemoryDriver], Any]


def probes(ids: dict[str, str]) -> dict[str, Probe]:
    """Reads whose answers a write can change; ``ids`` names the memories they look at."""

    def ids_of(hits: list[Any]) -> list[tuple[str, str, float | None]]:
        return [(h.memory.id, h.memory.content, h.score) for h in hits]

    return {
        "vector": lambda d: d.recall("u1", query="tea coffee morning", top_k=5),
        "keyword": lambda d: d.recall("u1", query="tea coffee", use_vector=False),
        "recent": lambda d: d.recall("u1"),
        "filtered": lambda d: d.recall("u1", tags=["drink"], min_importance=0.3),
        "metadata": lambda d: ids_of(d.recall("u1", metadata={"k": "v"})),
        "other user": lambda d: d.recall("u2", query="tea"),
        "get a": lambda d: d.get(ids["a"]),
        "get a as u1": lambda d: d.get(ids["a"], user_id="u1"),
        "get b": lambda d: d.get(ids["b"]),
        "get new": lambda d: d.get(ids["new"]),
        "related a": lambda d: d.related(ids["a"], user_id="u1"),
        "knowledge": lambda d: d.recall_global_knowledge("refund window days"),
        "document": lambda d: d.get_global_knowledge("K1"),
        "document 2": lambda d: d.get_global_knowledge("K2"),
    }


def assert_fresh(driver: CachedMemoryDriver, ids: dict[str, str], after: str) -> int:
    """Every probe answers through the cache exactly what the driver behind it answers.
    Returns how many probes raised (on both)."""
    raised = 0
    for name, probe in probes(ids).items():
        try:
            expected = probe(driver.inner)
        except Exception as exc:  # e.g. related() of a deleted memory
            with pytest.raises(type(exc)):
                probe(driver)
            raised += 1
            continue
        assert probe(driver) == expected, f"stale {name!r} after {after}"
    return raised


def prime(driver: CachedMemoryDriver, ids: dict[str, str]) -> None:
    """Fill the cache with every probe, and check that a second pass is served from Redis."""
    assert_fresh(driver, ids, "priming")
    calls = count_calls(driver.inner, READS)
    hits = driver.counters["hits"]
    raised = assert_fresh(driver, ids, "priming (second pass)")
    total = len(probes(ids))
    assert driver.counters["hits"] - hits == total - raised, "a probe was not served from Redis"
    # the driver answered only assert_fresh's own calls (and the probes that raise)
    assert sum(calls.values()) == total + raised
    for name in READS:
        vars(driver.inner).pop(name, None)


# ---------------------------------------------------------------------------------- served
def test_repeated_reads_are_served_from_redis(make: MakeCached, redis_client: Any) -> None:  # noqa: F811
    """The second identical read does not reach the driver, and the keys are in Redis."""
    d = make()
    a = d.store("u1", "green tea in the morning", tags=["drink"])
    b = d.store("u1", "black coffee at night")
    d.associate(a.id, b.id, user_id="u1")
    d.store_global_knowledge("The refund window is thirty days", category="policy", doc_id="K1")
    missing = str(uuid.uuid4())
    reads: list[Callable[[], Any]] = [
        lambda: d.get(a.id),
        lambda: d.get(a.id, user_id="u1"),
        lambda: d.get(missing),
        lambda: d.recall("u1", query="tea"),
        lambda: d.recall("u1", query="tea", use_vector=False),
        lambda: d.recall("u1"),
        lambda: d.recall("u1", tags=["drink"], since="2020-01-01T00:00:00Z"),
        lambda: d.related(a.id, user_id="u1"),
        lambda: d.recall_global_knowledge("refund"),
        lambda: d.get_global_knowledge("K1"),
    ]
    first = [read() for read in reads]
    calls = count_calls(d.inner, READS)
    embeds = count_calls(d.inner.embedder, ["embed_query"])  # type: ignore[arg-type]
    hits = d.counters["hits"]
    assert [read() for read in reads] == first
    assert sum(calls.values()) == 0, f"reached the driver: {dict(calls)}"
    assert sum(embeds.values()) == 0, "a cached recall must not even embed its query"
    assert d.counters["hits"] - hits == len(reads)
    assert first[0] == a and first[1] == a and first[2] is None
    keys = list(redis_client.scan_iter(match=f"{d.namespace}:*"))
    assert any(":r:u1:" in k for k in keys) and any(f":m:{a.id}" in k for k in keys)


def test_cached_get_keeps_user_scoping(make: MakeCached) -> None:
    """A memory cached by id is still invisible to another user (get → None)."""
    d = make()
    m = d.store("alice", "alice's secret")
    assert d.get(m.id) == m  # cached, unscoped
    assert d.get(m.id, user_id="bob") is None
    assert d.get(m.id, user_id="alice") == m
    assert d.recall("bob") == [] and d.recall("bob", query="secret") == []


# ---------------------------------------------------------------------------------- never stale
def test_every_write_method_invalidates_what_it_affects(make: MakeCached) -> None:
    """After each write method, every cached read answers what the driver answers, although
    each was served from Redis just before the write."""
    d = make()
    a = d.store("u1", "green tea in the morning", tags=["drink"], metadata={"k": "v"})
    b = d.store("u1", "black coffee at night", tags=["drink"], importance=0.2)
    d.store("u2", "green tea for u2")
    d.store_global_knowledge("The refund window is thirty days", category="policy", doc_id="K1")
    ids = {"a": a.id, "b": b.id, "new": str(uuid.uuid4())}
    old = datetime.now(timezone.utc) - timedelta(days=90)

    steps: list[tuple[str, Callable[[], Any]]] = [
        ("store", lambda: d.store("u1", "tea coffee morning ritual", tags=["drink"])),
        (
            "store_many with a known id",
            lambda: d.store_many(
                [
                    {"user_id": "u1", "content": "imported tea", "id": ids["new"]},
                    {"user_id": "u2", "content": "imported coffee"},
                ]
            ),
        ),
        ("update content", lambda: d.update(a.id, content="green tea and coffee in the morning")),
        ("update tags", lambda: d.update(a.id, user_id="u1", tags=["food"])),
        ("update metadata", lambda: d.update(b.id, metadata={"k": "v"})),
        ("update importance", lambda: d.update(b.id, importance=0.9)),
        ("update type", lambda: d.update(b.id, user_id="u1", memory_type="fact")),
        ("associate", lambda: d.associate(a.id, b.id, "LEADS_TO", 0.7)),
        ("associate again", lambda: d.associate(a.id, b.id, "LEADS_TO", 0.9, user_id="u1")),
        (
            "store old",
            lambda: d.store_many([{"user_id": "u1", "content": "old tea", "created_at": old}]),
        ),
        ("cleanup dry run", lambda: d.cleanup("u1", max_age_days=30)),
        ("cleanup", lambda: d.cleanup("u1", max_age_days=30, dry_run=False)),
        ("delete as u1", lambda: d.delete(b.id, user_id="u1")),
        ("delete without user", lambda: d.delete(ids["new"])),
        (
            "replace document",
            lambda: d.store_global_knowledge("Refunds within ten days", "p", doc_id="K1"),
        ),
        ("new document", lambda: d.store_global_knowledge("refund window days", "p", doc_id="K2")),
        ("delete document", lambda: d.delete_global_knowledge("K1")),
        ("cleanup everyone", lambda: d.cleanup(min_importance=0.4, dry_run=False)),
        ("delete the last one", lambda: d.delete(a.id)),
    ]
    if d.name != "automem":  # AutoMem embeds by itself: its driver refuses to re-embed
        steps.append(("reembed", lambda: d.reembed()))
    for name, write in steps:
        prime(d, ids)
        write()
        assert_fresh(d, ids, name)


def test_a_read_racing_with_a_write_never_leaves_a_stale_entry(make: MakeCached) -> None:
    """A read that loaded the old value from the store, then lost the race to a write in
    another process (which returned first), must not make later reads stale."""
    reader, writer = make(), make()
    m = reader.store("u1", "the old content about tea")
    for method, read, check in (
        ("get", lambda: reader.get(m.id), lambda v: v.content),
        ("recall", lambda: reader.recall("u1", query="tea"), lambda v: v[0].memory.content),
    ):
        new = f"the new content about tea for {method}"
        racing = race(reader, method, read, lambda new=new: writer.update(m.id, content=new))
        assert check(racing) != new, "the racing read started before the write"
        assert check(read()) == new, f"{method}: a later read served the racing read's entry"
        assert check(read()) == new


def race(
    reader: CachedMemoryDriver, method: str, read: Callable[[], Any], write: Callable[[], Any]
) -> Any:
    """Run ``read`` in a thread, hold it right after the driver answered it (before the cache
    is filled), run ``write`` to completion, then let the read finish; returns its answer."""
    loaded, go_on = threading.Event(), threading.Event()
    original = getattr(reader.inner, method)

    def slow(*args: Any, **kwargs: Any) -> Any:
        value = original(*args, **kwargs)
        loaded.set()
        assert go_on.wait(10)
        return value

    setattr(reader.inner, method, slow)
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(read()))
    thread.start()
    try:
        assert loaded.wait(10)
        write()
    finally:
        go_on.set()
        thread.join(10)
        vars(reader.inner).pop(method)
    return out[0]


def test_two_processes_sharing_the_store_and_redis_never_read_stale(
    make: MakeCached,
    backend: Backend,
    namespace: str,  # noqa: F811
) -> None:
    """Another process (a real one) writes and reads through its own cache on the same store
    and Redis; after each acknowledged write, both processes read what the store holds."""
    here = make()
    other = CacheWorker(backend.name, backend.worker_settings, REDIS_URL, namespace)
    rng = random.Random(7)
    ids: list[str] = []
    try:
        for step in range(60):
            writer = rng.choice(["here", "other"])
            op = rng.choice(["store", "store", "update", "delete"] if ids else ["store"])
            if op == "store":
                text = f"note {step} about tea" if step % 2 else f"note {step} about coffee"
                if writer == "here":
                    ids.append(here.store("u1", text).id)
                else:
                    ids.append(other.call("store", "u1", text)["id"])
            elif op == "update":
                target = rng.choice(ids)
                text = f"updated {step} about tea and coffee"
                if writer == "here":
                    here.update(target, content=text)
                else:
                    other.call("update", target, content=text)
            else:
                target = ids.pop(rng.randrange(len(ids)))
                assert here.delete(target) if writer == "here" else other.call("delete", target)
            truth = here.inner.recall("u1", query="tea coffee", top_k=50)
            want = [(h.memory.id, h.memory.content) for h in truth]
            assert [
                (h.memory.id, h.memory.content)
                for h in here.recall("u1", query="tea coffee", top_k=50)
            ] == want, step
            got = other.call("recall", "u1", query="tea coffee", top_k=50)
            assert [(h["memory"]["id"], h["memory"]["content"]) for h in got] == want, step
            probe = rng.choice(ids) if ids else str(uuid.uuid4())
            stored = here.inner.get(probe)
            assert here.get(probe) == stored
            theirs = other.call("get", probe)
            assert (theirs["content"] if theirs else None) == (stored.content if stored else None)
        assert here.counters["hits"] > 0 and other.call("counters")["hits"] > 0
    finally:
        other.close()


def test_a_write_that_fails_after_writing_still_invalidates(
    tmp_path: Path,
    namespace: str,  # noqa: F811
) -> None:
    """If the driver raises after its write may have happened (anything but the typed
    "nothing was written" errors), everything is invalidated before the error propagates."""

    class Flaky(SQLiteDriver):
        fail = False

        def _insert_memories(self, records: Any) -> None:
            super()._insert_memories(records)
            if self.fail:
                raise BackendUnavailableError("the connection dropped after the commit")

    inner = Flaky(
        build_settings(_env_file=None, memory_db_url=f"sqlite:///{tmp_path}/f.db"),
        embedder=HashingEmbedder(256),
    )
    with CachedMemoryDriver(inner, REDIS_URL, namespace=namespace) as d:
        d.store("u1", "first")
        assert len(d.recall("u1")) == 1 and len(d.recall("u1")) == 1
        inner.fail = True
        with pytest.raises(BackendUnavailableError):
            d.store("u1", "second")
        assert [h.memory.content for h in d.recall("u1")] == ["second", "first"]


# ---------------------------------------------------------------------------------- arguments
def test_invalid_arguments_still_raise_after_valid_ones_were_cached(make: MakeCached) -> None:
    d = make()
    m = d.store("u1", "something about tea")
    d.recall("u1", query="tea", top_k=1)
    d.recall("u1", query="tea", tags=["x"])
    d.get(m.id)
    for call in (
        lambda: d.recall("u1", query="tea", top_k=0),
        lambda: d.recall("u1", query="tea", top_k=True),
        lambda: d.recall("u1", query="tea", tags="x"),
        lambda: d.recall("u1", query="tea", tag=["x"]),
        lambda: d.recall(" u1", query="tea"),
        lambda: d.recall("u1", query="  "),
        lambda: d.get("not-a-uuid"),
        lambda: d.get(m.id, user_id=""),
        lambda: d.related("nope", user_id="u1"),
        lambda: d.recall_global_knowledge("tea", top_k=0),
    ):
        with pytest.raises(ValidationError):
            call()


def test_equal_arguments_of_other_types_are_answered_correctly(make: MakeCached) -> None:
    """Arguments that mean the same but differ in type get their own entries; arguments the
    key cannot represent exactly bypass the cache. Every answer is right."""
    d = make()
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    d.store_many(
        [
            {"user_id": "u1", "content": f"tea note {i}", "created_at": t0 + timedelta(days=i)}
            for i in range(5)
        ]
    )
    expected = [h.memory.id for h in d.inner.recall("u1", since=t0 + timedelta(days=2))]
    assert len(expected) == 3
    for since in (t0 + timedelta(days=2), "2026-01-03T00:00:00Z", datetime(2026, 1, 3)):
        for _ in range(2):
            assert [h.memory.id for h in d.recall("u1", since=since)] == expected

    class Query(str):
        pass

    hits = d.counters["hits"]
    calls = count_calls(d.inner, ["recall"])
    for _ in range(2):
        assert d.recall("u1", query=Query("tea note")) == d.inner.recall("u1", query="tea note")
    assert calls["recall"] == 4 and d.counters["hits"] == hits, "uncacheable: always the driver"


def test_entries_expire_after_the_ttl(make: MakeCached, redis_client: Any) -> None:  # noqa: F811
    d = make(ttl=30)
    d.store("u1", "tea")
    d.recall("u1")
    [key] = [k for k in redis_client.scan_iter(match=f"{d.namespace}:r:*")]
    assert 0 < redis_client.pttl(key) <= 30_000
    assert redis_client.pttl(f"{d.namespace}:gen:u:u1") > 0


# ---------------------------------------------------------------------------------- operations
def test_health_and_stats_report_the_cache(make: MakeCached, backend: Backend) -> None:
    d = make()
    d.store("u1", "tea")
    d.recall("u1")
    d.recall("u1")
    report = d.health_check()
    assert report["status"] == "ok" and report["driver"] == d.name == backend.name
    cache = report["cache"]
    assert cache["status"] == "ok" and cache["backend"] == "redis"
    assert cache["hits"] >= 1 and cache["misses"] >= 1 and cache["namespace"] == d.namespace
    assert isinstance(cache["redis_used_memory"], int)
    stats = d.stats()
    assert stats["driver"] == d.name and stats["memories"] == 1 and stats["cache"]["hits"] >= 1
    d.close()
    assert d.health_check()["status"] == "error"
    assert d.inner._closed, "closing the cache closes the driver behind it"


def test_clear_deletes_the_namespace_only(make: MakeCached, redis_client: Any) -> None:  # noqa: F811
    d = make()
    d.store("u1", "tea")
    d.recall("u1")
    redis_client.set(f"{d.namespace}-other:keep", "1")
    try:
        assert d.clear() > 0
        assert list(redis_client.scan_iter(match=f"{d.namespace}:*")) == []
        assert redis_client.get(f"{d.namespace}-other:keep") == "1"
        assert len(d.recall("u1")) == 1
    finally:
        redis_client.delete(f"{d.namespace}-other:keep")


def test_memory_cache_setting_wraps_the_configured_driver(
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    namespace: str,  # noqa: F811
) -> None:
    """``MEMORY_CACHE=redis``: get_memory_driver() (and the CLI) return the configured
    driver behind the cache; unset, the driver as it is."""
    monkeypatch.setenv("MEMORY_DB_URL", f"sqlite:///{clean_env}/m.db")
    monkeypatch.setenv("EMBEDDING_PROVIDER", "hashing")
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    monkeypatch.setenv("REDIS_PREFIX", namespace)
    MemoryDriverManager.reset_cache()
    try:
        plain = get_memory_driver()
        assert type(plain) is SQLiteDriver
        MemoryDriverManager.reset_cache()
        monkeypatch.setenv("MEMORY_CACHE", "Redis")
        get_settings.cache_clear()
        cached = get_memory_driver()
        assert isinstance(cached, CachedMemoryDriver) and isinstance(cached.inner, SQLiteDriver)
        assert cached.namespace == f"{namespace}:cache:sqlite"
        m = cached.store("u1", "through the cache")
        assert cached.get(m.id) == m and cached.get(m.id) == m
        assert cached.counters["hits"] == 1
        assert cached.health_check()["cache"]["status"] == "ok"
    finally:
        MemoryDriverManager.reset_cache()
        get_settings.cache_clear()


def test_memory_cache_setting_values(clean_env: Path) -> None:
    assert build_settings().memory_cache == "none"
    for value, expected in (("", "none"), ("NONE", "none"), ("redis", "redis"), ("off", "none")):
        assert build_settings(memory_cache=value).memory_cache == expected
    from memory_drivers.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="MEMORY_CACHE"):
        build_settings(memory_cache="memcached")


def test_missing_redis_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from memory_drivers.redis import SessionMemory, StreamConsolidator

    monkeypatch.setitem(sys.modules, "redis", None)  # "import redis" raises ImportError
    inner = SQLiteDriver(
        build_settings(_env_file=None, memory_db_url=f"sqlite:///{tmp_path}/m.db"),
        embedder=HashingEmbedder(256),
    )
    try:
        for make_one in (
            lambda: CachedMemoryDriver(inner),
            lambda: SessionMemory(),
            lambda: StreamConsolidator(inner, stream="s"),
        ):
            with pytest.raises(
                MissingDependencyError, match=r'pip install "memory-drivers\[redis\]"'
            ):
                make_one()
    finally:
        inner.close()
    # importing the package (and the CLI) never needs redis-py
    code = (
        "import sys; sys.modules['redis'] = None; import memory_drivers.redis, memory_drivers.cli"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_bad_cache_configuration_is_refused(tmp_path: Path) -> None:
    from memory_drivers.errors import ConfigurationError

    inner = SQLiteDriver(
        build_settings(_env_file=None, memory_db_url=f"sqlite:///{tmp_path}/m.db"),
        embedder=HashingEmbedder(256),
    )
    try:
        with pytest.raises(ConfigurationError, match="REDIS_URL"):
            CachedMemoryDriver(inner, "http://nope")
        for options in ({"ttl": 0}, {"ttl": 1.5}, {"retry_interval": -1}, {"timeout": 0}):
            with pytest.raises(ConfigurationError, match=next(iter(options))):
                CachedMemoryDriver(inner, REDIS_URL, **options)
        with CachedMemoryDriver(inner, REDIS_URL) as cached, pytest.raises(ValueError):
            CachedMemoryDriver(cached)
    finally:
        inner.close()
