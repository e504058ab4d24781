"""Engines for the SQL drivers: SQLite (the sqlite driver) and PostgreSQL (the pgvector driver).

SQLite connections run in WAL mode with foreign keys on, a busy timeout and ``synchronous=FULL``
(``SQLITE_SYNCHRONOUS``). Transactions are begun explicitly: readers with ``BEGIN``, writers
with ``BEGIN IMMEDIATE`` so that two writers queue on the busy timeout instead of failing when a
read lock cannot be upgraded.

PostgreSQL engines use psycopg 3 (imported by SQLAlchemy when the first connection is made, so
importing this module needs no PostgreSQL packages). :func:`prepare_database` runs first in every
migration: it serializes migrations between processes and enables pgvector.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import StaticPool

from ..config import Settings
from ..errors import ConfigurationError, SchemaError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "async_engine_for",
    "create_sqlite_engine",
    "describe",
    "engine_for",
    "faiss_index_path",
    "postgres_url",
    "prepare_database",
    "read_connection",
    "sqlite_path",
    "sqlite_rows",
    "write_connection",
]

WRITE = "memory_drivers_write"

#: Reads of a SQLite file go through a memory map of up to this many bytes (SQLite caps it at
#: its build's SQLITE_MAX_MMAP_SIZE, 2 GiB by default): a recall's rows are then read from the
#: OS's page cache in place instead of copied by a system call per page into each connection's
#: own 2 MB cache, which a store of any size overflows. Writes still go through the journal.
SQLITE_MMAP_BYTES = 1 << 40

#: Each connection's page cache, in KiB (SQLite's default is 2 MB). A write touches pages all
#: over the store's B-trees (the random id index, the user and time indexes, FTS5's segments,
#: the vector log); at 100k memories those are about 20 MB, so with 2 MB most of a batch's
#: index pages were read again from the file (and looked up in the WAL first). Pages are
#: allocated as they are used, so a small store does not take more memory.
SQLITE_CACHE_KIB = 64 * 1024

#: WAL pages after which a commit checkpoints them into the database file (SQLite's default is
#: 1,000, 4 MB). One `store_many` of 1,000 memories writes more than that, so with the default
#: nearly every batch also copied its pages back into the file and synced it; pages that the
#: next batches write again (index leaves, FTS5 segments, the table's last pages) were copied
#: each time. At 10,000 (40 MB) they are copied once per several batches: store_many of 100k
#: memories 5,145 and 5,206/s -> 5,840 and 6,064/s (FULL, alternated, idle machine). The WAL
#: file can grow to about that size between checkpoints; closing the store checkpoints it.
SQLITE_WAL_AUTOCHECKPOINT = 10_000

#: Key of the advisory lock that serializes migrations between processes.
MIGRATION_LOCK = 0x6D656D6F7279  # "memory"


# ---------------------------------------------------------------------- SQLite
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
        if path is not None:
            cursor.execute(f"PRAGMA mmap_size = {SQLITE_MMAP_BYTES}")
            cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
            cursor.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_WAL_AUTOCHECKPOINT}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(WRITE)
        sqlite_rows(connection, "BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def sqlite_rows(connection: Connection, sql: str, parameters: Any = ()) -> list[Any]:
    """The rows (tuples) of plain SQL run on the connection's own sqlite3 connection, inside
    its transaction: for the hot paths (every transaction's ``BEGIN``, every search's log
    position and rows), where SQLAlchemy's statement and result machinery cost more than
    SQLite's work. Errors are SQLAlchemy's ``DBAPIError`` subclasses, as from
    ``connection.execute``."""
    raw: Any = connection.connection.driver_connection
    try:
        return raw.execute(sql, parameters).fetchall()  # type: ignore[no-any-return]
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, parameters, exc, sqlite3.Error) from exc


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


# ---------------------------------------------------------------------- PostgreSQL
def postgres_url(url: str) -> URL:
    """``DATABASE_URL`` as a SQLAlchemy URL that uses psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"DATABASE_URL {url!r} is not a database URL: {exc}") from None
    if parsed.get_backend_name() not in {"postgresql", "postgres"}:
        raise ConfigurationError(
            f"the pgvector driver needs a postgresql:// URL in DATABASE_URL, got "
            f"{parsed.get_backend_name()!r}"
        )
    return parsed.set(drivername="postgresql+psycopg")


def describe(url: URL) -> str:
    """Host, port and database of ``url`` for messages (never the password)."""
    host = url.host or url.query.get("host") or "localhost"
    port = f":{url.port}" if url.port else ""
    return f"PostgreSQL at {host}{port}/{url.database}"


def jsonb_text(value: Any) -> str:
    """JSON text for a PostgreSQL ``jsonb`` column that reads back as it was written.

    ``jsonb`` keeps numbers as ``numeric`` and prints them without an exponent, so a float
    written as ``1e+23`` (``json.dumps``) would read back as the integer
    ``100000000000000000000000``. Such floats are written in that plain form with ``.0``
    instead (``100000000000000000000000.0``), which reads back as the same float and still
    equals ``1e+23`` in a ``jsonb`` comparison.
    """
    text = json.dumps(value)
    return text if "e+" not in text else _plain_floats(value)


def _plain_floats(value: Any) -> str:
    if isinstance(value, float):
        text = repr(value)
        return f"{Decimal(text):f}.0" if "e+" in text else text
    if isinstance(value, dict):
        items = (f"{json.dumps(key)}: {_plain_floats(item)}" for key, item in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_plain_floats(item) for item in value) + "]"
    return json.dumps(value)


def _postgres(settings: Settings, url: str | None) -> tuple[URL, dict[str, Any]]:
    """The psycopg URL for ``url`` (default ``DATABASE_URL``) and the pool's options."""
    url = url or settings.database_url
    if not url:
        raise ConfigurationError(
            "the pgvector driver needs DATABASE_URL, e.g. "
            "postgresql://user:password@localhost:5432/dbname"
        )
    return postgres_url(url), {
        "json_serializer": jsonb_text,
        "pool_size": settings.pgvector_pool_size,
        "max_overflow": settings.pgvector_pool_size,
        # No ping per checkout (a round trip per call): a dead pooled connection fails its
        # first statement, which the driver retries like any dropped connection.
        "pool_pre_ping": False,
        "pool_timeout": max(settings.pgvector_connect_timeout, 1.0),
        "connect_args": {
            "connect_timeout": max(1, round(settings.pgvector_connect_timeout)),
            "application_name": "memory-drivers",
        },
    }


def engine_for(settings: Settings, url: str | None = None) -> Engine:
    """A pooled engine for ``url`` (default ``DATABASE_URL``)."""
    target, options = _postgres(settings, url)
    return create_engine(target, **options)


def async_engine_for(settings: Settings, url: str | None = None) -> AsyncEngine:
    """The same over psycopg's async connections, for the async API (one per event loop)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    target, options = _postgres(settings, url)
    return create_async_engine(target.set(drivername="postgresql+psycopg_async"), **options)


def prepare_database(connection: Connection, where: str) -> None:
    """Serialize migrations between processes, and make sure pgvector is enabled.

    Raises ``SchemaError`` saying exactly what to run when the extension is not installed on
    the server, or when the user may not enable it.
    """
    connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
    installed = connection.execute(
        text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    ).scalar()
    if installed:
        return
    available = connection.execute(
        text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
    ).scalar()
    if not available:
        raise SchemaError(
            f"{where} has no pgvector extension installed on the server. Install pgvector "
            "(https://github.com/pgvector/pgvector#installation; e.g. the postgresql-NN-pgvector "
            "package), then run in that database: CREATE EXTENSION vector;"
        )
    try:
        with connection.begin_nested():
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient_privilege
            raise
        user = connection.execute(text("SELECT current_user")).scalar()
        raise SchemaError(
            f"pgvector is installed on the server but not enabled in {where}, and user "
            f"{user!r} may not enable it. Ask a superuser to run in that database: "
            "CREATE EXTENSION vector;  then run memory-drivers migrate again"
        ) from None
