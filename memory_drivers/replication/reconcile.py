"""Compare a replica with its primary and repair the difference, through the public API.

Memories are compared by id and ``updated_at``; associations by their endpoints and type
(and strength); knowledge documents chunk by chunk. The primary's records are copied with their
ids, times and vectors (:meth:`~memory_drivers.base.BaseMemoryDriver.import_memories` with
``on_conflict="replace"``); what the primary does not have is deleted from the replica.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..base import BaseMemoryDriver

__all__ = ["reconcile"]

BATCH = 500


def reconcile(
    primary: BaseMemoryDriver, replica: BaseMemoryDriver, *, dry_run: bool = False
) -> dict[str, Any]:
    """Make ``replica`` hold what ``primary`` holds; the counts of what differed."""
    theirs = {m.id: m.updated_at for m in replica.iter_memories(batch_size=BATCH)}
    ours = {m.id: m.updated_at for m in primary.iter_memories(batch_size=BATCH)}
    missing = [i for i in ours if i not in theirs]
    stale = [i for i in ours if i in theirs and theirs[i] != ours[i]]
    extra = [i for i in theirs if i not in ours]
    report: dict[str, Any] = {
        "memories": {"missing": len(missing), "stale": len(stale), "extra": len(extra)},
        "repaired": not dry_run,
    }
    if not dry_run:
        for batch in _batches(extra):
            for memory_id in batch:
                replica.delete(memory_id)
        for batch in _batches(missing + stale):
            _copy_memories(primary, replica, batch)
    links = {_link_key(a): a for a in primary.iter_associations(batch_size=BATCH)}
    held = {_link_key(a): a for a in replica.iter_associations(batch_size=BATCH)}
    absent = [a for key, a in links.items() if key not in held or held[key].strength != a.strength]
    report["associations"] = {
        "missing": len(absent),
        "extra": len([key for key in held if key not in links]),
    }
    if not dry_run:
        for batch in _batches(absent):
            replica.import_associations(batch)
    report["knowledge_documents"] = _knowledge(primary, replica, dry_run)
    return report


def _link_key(link: Any) -> tuple[str, str, str]:
    return (link.source_id, link.target_id, link.relationship_type)


def _batches(items: list[Any]) -> Any:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, BATCH)):
        yield batch


def _copy_memories(primary: BaseMemoryDriver, replica: BaseMemoryDriver, ids: list[str]) -> None:
    found = [m for m in (primary.get(i) for i in ids) if m is not None]
    vectors = primary.get_vectors([m.id for m in found])
    given = all(m.id in vectors for m in found) and bool(found)
    replica.import_memories(
        found,
        vectors=np.stack([vectors[m.id] for m in found]) if given else None,
        embedder_name=primary.embedder.name if given else None,
        on_conflict="replace",
    )


def _knowledge(
    primary: BaseMemoryDriver, replica: BaseMemoryDriver, dry_run: bool
) -> dict[str, int]:
    ours = {c.doc_id for c in primary.iter_global_knowledge(batch_size=BATCH)}
    theirs = {c.doc_id for c in replica.iter_global_knowledge(batch_size=BATCH)}
    counts = {"missing": 0, "stale": 0, "extra": 0}
    for doc_id in sorted(theirs - ours):
        counts["extra"] += 1
        if not dry_run:
            replica.delete_global_knowledge(doc_id)
    for doc_id in sorted(ours):
        document = primary.get_global_knowledge(doc_id)
        if document is None:
            continue
        there = replica.get_global_knowledge(doc_id) if doc_id in theirs else None
        if there is not None and there.chunks == document.chunks:
            continue
        counts["stale" if there is not None else "missing"] += 1
        if not dry_run:
            chunks = document.chunks
            vectors = primary.get_vectors([c.id for c in chunks], "knowledge_chunks")
            given = all(c.id in vectors for c in chunks)
            replica.import_knowledge(
                chunks,
                vectors=np.stack([vectors[c.id] for c in chunks]) if given else None,
                embedder_name=primary.embedder.name if given else None,
                on_conflict="replace",
            )
    return counts
