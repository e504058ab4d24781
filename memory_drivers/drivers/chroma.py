"""The ``chroma`` driver: memories in Chroma, embedded or against a Chroma server.

Environment (embedded: a local persistent directory, no server)::

    MEMORY_DRIVER=chroma
    CHROMA_PATH=storage/chromadb
    CHROMA_COLLECTION=memories                    # also uses memories_associations
    CHROMA_KNOWLEDGE_COLLECTION=global_knowledge

or against a server (``chroma run --host 127.0.0.1 --port 8000 --path /srv/chroma``)::

    MEMORY_DRIVER=chroma
    CHROMA_URL=http://127.0.0.1:8000              # set: server mode, CHROMA_PATH is not used
    CHROMA_TIMEOUT=30.0                           # seconds per request
    CHROMA_RETRIES=3                              # retries of a failed request, with backoff

Python::

    from memory_drivers.drivers.chroma import ChromaDriver
    with ChromaDriver() as driver:                # or get_memory_driver("chroma")
        driver.store(user_id="u1", content="Likes green tea")

Install: ``pip install "memory-drivers[chroma,embeddings]"``.

Chroma never embeds anything here: every collection is opened with ``embedding_function=None``
and every write and query passes the configured embedder's vectors, so Chroma's own model is
never downloaded. Anonymized telemetry is off.

What Chroma has no notion of is encoded as metadata the driver writes (see
``docs/drivers/chroma.md``): tags and keyword terms as string arrays, ``created_at`` as integer
microseconds, and one typed key per scalar metadata value (``meta:number:<key>``, ...), so that
every filter is a Chroma ``where`` that selects exactly the memories the shared semantics
select. Candidates are then re-checked with :meth:`MemoryFilter.matches` before ``top_k`` is
cut. Vector search scores every filtered candidate (exact) up to ``CHROMA_EXACT_SEARCH_LIMIT``
candidates, and above it lets Chroma's HNSW index pick the best (approximate). Keyword and
recent recall order the candidates here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

import chromadb
import chromadb.errors
import httpx
import numpy as np

from ..base import BaseMemoryDriver, KnowledgeRecord, MemoryRecord, MemorySearch, hit_order
from ..config import Settings
from ..embeddings import Embedder
from ..errors import (
    BackendUnavailableError,
    ConfigurationError,
    ConflictError,
    MemoryDriverError,
    NotFoundError,
)
from ..models import (
    Association,
    KnowledgeChunk,
    KnowledgeHit,
    Memory,
    MemoryFilter,
    RecallHit,
    RelatedMemory,
)
from ..text import keyword_score

__all__ = ["ChromaDriver"]

log = logging.getLogger(__name__)

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
#: Recent recall over more candidates than this reads the newest windows first.
RECENT_SCAN = 1000
#: Those windows: the last day, month and year, in microseconds.
RECENT_WINDOWS = tuple(days * 86_400_000_000 for days in (1, 30, 365))
#: ``ef_search`` of the HNSW index of new collections (used above CHROMA_EXACT_SEARCH_LIMIT).
HNSW_EF_SEARCH = 200

# Keys of a memory record's metadata. User metadata goes under META_* prefixes, so it never
# collides with these.
K_USER = "user_id"
K_CONVERSATION = "conversation_id"
K_TYPE = "memory_type"
K_IMPORTANCE = "importance"
K_CREATED = "created_us"
K_TAGS = "tags"
K_TERMS = "terms"
K_MEMORY = "memory"
#: A token per store_many call: Chroma keeps the first add of an id and silently ignores later
#: ones, so the token read back says whose record an id holds (see _insert_memories).
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

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


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


def memory_metadata(memory: Memory, terms: str) -> dict[str, Any]:
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
    if memory.tags:
        meta[K_TAGS] = list(memory.tags)
    words = terms.split()
    if words:
        meta[K_TERMS] = words
    for key, value in memory.metadata.items():
        typed = typed_metadata(key, value)
        if typed is not None:
            meta[typed[0]] = typed[1]
    return meta


def memory_from_record(memory_id: str, document: str | None, meta: Mapping[str, Any]) -> Memory:
    return Memory.model_validate(
        {**json.loads(meta[K_MEMORY]), "id": memory_id, "content": document or ""}
    )


def chunk_metadata(chunk: KnowledgeChunk) -> dict[str, Any]:
    return {
        K_DOC: chunk.doc_id,
        K_CHUNK_INDEX: chunk.chunk_index,
        K_CATEGORY: chunk.category,
        K_CREATED: micros(chunk.created_at),
        K_CHUNK: chunk.model_dump_json(exclude={"id", "content"}),
    }


def chunk_from_record(
    chunk_id: str, document: str | None, meta: Mapping[str, Any]
) -> KnowledgeChunk:
    return KnowledgeChunk.model_validate(
        {**json.loads(meta[K_CHUNK]), "id": chunk_id, "content": document or ""}
    )


def link_id(source: str, target: str, relationship_type: str) -> str:
    return f"{source}:{target}:{relationship_type}"


def _join(operator: Literal["$and", "$or"], conditions: Sequence[Where]) -> Where:
    """Chroma wants at least two conditions under ``$and`` / ``$or``."""
    return conditions[0] if len(conditions) == 1 else {operator: list(conditions)}


def _all_of(conditions: Sequence[Where]) -> Where | None:
    return _join("$and", conditions) if conditions else None


def memory_where(f: MemoryFilter, terms: Sequence[str] | None = None) -> Where | None:
    """The filter as a Chroma ``where``; with ``terms``, also "has one of these terms".

    It selects exactly what :meth:`MemoryFilter.matches` accepts, except where it cannot
    (integers beyond 2**53 are compared as floats; an empty tuple of tags or types, which the
    public API never passes, is no condition): there it selects more. The driver re-checks
    every candidate with ``matches`` before ``top_k`` is cut either way.
    """
    conditions: list[Where] = []
    if f.user_id is not None:
        conditions.append({K_USER: {"$eq": f.user_id}})
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
    if terms:
        conditions.append(_join("$or", [{K_TERMS: {"$contains": term}} for term in terms]))
    return _all_of(conditions)


def _batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _scores(embeddings: Any, vector: np.ndarray) -> np.ndarray:
    """Cosine similarities of stored unit vectors with the unit query ``vector``.

    Row by row in float64 with the same summation order for every row, so two identical
    stored vectors always get bit-identical scores (ties are then broken by the shared order).
    """
    matrix = np.asarray(embeddings, dtype=np.float64)
    return np.asarray((matrix * np.asarray(vector, dtype=np.float64)).sum(axis=1))


def _transient(exc: BaseException) -> bool:
    """A network failure or an overloaded server: worth retrying (also when wrapped)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, httpx.TransportError | chromadb.errors.RateLimitError):
            return True
        current = current.__cause__ or current.__context__
    return False


def check_collection_name(name: str, variable: str) -> str:
    """Chroma's rule for collection names, checked before anything is opened."""
    if (
        not 3 <= len(name) <= 512
        or not set(name) <= _NAME_CHARS
        or not name[0].isalnum()
        or not name[-1].isalnum()
    ):
        raise ConfigurationError(
            f"{variable}={name!r} is not a valid Chroma collection name: 3 to 512 characters "
            "from letters, digits, '.', '_' and '-', starting and ending with a letter or digit"
        )
    return name


def parse_url(url: str) -> tuple[str, int, bool]:
    """(host, port, ssl) of ``CHROMA_URL``; the port defaults to the scheme's."""
    parts = urllib.parse.urlsplit(url.strip())
    problem = None
    if parts.scheme not in ("http", "https"):
        problem = "it must start with http:// or https://"
    elif not parts.hostname:
        problem = "it names no host"
    elif parts.path not in ("", "/") or parts.query or parts.fragment:
        problem = "it must be just scheme, host and port (no path or query)"
    if problem is None:
        try:
            port = parts.port
        except ValueError:
            problem = "its port is not a number between 0 and 65535"
    if problem is not None:
        raise ConfigurationError(
            f"CHROMA_URL={url!r} is not a Chroma server URL: {problem}. "
            "Example: CHROMA_URL=http://127.0.0.1:8000"
        )
    ssl = parts.scheme == "https"
    return str(parts.hostname), port or (443 if ssl else 80), ssl


@dataclass(frozen=True)
class _Ranked:
    """A candidate found by vector search: its id, score, and decoded record."""

    id: str
    score: float
    item: Any


# ====================================================================== the driver
class ChromaDriver(BaseMemoryDriver):
    """Memories, knowledge chunks and associations in three Chroma collections.

    ``CHROMA_URL`` set: a Chroma server over HTTP (retries, typed connection errors). Unset: an
    embedded persistent client on ``CHROMA_PATH`` (one process per directory, as Chroma
    requires).
    """

    name = "chroma"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
        allow_embedder_mismatch: bool = False,
    ) -> None:
        super().__init__(
            settings, embedder=embedder, allow_embedder_mismatch=allow_embedder_mismatch
        )
        s = self.settings
        self.collection_name = check_collection_name(s.chroma_collection, "CHROMA_COLLECTION")
        self.knowledge_collection_name = check_collection_name(
            s.chroma_knowledge_collection, "CHROMA_KNOWLEDGE_COLLECTION"
        )
        self.associations_collection_name = check_collection_name(
            s.chroma_collection + ASSOCIATIONS_SUFFIX, "CHROMA_COLLECTION (+ '_associations')"
        )
        #: Where re-embedding writes the new vectors, then renamed over the live collections.
        self.reembed_collection_names: dict[Kind, str] = {
            "memories": check_collection_name(
                s.chroma_collection + REEMBED_SUFFIX, "CHROMA_COLLECTION (+ '.reembed')"
            ),
            "knowledge_chunks": check_collection_name(
                s.chroma_knowledge_collection + REEMBED_SUFFIX,
                "CHROMA_KNOWLEDGE_COLLECTION (+ '.reembed')",
            ),
        }
        names = {
            self.collection_name,
            self.knowledge_collection_name,
            self.associations_collection_name,
            *self.reembed_collection_names.values(),
        }
        if len(names) < 5:
            raise ConfigurationError(
                "CHROMA_COLLECTION and CHROMA_KNOWLEDGE_COLLECTION must name different "
                f"collections (got {s.chroma_collection!r} and {s.chroma_knowledge_collection!r}; "
                f"the driver also uses {self.associations_collection_name!r} and the names "
                "with '.reembed' appended)"
            )
        self.mode: Literal["embedded", "server"] = "server" if s.chroma_url else "embedded"
        self.path: Path | None = None
        self.url: str | None = None
        if self.mode == "server":
            assert s.chroma_url is not None
            self.url = s.chroma_url.strip().rstrip("/")
            self._host, self._port, self._ssl = parse_url(self.url)
        else:
            self.path = Path(s.chroma_path).expanduser().resolve()
        #: Candidates above which recent recall reads the newest windows first.
        self.recent_scan = RECENT_SCAN
        #: Serializes this process's multi-step writes (check-then-add, read-modify-write).
        self._write_lock = threading.RLock()
        self._client: Any = None
        self._client = self._connect()
        #: The collections a re-embedding in progress writes to (see _before_reembed).
        self._reembedding: dict[Kind, Any] = {}
        try:
            self._links = self._open_collection(self.associations_collection_name)
            self._finish_interrupted_reembed()
            self._memories = self._open_collection(self.collection_name, vector_space=True)
            self._knowledge = self._open_collection(
                self.knowledge_collection_name, vector_space=True
            )
            self._max_batch = int(self._call(self._client.get_max_batch_size))
            self._attach_embedder()
        except BaseException:
            self._client.close()
            raise

    # ------------------------------------------------------------------ connection
    @property
    def location(self) -> str:
        """The server URL or the directory, as error messages name it."""
        return self.url if self.url is not None else str(self.path)

    def _chroma_settings(self) -> Any:
        from chromadb.config import Settings as ChromaSettings

        options: dict[str, Any] = {"anonymized_telemetry": False, "allow_reset": False}
        if self.mode == "server" and not self._ssl:
            # Plain HTTP: no certificates to verify, so none are loaded (40 ms per client).
            options["chroma_server_ssl_verify"] = False
        return ChromaSettings(**options)

    def _connect(self) -> Any:
        if self.mode == "embedded":
            assert self.path is not None
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                return chromadb.PersistentClient(
                    path=str(self.path), settings=self._chroma_settings()
                )
            except OSError as exc:
                raise BackendUnavailableError(
                    f"Chroma directory {self.path} cannot be used ({exc}). Check CHROMA_PATH "
                    "and its permissions."
                ) from exc
            except ValueError as exc:  # e.g. opened in this process with other settings
                raise ConfigurationError(
                    f"Chroma directory {self.path} cannot be opened: {exc}"
                ) from exc
        # Ask for the heartbeat first, with our timeout: chromadb's own client waits forever.
        timeout = self.settings.chroma_timeout
        self._call(self._preflight, timeout)
        client = self._call(
            chromadb.HttpClient,
            host=self._host,
            port=self._port,
            ssl=self._ssl,
            settings=self._chroma_settings(),
        )
        session = getattr(getattr(client, "_server", None), "_session", None)
        if isinstance(session, httpx.Client):
            session.timeout = httpx.Timeout(timeout)
        return client

    def _preflight(self, timeout: float) -> None:
        response = httpx.get(f"{self.url}/api/v2/heartbeat", timeout=timeout, verify=self._ssl)
        if response.status_code >= 500:
            raise httpx.RemoteProtocolError(
                f"HTTP {response.status_code} from /api/v2/heartbeat", request=response.request
            )
        if response.status_code >= 400:
            raise BackendUnavailableError(
                f"Chroma server {self.url} answered HTTP {response.status_code} to a heartbeat; "
                "is CHROMA_URL a Chroma (1.x) server?"
            )

    def _call(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run one Chroma request: retried on network failures (server mode), which become
        :class:`BackendUnavailableError` naming the URL once the retries are spent."""
        attempts = 1 + (self.settings.chroma_retries if self.mode == "server" else 0)
        delay = RETRY_BACKOFF
        for attempt in range(1, attempts + 1):
            try:
                return function(*args, **kwargs)
            except MemoryDriverError:
                raise
            except Exception as exc:
                if not _transient(exc):
                    self._raise_unusable(exc)
                    raise
                if attempt == attempts:
                    raise BackendUnavailableError(
                        f"Chroma server {self.location} is unreachable ({type(exc).__name__}: "
                        f"{exc}; {attempts} attempt{'s' if attempts > 1 else ''}). Check that "
                        "it is running and that CHROMA_URL points at it."
                    ) from exc
                log.warning(
                    "Chroma server %s: %s; retrying in %.2fs (%d/%d)",
                    self.location,
                    exc,
                    delay,
                    attempt,
                    attempts - 1,
                )
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_unusable(self, exc: Exception) -> None:
        """Chroma errors that mean the store cannot be used become BackendUnavailableError;
        others (a bug, most likely) are left as they are."""
        if isinstance(exc, chromadb.errors.NotFoundError):
            reason = (
                "a collection of this store is gone: it was deleted, or the server now serves "
                "another data directory. Opening the driver again creates it, empty"
            )
        elif isinstance(exc, chromadb.errors.ChromaAuthError | chromadb.errors.AuthorizationError):
            reason = "the server refused the request; this driver does not authenticate"
        elif isinstance(exc, chromadb.errors.InternalError):
            reason = "Chroma failed internally (see its log)"
        else:
            return
        raise BackendUnavailableError(f"Chroma {self.location}: {reason} ({exc})") from exc

    def _open_collection(self, name: str, *, vector_space: bool = False) -> Any:
        collection = self._call(
            self._client.get_or_create_collection,
            name=name,
            embedding_function=None,
            configuration={"hnsw": {"space": "cosine", "ef_search": HNSW_EF_SEARCH}},
            metadata={f"{INFO_PREFIX}format": FORMAT},
        )
        if vector_space:
            # The raw JSON: the parsed ``configuration`` warns about "legacy" (= no)
            # embedding function, which is what this driver wants.
            space = ((collection.configuration_json or {}).get("hnsw") or {}).get("space")
            if space not in (None, "cosine"):
                raise ConfigurationError(
                    f"Chroma collection {name!r} at {self.location} uses the {space!r} distance; "
                    "this driver needs 'cosine'. Point CHROMA_COLLECTION / "
                    "CHROMA_KNOWLEDGE_COLLECTION at other collections."
                )
        return collection

    # ------------------------------------------------------------------ record helpers
    def _get(self, collection: Any, **kwargs: Any) -> dict[str, Any]:
        return dict(self._call(collection.get, **kwargs))

    def _fetch_memories(self, ids: Sequence[str], where: Where | None = None) -> dict[str, Memory]:
        found: dict[str, Memory] = {}
        for batch in _batches(list(dict.fromkeys(ids)), ID_BATCH):
            result = self._get(
                self._memories, ids=list(batch), where=where, include=["metadatas", "documents"]
            )
            for mid, doc, meta in zip(
                result["ids"], result["documents"], result["metadatas"], strict=True
            ):
                found[mid] = memory_from_record(mid, doc, meta)
        return found

    def _existing_ids(self, collection: Any, ids: Sequence[str]) -> list[str]:
        taken: list[str] = []
        for batch in _batches(list(ids), ID_BATCH):
            taken += self._get(collection, ids=list(batch), include=[])["ids"]
        return taken

    def _scan(self, collection: Any, where: Where | None = None) -> Iterator[tuple[str, Any]]:
        """(id, metadata) of every record (passing ``where``), page by page."""
        offset = 0
        while True:
            page = self._get(
                collection, where=where, include=["metadatas"], limit=PAGE, offset=offset
            )
            yield from zip(page["ids"], page["metadatas"], strict=True)
            if len(page["ids"]) < PAGE:
                return
            offset += PAGE

    def _add(self, collection: Any, ids: Sequence[str], **columns: Sequence[Any]) -> None:
        """Add records in batches of Chroma's maximum; if a batch fails, delete the batches
        already added (and the failed one, which may have landed) before raising."""
        added: list[str] = []
        try:
            for start in range(0, len(ids), self._max_batch):
                end = start + self._max_batch
                batch = list(ids[start:end])
                added += batch
                self._call(
                    collection.add,
                    ids=batch,
                    **{name: list(values[start:end]) for name, values in columns.items()},
                )
        except BaseException as exc:
            self._undo(collection, added, exc)
            raise

    def _undo(self, collection: Any, ids: Sequence[str], cause: BaseException) -> None:
        if not ids:
            return
        try:
            self._delete_ids(collection, ids)
        except Exception as undo_error:
            log.error(
                "Chroma %s: undoing a failed write also failed (%s); %d records of collection "
                "%r may remain: %s",
                self.location,
                undo_error,
                len(ids),
                collection.name,
                ", ".join(ids[:20]),
            )
            raise BackendUnavailableError(
                f"Chroma {self.location}: a write failed ({cause}) and undoing its first part "
                f"failed too ({undo_error}); {len(ids)} records of collection "
                f"{collection.name!r} may remain (first: {ids[0]})"
            ) from cause

    def _delete_ids(self, collection: Any, ids: Sequence[str]) -> None:
        for batch in _batches(list(ids), min(self._max_batch, ID_BATCH)):
            self._call(collection.delete, ids=list(batch))

    # ------------------------------------------------------------------ store info
    def _read_store_info(self) -> dict[str, str]:
        collection = self._call(
            self._client.get_collection,
            name=self.associations_collection_name,
            embedding_function=None,
        )
        metadata = collection.metadata or {}
        return {
            key[len(INFO_PREFIX) :]: str(value)
            for key, value in metadata.items()
            if key.startswith(INFO_PREFIX) and key != f"{INFO_PREFIX}format"
        }

    def _write_store_info(self, values: Mapping[str, str]) -> None:
        with self._write_lock:
            collection = self._call(
                self._client.get_collection,
                name=self.associations_collection_name,
                embedding_function=None,
            )
            metadata = dict(collection.metadata or {})
            metadata[f"{INFO_PREFIX}format"] = FORMAT
            for key, value in values.items():
                if value:
                    metadata[INFO_PREFIX + key] = value
                else:
                    metadata.pop(INFO_PREFIX + key, None)
            self._call(self._links.modify, metadata=metadata)

    # ------------------------------------------------------------------ re-embedding
    # Chroma fixes a collection's dimension at its first vector, so new vectors (of any
    # dimension) go to fresh collections "<name>.reembed", with copies of the records; once
    # the base class has written the new stamp, they replace the live ones (delete, rename).
    # The stamp lives in the associations collection, which is never replaced. An interrupted
    # run leaves either the stamp's reembed mark (copy unfinished: the store is refused until
    # reembed() runs again, which starts the copy over) or, without the mark, complete copies
    # not yet renamed: the next open renames them (_finish_interrupted_reembed).
    def _find_collection(self, name: str) -> Any | None:
        def lookup() -> Any | None:
            try:
                return self._client.get_collection(name=name, embedding_function=None)
            except chromadb.errors.NotFoundError:
                return None

        return self._call(lookup)

    def _live_name(self, kind: Kind) -> str:
        return self.collection_name if kind == "memories" else self.knowledge_collection_name

    def _replace_live(self, kind: Kind, new: Any) -> None:
        """Put ``new`` (a complete re-embedded copy) in place of the live collection."""
        live = self._live_name(kind)
        if self._find_collection(live) is not None:
            self._call(self._client.delete_collection, name=live)
        self._call(new.modify, name=live)

    def _finish_interrupted_reembed(self) -> None:
        if self._read_store_info().get("reembed_target"):
            return  # the copy was not finished; reembed() starts it again
        for kind, name in self.reembed_collection_names.items():
            copy = self._find_collection(name)
            if copy is not None:
                log.warning(
                    "Chroma %s: finishing an interrupted re-embedding of %s", self.location, kind
                )
                self._replace_live(kind, copy)

    def _before_reembed(self) -> None:
        with self._write_lock:
            self._reembedding = {}
            for kind, name in self.reembed_collection_names.items():
                if self._find_collection(name) is not None:  # left by an interrupted run
                    self._call(self._client.delete_collection, name=name)
                self._reembedding[kind] = self._open_collection(name, vector_space=True)

    def _set_vectors(
        self, kind: Literal["memories", "knowledge_chunks"], ids: Sequence[str], vectors: np.ndarray
    ) -> None:
        live = self._memories if kind == "memories" else self._knowledge
        target = self._reembedding.get(kind)
        if target is None:  # not through reembed(): same dimension, in place
            for start in range(0, len(ids), self._max_batch):
                end = start + self._max_batch
                self._call(
                    live.update, ids=list(ids[start:end]), embeddings=list(vectors[start:end])
                )
            return
        vector_of = dict(zip(ids, vectors, strict=True))
        for batch in _batches(list(ids), min(self._max_batch, ID_BATCH)):
            records = self._get(live, ids=list(batch), include=["metadatas", "documents"])
            if records["ids"]:
                self._call(
                    target.add,
                    ids=records["ids"],
                    embeddings=[vector_of[rid] for rid in records["ids"]],
                    metadatas=records["metadatas"],
                    documents=records["documents"],
                )

    def _after_reembed(self) -> None:
        with self._write_lock:
            for kind, copy in self._reembedding.items():
                self._replace_live(kind, copy)
            self._reembedding = {}
            self._memories = self._open_collection(self.collection_name, vector_space=True)
            self._knowledge = self._open_collection(
                self.knowledge_collection_name, vector_space=True
            )

    # ------------------------------------------------------------------ memories
    def _insert_memories(self, records: Sequence[MemoryRecord]) -> None:
        ids = [r.memory.id for r in records]
        token = uuid.uuid4().hex
        metadatas = [{**memory_metadata(r.memory, r.terms), K_WRITE: token} for r in records]
        with self._write_lock:
            taken = self._existing_ids(self._memories, ids)
            if not taken:
                self._add(
                    self._memories,
                    ids,
                    embeddings=[r.vector for r in records],
                    metadatas=metadatas,
                    documents=[r.memory.content for r in records],
                )
                # Another process may have added some of these ids since the check above:
                # Chroma then kept its record and ignored ours. The ids holding our token are
                # ours; any other was taken, and what we added is removed again.
                mine: set[str] = set()
                for batch in _batches(ids, ID_BATCH):
                    where = {K_WRITE: {"$eq": token}}
                    mine.update(
                        self._get(self._memories, ids=list(batch), where=where, include=[])["ids"]
                    )
                taken = sorted(set(ids) - mine)
                if taken:
                    self._undo(self._memories, sorted(mine), ConflictError("taken meanwhile"))
            if taken:
                raise ConflictError(
                    f"a memory with id {sorted(taken)[0]} already exists ({len(taken)} of the "
                    "ids given are taken); nothing was stored. Leave id out to get a new one."
                )

    def _get_memories(self, ids: Sequence[str], user_id: str | None) -> dict[str, Memory]:
        where = {K_USER: {"$eq": user_id}} if user_id is not None else None
        return self._fetch_memories(ids, where)

    def _update_memory(
        self,
        memory_id: str,
        user_id: str | None,
        changes: Mapping[str, Any],
        vector: np.ndarray | None,
        terms: str | None,
    ) -> Memory | None:
        with self._write_lock:
            where = {K_USER: {"$eq": user_id}} if user_id is not None else None
            result = self._get(
                self._memories, ids=[memory_id], where=where, include=["metadatas", "documents"]
            )
            if not result["ids"]:
                return None
            old_meta = result["metadatas"][0]
            current = memory_from_record(memory_id, result["documents"][0], old_meta)
            updated = current.model_copy(update=dict(changes))
            updated = Memory.model_validate(updated.model_dump())
            if terms is None:
                terms = " ".join(old_meta.get(K_TERMS) or [])
            meta: dict[str, Any] = memory_metadata(updated, terms)
            # Chroma merges metadata on update: a key to drop is set to None.
            for key in old_meta:
                meta.setdefault(key, None)
            columns: dict[str, Any] = {"metadatas": [meta]}
            if vector is not None:
                columns["embeddings"] = [vector]
                columns["documents"] = [updated.content]
            self._call(self._memories.update, ids=[memory_id], **columns)
            return updated

    def _delete_memories(self, ids: Sequence[str], user_id: str | None) -> list[str]:
        with self._write_lock:
            where = {K_USER: {"$eq": user_id}} if user_id is not None else None
            found: list[str] = []
            for batch in _batches(list(dict.fromkeys(ids)), ID_BATCH):
                found += self._get(self._memories, ids=list(batch), where=where, include=[])["ids"]
            if not found:
                return []
            # Memories first: a link left behind by a failure here is skipped by related().
            self._delete_ids(self._memories, found)
            for batch in _batches(found, ID_BATCH):
                self._call(
                    self._links.delete,
                    where={
                        "$or": [
                            {K_SOURCE: {"$in": list(batch)}},
                            {K_TARGET: {"$in": list(batch)}},
                        ]
                    },
                )
            return found

    def _search_memories(self, search: MemorySearch) -> list[RecallHit]:
        f = search.filter
        if search.mode == "vector":
            assert search.vector is not None and search.top_k is not None
            where = memory_where(f)

            def accept(ids: Sequence[str]) -> dict[str, Memory]:
                found = self._fetch_memories(ids)
                return {mid: m for mid, m in found.items() if f.matches(m)}

            def decode(mid: str, doc: str | None, meta: Mapping[str, Any]) -> Memory | None:
                memory = memory_from_record(mid, doc, meta)
                return memory if f.matches(memory) else None

            ranked = self._rank(self._memories, where, search.vector, search.top_k, accept, decode)
            found = [RecallHit(memory=r.item, score=r.score) for r in ranked]
            return sorted(found, key=hit_order)[: search.top_k]

        terms = search.terms if search.mode == "keyword" else None
        where = memory_where(f, terms)
        if search.mode == "recent" and search.top_k is not None:
            hits = self._recent_in_windows(f, where, search.top_k)
            if hits is not None:
                return hits
        return self._ordered(f, where, terms, search.top_k)

    def _ordered(
        self, f: MemoryFilter, where: Where | None, terms: Sequence[str] | None, top_k: int | None
    ) -> list[RecallHit]:
        """Keyword and recent recall over every candidate: one request (one consistent
        snapshot), the shared order applied here, records decoded and re-checked best first
        until ``top_k`` passed."""
        result = self._get(self._memories, where=where, include=["metadatas", "documents"])
        candidates: list[tuple[tuple[float, int, str], float | None, int]] = []
        for position, (mid, meta) in enumerate(
            zip(result["ids"], result["metadatas"], strict=True)
        ):
            score: float | None = None
            if terms is not None:
                score = keyword_score(terms, meta.get(K_TERMS) or ())
                if score <= 0:
                    continue
            candidates.append(((-(score or 0.0), -meta[K_CREATED], mid), score, position))
        candidates.sort(key=lambda candidate: candidate[0])
        hits: list[RecallHit] = []
        for (_, _, mid), score, position in candidates:
            memory = memory_from_record(
                mid, result["documents"][position], result["metadatas"][position]
            )
            if f.matches(memory):
                hits.append(RecallHit(memory=memory, score=score))
                if len(hits) == top_k:
                    break
        return hits

    def _recent_in_windows(
        self, f: MemoryFilter, where: Where | None, top_k: int
    ) -> list[RecallHit] | None:
        """The ``top_k`` newest candidates, read from the last day, month or year only.

        Reading every candidate's record costs Chroma about 0.1 ms each, so when there are
        more than ``recent_scan`` candidates, windows ``created_at >= now - span`` are counted
        (ids only, cheap) and the first holding ``top_k`` is read: everything outside it is
        older than everything in it, so its ``top_k`` newest are the answer. None: read all.
        """
        everything = self._get(self._memories, where=where, include=[], limit=self.recent_scan + 1)
        if len(everything["ids"]) <= self.recent_scan:
            return None
        now = micros(datetime.now(timezone.utc))
        for span in RECENT_WINDOWS:
            window = _all_of([*([where] if where else []), {K_CREATED: {"$gte": now - span}}])
            count = len(self._get(self._memories, where=window, include=[])["ids"])
            if count >= top_k:
                hits = self._ordered(f, window, None, top_k)
                if len(hits) == top_k:
                    return hits
        return None

    def _rank(
        self,
        collection: Any,
        where: Where | None,
        vector: np.ndarray,
        top_k: int,
        accept: Callable[[Sequence[str]], Mapping[str, Any]],
        decode: Callable[[str, str | None, Mapping[str, Any]], Any | None],
    ) -> list[_Ranked]:
        """The ``top_k`` best candidates passing ``where`` (and the check in ``accept`` /
        ``decode``), plus every candidate tied with the last of them.

        Up to ``CHROMA_EXACT_SEARCH_LIMIT`` candidates, every candidate is scored (exact, see
        :meth:`_score_all`); above, Chroma's HNSW index picks the best (approximate).
        """
        limit = self.settings.chroma_exact_search_limit
        query = np.asarray(vector, dtype=np.float32)
        if limit > 0:
            ids = self._get(collection, where=where, include=[], limit=limit + 1)["ids"]
            if not ids:
                return []
            if len(ids) <= limit:
                ranked_ids, scores = self._score_all(collection, query, ids)
                return self._walk(ranked_ids, scores, top_k, accept)
        return self._rank_hnsw(collection, where, query, top_k, decode)

    def _score_all(
        self, collection: Any, query: np.ndarray, ids: Sequence[str]
    ) -> tuple[list[str], np.ndarray]:
        """The cosine similarity of every candidate with ``query``, from their stored vectors.

        Reading the candidates' vectors by id and scoring them here is exact and cost less
        than half of asking Chroma's index for as many neighbours as there are candidates
        (at 100,000 memories, 1,000 per user: ~13 ms against ~49 ms). A candidate deleted
        since it was counted is simply not returned.
        """
        found: list[str] = []
        vectors: list[Any] = []
        for batch in _batches(list(ids), ID_BATCH):
            page = self._get(collection, ids=list(batch), include=["embeddings"])
            found += page["ids"]
            vectors += list(page["embeddings"])
        if not found:
            return [], np.zeros(0)
        return found, _scores(vectors, query)

    @staticmethod
    def _walk(
        ids: Sequence[str],
        scores: np.ndarray,
        top_k: int,
        accept: Callable[[Sequence[str]], Mapping[str, Any]],
    ) -> list[_Ranked]:
        """Walk scored candidates best first, fetching and checking records a batch at a time,
        until ``top_k`` passed and the next candidate scores strictly lower than the last."""
        order = np.lexsort((np.asarray(ids, dtype=object), -scores))
        ranked: list[_Ranked] = []
        position = 0
        while position < len(order) and len(ranked) < top_k:
            end = min(len(order), position + top_k - len(ranked))
            while end < len(order) and scores[order[end]] == scores[order[end - 1]]:
                end += 1  # a tie at the cut: the shared order decides, so fetch them all
            records = accept([ids[i] for i in order[position:end]])
            for i in order[position:end]:
                if ids[i] in records:
                    ranked.append(_Ranked(ids[i], float(scores[i]), records[ids[i]]))
            position = end
        return ranked

    def _rank_hnsw(
        self,
        collection: Any,
        where: Where | None,
        vector: np.ndarray,
        top_k: int,
        decode: Callable[[str, str | None, Mapping[str, Any]], Any | None],
    ) -> list[_Ranked]:
        """Chroma's HNSW index: score = 1 - cosine distance. Asks for more results until
        ``top_k`` candidates passed and no tie with the last one can be left out."""
        wanted = top_k + HNSW_MARGIN
        while True:
            result = self._call(
                collection.query,
                query_embeddings=[vector],
                n_results=wanted,
                where=where,
                include=["metadatas", "documents", "distances"],
            )
            ids = result["ids"][0]
            ranked = []
            for rid, doc, meta, distance in zip(
                ids,
                result["documents"][0],
                result["metadatas"][0],
                result["distances"][0],
                strict=True,
            ):
                item = decode(rid, doc, meta)
                if item is not None:
                    ranked.append(_Ranked(rid, 1.0 - float(distance), item))
            exhausted = len(ids) < wanted
            if exhausted:
                return ranked
            last = 1.0 - float(result["distances"][0][-1])
            if len(ranked) >= top_k and last < ranked[top_k - 1].score:
                return ranked
            wanted *= 2

    def _count_memories(self, user_id: str | None) -> int:
        if user_id is None:
            return int(self._call(self._memories.count))
        where = {K_USER: {"$eq": user_id}}
        return len(self._get(self._memories, where=where, include=[])["ids"])

    def _iter_memories(self, user_id: str | None, batch_size: int) -> Iterator[Memory]:
        where = {K_USER: {"$eq": user_id}} if user_id is not None else None
        keys = sorted((meta[K_CREATED], mid) for mid, meta in self._scan(self._memories, where))
        for batch in _batches(keys, batch_size):
            found = self._fetch_memories([mid for _, mid in batch])
            yield from (found[mid] for _, mid in batch if mid in found)

    # ------------------------------------------------------------------ knowledge
    def _replace_knowledge(self, doc_id: str, records: Sequence[KnowledgeRecord]) -> None:
        with self._write_lock:
            where = {K_DOC: {"$eq": doc_id}}
            old = self._get(self._knowledge, where=where, include=[])["ids"]
            new = [r.chunk.id for r in records]
            self._add(
                self._knowledge,
                new,
                embeddings=[r.vector for r in records],
                metadatas=[chunk_metadata(r.chunk) for r in records],
                documents=[r.chunk.content for r in records],
            )
            stale = sorted(set(old) - set(new))
            if stale:
                try:
                    self._delete_ids(self._knowledge, stale)
                except BaseException as exc:
                    self._undo(self._knowledge, new, exc)
                    raise

    def _get_knowledge(self, doc_id: str) -> list[KnowledgeChunk]:
        result = self._get(
            self._knowledge, where={K_DOC: {"$eq": doc_id}}, include=["metadatas", "documents"]
        )
        return [
            chunk_from_record(cid, doc, meta)
            for cid, doc, meta in zip(
                result["ids"], result["documents"], result["metadatas"], strict=True
            )
        ]

    def _delete_knowledge(self, doc_id: str) -> bool:
        with self._write_lock:
            ids = self._get(self._knowledge, where={K_DOC: {"$eq": doc_id}}, include=[])["ids"]
            if ids:
                self._delete_ids(self._knowledge, ids)
            return bool(ids)

    def _search_knowledge(
        self, vector: np.ndarray, top_k: int, category: str | None, text: str | None = None
    ) -> list[KnowledgeHit]:
        where = {K_CATEGORY: {"$eq": category}} if category is not None else None

        def accept(ids: Sequence[str]) -> dict[str, KnowledgeChunk]:
            result = self._get(self._knowledge, ids=list(ids), include=["metadatas", "documents"])
            return {
                cid: chunk_from_record(cid, doc, meta)
                for cid, doc, meta in zip(
                    result["ids"], result["documents"], result["metadatas"], strict=True
                )
            }

        ranked = self._rank(self._knowledge, where, vector, top_k, accept, chunk_from_record)
        return [KnowledgeHit(chunk=r.item, score=r.score) for r in ranked]

    def _iter_knowledge(self, batch_size: int) -> Iterator[KnowledgeChunk]:
        keys = sorted(
            (meta[K_DOC], meta[K_CHUNK_INDEX], cid) for cid, meta in self._scan(self._knowledge)
        )
        for batch in _batches(keys, batch_size):
            ids = [cid for _, _, cid in batch]
            result = self._get(self._knowledge, ids=ids, include=["metadatas", "documents"])
            found = {
                cid: chunk_from_record(cid, doc, meta)
                for cid, doc, meta in zip(
                    result["ids"], result["documents"], result["metadatas"], strict=True
                )
            }
            yield from (found[cid] for cid in ids if cid in found)

    # ------------------------------------------------------------------ associations
    def _upsert_association(self, association: Association) -> Association:
        source, target = association.source_id, association.target_id
        with self._write_lock:
            present = set(self._existing_ids(self._memories, [source, target]))
            for mid in (source, target):
                if mid not in present:
                    raise NotFoundError(f"no memory {mid}")
            lid = link_id(source, target, association.relationship_type)
            existing = self._get(self._links, ids=[lid], include=["metadatas"])
            created = association.created_at
            if existing["ids"]:
                created = datetime.fromisoformat(existing["metadatas"][0][K_LINK_CREATED])
            self._call(
                self._links.upsert,
                ids=[lid],
                embeddings=[LINK_VECTOR],
                metadatas=[
                    {
                        K_SOURCE: source,
                        K_TARGET: target,
                        K_RELATION: association.relationship_type,
                        K_STRENGTH: float(association.strength),
                        K_LINK_CREATED: created.isoformat(),
                    }
                ],
            )
        return association.model_copy(update={"created_at": created})

    def _related(self, memory_id: str, relationship_type: str | None) -> list[RelatedMemory]:
        conditions: list[Where] = [
            {"$or": [{K_SOURCE: {"$eq": memory_id}}, {K_TARGET: {"$eq": memory_id}}]}
        ]
        if relationship_type is not None:
            conditions.append({K_RELATION: {"$eq": relationship_type}})
        links = [meta for _, meta in self._scan(self._links, _all_of(conditions))]
        others = [
            link[K_TARGET] if link[K_SOURCE] == memory_id else link[K_SOURCE] for link in links
        ]
        found = self._fetch_memories(others)
        related = []
        for link, other in zip(links, others, strict=True):
            if other not in found:
                continue  # a link whose memory is gone (a delete interrupted half way)
            related.append(
                RelatedMemory(
                    memory=found[other],
                    relationship_type=link[K_RELATION],
                    strength=link[K_STRENGTH],
                    direction="outgoing" if link[K_SOURCE] == memory_id else "incoming",
                )
            )
        return related

    # ------------------------------------------------------------------ operations
    def _counts(self) -> dict[str, Any]:
        users: set[str] = set()
        by_type: dict[str, int] = {}
        memories = 0
        for _, meta in self._scan(self._memories):
            memories += 1
            users.add(meta[K_USER])
            by_type[meta[K_TYPE]] = by_type.get(meta[K_TYPE], 0) + 1
        chunks = 0
        documents: set[str] = set()
        for _, meta in self._scan(self._knowledge):
            chunks += 1
            documents.add(meta[K_DOC])
        return {
            "memories": memories,
            "users": len(users),
            "associations": int(self._call(self._links.count)),
            "knowledge_documents": len(documents),
            "knowledge_chunks": chunks,
            "memory_types": dict(sorted(by_type.items())),
        }

    def _where_it_lives(self) -> dict[str, Any]:
        place: dict[str, Any] = {"mode": self.mode}
        if self.mode == "server":
            place["url"] = self.url
        else:
            place["path"] = str(self.path)
        place["collections"] = {
            "memories": self.collection_name,
            "knowledge": self.knowledge_collection_name,
            "associations": self.associations_collection_name,
        }
        return place

    def _health(self) -> dict[str, Any]:
        report = self._where_it_lives()
        if self.mode == "server":
            report["heartbeat"] = int(self._call(self._client.heartbeat))
            report["server_version"] = str(self._call(self._client.get_version))
        report["chroma_version"] = chromadb.__version__
        report["counts"] = {
            "memories": int(self._call(self._memories.count)),
            "knowledge_chunks": int(self._call(self._knowledge.count)),
            "associations": int(self._call(self._links.count)),
        }
        info = self._read_store_info()
        report["embedder"] = {"name": info.get("embedder"), "dimension": info.get("dimension")}
        return report

    def _stats(self) -> dict[str, Any]:
        return {**self._counts(), **self._where_it_lives()}

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
