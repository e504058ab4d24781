"""Shared pytest fixtures and helpers. Keep each one small and say what it is for.

Suites that need a server call :func:`require_server` (and those that need an optional extra,
:func:`require_module`): on a laptop without it the test is skipped; with
``MEMORY_DRIVERS_REQUIRE_SERVERS=1`` (set by ``.ci/run``) it fails instead, so CI can never go
green by skipping.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memory_drivers.config import Settings, get_settings

# The conformance suite against the real AutoMem needs AutoMem's source and its own
# virtualenv: only `make test-automem-real` runs it (docs/drivers/automem.md), never CI.
collect_ignore = [] if os.environ.get("MEMORY_DRIVERS_AUTOMEM_REAL") else ["automem_real"]

REQUIRE_SERVERS = os.environ.get("MEMORY_DRIVERS_REQUIRE_SERVERS", "").lower() in {
    "1",
    "true",
    "yes",
}


def require_server(reason: str) -> None:
    """Skip (laptop) or fail (CI) because a server the test needs is not available."""
    if REQUIRE_SERVERS:
        pytest.fail(f"{reason} (MEMORY_DRIVERS_REQUIRE_SERVERS is set, so this is a failure)")
    pytest.skip(reason)


def require_module(name: str, install: str) -> Any:
    """Import ``name`` for a test module that needs an optional extra: skipped on a laptop
    without it, a collection error in CI (the extras are part of what CI installs, so a
    dropped one must not pass by skipping)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        reason = f"{name} is not installed: {install}"
        if REQUIRE_SERVERS:
            pytest.fail(f"{reason} (MEMORY_DRIVERS_REQUIRE_SERVERS is set, so this is a failure)")
        pytest.skip(reason, allow_module_level=True)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Hermetic configuration for a test: removes every memory-drivers variable (one per
    Settings field, any case) from the environment, makes ``tmp_path`` (empty, so no stray
    ``.env``) the working directory, and clears the ``get_settings()`` cache before and after.
    Yields ``tmp_path``; set variables with ``monkeypatch.setenv`` then call
    ``get_settings.cache_clear()``."""
    fields = {name.upper() for name in Settings.model_fields}
    for variable in list(os.environ):
        if variable.upper() in fields:
            monkeypatch.delenv(variable)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    try:
        yield tmp_path
    finally:
        get_settings.cache_clear()


@pytest.fixture(scope="session")
def postgres() -> Any:
    """A real PostgreSQL with pgvector for this session (memory_drivers/sql/throwaway_server.py):
    the one at PGVECTOR_TEST_URL, else a throwaway embedded server. Skips (laptop) or fails (CI)
    when neither can be had."""
    from memory_drivers.sql.throwaway_server import start_postgres

    try:
        return start_postgres()
    except Exception as exc:  # no server: a skip on a laptop, a failure in CI
        require_server(f"no PostgreSQL with pgvector: {exc}")


@pytest.fixture
def pg_database(postgres: Any) -> Iterator[str]:
    """The URL of a new, empty database on the session's PostgreSQL, dropped afterwards."""
    name, url = postgres.create_database()
    try:
        yield url
    finally:
        postgres.drop_database(name)
