"""FAISS indexes derived from a SQLite store, kept current by its vector log.

SQLite is the source of truth: every vector change is appended to ``vector_log`` by triggers,
in the same transaction as the row. The in-memory indexes remember the last log entry they
applied (``seq``) and, inside the reader's transaction, replay what is newer before every search.
So a write by this process, by another process, or before a crash is always seen, and a deleted
memory is never found. The file beside the database is only a snapshot that saves a replay from
zero on start; it carries the store's id, the embedder, the dimension, its ``seq`` and a checksum,
and is rebuilt from SQLite when it is missing, stale, corrupt or from another store.

Many processes share one file without throwing away each other's work:

- a file is written to a temporary name, then renamed into place inside a write transaction
  that records its log position (``vector_log_compacted``), only when it is newer than the one
  recorded; so saves are serialized, an older snapshot never replaces a newer one, and the
  recorded position always names the file on disk;
- a process whose snapshot predates a save it sees on disk asks the database as it is now
  (waiting for that save to commit) and loads the newer file instead of rebuilding;
- a save deletes only the log entries the *previous* file covered, so a process a little
  behind catches up by replaying the log instead of loading the file again;
- writers follow their own writes and save (see ``SQLiteDriver._after_write``), so a process
  that only writes still leaves a current file for the next reader; one that has not searched
  loads the index only when a save is due, and on close.

"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple

import faiss
import numpy as np
from sqlalchemy import Column, Integer, MetaData, Table, Text, func, select
from sqlalchemy.engine import Connection

from ...sql.engines import sqlite_rows
from ...sql.schema import knowledge_chunks, memories
from .index_file import KINDS, IndexFile, IndexFileError
from .rows import Layout, RowMap, layout

__all__ = ["LogPosition", "VectorIndexes", "log_position", "vector_log"]

log = logging.getLogger(__name__)

TABLES = {"memories": memories, "knowledge_chunks": knowledge_chunks}
COMPACTED_KEY = "vector_log_compacted"
READ_BATCH = 5000
#: Candidate sets up to this size are scored from the index's storage, not by a full scan.
GATHER_LIMIT = 50_000
#: Memories are stored grouped by owner, so one user's vectors are one contiguous block that
#: is scored in place, not gathered from all over the index (2-3x faster at 1,000 rows).
#: Rows added since are sorted by owner in place, as a segment of their own, once there are
#: SEAL_MIN of them and 1/SEAL_PARTS of the index (so a user's vectors are a run per segment,
#: and only the rows since the last segment are gathered); everything is regrouped into one
#: segment when the rows outside the first reach GROUP_SHARE of the index (and at least
#: GROUP_MIN_TAIL): each vector is copied a bounded number of times however large the store.
GROUP_SHARE = 0.5
GROUP_MIN_TAIL = 10_000
SEAL_MIN = 4096
SEAL_PARTS = 64
#: What each process counts of its index (``stats()["index"]``).
COUNTERS = ("rebuilds", "file_loads", "replayed", "saves")

vector_log = Table(
    "vector_log",
    MetaData(),
    Column("seq", Integer, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("vector_pk", Integer, nullable=False),
    Column("op", Text, nullable=False),
)


def _new_index(dimension: int) -> Any:
    # Exact inner-product search over unit vectors: the score is the cosine similarity.
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))


# Read before every search: plain SQL through the DB-API (no statement to compile).
_LOG_POSITION = (
    "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'vector_log'), "
    f"(SELECT value FROM memory_store_info WHERE key = '{COMPACTED_KEY}'), "
    "(SELECT min(seq) FROM vector_log)"
)


_LOG_AFTER = "SELECT seq, kind, vector_pk, op FROM vector_log WHERE seq > ? ORDER BY seq"


class LogPosition(NamedTuple):
    """Where the vector log stands in one snapshot of the database."""

    #: the last log seq ever written
    last: int
    #: the log position of the index file the database records as saved
    saved: int
    #: entries up to here were deleted: an index older than this cannot catch up by replaying
    floor: int


def log_position(connection: Connection) -> LogPosition:
    """The :class:`LogPosition` of ``connection``'s snapshot."""
    last, saved, first = sqlite_rows(connection, _LOG_POSITION)[0]
    last, saved = int(last or 0), int(saved or 0)
    return LogPosition(last, saved, last if first is None else int(first) - 1)


def _vectors_sql(kind: str, where: str) -> str:
    """What is read per vector (memories also bring their owner, which never changes), as
    plain SQL: the raw bytes of many vectors become one array at once, with no per-row
    processing."""
    owner = ", user_id" if kind == "memories" else ""
    return f"SELECT pk, embedding{owner} FROM {kind} WHERE {where}"


class VectorIndexes(IndexFile):
    """The memories and knowledge indexes of one store, with their log position.

    ``current`` opens a new read transaction and ``latest`` a write transaction; they are
    used, rarely, to read the database's state as it is now when this index (``current``) or
    the index file (``latest``, which waits for a save being recorded by another process to
    commit) is newer than the caller's snapshot.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        store_id: str,
        embedder: str,
        dimension: int,
        current: Callable[[], AbstractContextManager[Connection]] | None = None,
        latest: Callable[[], AbstractContextManager[Connection]] | None = None,
    ):
        self.path = path
        self.store_id = store_id
        self.embedder = embedder
        self.dimension = dimension
        self._current = current
        self._latest = latest
        self.indexes = {kind: _new_index(dimension) for kind in KINDS}
        self.rows = {kind: RowMap(kind == "memories") for kind in KINDS}
        self._codes: dict[str, int] = {}
        #: per kind: (the index, its size, a view of its vectors) (see _storage)
        self._views: dict[str, tuple[Any, int, np.ndarray]] = {}
        #: the last log entry applied
        self.seq = 0
        #: the log position of the saved file, as last read from the database
        self.saved = 0
        #: the file on disk cannot be trusted (rebuilt from SQLite): write it at the next chance
        self.needs_save = False
        self.loaded = False
        #: full rebuilds from SQLite, loads of the file, log entries replayed, files saved
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.lock = threading.RLock()

    @property
    def size(self) -> int:
        """Vectors held, of both kinds."""
        return sum(int(index.ntotal) for index in self.indexes.values())

    @property
    def unsaved(self) -> int:
        """Vector changes this index holds that the saved file does not."""
        return max(0, self.seq - self.saved)

    # ------------------------------------------------------------------ following SQLite
    def ensure_current(self, connection: Connection) -> None:
        """Bring the indexes to the snapshot of ``connection`` (a read transaction)."""
        with self.lock:
            position = log_position(connection)
            self.saved = max(self.saved, position.saved)
            if not self.loaded:
                self._open(connection, position.saved)
            elif self.seq > position.last:
                # Ahead of this snapshot: another thread of this process caught up in a newer
                # one, which is harmless; unless the database went back in time (restored from
                # a backup), which only the database as it is now can tell.
                if self._now().last < self.seq:
                    log.warning("the database %s is older than its FAISS index", self.path)
                    self._open(connection, position.saved)
            elif self.seq < position.floor:
                # The log after this index was compacted: load the newest saved file.
                self._open(connection, position.saved)
            elif self.seq < position.last:
                self._replay(connection)

    def _now(self) -> LogPosition:
        """The database's log position now (a new read transaction)."""
        if self._current is None:
            raise IndexFileError("no way to read the database's current state")
        with self._current() as connection:
            return log_position(connection)

    def _open(self, connection: Connection, saved: int) -> None:
        """Load the file if it is the one the database records as saved, else rebuild.

        The database records the log position of the last file saved, in the same transaction
        that renames it into place. A file holding any other position is not this database's
        latest (a crash between writing and recording it, a database restored from a backup)
        and is not trusted. A file newer than the caller's snapshot may have been saved since
        it began: then the database as it is now decides, and the file is caught up in a new
        snapshot.
        """
        try:
            seq, indexes = self._read_file()
            if seq == saved:
                self._load(connection, seq, indexes)
                return
            if seq > saved and self._latest is not None and self._current is not None:
                with self._latest() as latest:  # waits for a save under way to commit
                    saved = log_position(latest).saved
                if seq == saved:
                    with self._current() as fresh:
                        self._load(fresh, seq, indexes)
                    return
            raise IndexFileError(
                f"it holds log position {seq}, but the database recorded {saved} as saved"
            )
        except FileNotFoundError:
            self.rebuild(connection)
        except IndexFileError as exc:
            log.warning("rebuilding the FAISS index %s from SQLite: %s", self.path, exc)
            self.rebuild(connection)

    def _load(self, connection: Connection, seq: int, indexes: dict[str, Any]) -> None:
        """Use the indexes read from the file (at ``seq``) and catch them up in ``connection``."""
        if log_position(connection).floor > seq:
            raise IndexFileError("the log after it was already compacted")
        self.indexes, self.seq = indexes, seq
        self.rows = {kind: RowMap(kind == "memories") for kind in KINDS}
        for kind in KINDS:
            ids = faiss.vector_to_array(indexes[kind].id_map).astype(np.int64, copy=False)
            owners = self._owners_of(connection, ids) if kind == "memories" else None
            self.rows[kind].append(ids, owners)
        memories_ = self.rows["memories"]
        prefix = memories_.grouped()
        if bool((np.diff(memories_.owners[:prefix]) >= 0).all()):  # codes in storage order
            memories_.adopt_sorted_prefix(prefix)
        self._replay(connection)
        drift = self._drift(connection)
        if drift:
            raise IndexFileError(drift)
        self.loaded = True
        self.counters["file_loads"] += 1

    def _owners_of(self, connection: Connection, pks: np.ndarray) -> np.ndarray:
        """The owner code of each memories pk (the file does not hold them); -1 for rows gone
        since (the log replay removes them). New owners get codes in the order they first
        appear in ``pks`` (storage order), so rows grouped by owner are in code order too."""
        # Plain tuples through the DB-API: a row object per memory made the load of a large
        # store slow, and its garbage collections stalled the process.
        rows = sqlite_rows(connection, "SELECT pk, user_id FROM memories")
        if not rows or not len(pks):
            return np.full(len(pks), -1, dtype=np.int32)
        stored = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        users: dict[str, int] = {}
        local = np.fromiter(
            (users.setdefault(row[1], len(users)) for row in rows), dtype=np.int32, count=len(rows)
        )
        table = np.full(max(int(stored.max()), int(pks.max())) + 1, -1, dtype=np.int32)
        table[stored] = local
        found = table[pks]
        present = found[found >= 0]
        names = list(users)
        _, first = np.unique(present, return_index=True)
        codes = np.full(len(names) + 1, -1, dtype=np.int32)  # the last: "gone" (-1 in found)
        for index in np.sort(first).tolist():
            codes[present[index]] = self._code(names[present[index]])
        return codes[found]

    def _code(self, user: str) -> int:
        return self._codes.setdefault(user, len(self._codes))

    def _drift(self, connection: Connection) -> str | None:
        for kind, table in TABLES.items():
            rows = connection.execute(select(func.count()).select_from(table)).scalar_one()
            if rows != self.indexes[kind].ntotal:
                return f"{kind}: {self.indexes[kind].ntotal} vectors for {rows} rows"
        return None

    def _replay(self, connection: Connection) -> None:
        entries = sqlite_rows(connection, _LOG_AFTER, (self.seq,))
        if not entries:
            return
        final: dict[str, dict[int, str]] = {kind: {} for kind in KINDS}
        for _, kind, pk, op in entries:
            final[kind][pk] = op
        for kind, ops in final.items():
            if not ops:
                continue
            pks = np.fromiter(ops, dtype=np.int64, count=len(ops))
            held = pks[self.rows[kind].contains(pks)]
            if len(held):  # removed or re-embedded: FAISS compacts its storage, and so do we
                self.indexes[kind].remove_ids(held)
                self._views.pop(kind, None)
                self.rows[kind].remove(held)
            added = [pk for pk, op in ops.items() if op == "add"]
            self._add_rows(connection, kind, added)
        self.seq = entries[-1][0]
        self.counters["replayed"] += len(entries)
        self._keep_grouped()

    def _add_rows(self, connection: Connection, kind: str, pks: Sequence[int]) -> None:
        for start in range(0, len(pks), READ_BATCH):
            batch = sorted(pks[start : start + READ_BATCH])
            values: tuple[int, ...]
            if batch[-1] - batch[0] + 1 == len(batch):  # a run of new rows: a range, no list
                sql, values = _vectors_sql(kind, "pk BETWEEN ? AND ?"), (batch[0], batch[-1])
            else:
                sql = _vectors_sql(kind, f"pk IN ({', '.join('?' * len(batch))})")
                values = tuple(batch)
            self._add(kind, connection.exec_driver_sql(sql, values).cursor.fetchall())

    def _add(self, kind: str, rows: Sequence[Any]) -> None:
        """Add rows of (pk, the vector's bytes[, owner])."""
        if not rows:
            return
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        sizes = {len(row[1]) for row in rows}
        if sizes != {4 * self.dimension}:
            found = ", ".join(str(size // 4) for size in sorted(sizes))
            raise IndexFileError(
                f"stored vectors have {found} dimensions, the index {self.dimension}"
            )
        vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32)
        vectors = vectors.reshape(len(rows), self.dimension)
        self.indexes[kind].add_with_ids(vectors, ids)
        self._views.pop(kind, None)
        owners = None
        if kind == "memories":
            owners = np.fromiter((self._code(row[2]) for row in rows), np.int32, len(rows))
        self.rows[kind].append(ids, owners)

    def rebuild(
        self, connection: Connection, progress: Callable[[int], None] | None = None
    ) -> None:
        """Rebuild both indexes from the vectors in SQLite (the snapshot of ``connection``)."""
        with self.lock:
            position = log_position(connection)
            self.indexes = {kind: _new_index(self.dimension) for kind in KINDS}
            self.rows = {kind: RowMap(kind == "memories") for kind in KINDS}
            for kind in KINDS:
                after = 0
                while True:
                    sql = _vectors_sql(kind, f"pk > ? ORDER BY pk LIMIT {READ_BATCH}")
                    rows = connection.exec_driver_sql(sql, (after,)).cursor.fetchall()
                    self._add(kind, rows)
                    if progress is not None and rows:
                        progress(len(rows))
                    if len(rows) < READ_BATCH:
                        break
                    after = rows[-1][0]
            self._keep_grouped(force=True)
            self.seq = position.last
            self.saved = position.saved
            self.needs_save = True
            self.loaded = True
            self.counters["rebuilds"] += 1

    def _keep_grouped(self, force: bool = False) -> None:
        """Sort the memories added since the last segment into one (or everything into one,
        when enough rows are outside the first segment)."""
        rows = self.rows["memories"]
        outside = rows.count - rows.first_segment_end
        fresh = rows.count - rows.sorted_end
        if outside > 0 and (force or outside >= max(GROUP_MIN_TAIL, GROUP_SHARE * rows.count)):
            self._sort_from(0)
        elif fresh >= max(SEAL_MIN, rows.count // SEAL_PARTS):
            self._sort_from(rows.sorted_end)

    def _sort_from(self, start: int) -> None:
        """Sort the memories from row ``start`` on by owner, in place: the rows' map, FAISS's
        storage and its id map move together (the id map's reverse index is rebuilt)."""
        rows = self.rows["memories"]
        index = self.indexes["memories"]
        order = rows.sort_from(start)
        stored = self._storage("memories")
        stored[start:] = stored[start:][order]
        ids: Any = faiss.rev_swig_ptr(index.id_map.data(), index.ntotal)
        ids[start:] = ids[start:][order]
        index.construct_rev_map()

    # ------------------------------------------------------------------ searching
    def search(
        self, kind: str, vector: np.ndarray, k: int, candidates: Sequence[int] | None
    ) -> list[tuple[int, float]]:
        """(pk, score) of the ``k`` best vectors, restricted to ``candidates`` when given.

        Exact either way. A small candidate set (one user's memories) is scored by reading its
        rows straight from the flat index's storage; a large one, or none, by FAISS's search
        (which scans every vector, checking an id selector)."""
        with self.lock:
            index = self.indexes[kind]
            if candidates is not None and len(candidates) <= GATHER_LIMIT:
                return self._score_rows(kind, vector, k, candidates)
            params = None
            if candidates is not None:
                params = faiss.SearchParameters()
                params.sel = faiss.IDSelectorBatch(np.asarray(candidates, dtype=np.int64))
                k = min(k, len(candidates))
            k = min(k, index.ntotal)
            if k <= 0:
                return []
            scores, ids = index.search(vector.reshape(1, -1), k, params=params)
        return [(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i != -1]

    def search_owner(self, vector: np.ndarray, k: int, user_id: str) -> list[tuple[int, float]]:
        """(pk, score) of the ``k`` best memories of ``user_id``, exactly."""
        with self.lock:
            code = self._codes.get(user_id)
            if code is None:
                return []
            return self._score_at("memories", self.rows["memories"].owner_rows(code), vector, k)

    def scores_owner(self, vector: np.ndarray, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(pks, scores) of every memory of ``user_id``, exactly."""
        with self.lock:
            code = self._codes.get(user_id)
            rows = (
                self.rows["memories"].owner_rows(code)
                if code is not None
                else layout(np.zeros(0, np.int64))
            )
            return self._scores_at("memories", rows, vector)

    def scores_rows(
        self, kind: str, vector: np.ndarray, candidates: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(pks, scores) of every candidate (pks), exactly."""
        with self.lock:
            return self._scores_at(kind, self._rows_of(kind, candidates), vector)

    def _rows_of(self, kind: str, candidates: Sequence[int]) -> Layout:
        return layout(self.rows[kind].rows_of(np.asarray(candidates, dtype=np.int64)))

    def _score_rows(
        self, kind: str, vector: np.ndarray, k: int, candidates: Sequence[int]
    ) -> list[tuple[int, float]]:
        return self._score_at(kind, self._rows_of(kind, candidates), vector, k)

    def _storage(self, kind: str) -> np.ndarray:
        """The flat index's vectors as one array (a view of FAISS's storage, no copy), kept
        while the index object and its size are unchanged (adding or removing vectors drops
        it: FAISS may move its storage then)."""
        index = self.indexes[kind]
        view = self._views.get(kind)
        if view is not None and view[0] is index and view[1] == index.ntotal:
            return view[2]
        flat: Any = faiss.downcast_index(index.index)
        stored = faiss.rev_swig_ptr(flat.get_xb(), index.ntotal * self.dimension)
        stored = stored.reshape(index.ntotal, self.dimension)
        self._views[kind] = (index, index.ntotal, stored)
        return stored

    def _scores_at(
        self, kind: str, rows: Layout, vector: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(pks, scores) of these storage rows, read straight from the flat index: each long
        run of consecutive rows (an owner's run in a segment) where it lies, the scattered
        rest gathered first.

        Scored by FAISS's own inner-product kernels, on the calling thread: numpy's ``@``
        hands a block past a few thousand rows to BLAS's threads, which on a busy machine
        waited for a core far longer than the arithmetic takes (10,000 rows: 17-20 ms
        instead of 1-2 ms at load 8)."""
        if not len(rows.rows):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        stored = self._storage(kind)
        query = np.ascontiguousarray(vector, dtype=np.float32)
        scores = np.empty(len(rows.rows), dtype=np.float32)
        for at, first, length in rows.runs:
            self._inner_products(scores[at : at + length], query, stored[first : first + length])
        if rows.scattered is not None:
            rest = np.empty(len(rows.scattered), dtype=np.float32)
            self._inner_products(rest, query, stored[rows.rows[rows.scattered]])
            scores[rows.scattered] = rest
        return self.rows[kind].ids[rows.rows], scores

    def _inner_products(self, out: np.ndarray, query: np.ndarray, block: np.ndarray) -> None:
        """``out[i] = block[i] @ query``, by FAISS's SIMD kernel on this thread (``block``: rows
        of a C-contiguous array)."""
        faiss.fvec_inner_products_ny(  # type: ignore[attr-defined]
            faiss.swig_ptr(out),
            faiss.swig_ptr(query),
            faiss.swig_ptr(block),
            self.dimension,
            len(block),
        )

    def _score_at(
        self, kind: str, rows: Layout, vector: np.ndarray, k: int
    ) -> list[tuple[int, float]]:
        """(pk, score) of the ``k`` best of these storage rows, read straight from the flat
        index (no scan of the others)."""
        pks, scores = self._scores_at(kind, rows, vector)
        if len(scores) > k:
            best = np.argpartition(-scores, k - 1)[:k]
            pks, scores = pks[best], scores[best]
        order = np.argsort(-scores, kind="stable")
        return list(zip(pks[order].tolist(), scores[order].tolist(), strict=True))
