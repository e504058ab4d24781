"""Which pk sits in which row of a flat FAISS index's storage, and whose memory each row is.

FAISS's ``IndexIDMap2`` over ``IndexFlatIP`` appends vectors in order and, on ``remove_ids``,
compacts the remaining ones in order. :class:`RowMap` follows the same rules, so a search can
turn rows into pks, pks into rows, and one user into that user's rows without copying FAISS's id
map or scanning every row: a per-query cost that grew with the whole store.
"""

from __future__ import annotations

import numpy as np

__all__ = ["RowMap"]


def _fit(array: np.ndarray, size: int, fill: int = 0) -> np.ndarray:
    """``array``, or a copy at least ``size`` long (doubling, so appends cost O(1) amortized)."""
    if len(array) >= size:
        return array
    grown = np.full(max(size, 2 * len(array), 64), fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


class RowMap:
    """Rows of one flat index: row -> pk, pk -> row, and (memories) row -> owner code."""

    def __init__(self, with_owners: bool) -> None:
        self._reset(with_owners)

    def _reset(self, with_owners: bool) -> None:
        self.count = 0
        self._ids = np.zeros(0, dtype=np.int64)
        self._row_of = np.zeros(0, dtype=np.int64)
        self._owners: np.ndarray | None = np.zeros(0, dtype=np.int32) if with_owners else None
        self._by_owner: dict[int, list[int]] = {}
        self._owner_rows: dict[int, np.ndarray] = {}

    @property
    def ids(self) -> np.ndarray:
        """The pk of each row."""
        return self._ids[: self.count]

    @property
    def owners(self) -> np.ndarray:
        """The owner code of each row (memories)."""
        assert self._owners is not None
        return self._owners[: self.count]

    def grouped(self) -> int:
        """How many rows from the first have each owner's rows side by side (no owner's rows
        interrupted by another's and then resumed)."""
        if self._owners is None or self.count == 0:
            return self.count
        owners = self.owners
        starts = np.flatnonzero(owners[1:] != owners[:-1]) + 1
        seen: set[int] = set()
        for start in (0, *starts.tolist()):
            code = int(owners[start])
            if code in seen:
                return start
            seen.add(code)
        return self.count

    def append(self, pks: np.ndarray, owners: np.ndarray | None = None) -> None:
        """Rows added at the end of the storage (as ``add_with_ids`` does)."""
        if not len(pks):
            return
        start, end = self.count, self.count + len(pks)
        self._ids = _fit(self._ids, end)
        self._ids[start:end] = pks
        self._row_of = _fit(self._row_of, int(pks.max()) + 1, fill=-1)
        self._row_of[pks] = np.arange(start, end, dtype=np.int64)
        if self._owners is not None:
            assert owners is not None
            self._owners = _fit(self._owners, end)
            self._owners[start:end] = owners
            for row, code in enumerate(owners.tolist(), start):
                self._by_owner.setdefault(code, []).append(row)
            for code in set(owners.tolist()):
                self._owner_rows.pop(code, None)
        self.count = end

    def contains(self, pks: np.ndarray) -> np.ndarray:
        """For each pk, whether it has a row."""
        inside = pks < len(self._row_of)
        found = np.zeros(len(pks), dtype=bool)
        found[inside] = self._row_of[pks[inside]] >= 0
        return found

    def rows_of(self, pks: np.ndarray) -> np.ndarray:
        """The rows of these pks (those that have one)."""
        rows = self._row_of[pks[pks < len(self._row_of)]]
        return rows[rows >= 0]

    def owner_rows(self, code: int) -> np.ndarray:
        """The rows of one owner, in storage order."""
        rows = self._owner_rows.get(code)
        if rows is None:
            rows = np.asarray(self._by_owner.get(code, ()), dtype=np.int64)
            self._owner_rows[code] = rows
        return rows

    def remove(self, pks: np.ndarray) -> None:
        """Drop these pks' rows; the others move down in order (as ``remove_ids`` does)."""
        keep = np.ones(self.count, dtype=bool)
        keep[self.rows_of(pks)] = False
        ids = self.ids[keep]
        owners = None if self._owners is None else self._owners[: self.count][keep]
        self._reset(self._owners is not None)
        self.append(ids, owners)
