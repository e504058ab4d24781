"""The pgvector driver's fixed SQL: statements built once at import and the COPY type map.

Kept apart from the driver class so that the driver reads as the translation of the shared
semantics, and these texts (whose shape matters to PostgreSQL's planner) can be read whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    Integer,
    LargeBinary,
    String,
    Text,
    any_,
    bindparam,
    column,
    func,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import ColumnElement

from ...sql.driver import MEMORY_COLUMNS
from ...sql.schema import EmbeddingType, UTCDateTime, memories

#: SQLDriver._stretches in one short statement: the conversations come as arrays, each read
#: by three LIMITed subqueries joined LATERAL. Its text never changes, so psycopg converts it
#: once and prepares it on the server (the generic UNION ALL of 25 conversations per slot set
#: was parsed by psycopg and planned by the server anew for every batch).
_STRETCH_PART = """SELECT {part} AS part, m.id, m.created_at, m.content, m.search_terms
        FROM memories m
        WHERE m.user_id = r.u AND m.conversation_id = r.c AND {where}{order}"""
_BEFORE = '(m.created_at < r.lt OR (m.created_at = r.lt AND m.id COLLATE "C" < r.li))'
_AFTER = '(m.created_at > r.ht OR (m.created_at = r.ht AND m.id COLLATE "C" > r.hi))'
STRETCHES = text(
    "SELECT r.n - 1 AS n, s.part, s.id, s.created_at, s.content, s.search_terms FROM unnest("
    "CAST(:users AS text[]), CAST(:conversations AS text[]), CAST(:low_t AS timestamptz[]), "
    "CAST(:low_id AS text[]), CAST(:high_t AS timestamptz[]), CAST(:high_id AS text[])) "
    "WITH ORDINALITY AS r(u, c, lt, li, ht, hi, n) CROSS JOIN LATERAL ((\n"
    + _STRETCH_PART.format(
        part=0,
        where=_BEFORE,
        order='\n        ORDER BY m.created_at DESC, m.id COLLATE "C" DESC LIMIT :window',
    )
    + ")\n    UNION ALL (\n"
    + _STRETCH_PART.format(part=1, where=f"NOT {_BEFORE} AND NOT {_AFTER}", order="")
    + ")\n    UNION ALL (\n"
    + _STRETCH_PART.format(
        part=2,
        where=_AFTER,
        order='\n        ORDER BY m.created_at, m.id COLLATE "C" LIMIT :window',
    )
    + ")) AS s"
).columns(
    column("n", Integer),
    column("part", Integer),
    column("id", Text),
    column("created_at", UTCDateTime),
    column("content", Text),
    column("search_terms", Text),
)


INFINITY = literal_column("'Infinity'::float8", Float())


#: The user's version (migration 0005), read in the statement that reads their rows.
VERSIONS = table("memory_user_versions", column("user_id", Text), column("version", BigInteger))
USER_VERSION = (
    select(VERSIONS.c.version)
    .where(VERSIONS.c.user_id == bindparam("user_id"))
    .scalar_subquery()
    .label("version")
)


def nearest(where: Sequence[ColumnElement[bool]]) -> Any:
    """PgVectorDriver._exact_vector_search's statement: the ``:limit`` memories passing
    ``where`` nearest to ``:vector`` (exact distances of the whole scope, in a MATERIALIZED CTE
    so that the planner cannot answer through an index), of which only those within
    ``:slack`` of the ``:kth`` nearest's distance (0-based) come back, with their rows: the
    ones that can make the cut, ties included (vector_hits cuts exactly)."""
    distance = memories.c.embedding.op("<=>", return_type=Float())(
        bindparam("vector", type_=EmbeddingType())
    )
    scored = (
        select(memories.c.pk, distance.label("distance"))
        .where(*where)
        .cte("candidates")
        .prefix_with("MATERIALIZED")
    )
    nearest = (
        select(scored.c.pk, scored.c.distance)
        .order_by(scored.c.distance)
        .limit(bindparam("limit"))
        .cte("nearest")
    )
    kth = (
        select(nearest.c.distance)
        .order_by(nearest.c.distance)
        .offset(bindparam("kth"))
        .limit(1)
        .scalar_subquery()
    )
    return (
        select(nearest.c.distance, *MEMORY_COLUMNS)
        .join_from(nearest, memories, memories.c.pk == nearest.c.pk)
        # fewer than kth + 1 memories: no k-th distance, every one comes back
        .where(nearest.c.distance <= func.coalesce(kth + bindparam("slack"), INFINITY))
    )


#: nearest for the most common scope, one user's memories.
NEAREST_OF_USER = nearest([memories.c.user_id == bindparam("user_id")])

#: A cached recall's rows (``:pks``, the user's candidates) with the user's version: the copy
#: answered right only if that version is the copy's.
CACHED_ROWS = select(*MEMORY_COLUMNS, USER_VERSION).where(
    memories.c.user_id == bindparam("user_id"),
    memories.c.pk == any_(bindparam("pks", type_=ARRAY(BigInteger))),
)

#: A user's vectors for the cache, with their version, in one row of one snapshot: the pks and
#: the vectors in pgvector's binary form, concatenated (vector_cache.from_aggregate). The two
#: aggregates of one Agg node take the rows in the same order, so no ORDER BY is needed. As
#: psycopg takes it (a binary cursor), and as SQLAlchemy does (the async API's connections).
USER_VECTORS_SQL = (
    "SELECT (SELECT version FROM memory_user_versions WHERE user_id = %(user_id)s), "
    "array_agg(pk), string_agg(vector_send(embedding), ''::bytea) "
    "FROM memories WHERE user_id = %(user_id)s"
)
USER_VECTORS = text(USER_VECTORS_SQL % {"user_id": ":user_id"})

#: What changed for a user after version ``:since``: each logged (version, pk) (migration
#: 0005 logs a user's pks per version in an array) with the memory's vector now (NULL:
#: deleted, or no longer the user's), and the user's version.
USER_CHANGES = text(
    "SELECT (SELECT version FROM memory_user_versions WHERE user_id = :user_id) AS version, "
    "c.version AS changed, p.pk, vector_send(m.embedding) AS vector "
    "FROM memory_vector_changes c CROSS JOIN LATERAL unnest(c.pks) AS p(pk) "
    "LEFT JOIN memories m ON m.pk = p.pk AND m.user_id = c.user_id "
    "WHERE c.user_id = :user_id AND c.version > :since"
).columns(
    column("version", BigInteger),
    column("changed", BigInteger),
    column("pk", BigInteger),
    column("vector", LargeBinary),
)


def copy_type(column: Any) -> str:
    """The PostgreSQL type a binary COPY sends ``column``'s values as."""
    kind = column.type
    if isinstance(kind, EmbeddingType):
        return "vector"
    if isinstance(kind, UTCDateTime):
        return "timestamptz"
    if isinstance(kind, JSON):  # JSONType: jsonb here
        return "jsonb"
    if isinstance(kind, Float):
        return "float8"
    if isinstance(kind, BigInteger):
        return "int8"
    if isinstance(kind, Integer):
        return "int4"
    if isinstance(kind, String):  # String(n) and Text: varchar takes text's binary form
        return "text"
    raise TypeError(f"no COPY type for column {column.name} ({kind!r})")
