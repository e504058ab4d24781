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

__all__ = ["FORMAT", "KINDS", "MAGIC", "IndexFile", "IndexFileError", "Snapshot"]

MAGIC = b"MDFAISS1"
FORMAT = 1
KINDS = ("memories", "knowledge_chunks")

#: A snapshot of the indexes ready to be written: its log position and copies of them.
Snapshot = tuple[int, list[Any]]

#: The header is written last (it holds the parts' sizes and checksum, known once they are
#: streamed out) into room kept for it at the start, padded with spaces, which JSON ignores:
#: a reader takes it as any header of its length. The room fits the largest header these
#: fields can make (sizes of 20 digits, a checksum of 10).
_LARGEST_SIZE, _LARGEST_CRC = 10**20 - 1, 2**32 - 1
#: Bytes read at a time when checking a file's checksum.
READ_BLOCK = 1 << 24


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
        """Copies of the indexes, with their log position: searches go on while it is
        written. A copy is the index's size; serializing under the lock, as before, took
        twice that while FAISS's buffer grew, and as long again to copy it out."""
        with self.lock:
            return self.seq, [faiss.clone_index(self.indexes[kind]) for kind in KINDS]

    def write_temporary(self, snapshot: Snapshot) -> Path:
        """Write ``snapshot`` to a temporary file beside the index file, flushed to disk; the
        caller renames it into place with :meth:`install` (or deletes it). Each index is
        streamed out in FAISS's blocks (the checksum computed on the way), never held whole
        as bytes. Nothing is left behind when writing fails (a full disk)."""
        assert self.path is not None
        seq, indexes = snapshot
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._remove_abandoned_files()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            with open(tmp, "wb") as handle:
                room = len(self._header(seq, [_LARGEST_SIZE] * len(indexes), _LARGEST_CRC))
                handle.write(MAGIC + room.to_bytes(4, "little") + b" " * room)
                crc, sizes = 0, []
                for index in indexes:
                    size = 0

                    def take(block: bytes) -> int:
                        nonlocal crc, size
                        crc = zlib.crc32(block, crc)
                        size += len(block)
                        return handle.write(block)

                    faiss.write_index(index, faiss.PyCallbackIOWriter(take))  # type: ignore[attr-defined]
                    sizes.append(size)
                handle.seek(len(MAGIC) + 4)
                handle.write(self._header(seq, sizes, crc).ljust(room))
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _header(self, seq: int, sizes: list[int], crc: int) -> bytes:
        return json.dumps(
            {
                "format": FORMAT,
                "store_id": self.store_id,
                "embedder": self.embedder,
                "dimension": self.dimension,
                "seq": seq,
                "sizes": sizes,
                "crc32": crc,
            }
        ).encode()

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
        """The file's log position and indexes. Its checksum is checked first, in blocks, so
        nothing unverified is parsed; then each index is read by FAISS straight from the file
        (before, the whole file was read into memory first: 1.5 GB more at 1M memories)."""
        if self.path is None:
            raise FileNotFoundError("no index file for an in-memory database")
        try:
            with open(self.path, "rb") as handle:
                header = self._read_header(handle)
                start = handle.tell()
                crc, total = 0, 0
                while block := handle.read(READ_BLOCK):
                    crc = zlib.crc32(block, crc)
                    total += len(block)
                sizes = header.get("sizes", [])
                if (
                    len(sizes) != len(KINDS)
                    or not all(isinstance(size, int) and size >= 0 for size in sizes)
                    or sum(sizes) != total
                ):
                    raise IndexFileError("it is truncated")
                if crc != header.get("crc32"):
                    raise IndexFileError("its checksum does not match (the file is corrupt)")
                handle.seek(start)
                indexes = {
                    kind: _read_index(handle, size) for kind, size in zip(KINDS, sizes, strict=True)
                }
        except (FileNotFoundError, IndexFileError):
            raise
        except OSError as exc:  # a path that is not a file, not readable, ...
            raise IndexFileError(f"it cannot be read ({exc})") from None
        return int(header["seq"]), indexes


def _read_index(handle: Any, size: int) -> Any:
    """The FAISS index in the next ``size`` bytes of ``handle``, read in FAISS's blocks."""
    left = size

    def give(wanted: int) -> bytes:
        nonlocal left
        block: bytes = handle.read(min(wanted, left))
        left -= len(block)
        return block

    try:
        index = faiss.read_index(faiss.PyCallbackIOReader(give))  # type: ignore[attr-defined]
    except RuntimeError as exc:
        raise IndexFileError(f"FAISS cannot read it ({exc})") from None
    if left:
        raise IndexFileError(f"FAISS read {size - left} of its part's {size} bytes")
    return index
