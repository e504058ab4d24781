"""Rows of the sqlite driver read and written through the DB-API, converted by hand.

The hot paths (every recall's memories and keyword postings, every store_many's rows) skip
SQLAlchemy's statement and row machinery, which cost more than SQLite's own work there. Each
value is converted exactly as its column type's SQLAlchemy processor would convert it
(``tests/test_sqlite_fast_paths.py`` checks both ways against SQLAlchemy).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy import JSON, Table
from sqlalchemy.engine import Connection

from ...models import Memory
from ...sql.driver import MEMORY_COLUMNS
from ...sql.engines import sqlite_rows
from ...sql.schema import EmbeddingType, UTCDateTime, memories

__all__ = [
    "SCOPED_TERMS",
    "InsertPlan",
    "by_pks_sql",
    "fast_bind",
    "insert_rows",
    "memory_of_row",
    "page_sql",
    "postings_sql",
    "utc_text",
]

_QUOTED_COLUMNS = ", ".join(f'"{c.name}"' for c in MEMORY_COLUMNS)
# The order memory_of_row reads.
_ORDER = "pk id user_id conversation_id content memory_type tags importance metadata source"
assert [c.name for c in MEMORY_COLUMNS] == [*_ORDER.split(), "created_at", "updated_at"]


@functools.lru_cache(maxsize=64)
def by_pks_sql(count: int) -> str:
    """The memories of ``count`` pks, as ``MEMORY_COLUMNS``."""
    return f"SELECT {_QUOTED_COLUMNS} FROM memories WHERE pk IN ({', '.join('?' * count)})"


@functools.lru_cache(maxsize=4)
def page_sql(one_user: bool, after: bool) -> str:
    """A page of memories in ``(created_at, id)`` order, as ``SQLDriver._memory_page`` reads it:
    parameters (user_id,) when ``one_user``, then (created_at, created_at, id) when ``after``
    (the created_at bound alone first, so the page is a range of ``ix_memories_created``),
    then the page's size."""
    where = ["user_id = ?"] if one_user else []
    if after:
        where.append("created_at >= ? AND (created_at > ? OR id > ?)")
    condition = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {_QUOTED_COLUMNS} FROM memories{condition} ORDER BY created_at, id LIMIT ?"


def _utc(value: str) -> datetime:
    """A stored ``UTCDateTime`` (naive UTC text, ``YYYY-MM-DD HH:MM:SS.ffffff``) as the column
    type reads it: an aware datetime in UTC."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def memory_of_row(row: Sequence[Any]) -> Memory:
    """A :class:`Memory` from a raw row of ``MEMORY_COLUMNS``: JSON decoded (an empty list or
    object without the decoder), times made aware, then validated by pydantic as
    ``SQLDriver._hydrate`` does."""
    _, id_, user, conversation, content, kind, tags, importance, meta, source, at, upd = row
    return _validate_memory(
        {
            "id": id_,
            "user_id": user,
            "conversation_id": conversation,
            "content": content,
            "memory_type": kind,
            "tags": [] if tags == "[]" else json.loads(tags),
            "importance": importance,
            "metadata": {} if meta == "{}" else json.loads(meta),
            "source": source,
            "created_at": _utc(at),
            "updated_at": _utc(upd),
        }
    )


_validate_memory = Memory.model_validate


def fast_bind(column_type: Any, dialect: Any) -> Callable[[Any], Any] | None:
    """The bind processor of ``column_type`` on SQLite: for times, JSON and vectors a plain
    function giving the same value as SQLAlchemy's (checked in tests), else its own."""
    if isinstance(column_type, UTCDateTime):
        return utc_text
    if isinstance(column_type, EmbeddingType):
        return _vector_bytes
    if isinstance(column_type, JSON) and dialect._json_serializer is not None:
        return dialect._json_serializer  # type: ignore[no-any-return]
    return column_type.dialect_impl(dialect).bind_processor(dialect)  # type: ignore[no-any-return]


def utc_text(value: datetime | None) -> str | None:
    """What ``UTCDateTime`` stores on SQLite: naive UTC text, ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")


def _vector_bytes(value: Any) -> bytes | None:
    """What ``EmbeddingType`` stores on SQLite: the float32 vector's raw bytes."""
    if value is None:
        return None
    return np.ascontiguousarray(value, dtype=np.float32).tobytes()


@functools.lru_cache(maxsize=256)
def postings_sql(fts: str, count: int) -> str:
    """The rowids matching each of ``count`` terms, tagged with the term's position."""
    return " UNION ALL ".join(
        f"SELECT {i}, rowid FROM {fts} WHERE {fts} MATCH ?" for i in range(count)
    )


#: An insert's SQL, its columns, and the converters of those that need one (by position).
InsertPlan = tuple[str, tuple[str, ...], list[tuple[int, Callable[[Any], Any]]]]


def insert_rows(
    connection: Connection,
    table: Table,
    rows: list[dict[str, Any]],
    plans: dict[tuple[str, tuple[str, ...]], InsertPlan],
) -> None:
    """Insert ``rows`` with the DB-API's ``executemany``, each value converted as its column
    type's bind processor would (what SQLAlchemy itself would send; the common types by
    :func:`fast_bind`); ``plans`` caches each table's and column list's statement. Memories
    come with their keyword postings (:func:`_index_memories_after`)."""
    if not rows:
        return
    names = tuple(rows[0])
    plan = plans.get((table.name, names))
    if plan is None:
        dialect = connection.dialect
        quote = dialect.identifier_preparer.quote
        processors = [fast_bind(table.c[n].type, dialect) for n in names]
        # OR ROLLBACK: a conflict (a taken id) ends the whole transaction at once, which is
        # what store_many does with any failure anyway. With the default (ABORT), SQLite must
        # be able to undo one row's insert alone, so it copied every page a row touched into
        # a statement journal, a temporary file: ~30 MB of writes per 1,000 memories at 100k
        # (the index pages), 10-15% of a bulk load's time.
        sql = (
            f"INSERT OR ROLLBACK INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) "
            f"VALUES ({', '.join('?' * len(names))})"
        )
        convert = [(i, p) for i, p in enumerate(processors) if p is not None]
        plan = plans[(table.name, names)] = (sql, names, convert)
    sql, names, convert = plan
    values = []
    for row in rows:
        value = [row[n] for n in names]
        for i, process in convert:
            value[i] = process(value[i])
        values.append(tuple(value))
    # Through sqlite_rows: a failure (a full disk) is SQLAlchemy's error, which the driver
    # translates, as from exec_driver_sql.
    largest = sqlite_rows(connection, _LARGEST_PK)[0][0] if table is memories else None
    connection.exec_driver_sql(sql, values)
    if largest is not None:
        _index_memories_after(connection, largest)


#: A memory's user-scoped keyword terms as FTS5 indexes them, "<hex of user_id>x<term>" (see
#: migration 0001). The same text as the update and delete triggers compute: a contentless
#: FTS5 table forgets postings only when given exactly the text they were indexed from.
SCOPED_TERMS = "replace(' ' || search_terms, ' ', ' ' || hex(user_id) || 'x')"
_INDEX_AFTER = (
    f"INSERT INTO memories_fts(rowid, search_terms) SELECT pk, {SCOPED_TERMS} "
    "FROM memories WHERE pk > ?"
)
_LARGEST_PK = "SELECT coalesce(max(pk), 0) FROM memories"


def _index_memories_after(connection: Connection, largest: int) -> None:
    """Add the keyword postings of the memories after pk ``largest`` (those just inserted, in
    the same write transaction) with one statement: migration 0007 dropped the trigger that
    did it row by row, 2.5 times as long."""
    sqlite_rows(connection, _INDEX_AFTER, (largest,))
