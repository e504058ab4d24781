"""Engines for the SQL drivers, and the database ``migrate.py`` works on.

SQLite connections run in WAL mode with foreign keys on, a busy timeout and ``synchronous=FULL``
(``SQLITE_SYNCHRONOUS``). Transactions are begun explicitly: readers with ``BEGIN``, writers
with ``BEGIN IMMEDIATE`` so that two writers queue on the busy timeout instead of failing when a
read lock cannot be upgraded.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import StaticPool

from ..config import Settings
from ..errors import BackendUnavailableError, ConfigurationError, SchemaError, ValidationError
from . import migrations

__all__ = ["create_sqlite_engine", "faiss_index_path", "sqlite_path", "write_connection"]

WRITE = "memory_drivers_write"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for an in-memory database."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"MEMORY_DB_URL {url!r} is not a database URL: {exc}") from None
    if parsed.get_backend_name() != "sqlite":
        raise ConfigurationError(
            f"the sqlite driver needs a sqlite:/// URL in MEMORY_DB_URL, got {url!r}"
        )
    database = parsed.database
    if not database or database == ":memory:":
        return None
    return Path(database)


def faiss_index_path(settings: Settings) -> Path | None:
    """Where the FAISS index lives: ``FAISS_INDEX_PATH``, else beside the database file."""
    if settings.faiss_index_path is not None:
        return Path(settings.faiss_index_path)
    path = sqlite_path(settings.memory_db_url)
    return path.with_suffix(".faiss") if path is not None else None


def create_sqlite_engine(settings: Settings) -> Engine:
    url = settings.memory_db_url
    path = sqlite_path(url)
    # JSON columns are written by json.dumps with its default separators; the sqlite driver's
    # tag filter relies on that exact text (see SQLiteDriver._has_tags). One encoder made once:
    # json.dumps with explicit options builds a new one per value.
    serializer = json.JSONEncoder(ensure_ascii=True, separators=(", ", ": ")).encode
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": settings.sqlite_busy_timeout},
            json_serializer=serializer,
        )
    else:
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False},
            poolclass=StaticPool,
            json_serializer=serializer,
        )
    busy_ms = int(settings.sqlite_busy_timeout * 1000)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" event, not the sqlite3 module, start transactions.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        _enable_wal(cursor, settings.sqlite_busy_timeout)
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA synchronous = {settings.sqlite_synchronous}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(WRITE)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _enable_wal(cursor: sqlite3.Cursor, timeout: float) -> None:
    """Switch the database to WAL mode, retrying while another connection holds it.

    Switching (only a new database needs it; the mode is kept in the file) takes an exclusive
    lock, and SQLite answers "database is locked" at once instead of waiting on busy_timeout
    when two processes open a brand-new database together.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


@contextlib.contextmanager
def write_connection(engine: Engine) -> Iterator[Connection]:
    """A connection inside a write transaction (committed on success, rolled back on error)."""
    with engine.connect() as connection:
        connection.execution_options(**{WRITE: True})
        with connection.begin():
            yield connection


@contextlib.contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A connection inside a read transaction: one consistent snapshot."""
    with engine.connect() as connection, connection.begin():
        yield connection


@dataclass
class MigrationTarget:
    """The database ``migrate.py`` works on, and files derived from it."""

    engine: Engine
    label: str
    derived_files: tuple[Path, ...] = ()
    attributes: dict[str, Any] | None = None
    #: Runs first in the migration's transaction (PostgreSQL: lock, enable pgvector).
    prepare: Callable[[Connection, str], None] | None = None

    def run(self, action: str, *, steps: int = 1, confirmed: bool = False) -> int:
        try:
            return self._run(action, steps=steps, confirmed=confirmed)
        except DBAPIError as exc:
            raise BackendUnavailableError(f"database {self.label}: {exc.orig}") from exc
        finally:
            self.engine.dispose()

    def _run(self, action: str, *, steps: int, confirmed: bool) -> int:
        attributes = self.attributes or {}
        with write_connection(self.engine) as connection:
            if self.prepare is not None and action != "status":
                self.prepare(connection, self.label)
            current = migrations.current_revision(connection)
            if current is not None and current not in migrations.known_revisions():
                raise SchemaError(
                    f"{self.label} is at schema revision {current}, which this version of "
                    "memory-drivers does not know; it was made by a newer version. "
                    "Upgrade memory-drivers."
                )
            pending = migrations.pending_revisions(connection)
            if action == "status":
                print(f"database: {self.label}")
                print(f"current:  {current or '(empty: no schema yet)'}")
                print(f"head:     {migrations.head_revision()}")
                for revision, doc in pending:
                    print(f"pending:  {revision}  {doc}")
                if not pending:
                    print("up to date")
                return 0
            if action == "upgrade":
                migrations.upgrade(connection, **attributes)
                for revision, doc in pending:
                    print(f"applied {revision}  {doc}")
                print(f"{self.label} is up to date ({migrations.head_revision()})")
                return 0
            if action == "rollback":
                if steps < 1:
                    raise ValidationError("--steps must be at least 1")
                if current is None:
                    print(f"{self.label} has no schema; nothing to roll back")
                    return 0
                migrations.downgrade(connection, f"-{steps}", **attributes)
                now = migrations.current_revision(connection)
                print(f"rolled back {current} -> {now or '(empty)'}")
                return 0
            if action == "fresh":
                if not confirmed and not _confirm(self.label):
                    print("aborted; nothing was changed")
                    return 1
                migrations.downgrade(connection, "base", **attributes)
                migrations.upgrade(connection, **attributes)
                for path in self.derived_files:
                    path.unlink(missing_ok=True)
                print(
                    f"{self.label}: dropped everything and recreated the schema "
                    f"({migrations.head_revision()})"
                )
                return 0
        raise ConfigurationError(f"unknown migrate action {action!r}")


def _confirm(label: str) -> bool:
    if not sys.stdin.isatty():
        raise ConfigurationError(
            f"'fresh' deletes every memory in {label}; run it again with --yes to confirm"
        )
    answer = input(f"Delete every memory in {label} and recreate the schema? [y/N] ")
    return answer.strip().lower() in {"y", "yes"}


def migration_target(settings: Settings, url: str | None = None) -> MigrationTarget:
    """The database of the configured SQL driver (or of ``url``): DATABASE_URL for pgvector,
    MEMORY_DB_URL otherwise."""
    if url is None:
        wants_postgres = settings.memory_driver.strip().lower() in {"pgvector", "postgres"}
        url = settings.database_url if wants_postgres else settings.memory_db_url
        if not url:
            raise ConfigurationError(
                "MEMORY_DRIVER is pgvector but DATABASE_URL is not set; set it or pass --url"
            )
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError as exc:
        raise ConfigurationError(f"{url!r} is not a database URL: {exc}") from None
    if backend in {"postgresql", "postgres"}:
        from ..drivers.pgvector import describe, engine_for, prepare_database
        from ..embeddings import get_embedder

        engine = engine_for(settings, url)
        return MigrationTarget(
            engine,
            label=describe(engine.url),
            attributes={"embedding_dimension": get_embedder(settings).dimension},
            prepare=prepare_database,
        )
    if backend == "sqlite":
        settings = settings.replace(memory_db_url=url)
        index = faiss_index_path(settings)
        try:
            engine = create_sqlite_engine(settings)
        except OSError as exc:
            raise BackendUnavailableError(
                f"SQLite database {url}: cannot create its folder ({exc})"
            ) from exc
        return MigrationTarget(
            engine,
            label=url,
            derived_files=(index,) if index is not None else (),
        )
    raise ConfigurationError(
        f"migrate.py handles sqlite:/// and postgresql:// URLs; {url!r} uses {backend!r}"
    )
