"""The chroma driver's connection and collections: opening them, calling Chroma with retries,
reading and writing records in batches, and the store info.

:class:`ChromaStore` holds all of it; :class:`~.users.ChromaUsers` lays the memories out (a
collection per user, the id directory, migration, re-embedding) on top of it,
:class:`~.search.ChromaSearch` ranks and :class:`~.driver.ChromaDriver` implements the
primitives.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import chromadb
import chromadb.errors
import httpx

from ...base import BaseMemoryDriver
from ...config import Settings
from ...embeddings import Embedder
from ...errors import BackendUnavailableError, ConfigurationError, MemoryDriverError
from .records import (
    ASSOCIATIONS_SUFFIX,
    DIRECTORY_SUFFIX,
    FORMAT,
    HNSW_EF_SEARCH,
    HNSW_SYNC_THRESHOLD,
    ID_BATCH,
    INFO_PREFIX,
    PAGE,
    RECENT_SCAN,
    REEMBED_SUFFIX,
    RETRY_BACKOFF,
    WALK_LIMIT,
    T,
    Where,
    batches,
    user_collection_name,
)
from .vectors import VectorCache, release_cache, shared_cache

__all__ = ["ChromaStore", "check_collection_name", "parse_url"]

log = logging.getLogger(__name__)

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


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


class ChromaStore(BaseMemoryDriver):
    """Three Chroma collections (memories, knowledge chunks, associations), opened.

    ``CHROMA_URL`` set: a Chroma server over HTTP (retries, typed connection errors). Unset: an
    embedded persistent client on ``CHROMA_PATH`` (one process per directory, as Chroma
    requires).
    """

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
        #: The prefix of the memories' collections; also the name of the one collection of the
        #: earlier layout, migrated when opened (see :mod:`.users`).
        self.collection_name = check_collection_name(s.chroma_collection, "CHROMA_COLLECTION")
        check_collection_name(
            user_collection_name(s.chroma_collection, ""), "CHROMA_COLLECTION (+ '.u.<hash>')"
        )
        self.directory_name = check_collection_name(
            s.chroma_collection + DIRECTORY_SUFFIX, "CHROMA_COLLECTION (+ '.ids')"
        )
        self.knowledge_collection_name = check_collection_name(
            s.chroma_knowledge_collection, "CHROMA_KNOWLEDGE_COLLECTION"
        )
        self.associations_collection_name = check_collection_name(
            s.chroma_collection + ASSOCIATIONS_SUFFIX, "CHROMA_COLLECTION (+ '_associations')"
        )
        check_collection_name(
            s.chroma_knowledge_collection + REEMBED_SUFFIX,
            "CHROMA_KNOWLEDGE_COLLECTION (+ '.reembed')",
        )
        names = {
            self.collection_name,
            self.directory_name,
            self.knowledge_collection_name,
            self.associations_collection_name,
            self.knowledge_collection_name + REEMBED_SUFFIX,
        }
        if len(names) < 5 or self.knowledge_collection_name.startswith(self.collection_name + "."):
            raise ConfigurationError(
                "CHROMA_COLLECTION and CHROMA_KNOWLEDGE_COLLECTION must name different "
                f"collections (got {s.chroma_collection!r} and {s.chroma_knowledge_collection!r}; "
                f"the driver also uses {self.associations_collection_name!r} and the names "
                f"starting with {self.collection_name + '.'!r} or ending in '.reembed')"
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
        #: Records a filtered vector recall checks here before Chroma evaluates the filter.
        self.walk_limit = WALK_LIMIT
        #: Serializes this process's multi-step writes (check-then-add, read-modify-write).
        self._write_lock = threading.RLock()
        self._client: Any = None
        self._client = self._connect()
        #: Embedded mode: the collections' vectors, shared by this process's drivers of the
        #: directory (see :mod:`.vectors`); None in server mode or with a budget of 0.
        self._vectors: VectorCache | None = None
        if self.mode == "embedded" and s.chroma_vector_cache_mb > 0:
            self._vectors = shared_cache(str(self.path), s.chroma_vector_cache_mb << 20)
        #: The collections a re-embedding in progress writes to, by live name.
        self._reembedding: dict[str, Any] = {}
        #: The user collections opened so far, by user.
        self._users: dict[str, Any] = {}
        try:
            self._links = self._open_collection(self.associations_collection_name)
            self._finish_interrupted_reembed()
            self._directory = self._open_collection(self.directory_name)
            self._knowledge = self._open_collection(
                self.knowledge_collection_name, vector_space=True
            )
            self._max_batch = int(self._call(self._client.get_max_batch_size))
            self._attach_embedder()
            self._after_open()
        except BaseException:
            self._release_vectors()
            self._client.close()
            raise

    def _release_vectors(self) -> None:
        if self._vectors is not None:
            self._vectors = None
            release_cache(str(self.path))

    def _finish_interrupted_reembed(self) -> None:
        """Hook: complete a re-embedding interrupted while its copies replaced the live ones."""

    def _after_open(self) -> None:
        """Hook: work to do once the collections are open and the store's stamp checked."""

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

    def _open_collection(
        self, name: str, *, vector_space: bool = False, metadata: Mapping[str, str] | None = None
    ) -> Any:
        collection = self._call(
            self._client.get_or_create_collection,
            name=name,
            embedding_function=None,
            configuration={
                "hnsw": {
                    "space": "cosine",
                    "ef_search": HNSW_EF_SEARCH,
                    "sync_threshold": HNSW_SYNC_THRESHOLD,
                }
            },
            metadata={f"{INFO_PREFIX}format": FORMAT, **(metadata or {})},
        )
        if vector_space:
            self._check_space(collection, name)
        return self._keep_log_short(collection)

    def _keep_log_short(self, collection: Any) -> Any:
        """``collection``, its index set to be written every ``HNSW_SYNC_THRESHOLD`` records
        (collections made before this setting had Chroma's 1,000: changed in place, once)."""
        hnsw = (collection.configuration_json or {}).get("hnsw")
        if hnsw is not None and hnsw.get("sync_threshold") != HNSW_SYNC_THRESHOLD:
            with warnings.catch_warnings():  # modify parses the configuration: see _check_space
                warnings.simplefilter("ignore", DeprecationWarning)
                self._call(
                    collection.modify,
                    configuration={"hnsw": {"sync_threshold": HNSW_SYNC_THRESHOLD}},
                )
        return collection

    def _check_space(self, collection: Any, name: str) -> None:
        # The raw JSON: the parsed ``configuration`` warns about "legacy" (= no) embedding
        # function, which is what this driver wants.
        space = ((collection.configuration_json or {}).get("hnsw") or {}).get("space")
        if space not in (None, "cosine"):
            raise ConfigurationError(
                f"Chroma collection {name!r} at {self.location} uses the {space!r} distance; "
                "this driver needs 'cosine'. Point CHROMA_COLLECTION / "
                "CHROMA_KNOWLEDGE_COLLECTION at other collections."
            )

    # ------------------------------------------------------------------ record helpers
    def _get(self, collection: Any, **kwargs: Any) -> dict[str, Any]:
        return dict(self._call(collection.get, **kwargs))

    def _existing_ids(self, collection: Any, ids: Sequence[str]) -> list[str]:
        taken: list[str] = []
        for batch in batches(list(ids), ID_BATCH):
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
                if self._vectors is not None:
                    self._vectors.added(collection.name, batch, columns["embeddings"][start:end])
        except BaseException as exc:
            self._forget_vectors(collection.name)
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
        for batch in batches(list(ids), min(self._max_batch, ID_BATCH)):
            try:
                self._call(collection.delete, ids=list(batch))
            except BaseException:
                self._forget_vectors(collection.name)  # it may have landed, or not
                raise
            if self._vectors is not None:
                self._vectors.removed(collection.name, list(batch))

    def _forget_vectors(self, name: str | None = None) -> None:
        """Drop the cached vectors of collection ``name`` (or of all): a change the cache does
        not follow record by record, or a write that failed and may have landed."""
        if self._vectors is not None:
            self._vectors.forget(name)

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

    def _find_collection(self, name: str) -> Any | None:
        """The collection ``name``, or None when there is none."""

        def lookup() -> Any | None:
            try:
                return self._client.get_collection(name=name, embedding_function=None)
            except chromadb.errors.NotFoundError:
                return None

        return self._call(lookup)
