"""Prometheus metrics (memory_drivers.metrics), scraped over real HTTP after real workloads.

Each test scrapes the endpoint before and after a workload and checks that every counter moved
by exactly what the workload did: on sqlite (prometheus_client's own server, turned on by
``MEMORY_METRICS=prometheus``), on pgvector, behind the Redis cache, and through
``memory-drivers serve --metrics`` (the token rules included). A failure names the metric and
the labels whose change was wrong.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from automem_support import TOKEN, sqlite_store
from conftest import require_module
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families
from redis_support import REDIS_URL, namespace, redis_client  # noqa: F401 - fixtures
from starlette.testclient import TestClient

from memory_drivers import metrics
from memory_drivers.config import Settings, build_settings, get_settings
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.errors import ConfigurationError, NotFoundError, ValidationError
from memory_drivers.redis import CachedMemoryDriver
from memory_drivers.server import ServerThread, create_app

AUTH = {"Authorization": f"Bearer {TOKEN}"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class Scraper:
    """Scrapes ``url`` and compares two scrapes."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = headers or {}
        self.before: Samples = {}
        self.after: Samples = {}

    def scrape(self) -> Samples:
        response = httpx.get(self.url, headers=self.headers, timeout=30)
        assert response.status_code == 200, response.text
        return parse(response.text)

    def start(self) -> None:
        self.before = self.scrape()

    def stop(self) -> None:
        self.after = self.scrape()

    def value(self, name: str, **labels: str) -> float | None:
        return self.after.get((name, frozenset(labels.items())))

    def delta(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return self.after.get(key, 0.0) - self.before.get(key, 0.0)

    def moved(self, name: str) -> dict[frozenset[tuple[str, str]], float]:
        """Every series of ``name`` that changed, with its change."""
        keys = {k for k in (*self.before, *self.after) if k[0] == name}
        changes = {k[1]: self.after.get(k, 0.0) - self.before.get(k, 0.0) for k in keys}
        return {labels: change for labels, change in changes.items() if change}


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    """Metrics on, in a registry of this test's own; off afterwards."""
    metrics.disable()
    own = CollectorRegistry()
    metrics.enable(own)
    try:
        yield own
    finally:
        metrics.disable()


@pytest.fixture
def exporter(registry: CollectorRegistry) -> Iterator[Scraper]:
    """prometheus_client's own HTTP server for the test's registry, on a free loopback port."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield Scraper(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def hashing_settings(tmp_path: Path, **values: Any) -> Settings:
    values.setdefault("memory_metrics_stats_interval", 0)
    return build_settings(
        _env_file=None,
        embedding_provider="hashing",
        memory_db_url=f"sqlite:///{tmp_path}/memories.db",
        **values,
    )


def test_a_sqlite_workload_moves_each_counter_by_what_it_did(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MEMORY_METRICS=prometheus turns metrics on in prometheus_client's default registry,
    served by its start_http_server. A wrong count usually means an operation is measured
    twice (store calls store_many), a scrape's stats() is counted, or an error is missed."""
    metrics.disable()
    monkeypatch.setenv("MEMORY_METRICS", "prometheus")
    monkeypatch.setenv("MEMORY_METRICS_STATS_INTERVAL", "0")
    monkeypatch.setenv("EMBEDDING_PROVIDER", "hashing")
    monkeypatch.setenv("MEMORY_DB_URL", f"sqlite:///{clean_env}/memories.db")
    get_settings.cache_clear()
    from prometheus_client import REGISTRY

    driver = SQLiteDriver()
    server, thread = start_http_server(0, addr="127.0.0.1")
    try:
        assert metrics.registry() is REGISTRY
        scraper = Scraper(f"http://127.0.0.1:{server.server_port}/metrics")
        scraper.start()
        first = driver.store("u1", "Green tea every morning")
        driver.store("u1", "Coffee after lunch")
        driver.store_many(
            [
                {"user_id": "u1", "content": "Tea with milk on Sundays"},
                {"user_id": "u1", "content": "No sugar"},
                {"user_id": "u2", "content": "Black coffee"},
            ]
        )
        assert driver.get(first.id) is not None
        assert driver.get(str(uuid.uuid4())) is None
        driver.recall("u1", query="green tea")
        with pytest.raises(ValidationError):
            driver.recall("u1", query="tea", top_k=0)
        with pytest.raises(NotFoundError):
            driver.update(str(uuid.uuid4()), content="gone")
        assert driver.delete(first.id)
        driver.recall("u1", query="tea with milk")  # the index takes in the delete
        scraper.stop()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        driver.close()
        metrics.disable()

    calls = scraper.moved("memory_drivers_operations_total")
    assert calls == {
        labels(operation="store", driver="sqlite"): 2,
        labels(operation="store_many", driver="sqlite"): 1,
        labels(operation="get", driver="sqlite"): 2,
        labels(operation="recall", driver="sqlite"): 3,
        labels(operation="update", driver="sqlite"): 1,
        labels(operation="delete", driver="sqlite"): 1,
    }
    assert scraper.moved("memory_drivers_operation_errors_total") == {
        labels(operation="recall", driver="sqlite", error="ValidationError"): 1,
        labels(operation="update", driver="sqlite", error="NotFoundError"): 1,
    }
    seconds = scraper.moved("memory_drivers_operation_duration_seconds_count")
    assert seconds == calls
    recall_seconds = scraper.delta(
        "memory_drivers_operation_duration_seconds_sum", operation="recall", driver="sqlite"
    )
    assert recall_seconds > 0
    embedder = "hashing-256"
    assert scraper.moved("memory_drivers_embedding_batch_size_count") == {
        # two stores, one store_many, and the update (its new content is embedded before the
        # store says there is no such memory)
        labels(embedder=embedder, kind="documents"): 4,
        labels(embedder=embedder, kind="query"): 2,  # the recall refused embeds nothing
    }
    assert scraper.moved("memory_drivers_embedding_batch_size_sum") == {
        labels(embedder=embedder, kind="documents"): 6,
        labels(embedder=embedder, kind="query"): 2,
    }
    at_most_two = scraper.delta(
        "memory_drivers_embedding_batch_size_bucket", embedder=embedder, kind="documents", le="2.0"
    )
    assert at_most_two == 3
    store = str(clean_env / "memories.db")
    where = {"driver": "sqlite", "store": store}
    assert scraper.value("memory_drivers_stored", kind="memories", **where) == 4
    assert scraper.value("memory_drivers_stored", kind="users", **where) == 2
    assert scraper.value("memory_drivers_memories_by_type", memory_type="semantic", **where) == 4
    assert scraper.value("memory_drivers_index_loaded", **where) == 1
    assert scraper.value("memory_drivers_index_in_sync", **where) == 1
    assert scraper.value("memory_drivers_index_pending_changes", **where) == 0
    assert scraper.value("memory_drivers_index_vectors", kind="memories", **where) == 4
    # A new store: the index was built from SQLite once, then followed the log.
    assert scraper.value("memory_drivers_index_events_total", event="rebuilds", **where) == 1
    assert scraper.value("memory_drivers_index_events_total", event="file_loads", **where) == 0


def test_memory_metrics_port_serves_them_without_code(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MEMORY_METRICS_PORT: the first driver made starts prometheus_client's server there
    (for processes such as `memory-drivers mcp`); a second driver reuses it; disable() stops
    it; a port taken by something else is a ConfigurationError naming the setting."""
    metrics.disable()
    port = free_port()
    monkeypatch.setenv("MEMORY_METRICS", "prometheus")
    monkeypatch.setenv("MEMORY_METRICS_PORT", str(port))
    monkeypatch.setenv("EMBEDDING_PROVIDER", "hashing")
    monkeypatch.setenv("MEMORY_DB_URL", f"sqlite:///{clean_env}/memories.db")
    get_settings.cache_clear()
    try:
        with SQLiteDriver() as first, SQLiteDriver() as second:
            first.store("u1", "tea")
            second.recall("u1", query="tea")
            scraper = Scraper(f"http://127.0.0.1:{port}/metrics")
            scraper.stop()
        assert scraper.value("memory_drivers_operations_total", operation="store", driver="sqlite")
        assert scraper.value("memory_drivers_operations_total", operation="recall", driver="sqlite")
    finally:
        metrics.disable()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("MEMORY_METRICS_PORT", str(taken.getsockname()[1]))
        get_settings.cache_clear()
        try:
            with pytest.raises(ConfigurationError, match="MEMORY_METRICS_PORT"):
                SQLiteDriver()
        finally:
            metrics.disable()


def test_the_index_state_shows_changes_it_has_not_taken_in(
    tmp_path: Path, exporter: Scraper
) -> None:
    """Writes by another process (here: another driver, closed since) that this process's
    index has not applied yet (its next search does) show as pending and out of sync; a
    failure means stats() brings the index up to date (a scrape would then do a search's
    work) or misreads the log position."""
    settings = hashing_settings(tmp_path)
    with SQLiteDriver(settings) as driver:
        driver.store("u1", "one")
        driver.recall("u1", query="one")
        with SQLiteDriver(settings) as other:
            other.store_many(
                [{"user_id": "u1", "content": "two"}, {"user_id": "u1", "content": "3"}]
            )
        exporter.stop()
        where = {"driver": "sqlite", "store": str(tmp_path / "memories.db")}
        assert exporter.value("memory_drivers_index_in_sync", **where) == 0
        assert exporter.value("memory_drivers_index_pending_changes", **where) == 2
        assert exporter.value("memory_drivers_index_vectors", kind="memories", **where) == 1
        assert exporter.value("memory_drivers_stored", kind="memories", **where) == 3
        driver.recall("u1", query="two")
        exporter.stop()
        assert exporter.value("memory_drivers_index_in_sync", **where) == 1
        assert exporter.value("memory_drivers_index_pending_changes", **where) == 0
        assert exporter.value("memory_drivers_index_vectors", kind="memories", **where) == 3


def test_stats_are_reused_for_the_interval(tmp_path: Path, exporter: Scraper) -> None:
    """MEMORY_METRICS_STATS_INTERVAL: scrapes within it reuse the last stats() (counting is
    not free on a large store), and a scrape never counts as a stats operation."""
    with SQLiteDriver(hashing_settings(tmp_path, memory_metrics_stats_interval=3600)) as driver:
        driver.store("u1", "one")
        exporter.start()
        driver.store("u1", "two")
        exporter.stop()
    where = {"driver": "sqlite", "store": str(tmp_path / "memories.db")}
    assert exporter.value("memory_drivers_stored", kind="memories", **where) == 1
    stats_calls = exporter.delta(
        "memory_drivers_operations_total", operation="stats", driver="sqlite"
    )
    assert stats_calls == 0


def test_the_redis_cache_counts_hits_and_misses_and_is_measured_once(
    tmp_path: Path,
    exporter: Scraper,
    namespace: str,  # noqa: F811 - a fixture
) -> None:
    """Behind the cache an operation is measured once (not again for the driver it wraps),
    hits and misses are counted as the cache's stats() counts them, and the store is
    reported once."""
    inner = SQLiteDriver(hashing_settings(tmp_path))
    # A generous timeout: on a loaded machine a slow answer would count as an outage.
    with CachedMemoryDriver(inner, REDIS_URL, namespace=namespace, timeout=5.0) as driver:
        exporter.start()
        first = driver.store("u1", "Green tea every morning")
        driver.recall("u1", query="green tea", now="2026-01-01T00:00:00Z")  # miss
        driver.recall("u1", query="green tea", now="2026-01-01T00:00:00Z")  # hit
        driver.store("u1", "Coffee after lunch")  # invalidates the user's answers
        driver.recall("u1", query="green tea", now="2026-01-01T00:00:00Z")  # miss
        driver.get(first.id)  # miss
        driver.get(first.id)  # hit
        exporter.stop()
        counters = driver.stats()["cache"]
    assert exporter.moved("memory_drivers_cache_events_total") == {
        labels(driver="sqlite", event="misses"): 3,
        labels(driver="sqlite", event="hits"): 2,
        labels(driver="sqlite", event="invalidations"): 2,
    }
    assert (counters["hits"], counters["misses"]) == (2, 3)
    assert exporter.moved("memory_drivers_operations_total") == {
        labels(operation="store", driver="sqlite"): 2,
        labels(operation="recall", driver="sqlite"): 3,
        labels(operation="get", driver="sqlite"): 2,
    }
    # Queries embedded: the two recalls that missed; a hit embeds nothing.
    queries = exporter.delta(
        "memory_drivers_embedding_batch_size_count", embedder="hashing-256", kind="query"
    )
    assert queries == 2
    store = str(tmp_path / "memories.db")
    stored = [
        value
        for (name, series), value in exporter.after.items()
        if name == "memory_drivers_stored" and {("kind", "memories"), ("store", store)} <= series
    ]
    assert stored == [2]


def test_a_store_whose_stats_fail_is_left_out_and_the_scrape_goes_on(
    tmp_path: Path, exporter: Scraper
) -> None:
    """One unusable store (its file overwritten) does not break the scrape: its gauges are
    missing, the failure is counted, and other stores are reported."""
    healthy = SQLiteDriver(hashing_settings(tmp_path / "a"))
    broken = SQLiteDriver(hashing_settings(tmp_path / "b"))
    try:
        healthy.store("u1", "tea")
        broken.store("u1", "coffee")
        exporter.start()
        broken.engine.dispose()
        with open(tmp_path / "b" / "memories.db", "r+b") as handle:
            handle.write(b"not a database" * 10)
        exporter.stop()
    finally:
        healthy.close()
        broken.engine.dispose()
        broken._closed = True  # closing would try to save its index into the broken store
    assert exporter.moved("memory_drivers_stats_errors_total") == {labels(driver="sqlite"): 1}
    for name, expected in (("a", 1), ("b", None)):
        where = {"driver": "sqlite", "store": str(tmp_path / name / "memories.db")}
        assert exporter.value("memory_drivers_stored", kind="memories", **where) == expected


async def test_the_async_api_is_measured_as_the_sync_one(tmp_path: Path, exporter: Scraper) -> None:
    """AsyncMemoryDriver runs the sync methods in worker threads: each call is one operation,
    concurrent ones included (each thread has its own notion of the operation under way)."""
    import asyncio

    from memory_drivers.aio import AsyncMemoryDriver

    async with await AsyncMemoryDriver.create("sqlite", hashing_settings(tmp_path)) as driver:
        exporter.start()
        await driver.store_many([{"user_id": "u1", "content": f"tea {i}"} for i in range(5)])
        await asyncio.gather(*(driver.recall("u1", query=f"tea {i}") for i in range(8)))
        with pytest.raises(ValidationError):
            await driver.recall("u1", query="tea", top_k=0)
        await asyncio.to_thread(exporter.stop)
    assert exporter.moved("memory_drivers_operations_total") == {
        labels(operation="store_many", driver="sqlite"): 1,
        labels(operation="recall", driver="sqlite"): 9,
    }
    assert exporter.moved("memory_drivers_operation_errors_total") == {
        labels(operation="recall", driver="sqlite", error="ValidationError"): 1,
    }


def test_a_pgvector_workload_moves_each_counter_by_what_it_did(
    pg_database: str, exporter: Scraper
) -> None:
    """The same measures on a server driver: calls, errors, the stored counts."""
    from memory_drivers.drivers.pgvector import PgVectorDriver
    from memory_drivers.embeddings.hashing import HashingEmbedder

    settings = build_settings(
        _env_file=None,
        database_url=pg_database,
        memory_auto_migrate=True,
        memory_metrics_stats_interval=0,
    )
    with PgVectorDriver(settings, embedder=HashingEmbedder(64)) as driver:
        exporter.start()
        a, b, c = driver.store_many(
            [
                {"user_id": "u1", "content": "Green tea every morning"},
                {"user_id": "u1", "content": "Coffee after lunch"},
                {"user_id": "u2", "content": "Black coffee"},
            ]
        )
        driver.associate(a.id, b.id)
        driver.recall("u1", query="tea")
        driver.recall("u1", query="coffee", search="keyword")
        with pytest.raises(ValidationError):
            driver.associate(a.id, c.id)  # two users
        assert driver.delete(c.id)
        exporter.stop()
        store = driver.stats()["database"]
    assert exporter.moved("memory_drivers_operations_total") == {
        labels(operation="store_many", driver="pgvector"): 1,
        labels(operation="associate", driver="pgvector"): 2,
        labels(operation="recall", driver="pgvector"): 2,
        labels(operation="delete", driver="pgvector"): 1,
    }
    assert exporter.moved("memory_drivers_operation_errors_total") == {
        labels(operation="associate", driver="pgvector", error="ValidationError"): 1,
    }
    where = {"driver": "pgvector", "store": store}
    assert exporter.value("memory_drivers_stored", kind="memories", **where) == 2
    assert exporter.value("memory_drivers_stored", kind="users", **where) == 1
    assert exporter.value("memory_drivers_stored", kind="associations", **where) == 1
    assert exporter.value("memory_drivers_index_in_sync", **where) is None  # sqlite's alone


@pytest.fixture
def served(tmp_path: Path, registry: CollectorRegistry) -> Iterator[tuple[str, SQLiteDriver]]:
    """``serve --metrics`` with the token, over a fresh SQLite store."""
    store = sqlite_store(tmp_path, hashing_settings(tmp_path))
    app = create_app(store, api_token=TOKEN, metrics_route=True)
    try:
        with ServerThread(app) as thread:
            yield thread.url, store
    finally:
        store.close()


def test_serve_metrics_counts_each_request_once_and_needs_the_token(
    served: tuple[str, SQLiteDriver],
) -> None:
    """Each request is one operation of the driver (named after the route's public method),
    whatever the server calls inside; /metrics needs the token by default."""
    url, store = served
    scraper = Scraper(f"{url}/metrics", AUTH)
    scraper.start()
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        ids = [
            client.post("/memory", json={"content": text}).json()["memory_id"]
            for text in ("Green tea every morning", "Coffee after lunch")
        ]
        assert client.get("/recall", params={"query": "green tea"}).status_code == 200
        assert client.get(f"/memory/{ids[0]}").status_code == 200
        assert client.get(f"/memory/{uuid.uuid4()}").status_code == 404
        assert client.get("/health").status_code == 200
        refused = httpx.get(f"{url}/metrics", timeout=30)
    scraper.stop()
    assert refused.status_code == 401
    assert scraper.moved("memory_drivers_operations_total") == {
        labels(operation="store", driver="sqlite"): 2,
        labels(operation="recall", driver="sqlite"): 1,
        labels(operation="get", driver="sqlite"): 2,
        labels(operation="health_check", driver="sqlite"): 1,
    }
    assert scraper.moved("memory_drivers_operation_errors_total") == {
        labels(operation="get", driver="sqlite", error="ApiError"): 1,
    }
    where = {"driver": "sqlite", "store": str(store.path)}
    assert scraper.value("memory_drivers_stored", kind="memories", **where) == 2


def test_metrics_open_lets_only_this_machine_scrape_without_the_token(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    """MEMORY_SERVER_METRICS_OPEN: a loopback client scrapes /metrics without the token; any
    other client still needs it, and every other route still needs it from loopback too."""
    with sqlite_store(tmp_path, hashing_settings(tmp_path)) as store:
        app = create_app(store, api_token=TOKEN, metrics_route=True, metrics_open=True)
        with ServerThread(app) as thread:
            scraped = httpx.get(f"{thread.url}/metrics", timeout=30)
            recall = httpx.get(f"{thread.url}/recall", params={"query": "x"}, timeout=30)
        assert scraped.status_code == 200
        assert "memory_drivers_stored" in scraped.text
        assert recall.status_code == 401
        with TestClient(app, client=("192.0.2.7", 50000)) as remote:
            assert remote.get("/metrics").status_code == 401
            assert remote.get("/metrics", headers=AUTH).status_code == 200


def test_without_metrics_route_there_is_no_metrics_page(tmp_path: Path) -> None:
    """Without --metrics, /metrics is an unknown path (404, as AutoMem answers)."""
    store = sqlite_store(tmp_path, hashing_settings(tmp_path))
    with store, TestClient(create_app(store, api_token=TOKEN)) as client:
        assert client.get("/metrics", headers=AUTH).status_code == 404


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_serve_command_with_metrics(tmp_path: Path) -> None:
    """``memory-drivers serve --metrics``, as a user starts it."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MEMORY_", "EMBEDDING_"))},
        "MEMORY_DB_URL": f"sqlite:///{tmp_path}/memories.db",
        "EMBEDDING_PROVIDER": "hashing",
        "MEMORY_SERVER_API_TOKEN": TOKEN,
    }
    command = [sys.executable, "-m", "memory_drivers", "serve", "--metrics", "--port", str(port)]
    process = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/health", timeout=5)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()[1].decode()
                assert time.monotonic() < deadline, "serve did not start within 60 s"
                time.sleep(0.2)
        stored = httpx.post(f"{url}/memory", json={"content": "tea"}, headers=AUTH, timeout=30)
        assert stored.status_code == 201, stored.text
        page = httpx.get(f"{url}/metrics", headers=AUTH, timeout=30)
        assert httpx.get(f"{url}/metrics", timeout=30).status_code == 401
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert page.status_code == 200
    samples = parse(page.text)
    key = ("memory_drivers_operations_total", labels(operation="store", driver="sqlite"))
    assert samples[key] == 1
    assert f"metrics at {url}/metrics" in err.decode()


def test_memory_drivers_mcp_serves_metrics_on_memory_metrics_port(tmp_path: Path) -> None:
    """`memory-drivers mcp` over stdio, driven by the mcp package's client, with
    MEMORY_METRICS_PORT: each tool call is the driver operation it makes, scraped over HTTP
    while the session is open."""
    require_module("mcp", 'pip install "memory-drivers[mcp]"')
    from mcp import Client, StdioServerParameters

    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MEMORY_", "EMBEDDING_"))},
        "MEMORY_DB_URL": f"sqlite:///{tmp_path}/memories.db",
        "EMBEDDING_PROVIDER": "hashing",
        "MEMORY_METRICS": "prometheus",
        "MEMORY_METRICS_PORT": str(port),
    }
    server = StdioServerParameters(
        command=sys.executable,
        args=["-m", "memory_drivers", "mcp", "--user-id", "alice"],
        env=env,
        cwd=str(tmp_path),
    )

    async def session() -> Samples:
        async with Client(server) as client:
            for text in ("Green tea every morning", "Hiking in the Alps"):
                await client.call_tool("store_memory", {"content": text})
            await client.call_tool("recall_memories", {"query": "green tea"})
            async with httpx.AsyncClient(timeout=30) as http:
                response = await http.get(f"http://127.0.0.1:{port}/metrics")
            return parse(response.text)

    import anyio

    samples = anyio.run(session)
    calls = {
        dict(series)["operation"]: value
        for (name, series), value in samples.items()
        if name == "memory_drivers_operations_total"
    }
    assert calls == {"store": 2, "recall": 1}


def test_metrics_off_import_nothing(tmp_path: Path) -> None:
    """Off (the default), a workload never imports prometheus_client."""
    code = (
        "import sys\n"
        "from memory_drivers import metrics\n"
        "from memory_drivers.config import build_settings\n"
        "from memory_drivers.drivers.sqlite import SQLiteDriver\n"
        f"s = build_settings(_env_file=None, embedding_provider='hashing', "
        f"memory_db_url='sqlite:///{tmp_path}/m.db')\n"
        "with SQLiteDriver(s) as d:\n"
        "    d.store('u1', 'tea'); d.recall('u1', query='tea'); d.stats()\n"
        "assert not metrics.enabled()\n"
        "assert 'prometheus_client' not in sys.modules, 'imported'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMORY_")}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


def test_enable_is_idempotent_and_refuses_a_second_registry(registry: CollectorRegistry) -> None:
    assert metrics.enable() is registry
    with pytest.raises(ConfigurationError, match="disable"):
        metrics.enable(CollectorRegistry())
    metrics.disable()
    assert not metrics.enabled()
    assert list(registry.collect()) == []


def test_an_unknown_memory_metrics_value_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="MEMORY_METRICS"):
        build_settings(_env_file=None, memory_metrics="statsd")
    assert build_settings(_env_file=None, memory_metrics="off").memory_metrics == "none"
