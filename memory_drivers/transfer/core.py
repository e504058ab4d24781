"""Export, import and copy: a store's records streamed through the public API, in bounded memory.

``export_records`` reads a driver as a stream of records (:mod:`.format`), ``import_records``
writes such a stream into a driver with one ``on_conflict`` rule; a file sits between them for
``export_store``/``import_store``, nothing for ``copy_store``. Every driver gets the same
semantics because both ends use the public API (``iter_memories``, ``get_vectors``,
``import_memories``, ...).
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .. import validation as check
from ..base import BaseMemoryDriver, OnConflict
from ..errors import MemoryDriverError, ValidationError
from .format import (
    AssociationRecord,
    DocumentRecord,
    End,
    Header,
    MemoryRecordLine,
    Record,
    open_input,
    open_output,
    read_records,
    record_line,
)

__all__ = [
    "TransferResult",
    "copy_store",
    "export_records",
    "export_store",
    "import_records",
    "import_store",
]

#: Memories per read and per import transaction.
BATCH = 500

Progress = Callable[[int], None]


@dataclass
class TransferResult:
    """What an import (or copy) did. ``vectors``: ``"reused"`` (the target kept the source's
    vectors), ``"re-embedded"`` (another model, or none given) or ``"none"`` (nothing to embed).
    """

    memories: dict[str, int] = field(
        default_factory=lambda: {"stored": 0, "replaced": 0, "skipped": 0}
    )
    associations: int = 0
    knowledge_documents: dict[str, int] = field(
        default_factory=lambda: {"stored": 0, "replaced": 0, "skipped": 0}
    )
    vectors: str = "none"

    def as_dict(self) -> dict[str, Any]:
        return {
            "memories": dict(self.memories),
            "associations": self.associations,
            "knowledge_documents": dict(self.knowledge_documents),
            "vectors": self.vectors,
        }


# ---------------------------------------------------------------------- export
def export_records(
    driver: BaseMemoryDriver,
    *,
    user_id: str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    include_knowledge: bool | None = None,
    batch_size: int = BATCH,
    progress: Progress | None = None,
) -> Iterator[Record]:
    """Every record of ``driver`` (memories of ``user_id`` created in ``[since, until)`` when
    given), as the export file holds them. Associations are those between exported memories;
    knowledge is included by default only when nothing is filtered (it belongs to no user).
    ``progress`` is called with the number of memories read after each batch."""
    user = check.identifier(user_id, "user_id", optional=True)
    start = check.timestamp(since, "since") if since is not None else None
    end = check.timestamp(until, "until") if until is not None else None
    if start is not None and end is not None and start >= end:
        raise ValidationError(
            f"since ({start.isoformat()}) must be before until ({end.isoformat()})"
        )
    filtered = user is not None or start is not None or end is not None
    knowledge = (not filtered) if include_knowledge is None else bool(include_knowledge)
    with_vectors = driver.vectors_readable
    embedder = driver.embedder
    yield Header(
        driver=driver.name,
        embedder={"name": embedder.name, "dimension": embedder.dimension} if with_vectors else None,
        exported_at=check.utcnow().isoformat(),
        store_info=driver.store_info(),
        filters={
            "user_id": user,
            "since": start.isoformat() if start else None,
            "until": end.isoformat() if end else None,
            "knowledge": knowledge,
        },
        memory_count=driver.count(user) if start is None and end is None else None,
    )
    counts = {"memories": 0, "associations": 0, "knowledge_documents": 0}
    exported: set[str] = set()
    memories = driver.iter_memories(user, batch_size=batch_size)
    while batch := list(itertools.islice(memories, batch_size)):
        batch = [
            m
            for m in batch
            if (start is None or m.created_at >= start) and (end is None or m.created_at < end)
        ]
        vectors = driver.get_vectors([m.id for m in batch]) if with_vectors and batch else {}
        for memory in batch:
            yield MemoryRecordLine(memory, vectors.get(memory.id))
        if filtered:
            exported.update(m.id for m in batch)
        counts["memories"] += len(batch)
        if progress is not None:
            progress(len(batch))
    for link in driver.iter_associations(batch_size=batch_size):
        if not filtered or (link.source_id in exported and link.target_id in exported):
            counts["associations"] += 1
            yield AssociationRecord(link)
    if knowledge:
        docs = sorted({c.doc_id for c in driver.iter_global_knowledge(batch_size=batch_size)})
        for doc_id in docs:
            document = driver.get_global_knowledge(doc_id)
            if document is None:  # deleted meanwhile
                continue
            chunks = document.chunks
            found = driver.get_vectors([c.id for c in chunks], "knowledge_chunks")
            have = with_vectors and all(c.id in found for c in chunks)
            counts["knowledge_documents"] += 1
            yield DocumentRecord(
                list(chunks), np.stack([found[c.id] for c in chunks]) if have else None
            )
    yield End(counts)


def export_store(
    driver: BaseMemoryDriver,
    path: str | Path | None,
    *,
    compress: bool | None = None,
    **options: Any,
) -> dict[str, int]:
    """Write ``driver``'s records to ``path`` (None or "-": stdout; gzip when ``compress``, or
    by default when the name ends in ``.gz``). ``options`` as for :func:`export_records`.
    Returns the counts of the end record."""
    counts: dict[str, int] = {}
    with open_output(path, compress) as handle:
        for record in export_records(driver, **options):
            handle.write(record_line(record))
            if isinstance(record, End):
                counts = record.counts
    return counts


# ---------------------------------------------------------------------- import
def import_records(
    driver: BaseMemoryDriver,
    records: Iterable[Record],
    *,
    on_conflict: OnConflict = "skip",
    batch_size: int = BATCH,
    progress: Progress | None = None,
) -> TransferResult:
    """Write an export's records into ``driver``: memories ``batch_size`` per transaction, then
    associations, then knowledge documents one at a time. ``on_conflict`` decides for ids (and
    doc_ids) the store already has: ``"skip"`` (default; importing again changes nothing and
    finishes an interrupted import), ``"replace"`` or ``"fail"``. Vectors are reused when the
    export's embedder is the driver's (same name and dimension), otherwise re-embedded in
    batches. ``progress`` is called with the number of memories written after each batch."""
    result = TransferResult()
    stream = iter(records)
    header = next(stream, None)
    if not isinstance(header, Header):
        raise ValidationError("an export starts with its header record")
    name = header.embedder["name"] if header.embedder else None
    reusable = (
        header.embedder is not None
        and name == driver.embedder.name
        and header.embedder.get("dimension") == driver.embedder.dimension
    )
    done = 0
    pending: list[MemoryRecordLine] = []
    links: list[Any] = []

    def flush_memories() -> None:
        nonlocal done
        if not pending:
            return
        given = all(r.vector is not None for r in pending)
        vectors = np.stack([r.vector for r in pending]) if given else None  # type: ignore[misc]
        where = f"memories #{done + 1}-#{done + len(pending)}"
        counts = _guarded(
            where,
            done,
            lambda: driver.import_memories(
                [r.memory for r in pending],
                vectors=vectors,
                embedder_name=name,
                on_conflict=on_conflict,
            ),
        )
        _note_vectors(result, counts["stored"] + counts["replaced"], given and reusable)
        for key, value in counts.items():
            result.memories[key] += value
        done += len(pending)
        if progress is not None:
            progress(len(pending))
        pending.clear()

    def flush_links() -> None:
        if links:
            result.associations += len(
                _guarded("associations", done, lambda: driver.import_associations(links))
            )
            links.clear()

    while True:
        try:
            record = next(stream)
        except StopIteration:
            break
        except MemoryDriverError:  # a bad or missing line: keep what came before it
            flush_memories()
            flush_links()
            raise
        if isinstance(record, MemoryRecordLine):
            flush_links()
            pending.append(record)
            if len(pending) >= batch_size:
                flush_memories()
        elif isinstance(record, AssociationRecord):
            flush_memories()
            links.append(record.association)
            if len(links) >= batch_size:
                flush_links()
        elif isinstance(record, DocumentRecord):
            flush_memories()
            flush_links()
            doc = record.chunks[0].doc_id
            outcome = _guarded(
                f"knowledge document {doc!r}",
                done,
                lambda r=record: driver.import_knowledge(  # type: ignore[misc]
                    r.chunks, vectors=r.vectors, embedder_name=name, on_conflict=on_conflict
                ),
            )
            result.knowledge_documents[outcome] += 1
            if outcome != "skipped":
                _note_vectors(result, 1, record.vectors is not None and reusable)
        elif isinstance(record, End):
            flush_memories()
            flush_links()
    flush_memories()
    flush_links()
    return result


def _note_vectors(result: TransferResult, written: int, reused: bool) -> None:
    if written:
        if not reused:
            result.vectors = "re-embedded"
        elif result.vectors == "none":
            result.vectors = "reused"


def _guarded(where: str, done: int, write: Callable[[], Any]) -> Any:
    """``write()``, its errors saying which records failed and what is already stored."""
    try:
        return write()
    except MemoryDriverError as exc:
        earlier = (
            f" ({done} memories before them are imported; run the import again to finish it)"
            if done
            else ""
        )
        raise type(exc)(f"{where}: {exc}{earlier}") from exc


def import_store(driver: BaseMemoryDriver, path: str | Path, **options: Any) -> TransferResult:
    """Import the export at ``path`` ("-": stdin; gzip or not) into ``driver``. ``options`` as
    for :func:`import_records`."""
    with open_input(path) as lines:
        return import_records(driver, read_records(lines), **options)


def copy_store(
    source: BaseMemoryDriver,
    target: BaseMemoryDriver,
    *,
    on_conflict: OnConflict = "skip",
    batch_size: int = BATCH,
    progress: Progress | None = None,
    **filters: Any,
) -> TransferResult:
    """Copy every record of ``source`` into ``target`` (no file in between); ``filters`` as
    for :func:`export_records`, the rest as for :func:`import_records`. The source is read a
    batch ahead by a thread of its own, while the target's database works on the last one."""
    records = _read_ahead(export_records(source, batch_size=batch_size, **filters), batch_size)
    try:
        return import_records(
            target, records, on_conflict=on_conflict, batch_size=batch_size, progress=progress
        )
    finally:
        records.close()


_END = object()


def _read_ahead(records: Iterator[Record], chunk: int) -> Generator[Record, None, None]:
    """``records`` as they are, read by a thread of its own up to two chunks ahead, so reading
    overlaps the consumer's waits (a database working on its last write). An error of the
    reader is raised here, after the records read before it; closing this generator stops the
    reader and closes ``records``."""
    ahead: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def put(item: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        batch: list[Record] = []
        try:
            for record in records:
                batch.append(record)
                if len(batch) >= chunk:
                    if not put((batch, None)):
                        return
                    batch = []
        except BaseException as exc:  # handed to the consumer after what came before it
            if not batch or put((batch, None)):
                put((_END, exc))
            return
        if not batch or put((batch, None)):
            put((_END, None))

    reader = threading.Thread(target=read, name="memory-drivers-read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            batch, error = ahead.get()
            if batch is _END:
                if error is not None:
                    raise error
                return
            yield from batch
    finally:
        stop.set()
        reader.join()
        close = getattr(records, "close", None)
        if close is not None:
            close()
