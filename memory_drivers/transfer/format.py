"""The export format: versioned JSON Lines, one record per line, gzip optional.

A file is a header line, then memories (oldest first), associations, knowledge documents, and
an end line with the counts (docs/portability.md has the full specification)::

    {"kind": "header", "format": "memory-drivers-export", "version": 1, "exported_at": ...,
     "driver": "sqlite", "embedder": {"name": ..., "dimension": 384}, "store_info": {...},
     "filters": {"user_id": null, "since": null, "until": null}, "memory_count": 3}
    {"kind": "memory", "memory": {<Memory>}, "vector": "<base64 float32 little-endian>"}
    {"kind": "association", "association": {<Association>}}
    {"kind": "knowledge", "chunks": [{<KnowledgeChunk>}, ...], "vectors": ["<base64>", ...]}
    {"kind": "end", "counts": {"memories": 3, "associations": 1, "knowledge_documents": 1}}

Vectors are the stored unit vectors, exact (float32 bytes in base64); ``embedder`` names the
model that made them (``null`` when the source does not give vectors back). A file written by
the first export command (one bare memory object per line, no header) is read as version 0.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from pydantic import ValidationError as PydanticValidationError

from ..errors import ValidationError
from ..models import Association, KnowledgeChunk, Memory

__all__ = [
    "FORMAT",
    "VERSION",
    "AssociationRecord",
    "DocumentRecord",
    "End",
    "Header",
    "MemoryRecordLine",
    "Record",
    "decode_vector",
    "encode_vector",
    "open_input",
    "open_output",
    "read_records",
    "record_line",
]

FORMAT = "memory-drivers-export"
#: The version this code writes; it reads this one and every older one.
VERSION = 1
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Header:
    """What the file holds and where it came from."""

    driver: str
    embedder: dict[str, Any] | None
    exported_at: str
    store_info: dict[str, str] = field(default_factory=dict)
    filters: dict[str, Any] = field(default_factory=dict)
    memory_count: int | None = None
    version: int = VERSION


@dataclass(frozen=True)
class MemoryRecordLine:
    memory: Memory
    vector: np.ndarray | None


@dataclass(frozen=True)
class AssociationRecord:
    association: Association


@dataclass(frozen=True)
class DocumentRecord:
    """One knowledge document: its chunks in order, with their vectors when known."""

    chunks: list[KnowledgeChunk]
    vectors: np.ndarray | None


@dataclass(frozen=True)
class End:
    counts: dict[str, int]


Record = Header | MemoryRecordLine | AssociationRecord | DocumentRecord | End


def encode_vector(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(text: Any, where: str) -> np.ndarray:
    try:
        raw = base64.b64decode(str(text), validate=True)
    except ValueError:
        raise ValidationError(f"{where}: the vector is not base64") from None
    if not raw or len(raw) % 4:
        raise ValidationError(f"{where}: the vector is not a whole number of float32 values")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


def record_line(record: Record) -> str:
    """``record`` as one JSON line (with its line break)."""
    if isinstance(record, MemoryRecordLine):
        item: dict[str, Any] = {"kind": "memory", "memory": record.memory.model_dump(mode="json")}
        if record.vector is not None:
            item["vector"] = encode_vector(record.vector)
    elif isinstance(record, AssociationRecord):
        item = {"kind": "association", "association": record.association.model_dump(mode="json")}
    elif isinstance(record, DocumentRecord):
        item = {"kind": "knowledge", "chunks": [c.model_dump(mode="json") for c in record.chunks]}
        if record.vectors is not None:
            item["vectors"] = [encode_vector(v) for v in record.vectors]
    elif isinstance(record, Header):
        item = {
            "kind": "header",
            "format": FORMAT,
            "version": record.version,
            "exported_at": record.exported_at,
            "driver": record.driver,
            "embedder": record.embedder,
            "store_info": record.store_info,
            "filters": record.filters,
            "memory_count": record.memory_count,
        }
    else:
        item = {"kind": "end", "counts": record.counts}
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n"


# ---------------------------------------------------------------------- reading
def read_records(lines: Iterator[str]) -> Iterator[Record]:
    """The records of an export, checked line by line; a ``ValidationError`` names the line.

    The last record is always an :class:`End`: a file cut short (an interrupted export) raises
    after its last complete record.
    """
    number = 0
    header: Header | None = None
    ended = False
    for line in lines:
        number += 1
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            raise ValidationError(
                f"{where}: expected a JSON object (one record), got {type(item).__name__}"
            )
        if ended:
            raise ValidationError(f"{where}: a record after the end record")
        if header is None:
            if "kind" not in item:  # version 0: bare memories, as the first export wrote
                header = Header(driver="unknown", embedder=None, exported_at="", version=0)
            else:
                header = _header(item, where)
            yield header
            if header.version == 0:
                yield from _legacy(item, lines, number)
                return
            continue
        try:
            record = _record(item, where)
        except PydanticValidationError as exc:
            error = exc.errors()[0]
            place = ".".join(str(p) for p in error["loc"])
            raise ValidationError(f"{where}: {place}: {error['msg']}") from None
        ended = isinstance(record, End)
        yield record
    if header is None:
        raise ValidationError("the input is empty: expected an export (a header line first)")
    if not ended:
        raise ValidationError(
            f"the input ends at line {number} without its end record: it was cut short (an "
            "interrupted export?). What was read has been imported; export again for the rest."
        )


def _header(item: dict[str, Any], where: str) -> Header:
    if item.get("kind") != "header" or item.get("format") != FORMAT:
        raise ValidationError(
            f"{where}: not a memory-drivers export (the first line must be its header, with "
            f'"format": "{FORMAT}")'
        )
    version = item.get("version")
    if not isinstance(version, int) or version < 1:
        raise ValidationError(f"{where}: the header's version must be a positive integer")
    if version > VERSION:
        raise ValidationError(
            f"{where}: this export is format version {version}, newer than this memory-drivers "
            f"reads ({VERSION}). Upgrade memory-drivers to import it."
        )
    embedder = item.get("embedder")
    if embedder is not None and not (
        isinstance(embedder, dict)
        and isinstance(embedder.get("name"), str)
        and isinstance(embedder.get("dimension"), int)
    ):
        raise ValidationError(f"{where}: embedder must be null or {{name, dimension}}")
    count = item.get("memory_count")
    return Header(
        driver=str(item.get("driver")),
        embedder=embedder,
        exported_at=str(item.get("exported_at")),
        store_info=dict(item.get("store_info") or {}),
        filters=dict(item.get("filters") or {}),
        memory_count=count if isinstance(count, int) else None,
        version=version,
    )


def _record(item: dict[str, Any], where: str) -> Record:
    kind = item.get("kind")
    if kind == "memory":
        vector = item.get("vector")
        return MemoryRecordLine(
            Memory.model_validate(item.get("memory")),
            decode_vector(vector, where) if vector is not None else None,
        )
    if kind == "association":
        return AssociationRecord(Association.model_validate(item.get("association")))
    if kind == "knowledge":
        chunks = item.get("chunks")
        if not isinstance(chunks, list) or not chunks:
            raise ValidationError(f"{where}: a knowledge record needs a non-empty list of chunks")
        vectors = item.get("vectors")
        if vectors is not None and (not isinstance(vectors, list) or len(vectors) != len(chunks)):
            raise ValidationError(f"{where}: a knowledge record needs one vector per chunk")
        return DocumentRecord(
            [KnowledgeChunk.model_validate(c) for c in chunks],
            np.stack([decode_vector(v, where) for v in vectors]) if vectors else None,
        )
    if kind == "end":
        counts = item.get("counts")
        return End(dict(counts) if isinstance(counts, dict) else {})
    if kind == "header":
        raise ValidationError(f"{where}: a second header (two exports joined together?)")
    raise ValidationError(
        f"{where}: unknown record kind {kind!r}; expected memory, association, knowledge or end"
    )


def _legacy(first: dict[str, Any], rest: Iterator[str], number: int) -> Iterator[Record]:
    """Version 0: each line one memory as ``store_many`` takes it (ids and times optional)."""
    count = 0
    item: Any = first
    while True:
        if not isinstance(item, dict):
            raise ValidationError(
                f"line {number}: expected a JSON object (one memory), got {type(item).__name__}"
            )
        yield MemoryRecordLine(item, None)  # type: ignore[arg-type]  # validated on import
        count += 1
        try:
            line = next(rest)
            number += 1
            while not line.strip():
                line = next(rest)
                number += 1
        except StopIteration:
            break
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"line {number}: not valid JSON ({exc.msg})") from None
    yield End({"memories": count})


# ---------------------------------------------------------------------- files
@contextmanager
def open_input(path: str | Path) -> Iterator[Iterator[str]]:
    """The lines of an export file ("-" is stdin); gzip is recognised by its first bytes.
    A file that cannot be opened raises ``OSError``."""
    if str(path) == "-":
        buffer = getattr(sys.stdin, "buffer", None)
        if buffer is None:  # a text stream put in place of stdin
            yield _text_lines(sys.stdin, "stdin")
        else:
            yield from _decoded(buffer, "stdin")
        return
    with open(path, "rb") as handle:
        yield from _decoded(handle, repr(str(path)))


def _decoded(handle: IO[bytes], name: str) -> Iterator[Iterator[str]]:
    peek = handle.peek(2)[:2] if hasattr(handle, "peek") else b""
    binary: Any = gzip.GzipFile(fileobj=handle) if peek == _GZIP_MAGIC else handle
    text = io.TextIOWrapper(binary, encoding="utf-8", newline="\n")
    yield _text_lines(text, name)


def _text_lines(text: IO[str], name: str = "the input") -> Iterator[str]:
    try:
        yield from text
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{name} is not UTF-8 text ({exc.reason})") from None
    except (EOFError, gzip.BadGzipFile) as exc:
        raise ValidationError(f"{name} is a damaged or cut-short gzip file ({exc})") from None


@contextmanager
def open_output(path: str | Path | None, compress: bool | None = None) -> Iterator[IO[str]]:
    """A text stream for an export: stdout for None or "-", else the file (gzip when
    ``compress`` or, when None, when the name ends in ``.gz``)."""
    if path is None or str(path) == "-":
        if compress:
            stream = gzip.GzipFile(fileobj=sys.stdout.buffer, mode="wb")
            with io.TextIOWrapper(stream, encoding="utf-8", newline="\n") as text:
                yield text
            return
        yield sys.stdout
        sys.stdout.flush()
        return
    zipped = str(path).endswith(".gz") if compress is None else compress
    handle = open(path, "wb")  # noqa: SIM115 - closed below, with the layers over it
    binary: Any = gzip.GzipFile(fileobj=handle, mode="wb") if zipped else handle
    with handle, binary, io.TextIOWrapper(binary, encoding="utf-8", newline="\n") as text:
        yield text
