"""How the chroma driver lays out its records: collections, metadata keys, ``where`` filters.

A memory is one record of its user's collection (``<CHROMA_COLLECTION>.u.<hash of the user>``):
its content as the document, its vector as the embedding, and metadata holding what Chroma can
filter on (see ``docs/drivers/chroma.md``): tags as a string array, its own keyword terms and
those its conversation neighbours add as strings,
``created_at`` as integer microseconds, and one typed key per scalar metadata value
(``meta:number:<key>``, ...). The id directory (``<CHROMA_COLLECTION>.ids``) holds one small
record per memory saying whose it is. Knowledge chunks and associations have collections of
their own. :func:`memory_where` turns a :class:`MemoryFilter` into the ``where`` that selects,
within the user's collection, exactly the memories the shared semantics select.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, TypeVar

from ...models import KnowledgeChunk, Memory, MemoryFilter

__all__ = ["ASSOCIATIONS_SUFFIX", "memory_where", "micros", "user_collection_name"]

T = TypeVar("T")
Where = dict[str, Any]
Kind = Literal["memories", "knowledge_chunks"]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROSECOND = timedelta(microseconds=1)

#: Version of the record layout below, kept in every collection's metadata.
FORMAT = "1"
#: Prefix of the store-info keys in the associations collection's metadata (the one collection
#: re-embedding never replaces).
INFO_PREFIX = "memory_drivers."
#: Suffix of the associations collection's name (after CHROMA_COLLECTION).
ASSOCIATIONS_SUFFIX = "_associations"
#: Suffix of the collections a re-embedding writes to before they replace the live ones.
REEMBED_SUFFIX = ".reembed"
#: Between CHROMA_COLLECTION and the hash of a user: the name of that user's collection.
USER_INFIX = ".u."
#: Suffix of the id directory's name (after CHROMA_COLLECTION).
DIRECTORY_SUFFIX = ".ids"
#: Key of a user collection's metadata naming its user (collection names hold a hash).
OWNER_KEY = INFO_PREFIX + "user"
#: Store info: the memories' layout ("users": a collection per user and the id directory;
#: absent: every memory in the one collection CHROMA_COLLECTION, migrated when opened).
LAYOUT_KEY = "layout"
LAYOUT = "users"
#: Associations carry no vector; Chroma wants one per record, so each gets this constant.
LINK_VECTOR = [1.0]
#: Ids per ``get(ids=...)`` / ``$in`` list.
ID_BATCH = 1000
#: Records per page when scanning a whole collection.
PAGE = 2000
#: First wait before retrying a failed request (doubles each time).
RETRY_BACKOFF = 0.25
#: Extra hits asked of the HNSW index beyond ``top_k``, so ties at the cut are seen.
HNSW_MARGIN = 16
#: How far (cosine) Chroma's float32 distances may be from the exact scores: candidates that
#: close to the last of the ``top_k`` are read and scored exactly before the cut.
DISTANCE_SLACK = 1e-4
#: Records a filtered vector recall reads best first (checking each one here) before it asks
#: Chroma to evaluate the filter instead.
WALK_LIMIT = 200
#: Recent recall over more candidates than this reads the newest windows first.
RECENT_SCAN = 1000
#: Those windows: the last day, month and year, in microseconds.
RECENT_WINDOWS = tuple(days * 86_400_000_000 for days in (1, 30, 365))
#: ``ef_search`` of the HNSW index of new collections (used above CHROMA_EXACT_SEARCH_LIMIT).
HNSW_EF_SEARCH = 200
#: ``sync_threshold`` of every collection's HNSW index: Chroma writes a collection's index
#: files once this many of its records changed. Until then it keeps every record added since
#: in its log (the ``embeddings_queue`` table, vectors included) and reads the log from that
#: point on at each ``add`` to the collection, past the records of every other collection.
#: With Chroma's default, 1,000, a user's collection was rarely written, so every add read
#: nearly the whole log (an O(N) read per add: 100 users, 10 records per add, 13 ms per add
#: at 1,000 records and 34 ms at 40,000, measured) and the log kept a second copy of every
#: vector. At 2 the index is written at every add of two or more records (every second add
#: of one), so an add reads only the log since its collection's last write, and Chroma
#: purges the log behind the writes (about two records per collection stay in it).
HNSW_SYNC_THRESHOLD = 2

# Keys of a memory record's metadata. User metadata goes under META_* prefixes, so it never
# collides with these.
K_USER = "user_id"
K_CONVERSATION = "conversation_id"
K_TYPE = "memory_type"
K_IMPORTANCE = "importance"
K_CREATED = "created_us"
K_TAGS = "tags"
#: The memory's own keyword terms, space-separated (a string, "" when none).
K_TERMS = "terms"
#: The terms its conversation neighbours add (ranking.context), space-separated ("" when none).
#: Both are strings, not arrays: Chroma 1.5.9 accepts a record whose arrays hold more than
#: :data:`MAX_ARRAY_ITEMS` items, then fails every later write of the store (issue 12), and the
#: neighbours' terms grow with their text; Chroma also reads a record's metadata about twice
#: as fast without them (an array is a metadata row per item). Nothing filters on terms.
K_CONTEXT = "context"
#: The most array items (all arrays of a record together) Chroma 1.5.9 holds in one record,
#: embedded or server (found by trial: 5,462 fails its compaction, and every write after it);
#: scalar keys have the same limit, counted apart. The one array left is ``tags`` (at most
#: MEMORY_MAX_TAGS, 1,000).
MAX_ARRAY_ITEMS = 5461
#: What an empty string array holds. Every record carries its array (tags), never
#: leaving one out: Chroma (1.5.9, embedded and server) gives a record written without an
#: array key the array of a record of a *deleted* collection that had the same internal id,
#: so a memory without tags could match another's tag filter. "" is never a tag or a term.
EMPTY = ""
K_MEMORY = "memory"
#: The write token of the earlier layout's records (now in the directory's documents, see
#: .users), read when migrating.
K_WRITE = "write"
META_PREFIX = "meta:"

# Keys of a knowledge chunk record's metadata.
K_DOC = "doc_id"
K_CHUNK_INDEX = "chunk_index"
K_CATEGORY = "category"
K_CHUNK = "chunk"

# Keys of an association record's metadata.
K_SOURCE = "source_id"
K_TARGET = "target_id"
K_RELATION = "relationship_type"
K_STRENGTH = "strength"
K_LINK_CREATED = "created_at"


# ====================================================================== encoding
def micros(moment: datetime) -> int:
    """``moment`` as integer microseconds since the Unix epoch (exact, any sign)."""
    return (moment - EPOCH) // MICROSECOND


def typed_metadata(key: str, value: Any) -> tuple[str, bool | float | str] | None:
    """The Chroma key and value that index one metadata value for JSON-equality filters.

    One key per JSON type (``meta:number:k``, ``meta:string:k``, ``meta:boolean:k``,
    ``meta:null:k``), so a filter only ever compares values of the same type: ``1`` and
    ``1.0`` share ``meta:number:k`` (as floats), ``true`` and ``"1"`` do not. Arrays and
    objects equal no scalar filter and get no key; so do integers too large for a float.
    """
    if value is None:
        return f"{META_PREFIX}null:{key}", True
    if isinstance(value, bool):
        return f"{META_PREFIX}boolean:{key}", value
    if isinstance(value, int | float):
        try:
            return f"{META_PREFIX}number:{key}", float(value)
        except OverflowError:
            return None
    if isinstance(value, str):
        return f"{META_PREFIX}string:{key}", value
    return None


def own_words(meta: Mapping[str, Any]) -> list[str]:
    """The record's own terms (its ``terms``; an array in stores of records version 3 and
    earlier, read when migrating)."""
    terms = meta.get(K_TERMS) or ""
    if isinstance(terms, str):
        return terms.split()
    return [word for word in terms if word != EMPTY]


def words(meta: Mapping[str, Any]) -> list[str]:
    """The terms a record is indexed with: its own, then those its neighbours add."""
    return own_words(meta) + str(meta.get(K_CONTEXT) or "").split()


def context_of(own: str, indexed: str) -> str:
    """The terms of ``indexed`` that are not in ``own``, in order: what the neighbours add."""
    mine = set(own.split())
    return " ".join(term for term in indexed.split() if term not in mine)


def memory_metadata(memory: Memory, terms: str, context: str = "") -> dict[str, Any]:
    """A memory's Chroma metadata: what filters need, plus every field but ``id`` and
    ``content`` as JSON (``content`` is the record's document)."""
    meta: dict[str, Any] = {
        K_USER: memory.user_id,
        K_TYPE: memory.memory_type,
        K_IMPORTANCE: float(memory.importance),
        K_CREATED: micros(memory.created_at),
        K_MEMORY: memory.model_dump_json(exclude={"id", "content"}),
    }
    if memory.conversation_id is not None:
        meta[K_CONVERSATION] = memory.conversation_id
    meta[K_TAGS] = list(memory.tags) or [EMPTY]
    meta[K_TERMS] = terms
    meta[K_CONTEXT] = context
    for key, value in memory.metadata.items():
        typed = typed_metadata(key, value)
        if typed is not None:
            meta[typed[0]] = typed[1]
    return meta


def memory_from_record(memory_id: str, document: str | None, meta: Mapping[str, Any]) -> Memory:
    return Memory.model_validate(
        {**json.loads(meta[K_MEMORY]), "id": memory_id, "content": document or ""}
    )


def chunk_metadata(chunk: KnowledgeChunk, terms: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        K_DOC: chunk.doc_id,
        K_CHUNK_INDEX: chunk.chunk_index,
        K_CATEGORY: chunk.category,
        K_CREATED: micros(chunk.created_at),
        K_CHUNK: chunk.model_dump_json(exclude={"id", "content"}),
    }
    meta[K_TERMS] = terms
    return meta


def chunk_from_record(
    chunk_id: str, document: str | None, meta: Mapping[str, Any]
) -> KnowledgeChunk:
    return KnowledgeChunk.model_validate(
        {**json.loads(meta[K_CHUNK]), "id": chunk_id, "content": document or ""}
    )


def user_collection_name(prefix: str, user_id: str) -> str:
    """The name of ``user_id``'s collection: a hash, since user ids may hold any character."""
    return f"{prefix}{USER_INFIX}{hashlib.sha256(user_id.encode()).hexdigest()[:32]}"


def link_id(source: str, target: str, relationship_type: str) -> str:
    return f"{source}:{target}:{relationship_type}"


def _join(operator: Literal["$and", "$or"], conditions: Sequence[Where]) -> Where:
    """Chroma wants at least two conditions under ``$and`` / ``$or``."""
    return conditions[0] if len(conditions) == 1 else {operator: list(conditions)}


def all_of(conditions: Sequence[Where]) -> Where | None:
    return _join("$and", conditions) if conditions else None


def memory_where(f: MemoryFilter) -> Where | None:
    """The filter as a Chroma ``where`` within the user's collection (``f.user_id`` picks the
    collection, so it is no condition here).

    It selects exactly what :meth:`MemoryFilter.matches` accepts, except where it cannot
    (integers beyond 2**53 are compared as floats; an empty tuple of tags or types, which the
    public API never passes, is no condition): there it selects more. The driver re-checks
    every candidate with ``matches`` before ``top_k`` is cut either way.
    """
    conditions: list[Where] = []
    if f.conversation_id is not None:
        conditions.append({K_CONVERSATION: {"$eq": f.conversation_id}})
    if f.memory_types:
        conditions.append({K_TYPE: {"$in": list(f.memory_types)}})
    if f.tags:
        each = [{K_TAGS: {"$contains": tag}} for tag in f.tags]
        conditions.append(_join("$and" if f.tag_mode == "all" else "$or", each))
    for tag in f.exclude_tags or ():
        conditions.append({K_TAGS: {"$not_contains": tag}})
    if f.since is not None:
        conditions.append({K_CREATED: {"$gte": micros(f.since)}})
    if f.until is not None:
        conditions.append({K_CREATED: {"$lt": micros(f.until)}})
    if f.min_importance is not None:
        conditions.append({K_IMPORTANCE: {"$gte": float(f.min_importance)}})
    if f.importance_below is not None:
        conditions.append({K_IMPORTANCE: {"$lt": float(f.importance_below)}})
    for key, value in (f.metadata or {}).items():
        typed = typed_metadata(key, value)
        if typed is not None:
            conditions.append({typed[0]: {"$eq": typed[1]}})
    return all_of(conditions)


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
