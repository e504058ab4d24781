"""``SQLDriver``: the driver primitives in SQLAlchemy Core, shared by the SQL backends.

A SQL backend subclasses it and supplies only what differs: the engine and its transactions,
schema preparation, JSON equality on metadata, keyword-term matching and vector ranking.
Filters become one ``WHERE`` clause (:meth:`SQLDriver._where`), so they always apply before
``top_k`` is cut.

Why this module is long: it is the one query builder of both SQL backends. Every primitive is
written here once, in SQLAlchemy Core, over the shared schema and the shared ``WHERE``
translation (:meth:`SQLDriver._where`); a backend supplies only the hooks (``_create_engine``,
``_has_term``, ``_rank_by_vector``, ...). Splitting the primitives into several modules would
split the one class the backends subclass.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Literal, TypeVar

import numpy as np
from sqlalchemy import (
    Table,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from .. import bridge
from ..base import (
    BaseMemoryDriver,
    KnowledgeRecord,
    KnowledgeSearch,
    MemoryRecord,
    MemorySearch,
    hit_order,
)
from ..config import Settings
from ..embeddings import Embedder
from ..errors import BackendUnavailableError, ConflictError, NotFoundError
from ..models import (
    Association,
    KnowledgeChunk,
    KnowledgeHit,
    Memory,
    MemoryFilter,
    RecallHit,
    RelatedMemory,
    Scalar,
    UserSummary,
)
from ..ranking import KeywordEvidence, rank_hybrid, rank_keyword
from ..ranking import context as ctx
from ..ranking.pipeline import scored_in_memory
from ..text import document_terms, term_count
from . import migrations
from .schema import associations, knowledge_chunks, memories, store_info

__all__ = ["SQLDriver", "only_user", "plain_rows", "retried", "vector_hits"]

log = logging.getLogger(__name__)
Result = TypeVar("Result")

#: Upper bound for ids in one ``IN (...)`` list (SQLite allows 32766 parameters).
IN_BATCH = 500

#: Conversations read per statement by ``_stretches`` (SQLite's compound SELECT limit is 500,
#: three per conversation), in statements made for multiples of ``STRETCH_SLOTS``.
STRETCH_BATCH = 150
STRETCH_SLOTS = 25
_NOWHERE = ((datetime(1970, 1, 1, tzinfo=timezone.utc), ""),) * 2


def _place(row: ctx.ContextRow[str]) -> tuple[Any, str]:
    return (row.created_at, row.id)


M = memories.c
K = knowledge_chunks.c
A = associations.c

MEMORY_COLUMNS = (
    M.pk,
    M.id,
    M.user_id,
    M.conversation_id,
    M.content,
    M.memory_type,
    M.tags,
    M.importance,
    M.metadata,
    M.source,
    M.created_at,
    M.updated_at,
)

# Statements built once (SQLAlchemy caches their compiled form); lists go in expanding binds.
BY_PKS = select(*MEMORY_COLUMNS).where(M.pk.in_(bindparam("pks", expanding=True)))

#: Users whose ``WHERE user_id = ...`` is kept built (see ``SQLDriver._where``).
USER_WHERE_CACHE = 1024

#: "Every row": the largest number of rows a search asks for.
ALL = 1 << 62

#: Scores this close to the k-th best are ties, broken by the shared order (newest, then id).
TIE = 1e-6

CHUNK_COLUMNS = (
    K.pk,
    K.id,
    K.doc_id,
    K.chunk_index,
    K.category,
    K.title,
    K.content,
    K.metadata,
    K.created_at,
)


#: What a filter holds besides ``user_id`` when it holds nothing else.
_UNFILTERED = {k: v for k, v in MemoryFilter().__dict__.items() if k != "user_id"}


def only_user(f: MemoryFilter) -> bool:
    """Whether ``f`` is ``MemoryFilter(user_id=f.user_id)``: one user's memories (or every
    memory) and nothing else. Faster than building that filter to compare."""
    fields = f.__dict__
    return all(fields[k] == v for k, v in _UNFILTERED.items())


def retried(method: Callable[..., Result]) -> Callable[..., Result]:
    """Run a primitive again when the backend reports a transient failure.

    What is transient is the backend's call (:meth:`SQLDriver._is_transient`; never on SQLite).
    A primitive is one or more whole transactions, so running it again is safe as long as a
    failed transaction did not commit; a failure during COMMIT is not retried (see
    ``PgVectorDriver._write``).
    """

    @functools.wraps(method)
    def wrapper(self: SQLDriver, *args: Any, **kwargs: Any) -> Result:
        deadline = None
        attempt = 0
        while True:
            try:
                return method(self, *args, **kwargs)
            except DBAPIError as exc:
                kind = self._classify(exc)
                if kind == "unavailable":
                    raise self._unavailable(exc) from exc
                if kind != "transient":
                    raise
                now = time.monotonic()
                deadline = deadline or now + self._retry_seconds
                if now >= deadline:
                    raise self._unavailable(exc) from exc
                attempt += 1
                log.info("%s: transient failure (%s); retrying", self.name, exc.orig)
                bridge.sleep(min(0.05 * 2**attempt, 1.0, max(0.0, deadline - now)))

    return wrapper


def plain_rows(connection: Connection, query: Any, parameters: Any = None) -> list[Any]:
    """The rows of ``query`` as the DB-API returns them (tuples), skipping SQLAlchemy's row
    objects and result processing: for hot paths reading plain numbers and strings only."""
    result = connection.execute(query, parameters) if parameters else connection.execute(query)
    try:
        return list(result.cursor.fetchall())
    finally:
        result.close()


def vector_hits(
    ranked: Sequence[tuple[int, float]],
    top_k: int,
    hydrate: Callable[[Sequence[int]], Mapping[int, Memory]],
) -> list[RecallHit]:
    """The hits of a vector search from its (pk, cosine similarity) pairs: only the top k and
    whatever ties the k-th are hydrated (``hydrate``: pks -> memories), in the shared order."""
    if len(ranked) > top_k:
        kth = sorted((s for _, s in ranked), reverse=True)[top_k - 1]
        ranked = [(pk, s) for pk, s in ranked if s >= kth - TIE]
    found = hydrate([pk for pk, _ in ranked])
    hits = [RecallHit(memory=found[pk], score=score) for pk, score in ranked if pk in found]
    return sorted(hits, key=hit_order)[:top_k]


def _batches(items: Sequence[Any], size: int = IN_BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _chunk(row: Any) -> KnowledgeChunk:
    return KnowledgeChunk(
        id=row.id,
        doc_id=row.doc_id,
        chunk_index=row.chunk_index,
        category=row.category,
        title=row.title,
        content=row.content,
        metadata=row.metadata,
        created_at=row.created_at,
    )


class SQLDriver(BaseMemoryDriver):
    """Everything a SQL backend has in common. Subclasses implement the hooks below."""

    vectors_readable = True

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
        self.engine = self._create_engine()
        try:
            self._prepare_schema()
            self._attach_embedder()
            self._check_context_window()
        except BaseException:
            self.engine.dispose()
            raise

    # ------------------------------------------------------------------ backend hooks
    @abstractmethod
    def _create_engine(self) -> Engine:
        """A configured engine for the backend."""

    @abstractmethod
    def _prepare_schema(self) -> None:
        """Apply pending migrations, or raise ``SchemaError`` saying what to run."""

    def _engine_now(self) -> Engine:
        """The engine of this call: ``self.engine``, or a driver's async engine (its
        ``sync_engine`` face) in a native call of the async API."""
        return self.engine

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """A connection in a write transaction."""
        with self._engine_now().begin() as connection:
            yield connection

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection in a read transaction (one snapshot)."""
        with self._engine_now().begin() as connection:
            yield connection

    #: How long transient failures are retried before BackendUnavailableError (seconds).
    _retry_seconds: float = 0.0

    def _classify(self, exc: DBAPIError) -> Literal["transient", "unavailable"] | None:
        """``"transient"``: worth running the primitive again (a dropped connection, a server
        restarting); ``"unavailable"``: the backend cannot be used as configured (a wrong
        password, an unknown database); None: not a connection problem."""
        return None

    def _unavailable(self, exc: DBAPIError) -> BackendUnavailableError:
        """The error for a backend that stayed unreachable; it names the host or path."""
        return BackendUnavailableError(f"{self.name} backend unavailable: {exc.orig}")

    @property
    def _id_order(self) -> Any:
        """The id column as ordered and compared by the shared order (bytewise, as Python)."""
        return M.id

    @abstractmethod
    def _has_tags(self, tags: Sequence[str], mode: Literal["any", "all"]) -> ColumnElement[bool]:
        """True when the memory's ``tags`` (a JSON array of distinct strings) holds any, or
        all, of ``tags``."""

    @abstractmethod
    def _metadata_equals(self, key: str, value: Scalar) -> ColumnElement[bool]:
        """True when the memory's metadata has ``key`` with a JSON-equal ``value``."""

    def _match_column(self, table: Table, terms: Sequence[str]) -> ColumnElement[Any] | None:
        """A column holding a row's indexed terms when they include any of ``terms`` (else
        NULL), for a backend that tests that cheaply row by row; None: :meth:`_postings` is
        asked instead. Implement one of the two."""
        return None

    def _scope_scores(
        self, connection: Connection, table: Table, vector: np.ndarray, memory_filter: MemoryFilter
    ) -> tuple[list[int], np.ndarray] | None:
        """Every row of the scope with its exact cosine similarity with ``vector``, for a
        backend that has them in hand cheaply (an in-process index); None: not this way."""
        return None

    def _scope_cosine(self, table: Table, vector: np.ndarray) -> ColumnElement[Any] | None:
        """A column of a row's exact cosine similarity with ``vector``, for a backend that
        scores a hybrid search's whole scope in the pass that reads it; None: the nearest rows
        come from :meth:`_rank_by_vector` and the others from :meth:`_cosines`."""
        return None

    def _postings(
        self, connection: Connection, table: Table, terms: Sequence[str], user_id: str | None
    ) -> dict[str, list[int]]:
        """For each term, the pks of the rows of ``table`` whose keyword terms hold it (of
        ``user_id``'s memories when given; rows outside a recall's scope may be included)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither hook of postings")

    @abstractmethod
    def _cosines(
        self, connection: Connection, table: Table, pks: Sequence[int], vector: np.ndarray
    ) -> dict[int, float]:
        """The cosine similarity with the unit ``vector`` of these rows of ``table``."""

    @abstractmethod
    def _rank_by_vector(
        self,
        connection: Connection,
        table: Table,
        where: Sequence[ColumnElement[bool]],
        vector: np.ndarray,
        top_k: int,
        memory_filter: MemoryFilter | None = None,
    ) -> list[tuple[int, float]]:
        """(pk, cosine similarity) of the ``top_k`` rows of ``table`` passing ``where`` (the
        SQL of ``memory_filter``, for memories) most similar to the unit ``vector``, best
        first."""

    # ------------------------------------------------------------------ translation
    def _where(self, f: MemoryFilter) -> list[ColumnElement[bool]]:
        """The filter as SQL conditions on ``memories``."""
        if f.user_id is not None and only_user(f):
            # The most common scope, built once per user (a comparison costs SQLAlchemy more
            # than some searches; the expression is immutable, so it can be shared).
            cache: dict[str, list[ColumnElement[bool]]] = self.__dict__.setdefault(
                "_user_where", {}
            )
            where_user = cache.get(f.user_id)
            if where_user is None:
                if len(cache) >= USER_WHERE_CACHE:
                    cache.clear()
                where_user = cache[f.user_id] = [M.user_id == f.user_id]
            return list(where_user)
        where: list[ColumnElement[bool]] = []
        if f.user_id is not None:
            where.append(M.user_id == f.user_id)
        if f.conversation_id is not None:
            where.append(M.conversation_id == f.conversation_id)
        if f.memory_types is not None:
            where.append(M.memory_type.in_(f.memory_types))
        if f.tags is not None:
            where.append(self._has_tags(f.tags, f.tag_mode))
        if f.exclude_tags is not None:
            where.append(~self._has_tags(f.exclude_tags, "any"))
        if f.since is not None:
            where.append(M.created_at >= f.since)
        if f.until is not None:
            where.append(M.created_at < f.until)
        if f.min_importance is not None:
            where.append(M.importance >= f.min_importance)
        if f.importance_below is not None:
            where.append(M.importance < f.importance_below)
        for key, value in (f.metadata or {}).items():
            where.append(self._metadata_equals(key, value))
        return where

    def _hydrate(self, connection: Connection, rows: Sequence[Any]) -> dict[int, Memory]:
        """Memories for rows selected with ``MEMORY_COLUMNS``, by pk."""
        return {
            row.pk: Memory(
                id=row.id,
                user_id=row.user_id,
                conversation_id=row.conversation_id,
                content=row.content,
                memory_type=row.memory_type,
                tags=row.tags,
                importance=row.importance,
                metadata=row.metadata,
                source=row.source,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
            for row in rows
        }

    def _memories_by_pk(self, connection: Connection, pks: Sequence[int]) -> dict[int, Memory]:
        rows: list[Any] = []
        for batch in _batches(list(pks)):
            rows += connection.execute(BY_PKS, {"pks": batch}).all()
        return self._hydrate(connection, rows)

    def _id_in(self, column: Any, ids: Sequence[str]) -> ColumnElement[bool]:
        """``column`` is one of ``ids`` (at most ``IN_BATCH``). Here: ``IN (...)``."""
        return column.in_(ids)  # type: ignore[no-any-return]

    def _pks(
        self, connection: Connection, ids: Sequence[str], user_id: str | None
    ) -> dict[str, int]:
        found: dict[str, int] = {}
        for batch in _batches(list(ids)):
            query = select(M.id, M.pk).where(self._id_in(M.id, batch))
            if user_id is not None:
                query = query.where(M.user_id == user_id)
            found.update({row.id: row.pk for row in connection.execute(query)})
        return found

    # ------------------------------------------------------------------ conversation context
    def _conversation_places(
        self, connection: Connection, pks: Sequence[int]
    ) -> list[tuple[str, str, Any, str]]:
        """(user_id, conversation_id, created_at, id) of these memories, where they have a
        conversation (the places to re-index around when they go)."""
        if self.context_window <= 0:
            return []
        places = []
        for batch in _batches(list(pks)):
            query = select(M.user_id, M.conversation_id, M.created_at, M.id).where(
                M.pk.in_(batch), M.conversation_id.is_not(None)
            )
            places += [tuple(row) for row in connection.execute(query)]
        return places  # type: ignore[return-value]

    def _context_changes(
        self,
        connection: Connection,
        *,
        new: Sequence[Memory] = (),
        changed: Sequence[int] = (),
        places: Sequence[tuple[str, str, Any, str]] = (),
        terms: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """The indexed terms (by memory id) that change when ``new`` memories are inserted,
        the memories ``changed`` (pks) are re-worded, or memories at ``places`` are deleted
        (see :mod:`memory_drivers.ranking.context`; ``terms``: the new memories' own terms by
        id); run inside the write transaction."""
        places = [*places, *self._conversation_places(connection, changed)]
        return ctx.changes(
            places,
            new,
            self.context_window,
            lambda user, conversation, low, high: self._stretch(
                connection, user, conversation, low, high
            ),
            lambda requests: self._stretches(connection, requests),
            terms=terms,
        )

    def _stretch(
        self,
        connection: Connection,
        user_id: str,
        conversation_id: str,
        low: ctx.Position,
        high: ctx.Position,
    ) -> ctx.Stretch[str]:
        """The memories of one conversation around ``low`` .. ``high`` (see ``ctx.Stretch``)."""
        window = self.context_window
        key = self._id_order
        base = select(M.id, M.created_at, M.content, M.search_terms).where(
            M.user_id == user_id, M.conversation_id == conversation_id
        )

        def rows(query: Any) -> list[ctx.ContextRow[str]]:
            return [
                ctx.ContextRow(r.id, r.created_at, r.id, r.content, r.search_terms)
                for r in connection.execute(query)
            ]

        def before(place: ctx.Position) -> ColumnElement[bool]:
            return or_(M.created_at < place[0], and_(M.created_at == place[0], key < place[1]))

        def after(place: ctx.Position) -> ColumnElement[bool]:
            return or_(M.created_at > place[0], and_(M.created_at == place[0], key > place[1]))

        first = rows(
            base.where(before(low)).order_by(M.created_at.desc(), key.desc()).limit(window)
        )
        inside = rows(base.where(~before(low), ~after(high)).order_by(M.created_at, key))
        last = rows(base.where(after(high)).order_by(M.created_at, key).limit(window))
        return ctx.Stretch(first[::-1], inside, last)

    def _stretches(
        self, connection: Connection, requests: Sequence[ctx.StretchRequest]
    ) -> dict[tuple[str, str], ctx.Stretch[str]]:
        """:meth:`_stretch` of many conversations in one round trip per ``STRETCH_BATCH``: the
        three reads of each conversation are subqueries of one ``UNION ALL`` (a store_many
        batch touching 100 conversations made 300 round trips before)."""
        found: dict[int, tuple[list[Any], list[Any], list[Any]]] = {}
        for n, part, mid, created, content, indexed in self._stretch_rows(connection, requests):
            found.setdefault(n, ([], [], []))[part].append(
                ctx.ContextRow(mid, created, mid, content, indexed)
            )
        result = {}
        for n, (user, conversation, _, _) in enumerate(requests):
            first, inside, last = found.get(n, ([], [], []))
            result[user, conversation] = ctx.Stretch(
                sorted(first, key=_place), sorted(inside, key=_place), sorted(last, key=_place)
            )
        return result

    def _stretch_rows(
        self, connection: Connection, requests: Sequence[ctx.StretchRequest]
    ) -> Iterator[tuple[int, int, str, datetime, str, str]]:
        """The rows of :meth:`_stretches`: (``n``, the request's index; ``part``, 0 before,
        1 inside, 2 after; ``id``, ``created_at``, ``content``, ``search_terms``). Here:
        :meth:`_stretch_statement`, ``STRETCH_BATCH`` conversations per statement."""
        for start in range(0, len(requests), STRETCH_BATCH):
            chunk = requests[start : start + STRETCH_BATCH]
            slots = -(-len(chunk) // STRETCH_SLOTS) * STRETCH_SLOTS
            values: dict[str, Any] = {}
            for n in range(slots):
                # Unused slots ask for a conversation no memory has (user_id is never empty).
                user, conversation, low, high = chunk[n] if n < len(chunk) else ("", "", *_NOWHERE)
                values.update(
                    {
                        f"u{n}": user,
                        f"c{n}": conversation,
                        f"lt{n}": low[0],
                        f"li{n}": low[1],
                        f"ht{n}": high[0],
                        f"hi{n}": high[1],
                    }
                )
            for row in connection.execute(self._stretch_statement(slots), values):
                yield (
                    start + row.n,
                    row.part,
                    row.id,
                    row.created_at,
                    row.content,
                    row.search_terms,
                )

    def _stretch_statement(self, slots: int) -> Any:
        """The ``UNION ALL`` of :meth:`_stretches` for ``slots`` conversations, built once per
        size (building and compiling it took longer than running it)."""
        cache: dict[int, Any] = self.__dict__.setdefault("_stretch_statements", {})
        if slots in cache:
            return cache[slots]
        window, key = self.context_window, self._id_order
        columns = (M.id, M.created_at, M.content, M.search_terms)
        parts = []
        for n in range(slots):
            low_t = bindparam(f"lt{n}", type_=M.created_at.type)
            high_t = bindparam(f"ht{n}", type_=M.created_at.type)
            low_i: Any = bindparam(f"li{n}")
            high_i: Any = bindparam(f"hi{n}")
            mine = select(*columns).where(
                M.user_id == bindparam(f"u{n}"), M.conversation_id == bindparam(f"c{n}")
            )
            before = or_(M.created_at < low_t, and_(M.created_at == low_t, key < low_i))
            after = or_(M.created_at > high_t, and_(M.created_at == high_t, key > high_i))
            for part, query in (
                (0, mine.where(before).order_by(M.created_at.desc(), key.desc()).limit(window)),
                (1, mine.where(~before, ~after)),
                (2, mine.where(after).order_by(M.created_at, key).limit(window)),
            ):
                sub = query.subquery()
                parts.append(select(literal(n).label("n"), literal(part).label("part"), *sub.c))
        cache[slots] = statement = union_all(*parts)
        return statement

    def _write_terms(self, connection: Connection, indexed: Mapping[str, str]) -> None:
        """Store new indexed terms for existing memories (by id)."""
        if not indexed:
            return
        statement = (
            update(memories)
            .where(M.id == bindparam("b_id"))
            .values(search_terms=bindparam("b_terms"), term_count=bindparam("b_count"))
        )
        connection.execute(
            statement,
            [{"b_id": k, "b_terms": v, "b_count": term_count(v)} for k, v in indexed.items()],
        )

    def _reindex_context(self, connection: Connection) -> int:
        """Re-derive the indexed terms of every memory (after ``CONTEXT_WINDOW`` changed);
        returns how many changed."""
        changed = 0
        pending: dict[str, str] = {}
        query = select(M.user_id, M.conversation_id, M.id, M.content, M.search_terms).order_by(
            M.user_id, M.conversation_id, M.created_at, self._id_order
        )
        group: tuple[Any, Any] | None = None
        own: list[str] = []
        rows: list[Any] = []

        def flush() -> None:
            nonlocal changed
            wanted = (
                ctx.indexed_terms(own, self.context_window)
                if group and group[1] is not None
                else own
            )
            for row, terms in zip(rows, wanted, strict=True):
                if row.search_terms != terms:
                    pending[row.id] = terms
            if len(pending) >= IN_BATCH:
                self._write_terms(connection, pending)
                changed += len(pending)
                pending.clear()

        for row in connection.execute(query).all():
            if (row.user_id, row.conversation_id) != group:
                if rows:
                    flush()
                group, own, rows = (row.user_id, row.conversation_id), [], []
            own.append(document_terms(row.content))
            rows.append(row)
        if rows:
            flush()
        self._write_terms(connection, pending)
        return changed + len(pending)

    def _check_context_window(self) -> None:
        """Re-index once when the store was indexed with another ``CONTEXT_WINDOW``."""
        stored = int(self._read_store_info().get(ctx.STORE_KEY) or 0)
        if stored == self.context_window:
            return
        log.info(
            "%s: re-indexing keyword terms for CONTEXT_WINDOW=%d (the store has %d)",
            self.name,
            self.context_window,
            stored,
        )
        with self._write() as connection:
            self._lock_for_reindex(connection)
            count = self._reindex_context(connection)
            connection.execute(delete(store_info).where(store_info.c.key == ctx.STORE_KEY))
            connection.execute(
                insert(store_info).values(key=ctx.STORE_KEY, value=str(self.context_window))
            )
        log.info("%s: re-indexed %d memories", self.name, count)

    def _lock_for_reindex(self, connection: Connection) -> None:
        """Keep other writers out while every memory is re-indexed (SQLite's write
        transaction already does)."""

    # ------------------------------------------------------------------ store info
    @retried
    def _read_store_info(self) -> dict[str, str]:
        with self._read() as connection:
            rows = connection.execute(select(store_info.c.key, store_info.c.value))
            return {key: value for key, value in rows}

    @retried
    def _write_store_info(self, values: Mapping[str, str]) -> None:
        with self._write() as connection:
            for key, value in values.items():
                connection.execute(delete(store_info).where(store_info.c.key == key))
                if value:
                    connection.execute(insert(store_info).values(key=key, value=value))

    # ------------------------------------------------------------------ memories
    @retried
    def _insert_memories(self, records: Sequence[MemoryRecord]) -> None:
        rows = []
        for record in records:
            memory = record.memory
            rows.append(
                {
                    "id": memory.id,
                    "user_id": memory.user_id,
                    "conversation_id": memory.conversation_id,
                    "content": memory.content,
                    "memory_type": memory.memory_type,
                    "tags": memory.tags,
                    "importance": memory.importance,
                    "metadata": memory.metadata,
                    "source": memory.source,
                    "created_at": memory.created_at,
                    "updated_at": memory.updated_at,
                    "search_terms": record.terms,
                    "term_count": term_count(record.terms),
                    "embedding": record.vector,
                }
            )
        try:
            with self._write() as connection:
                indexed = self._context_changes(
                    connection,
                    new=[r.memory for r in records],
                    terms={r.memory.id: r.terms for r in records},
                )
                for row in rows:
                    terms = indexed.pop(str(row["id"]), str(row["search_terms"]))
                    row["search_terms"] = terms
                    row["term_count"] = term_count(terms)
                self._insert_many(connection, memories, rows)
                self._write_terms(connection, indexed)
        except IntegrityError:
            with self._read() as connection:
                taken = sorted(self._pks(connection, [r.memory.id for r in records], None))
            if not taken:
                raise
            raise ConflictError(
                f"a memory with id {taken[0]} already exists ({len(taken)} of the ids given "
                "are taken); nothing was stored. Leave id out to get a new one."
            ) from None

    def _insert_many(
        self, connection: Connection, table: Table, rows: list[dict[str, Any]]
    ) -> None:
        """Insert ``rows`` in one go. Here: RETURNING makes SQLAlchemy send multi-row INSERT ...
        VALUES statements (its "insertmanyvalues"): one round trip per 1000 rows, and on SQLite
        about 1.7x the rate of a row-by-row executemany."""
        connection.execute(insert(table).returning(table.c.pk), rows).all()

    @retried
    def _get_memories(self, ids: Sequence[str], user_id: str | None) -> dict[str, Memory]:
        with self._read() as connection:
            found = self._pks(connection, ids, user_id)
            memories_ = self._memories_by_pk(connection, list(found.values()))
            return {m.id: m for m in memories_.values()}

    @retried
    def _update_memory(
        self,
        memory_id: str,
        user_id: str | None,
        changes: Mapping[str, Any],
        vector: np.ndarray | None,
        terms: str | None,
    ) -> Memory | None:
        with self._write() as connection:
            pk = self._pks(connection, [memory_id], user_id).get(memory_id)
            if pk is None:
                return None
            values = dict(changes)
            if vector is not None:
                values["embedding"] = vector
                values["search_terms"] = terms
                values["term_count"] = term_count(terms or "")
            connection.execute(update(memories).where(M.pk == pk).values(**values))
            if vector is not None:
                self._write_terms(connection, self._context_changes(connection, changed=[pk]))
            return self._memories_by_pk(connection, [pk])[pk]

    @retried
    def _delete_memories(self, ids: Sequence[str], user_id: str | None) -> list[str]:
        with self._write() as connection:
            found = self._pks(connection, ids, user_id)
            places = self._conversation_places(connection, list(found.values()))
            for batch in _batches(list(found.values())):
                connection.execute(delete(memories).where(M.pk.in_(batch)))
            self._write_terms(connection, self._context_changes(connection, places=places))
            return list(found)

    @retried
    def _search_memories(self, search: MemorySearch) -> list[RecallHit]:
        where = self._where(search.filter)
        with self._read() as connection:
            if search.mode == "vector":
                assert search.vector is not None and search.top_k is not None
                ranked = self._rank_by_vector(
                    connection, memories, where, search.vector, search.top_k, search.filter
                )
                return vector_hits(
                    ranked, search.top_k, lambda pks: self._memories_by_pk(connection, pks)
                )
            if search.mode in ("keyword", "hybrid"):
                return self._ranked_search(connection, where, search)
            newest_first = (M.created_at.desc(), self._id_order.asc())
            query = select(*MEMORY_COLUMNS).where(*where).order_by(*newest_first)
            if search.top_k is not None:
                query = query.limit(search.top_k)
            rows = connection.execute(query).all()
            found = self._hydrate(connection, rows)
            return [RecallHit(memory=found[row.pk], score=None) for row in rows]

    def _ranked_search(
        self, connection: Connection, where: list[ColumnElement[bool]], search: MemorySearch
    ) -> list[RecallHit]:
        """Keyword and hybrid search: statistics read here, scores made by the shared ranking."""
        terms = search.terms or ()
        user = search.filter.user_id
        evidence, cosine = None, None
        vector = search.vector if search.mode == "hybrid" else None
        scope = None
        if vector is not None:
            scope = self._scope_scores(connection, memories, vector, search.filter)
        in_pass = vector is not None and scope is None
        if terms or (
            vector is not None and in_pass and self._scope_cosine(memories, vector) is not None
        ):
            evidence, cosine = self._keyword_evidence(
                connection, memories, where, terms, user, vector if in_pass else None
            )
        if search.mode == "keyword":
            assert evidence is not None
            ranked = rank_keyword(terms, evidence, self.ranking, search.top_k, search.details)
        else:
            assert vector is not None
            if scope is not None:
                nearest, cosines = scored_in_memory(*scope)
            elif evidence is not None and cosine is not None:
                nearest, cosines = scored_in_memory(evidence.keys, cosine)
            else:

                def nearest(m: int | None) -> list[tuple[int, float]]:
                    return self._rank_by_vector(
                        connection, memories, where, vector, m or ALL, search.filter
                    )

                def cosines(pks: Sequence[int]) -> dict[int, float]:
                    return self._cosines(connection, memories, pks, vector)

            ranked = rank_hybrid(
                terms,
                evidence,
                nearest,
                cosines,
                self.ranking,
                search.top_k,
                periods=search.periods,
                now=search.now,
                created_at=lambda pks: self._created_at(connection, pks),
                details=search.details,
            )
        found = self._memories_by_pk(connection, [pk for pk, _ in ranked])
        hits = [
            RecallHit(memory=found[pk], score=score, explanation=search.explanation(pk))
            for pk, score in ranked
            if pk in found
        ]
        return sorted(hits, key=hit_order)[: search.top_k]

    def _keyword_evidence(
        self,
        connection: Connection,
        table: Table,
        where: Sequence[ColumnElement[bool]],
        terms: Sequence[str],
        user_id: str | None,
        vector: np.ndarray | None = None,
    ) -> tuple[KeywordEvidence[int], np.ndarray | None]:
        """What BM25 needs of the rows of ``table`` passing ``where`` (ranking.pipeline): their
        lengths, in conversation order (memories), and the postings of ``terms``; with a
        ``vector``, also every row's cosine similarity when the backend scores the scope in
        the same pass (:meth:`_scope_cosine`), else None."""
        c = table.c
        linked = table is memories and self.ranking.neighbour_share > 0
        match = self._match_column(table, terms) if terms else None
        similar = self._scope_cosine(table, vector) if vector is not None else None
        columns: list[Any] = [c.pk, c.term_count]
        if linked:
            columns.append(c.conversation_id)
        if match is not None:
            columns.append(match)
        if similar is not None:
            columns.append(similar)
        query = select(*columns).where(*where)
        if linked:
            query = query.order_by(c.conversation_id, c.created_at, self._id_order)
        rows = plain_rows(connection, query)
        values = list(zip(*rows, strict=True)) if rows else [()] * len(columns)
        keys = list(values[0])
        lengths = np.array(values[1], dtype=np.int64)
        continues = np.zeros(len(rows), dtype=bool)
        if linked and len(rows) > 1:
            conversations = np.array(values[2], dtype=object)
            continues[1:] = (conversations[1:] == conversations[:-1]) & (
                conversations[1:] != None  # noqa: E711 - elementwise, not an identity test
            )
        cosine = np.array(values[-1], dtype=np.float64) if similar is not None else None
        matched = values[2 + linked] if match is not None else None
        if not rows or not terms:
            postings: dict[str, list[int]] = {}
        elif matched is None:
            postings = self._postings(connection, table, terms, user_id)
        else:
            wanted = set(terms)
            postings = {term: [] for term in wanted}
            for key, held in zip(keys, matched, strict=True):
                if held is not None:
                    for term in wanted.intersection(held.split()):
                        postings[term].append(key)
        return KeywordEvidence(keys, lengths, continues, postings), cosine

    def _created_at(self, connection: Connection, pks: Sequence[int]) -> dict[int, Any]:
        found: dict[int, Any] = {}
        for batch in _batches(list(pks)):
            query = select(M.pk, M.created_at).where(M.pk.in_(batch))
            found.update({row.pk: row.created_at for row in connection.execute(query)})
        return found

    @retried
    def _count_memories(self, user_id: str | None) -> int:
        query = select(func.count()).select_from(memories)
        if user_id is not None:
            query = query.where(M.user_id == user_id)
        with self._read() as connection:
            return int(connection.execute(query).scalar_one())

    @retried
    def _user_summaries(self) -> list[UserSummary]:
        query = select(M.user_id, func.count(), func.max(M.updated_at)).group_by(M.user_id)
        with self._read() as connection:
            rows = connection.execute(query).all()
        return [UserSummary(user_id=u, memories=n, last_activity=t) for u, n, t in rows]

    def _iter_memories(self, user_id: str | None, batch_size: int) -> Iterator[Memory]:
        after: tuple[Any, str] | None = None
        while True:
            page = self._memory_page(user_id, batch_size, after)
            yield from page
            if len(page) < batch_size:
                return
            after = (page[-1].created_at, page[-1].id)

    @retried
    def _memory_page(
        self, user_id: str | None, size: int, after: tuple[Any, str] | None
    ) -> list[Memory]:
        """The next ``size`` memories, oldest first, after the (created_at, id) given."""
        query = select(*MEMORY_COLUMNS).order_by(M.created_at, self._id_order).limit(size)
        if user_id is not None:
            query = query.where(M.user_id == user_id)
        if after is not None:
            # The created_at bound alone first, so that a page is a range of the index in
            # (created_at, id) order (with the OR alone every page scanned every memory).
            created, last_id = after
            query = query.where(
                M.created_at >= created,
                or_(M.created_at > created, self._id_order > last_id),
            )
        with self._read() as connection:
            rows = connection.execute(query).all()
            found = self._hydrate(connection, rows)
        return [found[row.pk] for row in rows]

    # ------------------------------------------------------------------ knowledge
    @retried
    def _replace_knowledge(self, doc_id: str, records: Sequence[KnowledgeRecord]) -> None:
        rows = [
            {
                "id": r.chunk.id,
                "doc_id": r.chunk.doc_id,
                "chunk_index": r.chunk.chunk_index,
                "category": r.chunk.category,
                "title": r.chunk.title,
                "content": r.chunk.content,
                "metadata": r.chunk.metadata,
                "created_at": r.chunk.created_at,
                "embedding": r.vector,
                "search_terms": r.terms,
                "term_count": term_count(r.terms),
            }
            for r in records
        ]
        with self._write() as connection:
            connection.execute(delete(knowledge_chunks).where(K.doc_id == doc_id))
            connection.execute(insert(knowledge_chunks), rows)

    @retried
    def _get_knowledge(self, doc_id: str) -> list[KnowledgeChunk]:
        with self._read() as connection:
            rows = connection.execute(select(*CHUNK_COLUMNS).where(K.doc_id == doc_id)).all()
        return [_chunk(row) for row in rows]

    @retried
    def _delete_knowledge(self, doc_id: str) -> bool:
        with self._write() as connection:
            result = connection.execute(delete(knowledge_chunks).where(K.doc_id == doc_id))
            return bool(result.rowcount)

    @retried
    def _search_knowledge(self, search: KnowledgeSearch) -> list[KnowledgeHit]:
        where = [K.category == search.category] if search.category is not None else []
        with self._read() as connection:
            evidence = None
            if search.mode != "vector" and search.terms:
                evidence, _ = self._keyword_evidence(
                    connection, knowledge_chunks, where, search.terms, None
                )
            if search.mode == "vector":
                assert search.vector is not None
                ranked = self._rank_by_vector(
                    connection, knowledge_chunks, where, search.vector, search.top_k
                )
            elif search.mode == "keyword":
                assert evidence is not None
                ranked = rank_keyword(search.terms, evidence, self.ranking, search.top_k)
            else:
                vector = search.vector
                assert vector is not None
                ranked = rank_hybrid(
                    search.terms,
                    evidence,
                    lambda m: self._rank_by_vector(
                        connection, knowledge_chunks, where, vector, m or ALL
                    ),
                    lambda pks: self._cosines(connection, knowledge_chunks, pks, vector),
                    self.ranking,
                    search.top_k,
                )
            pks = [pk for pk, _ in ranked]
            rows = {}
            for batch in _batches(pks):
                query = select(*CHUNK_COLUMNS).where(K.pk.in_(batch))
                rows.update({row.pk: row for row in connection.execute(query)})
        return [KnowledgeHit(chunk=_chunk(rows[pk]), score=s) for pk, s in ranked if pk in rows]

    def _iter_knowledge(self, batch_size: int) -> Iterator[KnowledgeChunk]:
        after = 0
        while True:
            rows = self._knowledge_page(batch_size, after)
            yield from (_chunk(row) for row in rows)
            if len(rows) < batch_size:
                return
            after = rows[-1].pk

    @retried
    def _knowledge_page(self, size: int, after: int) -> list[Any]:
        query = select(*CHUNK_COLUMNS).where(K.pk > after).order_by(K.pk).limit(size)
        with self._read() as connection:
            return list(connection.execute(query).all())

    # ------------------------------------------------------------------ associations
    def _upsert(
        self,
        connection: Connection,
        table: Table,
        values: dict[str, Any],
        keys: Sequence[str],
        changes: Sequence[str],
    ) -> None:
        dialect: Any = postgresql if connection.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(table).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={name: statement.excluded[name] for name in changes},
        )
        connection.execute(statement)

    @retried
    def _upsert_association(self, association: Association) -> Association:
        with self._write() as connection:
            pks = self._pks(connection, [association.source_id, association.target_id], None)
            for mid in (association.source_id, association.target_id):
                if mid not in pks:
                    raise NotFoundError(f"no memory {mid}")
            source, target = pks[association.source_id], pks[association.target_id]
            self._upsert(
                connection,
                associations,
                {
                    "source_pk": source,
                    "target_pk": target,
                    "relationship_type": association.relationship_type,
                    "strength": association.strength,
                    "created_at": association.created_at,
                },
                keys=("source_pk", "target_pk", "relationship_type"),
                changes=("strength",),
            )
            created = connection.execute(
                select(A.created_at).where(
                    A.source_pk == source,
                    A.target_pk == target,
                    A.relationship_type == association.relationship_type,
                )
            ).scalar_one()
        return association.model_copy(update={"created_at": created})

    @retried
    def _related(self, memory_id: str, relationship_type: str | None) -> list[RelatedMemory]:
        with self._read() as connection:
            pk = self._pks(connection, [memory_id], None).get(memory_id)
            if pk is None:
                return []
            links: list[tuple[int, str, float, Literal["outgoing", "incoming"], Any]] = []
            directions: tuple[tuple[Any, Any, Literal["outgoing", "incoming"]], ...] = (
                (A.source_pk, A.target_pk, "outgoing"),
                (A.target_pk, A.source_pk, "incoming"),
            )
            for mine, other, direction in directions:
                query = select(other, A.relationship_type, A.strength, A.created_at).where(
                    mine == pk
                )
                if relationship_type is not None:
                    query = query.where(A.relationship_type == relationship_type)
                links += [
                    (row[0], row[1], row[2], direction, row[3]) for row in connection.execute(query)
                ]
            found = self._memories_by_pk(connection, [link[0] for link in links])
        return [
            RelatedMemory(
                memory=found[other],
                relationship_type=rel,
                strength=strength,
                direction=direction,
                created_at=created,
            )
            for other, rel, strength, direction, created in links
        ]

    # ------------------------------------------------------------------ vectors
    @retried
    def _set_vectors(
        self, kind: Literal["memories", "knowledge_chunks"], ids: Sequence[str], vectors: np.ndarray
    ) -> None:
        table = memories if kind == "memories" else knowledge_chunks
        statement = (
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(embedding=bindparam("b_embedding"))
        )
        with self._write() as connection:
            connection.execute(
                statement,
                [{"b_id": i, "b_embedding": v} for i, v in zip(ids, vectors, strict=True)],
            )

    @retried
    def _read_vectors(
        self, kind: Literal["memories", "knowledge_chunks"], ids: Sequence[str]
    ) -> dict[str, np.ndarray]:
        table = memories if kind == "memories" else knowledge_chunks
        found: dict[str, np.ndarray] = {}
        with self._read() as connection:
            for batch in _batches(list(ids)):
                query = select(table.c.id, table.c.embedding).where(table.c.id.in_(batch))
                found.update({row[0]: row[1] for row in connection.execute(query)})
        return found

    def _iter_associations(self, batch_size: int) -> Iterator[Association]:
        after: tuple[int, int, str] | None = None
        while True:
            page = self._association_page(batch_size, after)
            yield from (link for _, link in page)
            if len(page) < batch_size:
                return
            after = page[-1][0]

    @retried
    def _association_page(
        self, size: int, after: tuple[int, int, str] | None
    ) -> list[tuple[tuple[int, int, str], Association]]:
        """The next ``size`` links in key order, after the (source_pk, target_pk, type) given."""
        source, target = memories.alias("source"), memories.alias("target")
        key = (A.source_pk, A.target_pk, A.relationship_type)
        query = (
            select(*key, source.c.id, target.c.id, A.strength, A.created_at)
            .join(source, source.c.pk == A.source_pk)
            .join(target, target.c.pk == A.target_pk)
            .order_by(*key)
            .limit(size)
        )
        if after is not None:
            query = query.where(tuple_(*key) > tuple_(*after))
        with self._read() as connection:
            rows = connection.execute(query).all()
        return [
            (
                (row[0], row[1], row[2]),
                Association(
                    source_id=row[3],
                    target_id=row[4],
                    relationship_type=row[2],
                    strength=row[5],
                    created_at=row[6],
                ),
            )
            for row in rows
        ]

    # ------------------------------------------------------------------ operations
    @retried
    def _counts(self) -> dict[str, Any]:
        with self._read() as connection:

            def scalar(query: Any) -> int:
                return int(connection.execute(query).scalar_one())

            by_type: dict[str, int] = dict(
                connection.execute(
                    select(M.memory_type, func.count()).group_by(M.memory_type)
                ).all()
            )
            return {
                "memories": scalar(select(func.count()).select_from(memories)),
                "users": scalar(select(func.count(func.distinct(M.user_id)))),
                "associations": scalar(select(func.count()).select_from(associations)),
                "knowledge_documents": scalar(select(func.count(func.distinct(K.doc_id)))),
                "knowledge_chunks": scalar(select(func.count()).select_from(knowledge_chunks)),
                "memory_types": {k: int(v) for k, v in sorted(by_type.items())},
                "schema_revision": migrations.current_revision(connection),
            }

    def _close(self) -> None:
        self.engine.dispose()
