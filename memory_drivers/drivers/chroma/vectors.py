"""The embedded mode's cache of each collection's vectors, so vector recall scores in numpy.

An exact vector recall needs every candidate's distance. Chroma gives them with a query whose
``n_results`` is the whole collection, which costs it 8 to 20 ms for 1,000 vectors (its HNSW
search visits every node), plus a ``count`` to check that nothing was left out. In embedded
mode one process owns the directory (Chroma's rule), so what this process wrote is what the
store holds: the process keeps each collection's ids and vectors (float32, as Chroma stores
them), updates them with its own writes, and scores a user's vectors with numpy in a fraction
of a millisecond. Only the records of the best are then read from Chroma.

The cache is shared by every driver of the process opened on the same directory (so one
driver's writes are seen by another's recall), bounded by ``CHROMA_VECTOR_CACHE_MB`` (least
recently used collections evicted first), and filled either by the writes to a collection this
process created or by one read of the collection's vectors on its first recall, when they fit
in the room left (so a store larger than the budget does not evict and re-read collections
in turn: the collections that do not fit are searched by Chroma, as in server mode). Every change
to a collection bumps its generation, so a fill that raced a write is discarded, never
installed stale. Server mode has no cache: other processes may write.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["CachedVectors", "VectorCache", "release_cache", "shared_cache"]


@dataclass(frozen=True)
class CachedVectors:
    """One collection's ids and vectors (row ``i`` is ``ids[i]``'s), an immutable snapshot."""

    ids: tuple[str, ...]
    matrix: np.ndarray
    rows: dict[str, int] = field(repr=False)

    @classmethod
    def of(cls, ids: Sequence[str], matrix: Any, dimension: int | None = None) -> CachedVectors:
        array = np.asarray(matrix, dtype=np.float32)
        if array.size == 0:
            array = np.zeros((0, dimension or 0), dtype=np.float32)
        array.setflags(write=False)
        return cls(tuple(ids), array, {rid: i for i, rid in enumerate(ids)})

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes) + 100 * len(self.ids)


class VectorCache:
    """Collections' vectors by collection name, bounded by ``budget`` bytes (LRU)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, CachedVectors] = OrderedDict()
        self._generations: dict[str, int] = {}
        self._size = 0

    # ------------------------------------------------------------------ reading
    def get(self, name: str) -> CachedVectors | None:
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None:
                self._entries.move_to_end(name)
            return entry

    def room(self) -> int:
        """Bytes left before the budget is reached."""
        with self._lock:
            return self.budget - self._size

    def generation(self, name: str) -> int:
        with self._lock:
            return self._generations.get(name, 0)

    def install(self, name: str, entry: CachedVectors, generation: int) -> bool:
        """Keep ``entry`` (read from Chroma when the collection was at ``generation``), unless
        the collection changed since or it alone exceeds the budget."""
        with self._lock:
            if self._generations.get(name, 0) != generation or entry.nbytes > self.budget:
                return False
            self._put(name, entry)
            return True

    # ------------------------------------------------------------------ this process's writes
    def created(self, name: str, dimension: int) -> None:
        """``name`` was just created empty by this process: its (empty) vectors are known."""
        with self._lock:
            self._bump(name)
            self._put(name, CachedVectors.of([], [], dimension))

    def added(self, name: str, ids: Sequence[str], vectors: Any) -> None:
        with self._lock:
            self._bump(name)
            entry = self._entries.get(name)
            if entry is None or not ids:
                return
            if any(rid in entry.rows for rid in ids):  # not expected: Chroma ignored them
                self._drop(name)
                return
            matrix = np.concatenate([entry.matrix, np.asarray(vectors, dtype=np.float32)])
            self._put(name, CachedVectors.of([*entry.ids, *ids], matrix))

    def removed(self, name: str, ids: Sequence[str]) -> None:
        with self._lock:
            self._bump(name)
            entry = self._entries.get(name)
            if entry is None:
                return
            gone = {entry.rows[rid] for rid in ids if rid in entry.rows}
            if not gone:
                return
            keep = [i for i in range(len(entry.ids)) if i not in gone]
            self._put(
                name,
                CachedVectors.of(
                    [entry.ids[i] for i in keep], entry.matrix[keep], entry.matrix.shape[1]
                ),
            )

    def replaced(self, name: str, ids: Sequence[str], vectors: Any) -> None:
        with self._lock:
            self._bump(name)
            entry = self._entries.get(name)
            if entry is None:
                return
            matrix = entry.matrix.copy()
            for rid, vector in zip(ids, vectors, strict=True):
                row = entry.rows.get(rid)
                if row is None:  # an update of a record that is not there: Chroma ignores it
                    continue
                matrix[row] = np.asarray(vector, dtype=np.float32)
            self._put(name, CachedVectors.of(entry.ids, matrix, matrix.shape[1]))

    def forget(self, name: str | None = None) -> None:
        """Drop ``name``'s vectors (a change this cache does not follow), or everything."""
        with self._lock:
            names = [name] if name is not None else list(self._generations)
            for each in names:
                self._bump(each)
                self._drop(each)

    # ------------------------------------------------------------------ internals (locked)
    def _bump(self, name: str) -> None:
        self._generations[name] = self._generations.get(name, 0) + 1

    def _drop(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._size -= entry.nbytes

    def _put(self, name: str, entry: CachedVectors) -> None:
        self._drop(name)
        if entry.nbytes > self.budget:
            return
        self._entries[name] = entry
        self._size += entry.nbytes
        while self._size > self.budget:
            _, evicted = self._entries.popitem(last=False)
            self._size -= evicted.nbytes


_registry_lock = threading.Lock()
_registry: dict[str, tuple[VectorCache, int]] = {}


def shared_cache(key: str, budget: int) -> VectorCache:
    """The cache of the store ``key`` (its directory) in this process, shared by its drivers."""
    with _registry_lock:
        cache, users = _registry.get(key, (None, 0))
        if cache is None:
            cache = VectorCache(budget)
        cache.budget = max(cache.budget, budget)
        _registry[key] = (cache, users + 1)
        return cache


def release_cache(key: str) -> None:
    """A driver of the store ``key`` closed; the last one frees the cache."""
    with _registry_lock:
        cache, users = _registry.get(key, (None, 0))
        if cache is None:
            return
        if users <= 1:
            del _registry[key]
        else:
            _registry[key] = (cache, users - 1)
