"""What the Redis tests share: the running server, unique key prefixes, servers of their own.

- ``REDIS_URL`` (environment, default ``redis://127.0.0.1:6379/0``) is the shared server. Other
  test runs may use it at the same time, so every test works under a unique prefix
  (:func:`namespace`) and deletes its keys afterwards.
- :class:`RedisServer` runs a ``redis-server`` of the test's own on a free loopback port, to
  stop, pause and restart it (fault tests).
- :func:`with_cache` wraps any conformance ``driver_factory`` with the Redis cache; a cached
  conformance variant for another driver is four lines (see test_redis_cache_conformance.py).

Test modules import the fixtures they use by name (``from redis_support import namespace``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import require_server

from memory_drivers.base import BaseMemoryDriver
from memory_drivers.redis import CachedMemoryDriver, connect

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"

DriverFactory = Callable[..., BaseMemoryDriver]


def shared_client() -> Any:
    """A client of the shared server; skips (laptop) or fails (CI) when it does not answer."""
    client = connect(REDIS_URL, timeout=5.0)
    try:
        client.ping()
    except Exception as exc:
        client.close()
        require_server(f"Redis is not reachable at {REDIS_URL} ({exc})")
    return client


def delete_prefix(client: Any, prefix: str) -> int:
    """Delete every key under ``prefix:``; returns how many."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    return len(keys)


@pytest.fixture
def redis_client() -> Iterator[Any]:
    """A client of the shared Redis server (5 s timeouts)."""
    client = shared_client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def namespace(redis_client: Any) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards."""
    prefix = f"md-test-{uuid.uuid4().hex[:12]}"
    try:
        yield prefix
    finally:
        delete_prefix(redis_client, prefix)


def with_cache(
    factory: DriverFactory, namespace: str, redis: Any = None, **options: Any
) -> DriverFactory:
    """A conformance ``driver_factory`` that puts the Redis cache (namespace ``namespace``)
    in front of what ``factory`` opens. ``options`` go to :class:`CachedMemoryDriver`."""

    def cached(*, embedder: Any, settings: Any) -> BaseMemoryDriver:
        inner = factory(embedder=embedder, settings=settings)
        return CachedMemoryDriver(
            inner, redis if redis is not None else REDIS_URL, namespace=namespace, **options
        )

    return cached


def sqlite_factory(directory: Path) -> DriverFactory:
    """The sqlite conformance factory: the same store under ``directory`` at every call."""
    from memory_drivers.drivers.sqlite import SQLiteDriver

    def factory(*, embedder: Any, settings: Any) -> BaseMemoryDriver:
        return SQLiteDriver(
            settings.replace(memory_db_url=f"sqlite:///{directory}/store/memories.db"),
            embedder=embedder,
        )

    return factory


def chroma_factory(directory: Path, url: str | None = None, prefix: str = "") -> DriverFactory:
    """The chroma conformance factory: embedded under ``directory``, or on the server at
    ``url`` with collections named after ``prefix``; the same store at every call."""
    from memory_drivers.drivers.chroma import ChromaDriver

    names = (
        {
            "chroma_collection": f"{prefix}_memories",
            "chroma_knowledge_collection": f"{prefix}_knowledge",
        }
        if prefix
        else {}
    )

    def factory(*, embedder: Any, settings: Any) -> BaseMemoryDriver:
        where = (
            {"chroma_url": url}
            if url
            else {"chroma_path": directory / "chroma", "chroma_url": None}
        )
        return ChromaDriver(settings.replace(**where, **names), embedder=embedder)

    return factory


@pytest.fixture(scope="session")
def chroma_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One ``chroma run`` for the cache tests (several processes share a store through it)."""
    from chroma_server import running_chroma

    with running_chroma(tmp_path_factory.mktemp("cache-chroma") / "data") as server:
        yield server


def pgvector_factory(database_url: str) -> DriverFactory:
    """The pgvector conformance factory: the database ``database_url`` at every call."""
    from memory_drivers.drivers.pgvector import PgVectorDriver

    def factory(*, embedder: Any, settings: Any) -> BaseMemoryDriver:
        return PgVectorDriver(
            settings.replace(database_url=database_url, memory_auto_migrate=True),
            embedder=embedder,
        )

    return factory


class AutoMemStore:
    """The automem conformance factory: an automem driver talking over HTTP to ``memory-drivers
    serve`` (``live_server`` from automem_support) in front of a sqlite store under
    ``directory``, opened at the first call with the test's embedder. :meth:`close` after."""

    def __init__(self, live_server: Any, directory: Path) -> None:
        self.live_server = live_server
        self.directory = directory
        self.stores: list[BaseMemoryDriver] = []

    def factory(self, *, embedder: Any, settings: Any) -> BaseMemoryDriver:
        from automem_support import sqlite_store

        from memory_drivers.drivers.automem import AutoMemDriver

        if not self.stores:  # the first call of a test opens the store; later calls reuse it
            model = embedder
            while hasattr(model, "inner"):  # RecordingEmbedder, FaultyEmbedder
                model = model.inner
            self.stores.append(sqlite_store(self.directory / "served", settings, model))
            self.live_server.use(self.stores[0])
        return AutoMemDriver(self.live_server.client_settings(settings), embedder=embedder)

    def worker_settings(self) -> dict[str, Any]:
        from automem_support import TOKEN

        return {
            "automem_url": self.live_server.url,
            "automem_api_token": TOKEN,
            "automem_retry_backoff": 0.01,
        }

    def close(self) -> None:
        self.live_server.use(None)
        for store in self.stores:
            store.close()


def count_calls(driver: BaseMemoryDriver, names: list[str]) -> Counter[str]:
    """Count calls of these public methods of ``driver`` (instance attributes wrapping them)."""
    calls: Counter[str] = Counter()
    for name in names:
        original = getattr(driver, name)

        def counted(*args: Any, _original: Any = original, _name: str = name, **kw: Any) -> Any:
            calls[_name] += 1
            return _original(*args, **kw)

        setattr(driver, name, counted)
    return calls


#: Every driver that exists; the targeted cache tests run against each. Add new ones here and
#: in :func:`open_backend`.
BACKENDS = ["sqlite", "pgvector", "automem", "chroma"]


@dataclass
class Backend:
    """A driver behind the cache: its conformance-style factory (the same store at each call),
    and how another process opens that store (driver name and settings)."""

    name: str
    factory: DriverFactory
    worker_settings: dict[str, Any]


@contextlib.contextmanager
def open_backend(name: str, request: pytest.FixtureRequest, directory: Path) -> Iterator[Backend]:
    """A fresh store of driver ``name`` (pgvector: a new database on the test PostgreSQL;
    automem: ``memory-drivers serve`` in front of a sqlite store), closed afterwards."""
    if name == "sqlite":
        url = f"sqlite:///{directory}/store/memories.db"
        yield Backend("sqlite", sqlite_factory(directory), {"memory_db_url": url})
    elif name == "pgvector":
        url = request.getfixturevalue("pg_database")
        yield Backend("pgvector", pgvector_factory(url), {"database_url": url})
    elif name == "automem":
        store = AutoMemStore(request.getfixturevalue("live_server"), directory)
        try:
            yield Backend("automem", store.factory, store.worker_settings())
        finally:
            store.close()
    elif name == "chroma":
        server = request.getfixturevalue("chroma_service")
        prefix = f"c{uuid.uuid4().hex[:12]}"
        names = {
            "chroma_url": server.url,
            "chroma_collection": f"{prefix}_memories",
            "chroma_knowledge_collection": f"{prefix}_knowledge",
        }
        yield Backend("chroma", chroma_factory(directory, server.url, prefix), names)
    else:
        raise ValueError(f"no backend {name!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A ``redis-server`` of the test's own on a free loopback port, in ``directory``.

    It keeps nothing on disk unless asked: :meth:`stop` with ``save=True`` writes a snapshot
    that the next :meth:`start` loads, so a restart can keep (stale) keys.
    """

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            require_server("redis-server is not on PATH (needed to start a Redis of our own)")
        self.binary = str(binary)
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.started = False

    def start(self) -> None:
        """Start the server and wait until it answers. The first start moves to another free
        port if the chosen one was taken meanwhile; a restart keeps the port."""
        assert self.process is None, "already running"
        for _attempt in range(3):
            if self._start_once():
                self.started = True
                return
            if self.started:
                break
            self.port = free_port()
            self.url = f"redis://127.0.0.1:{self.port}/0"
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def _start_once(self) -> bool:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--dbfilename",
                "dump.rdb",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = connect(self.url, timeout=0.5)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    # answered by our process, not by whoever else listens on the port
                    if int(client.info("server")["process_id"]) == self.process.pid:
                        return True
                except Exception:
                    pass
                time.sleep(0.02)
        finally:
            client.close()
        self.process.kill()
        self.process.wait()
        self.process = None
        return False

    def stop(self, *, save: bool = False) -> None:
        """Stop the server; with ``save``, snapshot its data first (the next start loads it)."""
        if self.process is None:
            return
        if save:
            client = connect(self.url, timeout=5)
            try:
                client.save()
            finally:
                client.close()
        else:
            with contextlib.suppress(FileNotFoundError):
                (self.directory / "dump.rdb").unlink()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing answers."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
            self.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running ``redis-server`` of this test's own (stopped afterwards)."""
    directory = tmp_path / "redis-server"
    directory.mkdir()
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.close()
