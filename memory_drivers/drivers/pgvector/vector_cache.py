"""The pgvector driver's vector cache: a user's vectors kept in this process and scored here.

An exact vector recall over one user's memories makes PostgreSQL read every row of the user
(at 10,000 memories per user on ~10,000 heap pages, which stop fitting ``shared_buffers`` as
the database grows) and score each vector: 75 ms at a million memories. With the user's
vectors in this process the same exact scoring is one matrix product, and the database only
reads the rows that can make the cut.

Correctness rests on ``memory_user_versions`` (migration 0005): triggers bump a user's version
in the transaction of every change to their vectors, whoever writes. A cached copy carries the
version it was read with, in the same statement as the vectors (one snapshot), and a cached
recall reads the version again in the statement that reads the winning rows: if it moved, the
copy is dropped and the recall goes to the database as if there were no cache. So a recall
never returns what the database would not.

A copy found behind is brought up to date from ``memory_vector_changes``, the log of the
memories each version changed: only those rows are read (a user read whole again only when
the log lacks a version, after ``KEEP_VERSIONS`` versions or a TRUNCATE).

A user is read whole in their first vector recall, which then costs about what one recall in
the database costs at 1,000 memories per user (2 ms) and more at 10,000 (PostgreSQL converts
every float for sending: ~40 ms, against 13-75 ms for one recall in the database); the recalls
after it are one matrix product and one short statement. ``PGVECTOR_VECTOR_CACHE_AFTER`` = N
leaves the first N recalls of a user to the database (for users recalled once or twice).
Copies are kept least recently used first within a byte budget (``PGVECTOR_VECTOR_CACHE_MB``;
0 turns the cache off).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from sqlalchemy.engine import Connection

from .dbapi import raw_connection
from .statements import CACHED_ROWS, USER_CHANGES, USER_VECTORS, USER_VECTORS_SQL

__all__ = ["CachedVectors", "VectorCache", "from_aggregate", "with_changes"]

#: Times a cached recall brings a copy up to date and scores again before the database answers.
ATTEMPTS = 3
#: Users whose recalls are counted (a count each), and how many recalls between halvings of
#: every count (so what was recalled often long ago counts for less).
RECALLS_KEPT = 100_000
HALVE_EVERY = 10_000


@dataclass(frozen=True)
class CachedVectors:
    """One user's vectors as of ``version``: ``unit[i]`` is memory ``pks[i]``'s vector scaled
    to length 1, so a product with a unit query is the cosine similarity."""

    version: int
    pks: np.ndarray
    unit: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.pks.nbytes + self.unit.nbytes)

    def nearest(
        self, vector: np.ndarray, limit: int, kth: int, slack: float
    ) -> list[tuple[int, float]] | None:
        """What ``statements.nearest`` returns, from here: the ``limit`` most similar (pk,
        cosine similarity), of which only those within ``slack`` of the ``kth`` best (0-based)
        are kept. None when this copy cannot answer (another dimension, a zero query)."""
        if vector.shape != (self.unit.shape[1],):
            return None
        norm = float(np.linalg.norm(vector))
        if not norm or not np.isfinite(norm):
            return None
        scores = self.unit @ (vector.astype(np.float32, copy=False) / np.float32(norm))
        if len(scores) > limit:
            top = np.argpartition(-scores, limit - 1)[:limit]
        else:
            top = np.arange(len(scores))
        best = scores[top]
        if len(best) > kth:
            cut = -np.partition(-best, kth)[kth] - slack
            top = top[best >= cut]
        return [(int(pk), float(s)) for pk, s in zip(self.pks[top], scores[top], strict=True)]


def _unpack(packed: bytes, count: int) -> np.ndarray | None:
    """``count`` vectors in pgvector's binary form (``vector_send``: a big-endian int16
    dimension, an int16 0, the big-endian float4s), concatenated, as unit rows; None when they
    differ in dimension (mid re-embedding) or one has length 0 (its cosine is undefined)."""
    if not count or len(packed) % count:
        return None
    record = len(packed) // count
    rows = np.frombuffer(packed, dtype=np.uint8).reshape(count, record)
    dimension = (record - 4) // 4
    dimensions = rows[:, :2].copy().view(">u2").ravel()
    if record != 4 + 4 * dimension or (dimensions != dimension).any():
        return None
    vectors = rows[:, 4:].copy().view(">f4").astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    if not norms.all():
        return None
    vectors /= norms[:, None]
    return vectors


def from_aggregate(version: int, pks: list[int], packed: bytes) -> CachedVectors | None:
    """A user's copy from the fill statement's row: ``packed`` is every vector (as
    :func:`_unpack` reads them) in ``pks``' order. None when :func:`_unpack` refuses them (the
    database answers for that user)."""
    unit = _unpack(packed, len(pks))
    if unit is None:
        return None
    return CachedVectors(version=version, pks=np.asarray(pks, dtype=np.int64), unit=unit)


def with_changes(
    copy: CachedVectors, version: int, changes: list[tuple[int, int, bytes | None]]
) -> CachedVectors | None:
    """``copy`` brought to ``version`` by the log's ``(version, pk, vector now)`` entries for
    every version after the copy's (a None vector: the memory is gone). None when the log
    lacks a version in between (pruned, or a TRUNCATE): the caller reads the user whole."""
    if {v for v, _, _ in changes} != set(range(copy.version + 1, version + 1)):
        return None
    now = {pk: vector for _, pk, vector in changes}  # repeats of a pk read the same row
    keep = ~np.isin(copy.pks, np.fromiter(now, dtype=np.int64, count=len(now)))
    added = [(pk, vector) for pk, vector in now.items() if vector is not None]
    pks = copy.pks[keep]
    unit = copy.unit[keep]
    if added:
        new = _unpack(b"".join(v for _, v in added), len(added))
        if new is None or new.shape[1] != unit.shape[1]:
            return None
        pks = np.concatenate([pks, np.fromiter((p for p, _ in added), dtype=np.int64)])
        unit = np.concatenate([unit, new])
    if not len(pks):
        return None
    return CachedVectors(version=version, pks=pks, unit=unit)


class VectorCache:
    """Users' vectors within ``budget`` bytes, least recently used first out; thread-safe."""

    def __init__(self, budget: int, after: int = 0) -> None:
        self.budget = budget
        self.after = after
        self._copies: OrderedDict[str, CachedVectors] = OrderedDict()
        #: recalls of each user (halved now and then): who is read, and who is let in when the
        #: budget is full
        self._recalls: OrderedDict[str, int] = OrderedDict()
        self._since_halving = 0
        #: users whose vectors alone exceed the budget: never read again by this process
        self._too_large: set[str] = set()
        self._bytes = 0
        self._lock = threading.Lock()
        #: hits: recalls scored here; misses: recalls of a user with no copy; fills: users read
        #: whole; refreshes: copies brought up to date from the log; evictions: copies dropped
        #: for room; refused: users not read because the budget is full of users recalled as
        #: often
        self.counters = dict.fromkeys(
            ("hits", "misses", "fills", "refreshes", "evictions", "refused"), 0
        )

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    def get(self, user: str) -> CachedVectors | None:
        """The user's copy, if one is kept (none: counted as a miss)."""
        with self._lock:
            self._count_recall(user)
            copy = self._copies.get(user)
            if copy is None:
                self.counters["misses"] += 1
                return None
            self._copies.move_to_end(user)
            return copy

    def _count_recall(self, user: str) -> None:
        self._recalls[user] = self._recalls.pop(user, 0) + 1
        while len(self._recalls) > RECALLS_KEPT:
            self._recalls.popitem(last=False)
        self._since_halving += 1
        if self._since_halving >= HALVE_EVERY:
            self._since_halving = 0
            for name, count in list(self._recalls.items()):
                if count > 1:
                    self._recalls[name] = count // 2
                else:
                    del self._recalls[name]

    def count(self, counter: str) -> None:
        with self._lock:
            self.counters[counter] += 1

    def drop(self, user: str, copy: CachedVectors) -> None:
        """``copy`` cannot answer any more: drop it (unless it was replaced meanwhile)."""
        with self._lock:
            if self._copies.get(user) is copy:
                self._bytes -= copy.nbytes
                del self._copies[user]

    def _wants(self, user: str) -> bool:
        """A recall of ``user``, who has no copy: whether to read them now. The first
        ``after`` recalls of a user are left to the database; and when the budget is full, a
        user is read only if recalled more often than the copy that would go first (reading a
        user costs more than a recall in the database: with users recalled evenly and more
        of them than fit, reading each in turn would cost more than no cache)."""
        with self._lock:
            count = self._recalls.get(user, 0)
            if count <= self.after or user in self._too_large:
                return False
            if self._copies:
                average = self._bytes / len(self._copies)
                if self._bytes + average > self.budget:
                    victim = next(iter(self._copies))
                    if count <= self._recalls.get(victim, 0):
                        self.counters["refused"] += 1
                        return False
            return True

    def put(self, user: str, copy: CachedVectors) -> None:
        """Keep ``copy`` for ``user``, making room by dropping the least recently used."""
        with self._lock:
            old = self._copies.pop(user, None)
            if old is not None:
                self._bytes -= old.nbytes
            if copy.nbytes > self.budget:  # that user's recalls go to the database from now on
                self._too_large.add(user)
                self.counters["refused"] += 1
                return
            while self._bytes + copy.nbytes > self.budget:
                _, dropped = self._copies.popitem(last=False)
                self._bytes -= dropped.nbytes
                self.counters["evictions"] += 1
            self._copies[user] = copy
            self._bytes += copy.nbytes

    # ------------------------------------------------------------------ with the database
    def recall(
        self, connection: Connection, user: str, values: dict[str, Any]
    ) -> tuple[list[tuple[int, float]], Sequence[Any]] | None:
        """A recall of ``user``'s memories scored from their copy: the (pk, cosine similarity)
        pairs ``statements.nearest`` would rank (``values``: its parameters) and those memories'
        rows, or None (the caller asks the database). The rows and the user's version come in
        one statement; a copy found behind is brought up to date and the recall scored again."""
        copy = self.get(user)
        if copy is None:
            if not self._wants(user):
                return None
            copy = self._read(connection, user)
        for _ in range(ATTEMPTS):
            if copy is None:
                return None
            ranked = copy.nearest(values["vector"], values["limit"], values["kth"], values["slack"])
            if ranked is None:
                self.drop(user, copy)
                return None
            pks = [pk for pk, _ in ranked]
            rows = connection.execute(CACHED_ROWS, {"user_id": user, "pks": pks}).all()
            if len(rows) == len(pks) and rows[0].version == copy.version:
                self.count("hits")
                return ranked, rows
            copy = self._refresh(connection, user, copy)
        return None  # written to faster than it could be read: the database answers

    def _read(self, connection: Connection, user: str) -> CachedVectors | None:
        """Read ``user``'s vectors whole (one statement, one snapshot) and keep them. On a
        psycopg connection the result comes in binary (half the time of hex-encoded bytes)."""
        if isinstance(connection.connection.driver_connection, psycopg.Connection):
            with (
                raw_connection(connection, USER_VECTORS_SQL) as raw,
                raw.cursor(binary=True) as cursor,
            ):
                cursor.execute(USER_VECTORS_SQL, {"user_id": user})
                found = cursor.fetchone()
            assert found is not None
            version, pks, packed = found
        else:  # the async API's connection: SQLAlchemy's text results
            version, pks, packed = connection.execute(USER_VECTORS, {"user_id": user}).one()
        if version is None or pks is None:
            return None
        copy = from_aggregate(version, pks, packed)
        if copy is not None:
            self.count("fills")
            self.put(user, copy)
        return copy

    def _refresh(
        self, connection: Connection, user: str, copy: CachedVectors
    ) -> CachedVectors | None:
        """``copy`` brought up to date from the log (read whole when the log has a gap)."""
        self.drop(user, copy)
        rows = connection.execute(USER_CHANGES, {"user_id": user, "since": copy.version}).all()
        newer = rows and with_changes(
            copy, rows[0].version, [(r.changed, r.pk, r.vector) for r in rows]
        )
        if not newer:
            return self._read(connection, user)
        self.count("refreshes")
        self.put(user, newer)
        return newer

    def clear(self) -> None:
        """Drop every copy."""
        with self._lock:
            self._copies.clear()
            self._recalls.clear()
            self._too_large.clear()
            self._bytes = 0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "budget_bytes": self.budget,
                "bytes": self._bytes,
                "users": len(self._copies),
                **self.counters,
            }
