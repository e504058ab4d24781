"""The file of the FAISS indexes: a snapshot of both, written beside the database.

A header names the store, the embedder, the dimension and the log position the snapshot holds,
with a checksum of its parts. Written to a temporary name, flushed, then renamed into place by
the caller under the database's write lock (see ``SQLiteDriver._save``); read back only when it
is whole, of this store and this embedder. :class:`IndexFile` is the half of
:class:`~.faiss_index.VectorIndexes` that reads and writes it.
"""

from __future__ import annotations

import json
import os
import threading
import zlib
from pathlib import Path
from typing import Any

import faiss
import numpy as np

__all__ = ["FORMAT", "KINDS", "MAGIC", "IndexFile", "IndexFileError", "Snapshot"]

MAGIC = b"MDFAISS1"
FORMAT = 1
KINDS = ("memories", "knowledge_chunks")

#: A snapshot of the indexes ready to be written: its log position and serialized parts.
Snapshot = tuple[int, list[np.ndarray]]


class IndexFileError(Exception):
    """The index file cannot be used (corrupt, stale, or another store's)."""


class IndexFile:
    """Reading and writing the index file (mixed into ``VectorIndexes``, which holds the
    attributes declared here)."""

    path: Path | None
    store_id: str
    embedder: str
    dimension: int
    seq: int
    saved: int
    needs_save: bool
    indexes: dict[str, Any]
    counters: dict[str, int]
    lock: Any

    def snapshot(self) -> Snapshot:
        """The indexes serialized, with their log position (a copy: searches go on after)."""
        with self.lock:
            return self.seq, [faiss.serialize_index(self.indexes[kind]) for kind in KINDS]

    def write_temporary(self, snapshot: Snapshot) -> Path:
        """Write ``snapshot`` to a temporary file beside the index file, flushed to disk; the
        caller renames it into place with :meth:`install` (or deletes it). Nothing is left
        behind when writing fails (a full disk)."""
        assert self.path is not None
        seq, parts = snapshot
        crc = 0
        for part in parts:
            crc = zlib.crc32(part.data, crc)
        header = json.dumps(
            {
                "format": FORMAT,
                "store_id": self.store_id,
                "embedder": self.embedder,
                "dimension": self.dimension,
                "seq": seq,
                "sizes": [int(part.size) for part in parts],
                "crc32": crc,
            }
        ).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_abandoned_files()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            with open(tmp, "wb") as handle:
                handle.write(MAGIC + len(header).to_bytes(4, "little") + header)
                for part in parts:
                    handle.write(part.data)  # the array's own bytes: no copy of the index
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def install(self, tmp: Path, seq: int) -> None:
        """Rename a file from :meth:`write_temporary` into place (atomic), durably."""
        assert self.path is not None
        os.replace(tmp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        with self.lock:
            self.saved = max(self.saved, seq)
            self.needs_save = False
            self.counters["saves"] += 1

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
        try:
            with open(self.path, "rb") as handle:
                header = self._read_header(handle)
                payload = handle.read()
        except FileNotFoundError:
            raise
        except OSError as exc:  # a path that is not a file, not readable, ...
            raise IndexFileError(f"it cannot be read ({exc})") from None
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
