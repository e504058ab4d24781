"""The ``pgvector`` driver: PostgreSQL + pgvector, for deployments that outgrow one machine.

Environment::

    MEMORY_DRIVER=pgvector
    DATABASE_URL=postgresql://user:password@host:5432/dbname
    MEMORY_AUTO_MIGRATE=false            # default: require `memory-drivers migrate` first
    PGVECTOR_MEMORY_HNSW=false           # true: an HNSW index over memories too (see below)
    PGVECTOR_EXACT_SCAN_LIMIT=20000      # with that index: candidate sets up to this size scan
    PGVECTOR_VECTOR_CACHE_MB=256         # users' vectors scored in this process (0: off)

Python::

    from memory_drivers.drivers.pgvector import PgVectorDriver
    with PgVectorDriver() as driver:     # or get_memory_driver("pgvector")
        driver.store(user_id="u1", content="Prefers the aisle seat")

Memories, knowledge chunks, links and embeddings live in one database, so every write is one
transaction. Create the schema with ``memory-drivers migrate`` (it also runs
``CREATE EXTENSION IF NOT EXISTS vector`` and creates the HNSW and GIN indexes).

Vector recall ranks by pgvector's cosine distance (score = 1 - distance). A memory recall is
always within one user's memories, which are scored exactly: no index over every user's vectors
by default, as maintaining one cost ten times the rest of an insert. With
``PGVECTOR_MEMORY_HNSW=true`` (for users with tens of thousands of memories each) the driver
creates an HNSW index over memories; knowledge chunks always have one. With an index, a
filtered candidate set of at most ``PGVECTOR_EXACT_SCAN_LIMIT`` rows is still scanned exactly;
larger sets use the index with pgvector's iterative index scan, so a filtered recall still
returns ``top_k`` results when that many match. A vector recall of one user's memories is
scored from the vector cache (``vector_cache``: the user's vectors in this process, checked
against a version the writes bump), and the database reads only the winning rows. Keyword
recall uses a
generated ``tsvector`` over the shared keyword terms, with a GIN index.

Dropped connections and server restarts are retried for ``PGVECTOR_RETRY_SECONDS``; a server
that stays down gives ``BackendUnavailableError`` naming the host.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Literal

import numpy as np
import psycopg
from pgvector.psycopg import register_vector, register_vector_async
from psycopg.types.json import Jsonb
from sqlalchemy import (
    Float,
    Table,
    Text,
    any_,
    case,
    cast,
    event,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REGCONFIG, array
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from ... import bridge
from ...base import MemorySearch
from ...config import Settings
from ...embeddings import Embedder
from ...errors import BackendUnavailableError, SchemaError
from ...models import MemoryFilter, RecallHit, Scalar
from ...ranking.context import StretchRequest
from ...sql import migrations
from ...sql.driver import (
    IN_BATCH,
    TIE,
    SQLDriver,
    only_user,
    plain_rows,
    retried,
    vector_hits,
)
from ...sql.engines import (
    MIGRATION_LOCK,
    async_engine_for,
    describe,
    engine_for,
    jsonb_text,
    postgres_url,
    prepare_database,
)
from ...sql.schema import EmbeddingType, memories
from .dbapi import raw_connection
from .statements import NEAREST_OF_USER, STRETCHES, copy_type, nearest
from .vector_cache import VectorCache

__all__ = ["PgVectorDriver", "describe", "engine_for", "postgres_url", "prepare_database"]

logger = logging.getLogger(__name__)

#: pgvector is asked for this many more hits than wanted, so ties at the cut follow the shared
#: order (newest first, then id) rather than the scan's.
TIE_MARGIN = 16
#: pgvector's largest hnsw.ef_search (iterative scans go on past it).
EF_SEARCH_MAX = 1000

#: SQLSTATEs that retrying cannot fix: a bad password, an unknown role or database.
PERMANENT = {"28P01", "28000", "3D000"}
#: The same failures while connecting, where libpq reports no SQLSTATE, only the message.
PERMANENT_MESSAGE = re.compile(
    r"FATAL:\s+(database .* does not exist|role .* does not exist|password authentication "
    r"failed|no pg_hba\.conf entry)|no password supplied"
)

#: Indexes the schema always has.
INDEXES = (
    "ix_knowledge_chunks_embedding_hnsw",
    "ix_memories_search_tsv",
    "ix_memories_metadata",
    "ix_memories_tags",
)
#: The optional HNSW index over memories (PGVECTOR_MEMORY_HNSW).
MEMORY_HNSW = "ix_memories_embedding_hnsw"
HNSW_DDL = "CREATE INDEX IF NOT EXISTS {name} ON {table} USING hnsw (embedding vector_cosine_ops)"


def _register_vector(dbapi_connection: Any, _record: Any) -> None:
    """Send and read vectors in binary on this connection (pgvector's psycopg adapter)."""
    try:
        register_vector(dbapi_connection)
    except psycopg.ProgrammingError:
        pass  # no extension yet (a new database): the connections are renewed after migrating
    finally:
        # register_vector queried the catalog: end that implicit transaction (the pool resets
        # connections too, but a connection handed out now must start clean)
        dbapi_connection.rollback()


def _register_vector_async(dbapi_connection: Any, _record: Any) -> None:
    """:func:`_register_vector` for the async engine's psycopg ``AsyncConnection``."""

    async def register(connection: Any) -> None:
        try:
            await register_vector_async(connection)
        except psycopg.ProgrammingError:
            pass  # no extension yet: as in _register_vector
        finally:
            await connection.rollback()

    dbapi_connection.run_async(register)


def _permanent(exc: DBAPIError) -> bool:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) in PERMANENT or bool(PERMANENT_MESSAGE.search(str(orig)))


class PgVectorDriver(SQLDriver):
    """PostgreSQL with pgvector: memories, knowledge, links and vectors in one database."""

    name = "pgvector"
    native_async = True  # the async API uses psycopg's async connections

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
        allow_embedder_mismatch: bool = False,
    ) -> None:
        super().__init__(
            settings, embedder=embedder, allow_embedder_mismatch=allow_embedder_mismatch
        )

    # ------------------------------------------------------------------ engine, transactions
    def _create_engine(self) -> Engine:
        #: the async API's engines (psycopg's async connections), one per event loop
        self._async_engines = bridge.PerLoop(self._async_engine, lambda engine: engine.dispose())
        engine = engine_for(self.settings)
        event.listen(engine, "connect", _register_vector)
        self._url = engine.url
        self._label = describe(engine.url)
        self._retry_seconds = self.settings.pgvector_retry_seconds
        self._vector_cache = VectorCache(
            self.settings.pgvector_vector_cache_mb << 20, self.settings.pgvector_vector_cache_after
        )
        return engine

    def _classify(self, exc: DBAPIError) -> Literal["transient", "unavailable"] | None:
        if _permanent(exc):
            return "unavailable"
        if exc.connection_invalidated or isinstance(exc.orig, psycopg.OperationalError):
            return "transient"
        return None

    def _unavailable(self, exc: DBAPIError) -> BackendUnavailableError:
        reason = " ".join(str(exc.orig or exc).split())
        if _permanent(exc):
            return BackendUnavailableError(
                f"{self._label} refused the connection: {reason}. Check DATABASE_URL."
            )
        return BackendUnavailableError(
            f"{self._label} is unavailable ({reason}); retried for "
            f"{self._retry_seconds:g} s (PGVECTOR_RETRY_SECONDS). Check DATABASE_URL and that "
            "the server is running."
        )

    def _async_engine(self) -> AsyncEngine:
        engine = async_engine_for(self.settings)
        event.listen(engine.sync_engine, "connect", _register_vector_async)
        return engine

    def _engine_now(self) -> Engine:
        return self._async_engines.get().sync_engine if bridge.active() else self.engine

    def _close(self) -> None:
        self._vector_cache.clear()
        self._async_engines.close()
        super()._close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._engine_now().connect() as connection:
            transaction = connection.begin()
            try:
                yield connection
            except BaseException:
                with contextlib.suppress(DBAPIError):
                    transaction.rollback()
                raise
            try:
                transaction.commit()
            except DBAPIError as exc:
                # The server may or may not have applied it: running it again could apply it
                # twice, so this is reported, not retried.
                raise BackendUnavailableError(
                    f"lost the connection to {self._label} while committing; the write may or "
                    f"may not have been applied ({exc.orig})"
                ) from exc

    @property
    def _id_order(self) -> Any:
        # Bytewise, as SQLite and Python compare; a locale collation could order ids otherwise.
        return memories.c.id.collate("C")

    def _prepare_schema(self) -> None:
        self._migrate()
        if self.settings.pgvector_memory_hnsw:
            self._create_memory_index()
        self._memory_hnsw = self._index_exists(MEMORY_HNSW)

    @retried
    def _index_exists(self, name: str) -> bool:
        with self._read() as connection:
            found = connection.execute(
                text("SELECT 1 FROM pg_indexes WHERE indexname = :name"), {"name": name}
            ).first()
            return found is not None

    @retried
    def _create_memory_index(self) -> None:
        if self._index_exists(MEMORY_HNSW):
            return
        logger.info("creating %s on %s (PGVECTOR_MEMORY_HNSW=true)", MEMORY_HNSW, self._label)
        with self._write() as connection:
            connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
            connection.execute(text(HNSW_DDL.format(name=MEMORY_HNSW, table="memories")))

    @retried
    def _migrate(self) -> None:
        with self._write() as connection:
            current = migrations.current_revision(connection)
            head = migrations.head_revision()
            if current == head:
                return
            if current is not None and current not in migrations.known_revisions():
                raise SchemaError(
                    f"{self._label} is at schema revision {current}, which this version of "
                    "memory-drivers does not know; it was made by a newer version. "
                    "Upgrade memory-drivers."
                )
            if not self.settings.memory_auto_migrate:
                state = (
                    "has no memory-drivers schema"
                    if current is None
                    else (f"is at schema revision {current}, behind {head}")
                )
                raise SchemaError(
                    f"{self._label} {state}. Run: DATABASE_URL=... memory-drivers migrate "
                    "(or set MEMORY_AUTO_MIGRATE=true to migrate on open)"
                )
            prepare_database(connection, self._label)
            migrations.upgrade(connection, embedding_dimension=self.embedder.dimension)
        # Connections opened before the extension existed could not register its adapter.
        self.engine.dispose()

    # ------------------------------------------------------------------ SQL hooks
    def _insert_many(
        self, connection: Connection, table: Table, rows: list[dict[str, Any]]
    ) -> None:
        # Binary COPY on the transaction's own psycopg connection: no statement per row, each
        # value sent in its binary form (pgvector's for vectors). Async connections take
        # psycopg's executemany (one prepared statement, rows sent in a pipeline; a multi-row
        # INSERT ... VALUES of 1000 rows has 14,000 placeholders, which psycopg parsed anew for
        # every batch: that took longer than the database's work).
        if not rows or not isinstance(connection.connection.driver_connection, psycopg.Connection):
            connection.execute(insert(table), rows)
            return
        names = list(rows[0])
        types = [copy_type(table.c[name]) for name in names]
        jsonb = [i for i, t in enumerate(types) if t == "jsonb"]
        statement = f"COPY {table.name} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)"
        with (
            raw_connection(connection, statement) as raw,
            raw.cursor() as cursor,
            cursor.copy(statement) as copy,
        ):
            copy.set_types(types)
            for row in rows:
                values = [row[name] for name in names]
                for i in jsonb:
                    values[i] = Jsonb(values[i], dumps=jsonb_text)
                copy.write_row(values)

    def _stretch_rows(
        self, connection: Connection, requests: Sequence[StretchRequest]
    ) -> Iterator[tuple[int, int, str, datetime, str, str]]:
        # One statement for every conversation (STRETCHES).
        if not requests:
            return
        users, conversations, low_t, low_id, high_t, high_id = zip(
            *((u, c, low[0], low[1], high[0], high[1]) for u, c, low, high in requests),
            strict=True,
        )
        values = {
            "users": list(users),
            "conversations": list(conversations),
            "low_t": list(low_t),
            "low_id": list(low_id),
            "high_t": list(high_t),
            "high_id": list(high_id),
            "window": self.context_window,
        }
        for row in connection.execute(STRETCHES, values):
            yield row.n, row.part, row.id, row.created_at, row.content, row.search_terms

    def _id_in(self, column: Any, ids: Sequence[str]) -> ColumnElement[bool]:
        # One array parameter: the statement's text stays the same whatever the count, so
        # psycopg converts it once (an IN list of 500 placeholders was parsed for every call).
        return column == any_(cast(literal(list(ids)), ARRAY(Text)))  # type: ignore[no-any-return]

    def _has_tags(self, tags: Sequence[str], mode: Literal["any", "all"]) -> ColumnElement[bool]:
        # jsonb ?| (any) and ?& (all) over the tags array, served by its GIN index.
        wanted = cast(array(list(tags)), ARRAY(Text))
        operator = "?|" if mode == "any" else "?&"
        return memories.c.tags.op(operator, is_comparison=True)(wanted)  # type: ignore[no-any-return]

    def _metadata_equals(self, key: str, value: Scalar) -> ColumnElement[bool]:
        # jsonb equality: 1 = 1.0, but 1, true and "1" differ; a missing key gives NULL.
        stored = memories.c.metadata.op("->")(literal(key))
        return stored == cast(literal(json.dumps(value)), JSONB)  # type: ignore[no-any-return]

    def _lock_for_reindex(self, connection: Connection) -> None:
        # Writers wait while every memory is re-indexed, so none writes terms from the old
        # window in between; readers go on.
        connection.execute(text("LOCK TABLE memories IN SHARE ROW EXCLUSIVE MODE"))

    def _match_column(self, table: Table, terms: Sequence[str]) -> ColumnElement[Any] | None:
        # One pass over the scope: the generated tsvector is tested row by row (the scope is one
        # user's rows, read anyway for their lengths), which costs less than a GIN lookup per
        # term across every user. Terms are letters and digits only, so '|' joins them safely.
        query = func.to_tsquery(cast(literal("simple"), REGCONFIG), " | ".join(terms))
        tsv: ColumnElement[Any] = literal_column(f"{table.name}.search_tsv")
        return case((tsv.op("@@", is_comparison=True)(query), table.c.search_terms), else_=None)

    def _scope_cosine(self, table: Table, vector: np.ndarray) -> ColumnElement[Any] | None:
        # Memories are scored exactly unless the HNSW index over them was asked for: then the
        # whole scope is scored in the pass that reads it (one query for a hybrid search).
        if table is not memories or self._memory_hnsw:
            return None
        distance = table.c.embedding.op("<=>", return_type=Float())(
            literal(vector, EmbeddingType())
        )
        return 1.0 - distance  # type: ignore[no-any-return]

    def _cosines(
        self, connection: Connection, table: Table, pks: Sequence[int], vector: np.ndarray
    ) -> dict[int, float]:
        query_vector = literal(vector, EmbeddingType())
        distance = table.c.embedding.op("<=>", return_type=Float())(query_vector)
        found: dict[int, float] = {}
        for start in range(0, len(pks), IN_BATCH):
            batch = list(pks[start : start + IN_BATCH])
            query = select(table.c.pk, distance).where(table.c.pk.in_(batch))
            found.update({pk: 1.0 - float(d) for pk, d in plain_rows(connection, query)})
        return found

    def _search_memories(self, search: MemorySearch) -> list[RecallHit]:
        if search.mode == "vector" and not self._memory_hnsw:
            return self._exact_vector_search(search)
        return super()._search_memories(search)

    @retried
    def _exact_vector_search(self, search: MemorySearch) -> list[RecallHit]:
        """A vector recall without an index over memories: one statement (``statements.nearest``)
        scores the scope exactly and returns the rows that can make the cut, run in autocommit
        (one statement reads one snapshot), so the recall is one round trip to the server
        instead of four (BEGIN, the ranking, the rows, ROLLBACK). A recall of one user's
        memories may be scored from the vector cache instead (``vector_cache``)."""
        assert search.vector is not None and search.top_k is not None
        values: dict[str, Any] = {
            "vector": search.vector,
            "limit": search.top_k + TIE_MARGIN,
            "kth": search.top_k - 1,
            "slack": 2 * TIE,
        }
        user = search.filter.user_id if only_user(search.filter) else None
        if user is not None:
            query = NEAREST_OF_USER  # built once: the common scope
            values["user_id"] = user
        else:
            query = nearest(self._where(search.filter))
        with self._engine_now().connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            if user is not None and self._vector_cache.enabled:
                cached = self._vector_cache.recall(connection, user, values)
                if cached is not None:
                    return self._hits(connection, *cached, search.top_k)
            rows = connection.execute(query, values).all()
            ranked = [(row.pk, 1.0 - float(row.distance)) for row in rows]
            return self._hits(connection, ranked, rows, search.top_k)

    def _hits(
        self, connection: Connection, ranked: list[tuple[int, float]], rows: Sequence[Any], k: int
    ) -> list[RecallHit]:
        """The hits of a vector recall: ``ranked`` (pk, score) pairs, ``rows`` their memories."""
        by_pk = {row.pk: row for row in rows}
        return vector_hits(
            ranked, k, lambda pks: self._hydrate(connection, [by_pk[p] for p in pks])
        )

    def _rank_by_vector(
        self,
        connection: Connection,
        table: Table,
        where: Sequence[ColumnElement[bool]],
        vector: np.ndarray,
        top_k: int,
        memory_filter: MemoryFilter | None = None,
    ) -> list[tuple[int, float]]:
        limit = top_k + TIE_MARGIN
        query_vector = literal(vector, EmbeddingType())
        distance = table.c.embedding.op("<=>", return_type=Float())(query_vector)
        limit_exact = self.settings.pgvector_exact_scan_limit
        if table is memories and not self._memory_hnsw:
            candidates = 0  # no index to choose: always exact
        else:
            bounded = select(table.c.pk).where(*where).limit(limit_exact + 1).subquery()
            count = select(func.count()).select_from(bounded)
            candidates = connection.execute(count).scalar_one()
        if candidates <= limit_exact:
            # Selective filter: score every candidate exactly. The materialized CTE keeps the
            # planner from answering through the (approximate) HNSW index.
            scored = (
                select(table.c.pk, distance.label("distance"))
                .where(*where)
                .cte("candidates")
                .prefix_with("MATERIALIZED")
            )
            query = select(scored.c.pk, scored.c.distance).order_by(scored.c.distance)
        else:
            ef_search = min(max(self.settings.pgvector_ef_search, limit), EF_SEARCH_MAX)
            connection.execute(text(f"SET LOCAL hnsw.ef_search = {int(ef_search)}"))
            connection.execute(text("SET LOCAL hnsw.iterative_scan = strict_order"))
            query = select(table.c.pk, distance.label("distance")).where(*where).order_by(distance)
        rows = connection.execute(query.limit(limit)).all()
        return [(row.pk, 1.0 - float(row.distance)) for row in rows]

    # ------------------------------------------------------------------ re-embedding
    def _before_reembed(self) -> None:
        # The new vectors may have another dimension: untype the column while they are written.
        with self._write() as connection:
            for table in ("memories", "knowledge_chunks"):
                connection.execute(text(f"DROP INDEX IF EXISTS ix_{table}_embedding_hnsw"))
                connection.execute(text(f"ALTER TABLE {table} ALTER COLUMN embedding TYPE vector"))

    def _after_reembed(self) -> None:
        dimension = int(self.embedder.dimension)
        hnsw = ["knowledge_chunks"] + (["memories"] if self._memory_hnsw else [])
        with self._write() as connection:
            for table in ("memories", "knowledge_chunks"):
                connection.execute(
                    text(f"ALTER TABLE {table} ALTER COLUMN embedding TYPE vector({dimension})")
                )
                # a new type brings its default storage back: vectors in the row (see 0002)
                connection.execute(
                    text(f"ALTER TABLE {table} ALTER COLUMN embedding SET STORAGE MAIN")
                )
            for table in hnsw:
                connection.execute(
                    text(HNSW_DDL.format(name=f"ix_{table}_embedding_hnsw", table=table))
                )

    def rebuild_index(self, progress: Any = None) -> dict[str, Any]:
        """REINDEX the HNSW and full-text indexes (they are maintained on every write; this is
        for after bulk loads or corruption)."""
        self._check_open()
        indexes = [*INDEXES, MEMORY_HNSW] if self._index_exists(MEMORY_HNSW) else list(INDEXES)
        with self._write() as connection:
            for index in indexes:
                connection.execute(text(f"REINDEX INDEX {index}"))
        return {"rebuilt": True, "indexes": indexes}

    # ------------------------------------------------------------------ operations
    @retried
    def _server(self) -> dict[str, Any]:
        with self._read() as connection:
            indexes = set(
                connection.execute(
                    text(
                        "SELECT indexname FROM pg_indexes WHERE tablename IN "
                        "('memories', 'knowledge_chunks')"
                    )
                ).scalars()
            )
            return {
                "server_version": connection.execute(text("SHOW server_version")).scalar(),
                "pgvector_version": connection.execute(
                    text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                ).scalar(),
                "indexes": {name: name in indexes for name in INDEXES},
                # optional (PGVECTOR_MEMORY_HNSW): its absence is not a fault
                "memory_hnsw": MEMORY_HNSW in indexes,
            }

    def _health(self) -> dict[str, Any]:
        server = self._server()
        counts = self._counts()
        return {
            "status": "ok" if all(server["indexes"].values()) else "degraded",
            "database": self._label,
            **server,
            **counts,
            "pool": self._engine_now().pool.status(),
        }

    def _stats(self) -> dict[str, Any]:
        return {
            "database": self._label,
            **self._counts(),
            "vector_cache": self._vector_cache.stats(),
        }
