"""Helpers for the automem tests: ``memory-drivers serve`` on a free loopback port, in a thread
of the test process, in front of a driver that each test chooses (a fresh SQLite store).

Everything goes over real HTTP on 127.0.0.1; nothing of the server is mocked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memory_drivers.base import BaseMemoryDriver
from memory_drivers.config import Settings, build_settings
from memory_drivers.drivers.automem import AutoMemDriver
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.embeddings import Embedder
from memory_drivers.server import ServerThread, create_app

TOKEN = "test-token-0123456789"


class LiveServer:
    """The running server; :meth:`use` puts another store behind it."""

    def __init__(self, url: str, app: Any, placeholder: BaseMemoryDriver) -> None:
        self.url = url
        self.app = app
        self.placeholder = placeholder

    def use(self, driver: BaseMemoryDriver | None) -> None:
        self.app.state.service.driver = driver or self.placeholder

    def client_settings(self, settings: Settings, **changes: Any) -> Settings:
        """``settings`` pointed at this server, with its token and quick retries."""
        return settings.replace(
            automem_url=self.url,
            automem_api_token=TOKEN,
            automem_retry_backoff=0.01,
            **changes,
        )


def sqlite_store(path: Path, settings: Settings, embedder: Embedder | None = None) -> SQLiteDriver:
    return SQLiteDriver(
        settings.replace(memory_db_url=f"sqlite:///{path}/memories.db"), embedder=embedder
    )


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server per test module, with the token ``TOKEN``; tests swap the store behind it."""
    settings = build_settings(_env_file=None, embedding_provider="hashing")
    placeholder = sqlite_store(tmp_path_factory.mktemp("placeholder"), settings)
    app = create_app(placeholder, api_token=TOKEN)
    try:
        with ServerThread(app) as thread:
            yield LiveServer(thread.url, app, placeholder)
    finally:
        placeholder.close()


@pytest.fixture
def served(live_server: LiveServer, tmp_path: Path) -> Iterator[SQLiteDriver]:
    """A fresh SQLite store (hashing embedder) behind the server for this test."""
    settings = build_settings(_env_file=None, embedding_provider="hashing")
    store = sqlite_store(tmp_path / "served", settings)
    live_server.use(store)
    try:
        yield store
    finally:
        live_server.use(None)
        store.close()


@pytest.fixture
def automem(live_server: LiveServer, served: SQLiteDriver) -> Iterator[AutoMemDriver]:
    """An automem driver talking to the server in front of ``served``."""
    settings = live_server.client_settings(build_settings(_env_file=None))
    driver = AutoMemDriver(settings, embedder=served.embedder)
    try:
        yield driver
    finally:
        driver.close()
