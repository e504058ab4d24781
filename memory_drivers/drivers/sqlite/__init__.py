"""The ``sqlite`` driver: SQLite + FAISS, embedded, the default.

Environment::

    MEMORY_DRIVER=sqlite
    MEMORY_DB_URL=sqlite:///storage/memories.db   # the source of truth (WAL, FTS5, vectors)
    FAISS_INDEX_PATH=                             # default: beside the database, *.faiss
    SQLITE_SYNCHRONOUS=FULL                       # FULL: a returned store survives power loss

Python::

    from memory_drivers.drivers.sqlite import SQLiteDriver
    with SQLiteDriver() as driver:                # or get_memory_driver()
        driver.store(user_id="u1", content="Likes green tea")

SQLite holds everything, embeddings included; FAISS is a derived index, rebuilt from SQLite
when its file is missing, stale or corrupt (``rebuild_index()`` does it on demand). Pending
migrations are applied on open (set ``MEMORY_AUTO_MIGRATE=false`` to require
``memory-drivers migrate`` instead). Several processes may share the files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy import (
    Table,
    and_,
    column,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    table,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement

from ...config import Settings
from ...embeddings import Embedder
from ...errors import BackendUnavailableError, SchemaError, StorageFullError
from ...models import Memory, MemoryFilter, Scalar
from ...sql import migrations
from ...sql.driver import IN_BATCH, SQLDriver, only_user
from ...sql.engines import (
    create_sqlite_engine,
    faiss_index_path,
    read_connection,
    sqlite_path,
    sqlite_rows,
    write_connection,
)
from ...sql.schema import memories, store_info
from .dbapi import (
    InsertPlan,
    by_pks_sql,
    insert_rows,
    memory_of_row,
    page_sql,
    postings_sql,
    utc_text,
)
from .faiss_index import COMPACTED_KEY, COUNTERS, VectorIndexes, log_position, vector_log

__all__ = ["SQLiteDriver"]

log = logging.getLogger(__name__)

#: FAISS is asked for this many more hits than wanted, so ties at the cut are broken by the
#: shared order (newest first, then id) rather than by FAISS's internal order.
TIE_MARGIN = 16

#: After an index file could not be saved for want of space, wait this long before trying
#: again (closing always tries).
SAVE_RETRY_SECONDS = 30.0

#: The index file is saved when the changes it lacks reach FAISS_PERSIST_EVERY or this share
#: of the index, whichever is more: each vector is then written a bounded number of times
#: however large the store grows, and reopening replays at most this share of the log.
SAVE_SHARE = 0.5

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _disk_full(exc: BaseException) -> bool:
    """Whether SQLite (SQLITE_FULL) or the OS (ENOSPC, EDQUOT) says there is no space left."""
    if isinstance(exc, StorageFullError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in _NO_SPACE
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) == sqlite3.SQLITE_FULL
    return "database or disk is full" in str(exc)


_fts = table("memories_fts", column("rowid"))
_LARGEST_PKS = "SELECT (SELECT max(pk) FROM memories), (SELECT max(pk) FROM knowledge_chunks)"


class SQLiteDriver(SQLDriver):
    """SQLite (source of truth, FTS5 keyword search) with FAISS vector indexes beside it."""

    name = "sqlite"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
        allow_embedder_mismatch: bool = False,
    ) -> None:
        self._index: VectorIndexes | None = None
        self._index_lock = threading.Lock()
        #: writes bring the index along (off while opening and re-embedding)
        self._follow_writes = False
        #: writes committed while the index was not loaded (it is loaded and saved on close)
        self._unfollowed_writes = False
        self._save_retry_at = 0.0
        self._insert_plans: dict[tuple[str, tuple[str, ...]], InsertPlan] = {}
        super().__init__(
            settings, embedder=embedder, allow_embedder_mismatch=allow_embedder_mismatch
        )
        self.path = sqlite_path(self.settings.memory_db_url)
        self.index_path = faiss_index_path(self.settings)
        self._follow_writes = True

    # ------------------------------------------------------------------ engine, transactions
    def _create_engine(self) -> Engine:
        try:
            return create_sqlite_engine(self.settings)
        except OSError as exc:  # its folder cannot be created
            raise BackendUnavailableError(
                f"SQLite database {self._label}: cannot create its folder ({exc}). "
                "Check the path and permissions."
            ) from exc

    @property
    def _label(self) -> str:
        return str(sqlite_path(self.settings.memory_db_url) or ":memory:")

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        try:
            yield
        except DBAPIError as exc:
            if exc.orig is not None and _disk_full(exc.orig):
                raise StorageFullError(
                    f"SQLite database {self._label}: the disk is full ({exc.orig}); nothing of "
                    "this write was stored. Free space on the disk holding it and retry; "
                    "reads keep working meanwhile."
                ) from exc
            if (
                not exc.connection_invalidated
                and "locked" not in str(exc.orig)
                and "unable to open" not in str(exc.orig)
                and "not a database" not in str(exc.orig)
            ):
                raise
            raise BackendUnavailableError(
                f"SQLite database {self._label}: {exc.orig}. Check the path and permissions; "
                "'locked' means another process held it longer than SQLITE_BUSY_TIMEOUT."
            ) from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._translate_errors(), write_connection(self.engine) as connection:
            yield connection
        if self._follow_writes:
            self._after_write()

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._translate_errors(), read_connection(self.engine) as connection:
            yield connection
        index = self._index
        if index is not None and index.needs_save:  # rebuilt: repair the file
            self._persist()

    def _after_write(self) -> None:
        """Bring this process's index up to the write just committed, and save it when the
        file lacks enough changes. Search never pays for a large load (the index already
        holds it), and a process that only writes still leaves a current file behind.

        A process whose index is not loaded yet (it has not searched) does not load it for
        its writes until the file lacks enough changes to be saved: loading the whole file
        costs more than following many writes, and several writer processes starting at once
        would take the CPU from the readers for nothing. Its first search loads the file and
        replays the log written since (less than the save threshold); closing it saves a
        current file all the same."""
        try:
            index = self._index
            if index is None or not index.loaded:
                with self._read() as connection:
                    if not self._save_due(connection):
                        self._unfollowed_writes = True  # saved on close (see _close)
                        return
            with self._read() as connection:
                index = self._vector_index(connection)
                index.ensure_current(connection)
            if index.unsaved >= self._save_threshold(index.size):
                self._persist()
        except Exception:
            # The write is committed and must be reported as done; the index catches up at
            # the next search, which raises if the problem persists.
            log.warning("the FAISS index could not follow a write", exc_info=True)

    def _save_threshold(self, vectors: int) -> float:
        """Unsaved vector changes at which the index file is saved again."""
        return max(self.settings.faiss_persist_every, SAVE_SHARE * vectors)

    def _save_due(self, connection: Connection) -> bool:
        """Whether the saved file lacks enough changes to be saved again, told by the
        database alone (the size of the store estimated from its largest pks, an upper
        bound)."""
        position = log_position(connection)
        vectors = sum(int(n or 0) for n in sqlite_rows(connection, _LARGEST_PKS)[0])
        return position.last - position.saved >= self._save_threshold(vectors)

    def _prepare_schema(self) -> None:
        with self._read() as connection:
            current = migrations.current_revision(connection)
        head = migrations.head_revision()
        if current == head:
            return
        newer = current is not None and current not in migrations.known_revisions()
        if self.settings.memory_auto_migrate is False and not newer:  # newer: refused below
            raise SchemaError(
                f"the SQLite store {self._label} is at schema revision "
                f"{current or '(none)'}, but this version of memory-drivers needs {head}. "
                f"Run: memory-drivers migrate --url {self.settings.memory_db_url}  "
                "(or set MEMORY_AUTO_MIGRATE=true)"
            )
        with self._write() as connection:
            current = migrations.current_revision(connection)
            if current != head:
                if current is not None and current not in migrations.known_revisions():
                    raise SchemaError(
                        f"the SQLite store {self._label} is at schema revision {current}, which "
                        "this version of memory-drivers does not know; it was made by a newer "
                        "version. Upgrade memory-drivers."
                    )
                log.info("migrating %s from %s to %s", self._label, current, head)
                migrations.upgrade(connection)

    # ------------------------------------------------------------------ SQL hooks
    def _memories_by_pk(self, connection: Connection, pks: Sequence[int]) -> dict[int, Memory]:
        """Memories by pk: the hot path of every recall, where SQLAlchemy's expanding ``IN``
        and its row processing cost more than SQLite's work. Read through the DB-API, each
        value converted as its column type would (:func:`.dbapi.memory_of_row`)."""
        pks = list(pks)
        found: dict[int, Memory] = {}
        for start in range(0, len(pks), IN_BATCH):
            batch = tuple(pks[start : start + IN_BATCH])
            for row in sqlite_rows(connection, by_pks_sql(len(batch)), batch):
                found[row[0]] = memory_of_row(row)
        return found

    def _memory_page(
        self, user_id: str | None, size: int, after: tuple[Any, str] | None
    ) -> list[Memory]:
        """As the shared one (the next ``size`` memories in ``(created_at, id)`` order), read
        through the DB-API: an export or copy reads every memory this way."""
        parameters: list[Any] = [] if user_id is None else [user_id]
        if after is not None:
            created = utc_text(after[0])
            parameters += [created, created, after[1]]
        sql = page_sql(user_id is not None, after is not None)
        with self._read() as connection:
            rows = sqlite_rows(connection, sql, (*parameters, size))
        return [memory_of_row(row) for row in rows]

    def _insert_many(
        self, connection: Connection, table: Table, rows: list[dict[str, Any]]
    ) -> None:
        """Through the DB-API (:func:`.dbapi.insert_rows`): SQLAlchemy's per-row statement
        machinery cost more than SQLite's own work on a bulk load."""
        insert_rows(connection, table, rows, self._insert_plans)

    def _has_tags(self, tags: Sequence[str], mode: Literal["any", "all"]) -> ColumnElement[bool]:
        # The column holds json.dumps(list) (the engine's serializer, see engines.py): elements
        # separated by ", ", every quote inside a string escaped. So a tag is an element exactly
        # when its JSON text appears after "[" or ", " and before "," or "]": a plain substring
        # test, without parsing the JSON of every row.
        def has(tag: str) -> ColumnElement[bool]:
            text = json.dumps(tag)
            return or_(
                *(
                    func.instr(memories.c.tags, f"{before}{text}{after}") > 0
                    for before in ("[", ", ")
                    for after in (",", "]")
                )
            )

        tests = [has(tag) for tag in tags]
        return or_(*tests) if mode == "any" else and_(*tests)

    def _metadata_equals(self, key: str, value: Scalar) -> ColumnElement[bool]:
        each = func.json_each(memories.c.metadata).table_valued("key", "type", "value")
        if value is None:
            condition = each.c.type == "null"
        elif value is True:
            condition = each.c.type == "true"
        elif value is False:
            condition = each.c.type == "false"
        elif isinstance(value, int | float):
            condition = each.c.type.in_(["integer", "real"]) & (each.c.value == value)
        else:
            condition = (each.c.type == "text") & (each.c.value == value)
        return exists().select_from(each).where(each.c.key == key, condition)

    def _postings(
        self, connection: Connection, table: Table, terms: Sequence[str], user_id: str | None
    ) -> dict[str, list[int]]:
        # Memories: the FTS5 index holds user-scoped terms (see migration 0001),
        # "<hex of user_id>x<term>", so a term's postings are the user's alone. Knowledge: plain
        # terms (migration 0003). Terms are letters and digits only (memory_drivers.text), so
        # quoting them is safe.
        if table is memories:
            if user_id is None:
                raise ValueError("keyword recall on SQLite is always within one user's memories")
            fts, prefix = "memories_fts", user_id.encode("utf-8").hex() + "x"
        else:
            fts, prefix = "knowledge_fts", ""
        terms = list(dict.fromkeys(terms))
        found: dict[str, list[int]] = {term: [] for term in terms}
        matches = tuple(f'"{prefix}{term}"' for term in terms)
        for index, pk in sqlite_rows(connection, postings_sql(fts, len(terms)), matches):
            found[terms[index]].append(pk)
        return found

    def _scope_scores(
        self, connection: Connection, table: Table, vector: np.ndarray, memory_filter: MemoryFilter
    ) -> tuple[list[int], np.ndarray] | None:
        # One user's memories and nothing else: the index knows each vector's owner, and
        # scoring all of them costs about what finding the best of them does.
        if table is not memories or not only_user(memory_filter):
            return None
        if memory_filter.user_id is None:
            return None
        index = self._vector_index(connection)
        index.ensure_current(connection)
        pks, scores = index.scores_owner(vector, memory_filter.user_id)
        return pks.tolist(), scores

    def _cosines(
        self, connection: Connection, table: Table, pks: Sequence[int], vector: np.ndarray
    ) -> dict[int, float]:
        index = self._vector_index(connection)
        index.ensure_current(connection)
        found, scores = index.scores_rows(table.name, vector, pks)
        return dict(zip(found.tolist(), scores.tolist(), strict=True))

    def _rank_by_vector(
        self,
        connection: Connection,
        table: Table,
        where: Sequence[ColumnElement[bool]],
        vector: np.ndarray,
        top_k: int,
        memory_filter: MemoryFilter | None = None,
    ) -> list[tuple[int, float]]:
        index = self._vector_index(connection)
        index.ensure_current(connection)
        if (
            memory_filter is not None
            and memory_filter.user_id is not None
            and only_user(memory_filter)
        ):
            # Scoped to one user and nothing else: the index knows each vector's owner.
            return index.search_owner(vector, top_k + TIE_MARGIN, memory_filter.user_id)
        candidates = None
        if where:
            candidates = connection.execute(select(table.c.pk).where(*where)).scalars().all()
        return index.search(table.name, vector, top_k + TIE_MARGIN, candidates)

    # ------------------------------------------------------------------ the FAISS index
    def _vector_index(self, connection: Connection) -> VectorIndexes:
        with self._index_lock:
            if self._index is None:
                info = dict(connection.execute(select(store_info.c.key, store_info.c.value)).all())
                self._index = VectorIndexes(
                    self.index_path,
                    store_id=info["store_id"],
                    embedder=info["embedder"],
                    dimension=int(info["dimension"]),
                    current=lambda: read_connection(self.engine),
                    latest=lambda: write_connection(self.engine),
                )
            return self._index

    def _persist(self, *, force: bool = False, compact: bool = False) -> bool:
        """Save the index file if it is newer than the one recorded; True when saved.

        The file is written to a temporary name first; renaming it into place, recording its
        log position and deleting the log entries the previous file covered (or, ``compact``,
        every entry this one covers) happen in one write transaction, which serializes saves
        between processes. A file that cannot be written (a full disk, a path that cannot be
        created, the database busy past its timeout) only logs a warning: the index in memory
        is current and the database has everything, so searches go on; the save is tried
        again after ``SAVE_RETRY_SECONDS`` (``force``: now).
        """
        index = self._index
        if index is None or not index.loaded or self.index_path is None:
            return False
        if not force and time.monotonic() < self._save_retry_at:
            return False
        try:
            return self._save(index, compact)
        except OSError as exc:  # StorageFullError and BackendUnavailableError are OSErrors too
            self._save_retry_at = time.monotonic() + SAVE_RETRY_SECONDS
            log.warning(
                "cannot save the FAISS index %s: %s (%s). Nothing is lost: searches go on from "
                "memory and the database; the save is tried again later.",
                self.index_path,
                "the disk is full" if _disk_full(exc) else "the file cannot be written",
                exc,
            )
            return False

    def _save(self, index: VectorIndexes, compact: bool) -> bool:
        with read_connection(self.engine) as connection:
            saved = log_position(connection).saved
        if index.seq < saved or (index.seq == saved and not index.needs_save):
            index.saved = max(index.saved, saved)
            return False  # another process saved one at least as new
        snapshot = index.snapshot()
        seq = snapshot[0]
        tmp: Path | None = index.write_temporary(snapshot)
        try:
            with self._translate_errors(), write_connection(self.engine) as connection:
                saved = log_position(connection).saved
                if seq < saved or (seq == saved and not index.needs_save):
                    index.saved = max(index.saved, saved)
                    return False
                covered = seq if compact else min(saved, seq)
                connection.execute(delete(vector_log).where(vector_log.c.seq <= covered))
                connection.execute(delete(store_info).where(store_info.c.key == COMPACTED_KEY))
                connection.execute(insert(store_info).values(key=COMPACTED_KEY, value=str(seq)))
                # Renamed before the commit, under the write lock: a process that sees the
                # file before the commit waits for it (VectorIndexes._open).
                assert tmp is not None
                index.install(tmp, seq)
                tmp = None
            return True
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    def rebuild_index(self, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Rebuild the FAISS indexes from SQLite and save them. ``progress`` gets row counts."""
        self._check_open()
        started = time.perf_counter()
        with self._translate_errors(), read_connection(self.engine) as connection:
            index = self._vector_index(connection)
            index.rebuild(connection, progress)
        saved = self._persist(force=True, compact=True)
        return {
            "rebuilt": True,
            "saved": saved,
            "memories": index.indexes["memories"].ntotal,
            "knowledge_chunks": index.indexes["knowledge_chunks"].ntotal,
            "seconds": round(time.perf_counter() - started, 3),
            "index_path": str(self.index_path) if self.index_path else None,
        }

    def _before_reembed(self) -> None:
        self._follow_writes = False  # the vectors change dimension on the way

    def _after_reembed(self) -> None:
        with self._index_lock:
            self._index = None
        if self.index_path is not None:
            self.index_path.unlink(missing_ok=True)
        self.rebuild_index()
        self._follow_writes = True

    # ------------------------------------------------------------------ operations
    def _sizes(self) -> dict[str, Any]:
        sizes: dict[str, Any] = {"database": self._label}
        if self.path is not None:
            files = [self.path, self.path.with_name(self.path.name + "-wal")]
            sizes["database_bytes"] = sum(p.stat().st_size for p in files if p.exists())
        if self.index_path is not None:
            sizes["index_path"] = str(self.index_path)
            exists_ = self.index_path.exists()
            sizes["index_bytes"] = self.index_path.stat().st_size if exists_ else 0
        return sizes

    def _health(self) -> dict[str, Any]:
        counts = self._counts()
        with self._read() as connection:
            index = self._vector_index(connection)
            index.ensure_current(connection)
            vectors = {kind: index.indexes[kind].ntotal for kind in index.indexes}
            info = dict(connection.execute(select(store_info.c.key, store_info.c.value)).all())
        in_sync = vectors == {
            "memories": counts["memories"],
            "knowledge_chunks": counts["knowledge_chunks"],
        }
        return {
            "status": "ok" if in_sync else "degraded",
            **self._sizes(),
            **counts,
            "embedder": {"name": info.get("embedder"), "dimension": info.get("dimension")},
            "index": {"vectors": vectors, "log_position": index.seq, "in_sync": in_sync},
        }

    def _stats(self) -> dict[str, Any]:
        return {**self._counts(), **self._sizes(), "index": self._index_state()}

    def _index_state(self) -> dict[str, Any]:
        """This process's FAISS index against the database, without bringing it up to date
        (one query): its counters (rebuilds, file loads, log entries replayed, saves), its log
        position, ``pending`` (vector changes logged that it has not applied yet) and
        ``unsaved`` (changes it holds that the saved file does not)."""
        with self._read() as connection:
            last = log_position(connection).last
        index = self._index
        if index is None:  # not loaded yet: nothing counted
            return {
                **dict.fromkeys(COUNTERS, 0),
                "loaded": False,
                "in_sync": False,
                "pending": None,
                "unsaved": 0,
            }
        state = {
            **index.counters,
            "loaded": index.loaded,
            "log_position": index.seq,
            "unsaved": index.unsaved,
        }
        if not index.loaded:
            return {**state, "in_sync": False, "pending": None}
        return {
            **state,
            "in_sync": index.seq == last,
            "pending": max(last - index.seq, 0),
            "vectors": {kind: index.indexes[kind].ntotal for kind in index.indexes},
        }

    def _close(self) -> None:
        try:
            index = self._index
            if (index is None or not index.loaded) and self._unfollowed_writes and self.index_path:
                # This process wrote without loading the index: leave a current file behind
                # for the next process, as one that followed its writes does.
                index = self._follow_up()
            if index is not None and (index.unsaved or index.needs_save):
                self._persist(force=True)
        finally:
            self.engine.dispose()

    def _follow_up(self) -> VectorIndexes | None:
        """Load the index and catch it up (None when that fails: a warning, the database
        has everything and the next process catches up instead)."""
        try:
            with self._translate_errors(), read_connection(self.engine) as connection:
                index = self._vector_index(connection)
                index.ensure_current(connection)
            return index
        except Exception:
            log.warning("the FAISS index could not be saved on close", exc_info=True)
            return None
