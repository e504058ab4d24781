"""FAISS indexes derived from a SQLite store, kept current by its vector log.

SQLite is the source of truth: every vector change is appended to ``vector_log`` by triggers,
in the same transaction as the row. The in-memory indexes remember the last log entry they
applied (``seq``) and, inside the reader's transaction, replay what is newer before every search.
So a write by this process, by another process, or before a crash is always seen, and a deleted
memory is never found. The file beside the database is only a snapshot that saves a replay from
zero on start; it carries the store's id, the embedder, the dimension, its ``seq`` and a checksum,
and is rebuilt from SQLite when it is missing, stale, corrupt or from another store.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from sqlalchemy import Column, Integer, MetaData, Table, Text, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from ...sql.schema import knowledge_chunks, memories, store_info

__all__ = ["VectorIndexes", "vector_log"]

log = logging.getLogger(__name__)

MAGIC = b"MDFAISS1"
FORMAT = 1
KINDS = ("memories", "knowledge_chunks")
TABLES = {"memories": memories, "knowledge_chunks": knowledge_chunks}
COMPACTED_KEY = "vector_log_compacted"
READ_BATCH = 5000
#: Candidate sets up to this size are scored from the index's storage, not by a full scan.
GATHER_LIMIT = 50_000

vector_log = Table(
    "vector_log",
    MetaData(),
    Column("seq", Integer, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("vector_pk", Integer, nullable=False),
    Column("op", Text, nullable=False),
)
sqlite_sequence = Table("sqlite_sequence", MetaData(), Column("name", Text), Column("seq", Integer))


class IndexFileError(Exception):
    """The index file cannot be used (corrupt, stale, or another store's)."""


def _new_index(dimension: int) -> Any:
    # Exact inner-product search over unit vectors: the score is the cosine similarity.
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))


_LOG_POSITION = select(
    select(sqlite_sequence.c.seq).where(sqlite_sequence.c.name == "vector_log").scalar_subquery(),
    select(store_info.c.value).where(store_info.c.key == COMPACTED_KEY).scalar_subquery(),
)


def log_position(connection: Connection) -> tuple[int, int]:
    """(last log seq ever written, log position of the last saved index file) in this
    snapshot. The log is compacted up to the second: entries the file covers are deleted."""
    row = connection.execute(_LOG_POSITION).one()
    return int(row[0] or 0), int(row[1] or 0)


def _columns(kind: str) -> tuple[Any, ...]:
    """What is read per vector: memories also bring their owner (it never changes)."""
    table = TABLES[kind]
    if kind == "memories":
        return table.c.pk, table.c.embedding, table.c.user_id
    return table.c.pk, table.c.embedding


class VectorIndexes:
    """The memories and knowledge indexes of one store, with their log position."""

    def __init__(self, path: Path | None, *, store_id: str, embedder: str, dimension: int):
        self.path = path
        self.store_id = store_id
        self.embedder = embedder
        self.dimension = dimension
        self.indexes = {kind: _new_index(dimension) for kind in KINDS}
        #: per kind, row of each pk in the index's storage (-1: none); None when stale
        self._rows: dict[str, tuple[np.ndarray, np.ndarray] | None] = {kind: None for kind in KINDS}
        #: the owner (a code of ``_codes``) of each memories row, aligned with the storage;
        #: None when not known (it is loaded when the index is opened)
        self._owners: np.ndarray | None = np.zeros(0, dtype=np.int32)
        self._codes: dict[str, int] = {}
        self.seq = 0
        #: vector changes applied since the file was last written
        self.unsaved = 0
        #: the file on disk cannot be trusted (rebuilt from SQLite): write it at the next chance
        self.needs_save = False
        self.loaded = False
        self.lock = threading.RLock()

    # ------------------------------------------------------------------ following SQLite
    def ensure_current(self, connection: Connection) -> None:
        """Bring the indexes to the snapshot of ``connection`` (a read transaction)."""
        with self.lock:
            last, saved = log_position(connection)
            if not self.loaded or self.seq < saved or self.seq > last:
                # First use, or the log was compacted past us, or the database went back in
                # time (restored from a backup): start again from the file or from SQLite.
                self._open(connection, saved)
            elif self.seq < last:
                self._replay(connection)

    def _open(self, connection: Connection, saved: int) -> None:
        """Load the file if it is the one the database records as saved, else rebuild.

        The database records the log position of the last file saved, in the same transaction
        that deletes the log entries the file covers. A file holding any other position is
        not this database's latest (a crash between writing it and recording it, an older
        process saving late, a database restored from a backup) and is not trusted.
        """
        try:
            seq, indexes = self._read_file()
            if seq != saved:
                raise IndexFileError(
                    f"it holds log position {seq}, but the database recorded {saved} as saved"
                )
        except FileNotFoundError:
            self.rebuild(connection)
        except IndexFileError as exc:
            log.warning("rebuilding the FAISS index %s from SQLite: %s", self.path, exc)
            self.rebuild(connection)
        else:
            self.indexes, self.seq, self.unsaved = indexes, seq, 0
            self._rows = {kind: None for kind in KINDS}
            self._owners = None
            self._replay(connection)
            drift = self._drift(connection)
            if drift:
                log.warning("rebuilding the FAISS index %s from SQLite: %s", self.path, drift)
                self.rebuild(connection)
            else:
                self._load_owners(connection)
        self.loaded = True

    def _load_owners(self, connection: Connection) -> None:
        """The owner of every memories row (the file does not hold them)."""
        rows = connection.execute(select(memories.c.pk, memories.c.user_id)).all()
        row_of = self._row_map("memories")
        owners = np.full(self.indexes["memories"].ntotal, -1, dtype=np.int32)
        for pk, user in rows:
            if pk < len(row_of) and row_of[pk] >= 0:
                owners[row_of[pk]] = self._code(user)
        self._owners = owners

    def _code(self, user: str) -> int:
        return self._codes.setdefault(user, len(self._codes))

    def _drift(self, connection: Connection) -> str | None:
        from sqlalchemy import func

        for kind, table in TABLES.items():
            rows = connection.execute(select(func.count()).select_from(table)).scalar_one()
            if rows != self.indexes[kind].ntotal:
                return f"{kind}: {self.indexes[kind].ntotal} vectors for {rows} rows"
        return None

    def _replay(self, connection: Connection) -> None:
        entries = connection.execute(
            select(vector_log.c.seq, vector_log.c.kind, vector_log.c.vector_pk, vector_log.c.op)
            .where(vector_log.c.seq > self.seq)
            .order_by(vector_log.c.seq)
        ).all()
        if not entries:
            return
        final: dict[str, dict[int, str]] = {kind: {} for kind in KINDS}
        for entry in entries:
            final[entry.kind][entry.vector_pk] = entry.op
        for kind, ops in final.items():
            if not ops:
                continue
            index = self.indexes[kind]
            removed = np.fromiter(ops, dtype=np.int64, count=len(ops))
            if kind == "memories" and self._owners is not None:
                # FAISS compacts its storage in order: drop the same rows from the owners.
                stored = faiss.vector_to_array(index.id_map)
                self._owners = self._owners[~np.isin(stored, removed)]
            self._rows[kind] = None
            index.remove_ids(removed)
            added = [pk for pk, op in ops.items() if op == "add"]
            self._add_rows(connection, kind, TABLES[kind].c.pk.in_, added)
        self.seq = entries[-1].seq
        self.unsaved += len(entries)

    def _add_rows(
        self,
        connection: Connection,
        kind: str,
        where: Callable[[Sequence[int]], ColumnElement[bool]],
        pks: Sequence[int],
    ) -> None:
        for start in range(0, len(pks), READ_BATCH):
            batch = pks[start : start + READ_BATCH]
            rows = connection.execute(select(*_columns(kind)).where(where(batch))).all()
            self._add(kind, rows)

    def _add(self, kind: str, rows: Sequence[Any]) -> None:
        if not rows:
            return
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        vectors = np.stack([row[1] for row in rows]).astype(np.float32, copy=False)
        if vectors.shape[1] != self.dimension:
            raise IndexFileError(
                f"stored vectors have {vectors.shape[1]} dimensions, the index {self.dimension}"
            )
        self.indexes[kind].add_with_ids(vectors, ids)
        self._rows[kind] = None
        if kind == "memories" and self._owners is not None:
            codes = np.fromiter((self._code(row[2]) for row in rows), np.int32, len(rows))
            self._owners = np.concatenate([self._owners, codes])

    def rebuild(
        self, connection: Connection, progress: Callable[[int], None] | None = None
    ) -> None:
        """Rebuild both indexes from the vectors in SQLite (the snapshot of ``connection``)."""
        with self.lock:
            last, _ = log_position(connection)
            self.indexes = {kind: _new_index(self.dimension) for kind in KINDS}
            self._rows = {kind: None for kind in KINDS}
            self._owners = np.zeros(0, dtype=np.int32)
            for kind, table in TABLES.items():
                after = 0
                while True:
                    rows = connection.execute(
                        select(*_columns(kind))
                        .where(table.c.pk > after)
                        .order_by(table.c.pk)
                        .limit(READ_BATCH)
                    ).all()
                    self._add(kind, rows)
                    if progress is not None and rows:
                        progress(len(rows))
                    if len(rows) < READ_BATCH:
                        break
                    after = rows[-1][0]
            self.seq = last
            self.needs_save = True
            self.loaded = True

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

    def search_owner(
        self, vector: np.ndarray, k: int, user_id: str
    ) -> list[tuple[int, float]] | None:
        """(pk, score) of the ``k`` best memories of ``user_id``, exactly; None when the owners
        are not known (then ask with the user's candidates)."""
        with self.lock:
            owners = self._owners
            if owners is None or len(owners) != self.indexes["memories"].ntotal:
                return None
            code = self._codes.get(user_id)
            if code is None:
                return []
            return self._score_at("memories", np.flatnonzero(owners == code), vector, k)

    def scores_owner(
        self, vector: np.ndarray, user_id: str
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(pks, scores) of every memory of ``user_id``, exactly; None when the owners are
        not known (then ask with the user's candidates)."""
        with self.lock:
            owners = self._owners
            if owners is None or len(owners) != self.indexes["memories"].ntotal:
                return None
            code = self._codes.get(user_id)
            rows = np.flatnonzero(owners == code) if code is not None else np.zeros(0, np.int64)
            return self._scores_at("memories", rows, vector)

    def scores_rows(
        self, kind: str, vector: np.ndarray, candidates: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(pks, scores) of every candidate (pks), exactly."""
        with self.lock:
            return self._scores_at(kind, self._rows_of(kind, candidates), vector)

    def _rows_of(self, kind: str, candidates: Sequence[int]) -> np.ndarray:
        pks = np.asarray(candidates, dtype=np.int64)
        rows_of = self._row_map(kind)
        rows = rows_of[pks[pks < len(rows_of)]]
        return rows[rows >= 0]

    def _score_rows(
        self, kind: str, vector: np.ndarray, k: int, candidates: Sequence[int]
    ) -> list[tuple[int, float]]:
        return self._score_at(kind, self._rows_of(kind, candidates), vector, k)

    def _scores_at(
        self, kind: str, rows: np.ndarray, vector: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(pks, scores) of these storage rows, read straight from the flat index."""
        if not len(rows):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        index = self.indexes[kind]
        flat: Any = faiss.downcast_index(index.index)
        stored = faiss.rev_swig_ptr(flat.get_xb(), index.ntotal * self.dimension)
        scores = stored.reshape(index.ntotal, self.dimension)[rows] @ vector
        return self._maps(kind)[1][rows], scores

    def _score_at(
        self, kind: str, rows: np.ndarray, vector: np.ndarray, k: int
    ) -> list[tuple[int, float]]:
        """(pk, score) of the ``k`` best of these storage rows, read straight from the flat
        index (no scan of the others)."""
        pks, scores = self._scores_at(kind, rows, vector)
        if len(scores) > k:
            best = np.argpartition(-scores, k - 1)[:k]
            pks, scores = pks[best], scores[best]
        order = np.argsort(-scores, kind="stable")
        return [(int(pks[i]), float(scores[i])) for i in order]

    def _maps(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(pk -> row in the flat storage, -1 when absent; row -> pk), rebuilt after the
        index changes (not on every search: copying the id map costs O(N))."""
        maps = self._rows[kind]
        if maps is None:
            ids = faiss.vector_to_array(self.indexes[kind].id_map)
            rows = np.full(int(ids.max()) + 1 if len(ids) else 0, -1, dtype=np.int64)
            rows[ids] = np.arange(len(ids), dtype=np.int64)
            maps = self._rows[kind] = (rows, ids)
        return maps

    def _row_map(self, kind: str) -> np.ndarray:
        return self._maps(kind)[0]

    # ------------------------------------------------------------------ the file
    def save(self) -> bool:
        """Write a snapshot of the indexes beside the database, atomically (temporary file,
        fsync, rename). False when there is no file (an in-memory database)."""
        if self.path is None:
            return False
        with self.lock:
            parts = [faiss.serialize_index(self.indexes[kind]) for kind in KINDS]
            crc = 0
            for part in parts:
                crc = zlib.crc32(part.data, crc)
            header = json.dumps(
                {
                    "format": FORMAT,
                    "store_id": self.store_id,
                    "embedder": self.embedder,
                    "dimension": self.dimension,
                    "seq": self.seq,
                    "sizes": [int(part.size) for part in parts],
                    "crc32": crc,
                }
            ).encode()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._remove_abandoned_files()
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}")
            with open(tmp, "wb") as handle:
                handle.write(MAGIC + len(header).to_bytes(4, "little") + header)
                for part in parts:
                    handle.write(part.tobytes())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
            self.unsaved = 0
            self.needs_save = False
            return True

    def _remove_abandoned_files(self) -> None:
        """Delete temporary files left by processes killed while saving."""
        assert self.path is not None
        for tmp in self.path.parent.glob(f".{self.path.name}.*.*"):
            try:
                pid = int(tmp.name.rsplit(".", 2)[-2])
                os.kill(pid, 0)
            except ValueError:
                continue
            except ProcessLookupError:
                tmp.unlink(missing_ok=True)
            except PermissionError:  # alive, another user's
                continue

    def _read_header(self, handle: Any = None) -> dict[str, Any]:
        if self.path is None:
            raise FileNotFoundError("no index file for an in-memory database")
        if handle is None:
            with open(self.path, "rb") as own:
                return self._read_header(own)
        if handle.read(len(MAGIC)) != MAGIC:
            raise IndexFileError("it is not a memory-drivers FAISS index file")
        try:
            size = int.from_bytes(handle.read(4), "little")
            header: dict[str, Any] = json.loads(handle.read(size))
        except ValueError as exc:
            raise IndexFileError(f"its header is unreadable ({exc})") from None
        if header.get("format") != FORMAT:
            raise IndexFileError(f"it has format {header.get('format')}, not {FORMAT}")
        if header.get("store_id") != self.store_id:
            raise IndexFileError("it belongs to another store (or one dropped by migrate fresh)")
        if (header.get("embedder"), header.get("dimension")) != (self.embedder, self.dimension):
            raise IndexFileError("it was built with another embedder")
        return header

    def _read_file(self) -> tuple[int, dict[str, Any]]:
        if self.path is None:
            raise FileNotFoundError("no index file for an in-memory database")
        with open(self.path, "rb") as handle:
            header = self._read_header(handle)
            payload = handle.read()
        sizes = header.get("sizes", [])
        if len(sizes) != len(KINDS) or sum(sizes) != len(payload):
            raise IndexFileError("it is truncated")
        if zlib.crc32(payload) != header.get("crc32"):
            raise IndexFileError("its checksum does not match (the file is corrupt)")
        indexes, offset = {}, 0
        for kind, size in zip(KINDS, sizes, strict=True):
            part = np.frombuffer(payload, dtype=np.uint8, count=size, offset=offset)
            try:
                indexes[kind] = faiss.deserialize_index(part)
            except RuntimeError as exc:
                raise IndexFileError(f"FAISS cannot read it ({exc})") from None
            offset += size
        return int(header["seq"]), indexes
