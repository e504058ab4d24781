"""Which pk sits in which row of a flat FAISS index's storage, and whose memory each row is.

FAISS's ``IndexIDMap2`` over ``IndexFlatIP`` appends vectors in order and, on ``remove_ids``,
compacts the remaining ones in order; ``VectorIndexes`` also sorts rows by owner in place.
:class:`RowMap` follows the same rules, so a search can turn rows into pks, pks into rows, and
one user into that user's rows without copying FAISS's id map or scanning every row: a
per-query cost that grew with the whole store.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Layout", "RowMap", "layout"]

#: Runs of consecutive rows at least this long are scored where they lie; shorter ones are
#: gathered into one block first (a kernel call per short run cost more than the copy).
RUN_MIN = 32


class Layout(NamedTuple):
    """How to read some rows of the storage: ``runs`` (position in ``rows``, first row,
    length) are read in place, the rows at ``scattered`` positions gathered."""

    rows: np.ndarray
    runs: list[tuple[int, int, int]]
    scattered: np.ndarray | None


def layout(rows: np.ndarray) -> Layout:
    """The :class:`Layout` of ``rows`` (any order)."""
    if not len(rows):
        return Layout(rows, [], None)
    breaks = np.flatnonzero(rows[1:] - rows[:-1] != 1) + 1
    if not len(breaks):
        return Layout(rows, [(0, int(rows[0]), len(rows))], None)
    starts = np.concatenate(([0], breaks))
    lengths = np.diff(starts, append=len(rows))
    long = lengths >= RUN_MIN
    runs = [
        (start, int(rows[start]), length)
        for start, length in zip(starts[long].tolist(), lengths[long].tolist(), strict=True)
    ]
    scattered = None if long.all() else np.flatnonzero(np.repeat(~long, lengths))
    return Layout(rows, runs, scattered)


def _fit(array: np.ndarray, size: int, fill: int = 0) -> np.ndarray:
    """``array``, or a copy at least ``size`` long (doubling, so appends cost O(1) amortized)."""
    if len(array) >= size:
        return array
    grown = np.full(max(size, 2 * len(array), 64), fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


class RowMap:
    """Rows of one flat index: row -> pk, pk -> row, and (memories) row -> owner code.

    Memories' rows are kept in sorted *segments*: within each, rows are in owner-code order, so
    one owner's rows in a segment are one contiguous run, found by binary search. Rows added
    since the last segment (the *fresh* rows) are in the order written. :meth:`sort_from` turns
    the rows from a point on into one segment (the caller moves FAISS's storage the same way).
    """

    def __init__(self, with_owners: bool) -> None:
        self._reset(with_owners)

    def _reset(self, with_owners: bool) -> None:
        self.count = 0
        self._ids = np.zeros(0, dtype=np.int64)
        self._row_of = np.zeros(0, dtype=np.int64)
        self._owners: np.ndarray | None = np.zeros(0, dtype=np.int32) if with_owners else None
        #: where each sorted segment starts; the last one ends at ``sorted_end``
        self.segments: list[int] = []
        self.sorted_end = 0
        self._owner_rows: dict[int, Layout] = {}

    @property
    def ids(self) -> np.ndarray:
        """The pk of each row."""
        return self._ids[: self.count]

    @property
    def owners(self) -> np.ndarray:
        """The owner code of each row (memories)."""
        assert self._owners is not None
        return self._owners[: self.count]

    @property
    def first_segment_end(self) -> int:
        """Where the first sorted segment ends (0: no segment)."""
        return self.segments[1] if len(self.segments) > 1 else self.sorted_end

    def segment_bounds(self) -> list[tuple[int, int]]:
        """(start, end) of each sorted segment."""
        ends = [*self.segments[1:], self.sorted_end]
        return list(zip(self.segments, ends[: len(self.segments)], strict=True))

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

    def adopt_sorted_prefix(self, end: int) -> None:
        """Rows ``[0, end)`` are in owner-code order already (a loaded file): make them the
        first segment."""
        assert self._owners is not None and not self.segments
        if end > 0:
            assert bool((np.diff(self._owners[:end]) >= 0).all())
            self.segments, self.sorted_end = [0], end
            self._owner_rows.clear()

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
            for code in set(owners.tolist()):
                self._owner_rows.pop(code, None)
        self.count = end

    def sort_from(self, start: int) -> np.ndarray:
        """Make rows ``[start, count)`` one segment, in owner-code order (stable), and return
        the permutation applied (``new[i] = old[start + order[i]]``) for the caller to apply to
        FAISS's storage and id map."""
        assert self._owners is not None and 0 <= start <= self.count
        order = np.argsort(self._owners[start : self.count], kind="stable")
        ids = self._ids[start : self.count][order]
        self._ids[start : self.count] = ids
        self._owners[start : self.count] = self._owners[start : self.count][order]
        self._row_of[ids] = np.arange(start, self.count, dtype=np.int64)
        self.segments = [s for s in self.segments if s < start]
        if start < self.count:
            self.segments.append(start)
        self.sorted_end = self.count
        self._owner_rows.clear()
        return order

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

    def owner_rows(self, code: int) -> Layout:
        """The rows of one owner, in storage order: a run per segment (binary search), then
        the fresh rows (a scan of those only)."""
        found = self._owner_rows.get(code)
        if found is None:
            owners = self.owners
            parts = []
            for start, end in self.segment_bounds():
                segment = owners[start:end]
                low = int(np.searchsorted(segment, code, "left"))
                high = int(np.searchsorted(segment, code, "right"))
                if high > low:
                    parts.append(np.arange(start + low, start + high, dtype=np.int64))
            fresh = np.flatnonzero(owners[self.sorted_end :] == code)
            if len(fresh):
                parts.append(fresh + self.sorted_end)
            rows = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
            found = self._owner_rows[code] = layout(rows)
        return found

    def remove(self, pks: np.ndarray) -> None:
        """Drop these pks' rows; the others move down in order (as ``remove_ids`` does), so
        each segment stays sorted and only its bounds move."""
        keep = np.ones(self.count, dtype=bool)
        keep[self.rows_of(pks)] = False
        before = np.concatenate(([0], np.cumsum(~keep)))  # rows removed before each row
        segments = sorted({int(s - before[s]) for s in self.segments})
        sorted_end = int(self.sorted_end - before[self.sorted_end])
        ids = self.ids[keep]
        owners = None if self._owners is None else self._owners[: self.count][keep]
        self._reset(self._owners is not None)
        self.append(ids, owners)
        self.segments = [s for s in segments if s < sorted_end]
        self.sorted_end = sorted_end if self.segments else 0
