"""psycopg used directly under a SQLAlchemy connection (binary COPY, binary results), with its
errors reported as SQLAlchemy's, so ``retried`` and the driver's error handling see them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

__all__ = ["raw_connection"]


@contextlib.contextmanager
def raw_connection(connection: Connection, statement: str) -> Iterator[psycopg.Connection]:
    """The psycopg connection under ``connection`` (a sync one: the caller checks), for
    running ``statement``. A psycopg error becomes a ``DBAPIError``; a connection it broke is
    invalidated, so the pool does not hand it out again."""
    raw = connection.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    try:
        yield raw
    except psycopg.Error as exc:
        broken = raw.closed or raw.broken
        if broken:
            connection.invalidate()
        raise DBAPIError.instance(
            statement,
            None,
            exc,
            psycopg.Error,
            connection_invalidated=broken,
            dialect=connection.dialect,
        ) from exc
