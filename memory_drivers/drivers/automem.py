"""The ``automem`` driver: memories in an AutoMem service, over its REST API (httpx).

Environment::

    MEMORY_DRIVER=automem
    AUTOMEM_URL=http://127.0.0.1:8001     # AutoMem, or `memory-drivers serve` in front of a driver
    AUTOMEM_API_TOKEN=...                 # sent as "Authorization: Bearer <token>"
    AUTOMEM_TIMEOUT=30.0                  # seconds per request
    AUTOMEM_MAX_RETRIES=3                 # network errors and 5xx answers, with backoff
    AUTOMEM_RETRY_BACKOFF=0.5             # first pause, doubled after each retry

AutoMem has no users, conversations or client-chosen ids, so each memory carries the
memory-drivers block and convention tags (:mod:`memory_drivers.automem_wire`): the driver reads
every memory back exactly from its block, and filters on the tags. Every write sends the
driver's own vector in AutoMem's ``embedding`` field (AutoMem stores it at once, where it would
otherwise queue the text for its own model), and recall sends the query's vector with its text;
AutoMem ranks, and vector recall returns AutoMem's scores. AutoMem merges recall results with
the same content into one that lists the others in ``deduped_from``; the driver reads those
back. Recall without a query, keyword recall, counting and listing are computed here, exactly,
from AutoMem's candidates (its recall window of 100, or every memory of the user through
``/memory/by-tag`` when the window is full).
What cannot be exact against a real AutoMem is listed in ``docs/drivers/automem.md``.

Why this module is long: it is one driver's translation of every primitive into AutoMem's REST
calls, around one HTTP client with its retries. The pieces share the client and the candidate
fetching (the recall window, or ``/memory/by-tag`` when it is full), and the wire format itself
already lives apart (:mod:`memory_drivers.automem_wire`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

import httpx
import numpy as np

from .. import automem_wire as wire
from .. import bridge
from ..base import (
    BaseMemoryDriver,
    KnowledgeRecord,
    KnowledgeSearch,
    MemoryRecord,
    MemorySearch,
    hit_order,
)
from ..config import Settings
from ..embeddings import Embedder
from ..errors import (
    BackendUnavailableError,
    ConfigurationError,
    ConflictError,
    MemoryDriverError,
    NotFoundError,
    ValidationError,
)
from ..models import (
    Association,
    Explanation,
    KnowledgeChunk,
    KnowledgeHit,
    Memory,
    MemoryFilter,
    RecallHit,
    RelatedMemory,
)
from ..ranking import rank_keyword
from ..ranking.scan import evidence_from_memories, evidence_of, indexed_terms_of
from ..text import document_terms
from ..validation import timestamp

__all__ = ["AutoMemDriver"]

log = logging.getLogger(__name__)

#: Ids asked for in one ``/memory/by-tag`` lookup (each is one ``tags`` parameter).
LOOKUP_BATCH = 100
#: ``POST /memory`` requests in flight at once when storing several memories in AutoMem.
PARALLEL_POSTS = 4

# Parameters that turn off AutoMem's recall extras that drop or add candidates.
_PLAIN_RECALL = {
    "tag_mode": "all",
    "tag_match": "exact",
    "adaptive_floor": "false",
    "min_score": "0",
    "state_mode": "history",
    "recency_bias": "off",
    "expand_relations": "false",
    "expand_entities": "false",
    "auto_decompose": "false",
}

T = TypeVar("T")


def _batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _links(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The links an AutoMem memory's block records (those the memory starts)."""
    links = (wire.read_block(item) or {}).get("links")
    return [link for link in links if isinstance(link, dict)] if isinstance(links, list) else []


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _link_time(link: Mapping[str, Any]) -> Any:
    """When a block's link was made, or None when it does not say (or says nonsense)."""
    try:
        return timestamp(link["created_at"], "created_at") if link.get("created_at") else None
    except ValueError:
        return None


class _Retryable(Exception):
    """A failure worth retrying (network error, timeout, 5xx), carrying the typed error."""

    def __init__(self, error: MemoryDriverError) -> None:
        super().__init__(str(error))
        self.error = error


class AutoMemDriver(BaseMemoryDriver):
    """Memories in AutoMem (or ``memory-drivers serve``), through its REST API."""

    name = "automem"
    native_async = True  # the async API talks to AutoMem with httpx's AsyncClient

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
        self.url = s.automem_url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"AUTOMEM_URL must be an http:// or https:// URL, got {s.automem_url!r}"
            )
        headers = {"Accept": "application/json"}
        if s.automem_api_token is not None:
            headers["Authorization"] = f"Bearer {s.automem_api_token.get_secret_value()}"
        self._timeout = s.automem_timeout
        self._client_options: dict[str, Any] = {
            "base_url": self.url,
            "headers": headers,
            "timeout": httpx.Timeout(s.automem_timeout, connect=min(s.automem_timeout, 10.0)),
        }
        self._http = httpx.Client(**self._client_options)
        #: the async API's clients, one per event loop
        self._async_http = bridge.PerLoop(
            lambda: httpx.AsyncClient(**self._client_options), lambda client: client.aclose()
        )
        self._service: dict[str, Any] | None = None  # its /health answer, read once
        try:
            self._attach_embedder()
        except BaseException:
            self._http.close()
            raise

    # ------------------------------------------------------------------ HTTP
    def _error(self, method: str, path: str, response: httpx.Response) -> MemoryDriverError:
        """The typed error for an answer that is not a success, with AutoMem's message."""
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        message = ""
        if isinstance(body, dict):
            message = str(body.get("message") or body.get("detail") or body.get("error") or "")
        message = message or response.text[:300] or response.reason_phrase
        where = f"AutoMem at {self.url} answered {method} {path} with {status}: {message}"
        if status in (400, 413, 414, 422):
            return ValidationError(where)
        if status in (401, 403):
            return ConfigurationError(f"{where}. Check AUTOMEM_API_TOKEN.")
        if status == 404:
            return NotFoundError(where)
        if status in (405, 501):
            return ConfigurationError(f"{where}. This AutoMem does not offer {method} {path}.")
        if status == 409:
            return ConflictError(where)
        return BackendUnavailableError(where)

    def _send(
        self, method: str, path: str, params: Mapping[str, Any] | None, body: Any
    ) -> tuple[int, Any]:
        """One request: the status and JSON body of a success; raises the typed error, wrapped
        in :class:`_Retryable` when trying again may help."""
        try:
            if bridge.active():  # a call of the async API: await on the event loop
                response = bridge.wait_for(
                    self._async_http.get().request(method, path, params=params, json=body)
                )
            else:
                response = self._http.request(method, path, params=params, json=body)
        except httpx.TimeoutException as exc:
            raise _Retryable(
                BackendUnavailableError(
                    f"AutoMem at {self.url} did not answer {method} {path} within "
                    f"{self._timeout:g}s (AUTOMEM_TIMEOUT): {type(exc).__name__}"
                )
            ) from exc
        except httpx.TransportError as exc:
            raise _Retryable(
                BackendUnavailableError(
                    f"cannot reach AutoMem at {self.url} ({method} {path}): {exc}. Is it "
                    "running, and is AUTOMEM_URL right?"
                )
            ) from exc
        if response.status_code >= 500:
            raise _Retryable(self._error(method, path, response))
        if response.status_code >= 300:
            raise self._error(method, path, response)
        try:
            return response.status_code, response.json()
        except ValueError:
            raise BackendUnavailableError(
                f"AutoMem at {self.url} answered {method} {path} with {response.status_code} "
                f"but not with JSON: {response.text[:200]!r}"
            ) from None

    def _retrying(
        self, attempt: Callable[[], T], done: Callable[[], bool] | None = None
    ) -> T | None:
        """Run ``attempt``, retrying network errors and 5xx answers with exponential backoff.

        ``done`` is asked before each retry of a write that is not idempotent: when it says the
        write arrived after all, the write is not sent again (and None is returned).
        """
        s = self.settings
        delay = s.automem_retry_backoff
        for number in range(s.automem_max_retries + 1):
            try:
                return attempt()
            except _Retryable as failure:
                if number == s.automem_max_retries:
                    tries = s.automem_max_retries + 1
                    raise type(failure.error)(
                        f"{failure.error} (tried {tries} time{'s' if tries > 1 else ''})"
                    ) from failure.__cause__
                log.warning("%s; retrying in %.2fs", failure.error, delay)
                bridge.sleep(delay)
                delay *= 2
                if done is not None and done():
                    return None
        raise AssertionError("unreachable")  # pragma: no cover

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> dict[str, Any]:
        """An idempotent request (GET, PATCH, DELETE, the MERGE of /associate), retried."""
        result = self._retrying(lambda: self._send(method, path, params, json))
        assert result is not None
        body = result[1]
        if not isinstance(body, dict):
            raise BackendUnavailableError(
                f"AutoMem at {self.url} answered {method} {path} with {type(body).__name__}, "
                "not a JSON object"
            )
        return body

    # ------------------------------------------------------------------ reading
    def _decode_memory(self, item: Mapping[str, Any]) -> Memory | None:
        block = wire.read_block(item)
        if block is None or block.get("kind") != "memory":
            return None
        try:
            return wire.memory_from_block(block, self.limits)
        except ValueError as exc:
            log.warning("skipping AutoMem memory %s with a broken block: %s", item.get("id"), exc)
            return None

    def _decode_chunk(self, item: Mapping[str, Any]) -> KnowledgeChunk | None:
        block = wire.read_block(item)
        if block is None or block.get("kind") != "knowledge":
            return None
        try:
            return wire.chunk_from_block(block)
        except ValueError as exc:
            log.warning("skipping AutoMem memory %s with a broken block: %s", item.get("id"), exc)
            return None

    def _by_tag(self, tags: Sequence[str]) -> Iterator[dict[str, Any]]:
        """Every AutoMem memory with any of ``tags``, page by page."""
        offset = 0
        while True:
            params = {"tags": list(tags), "limit": wire.AUTOMEM_BY_TAG_LIMIT, "offset": offset}
            body = self._request("GET", "/memory/by-tag", params=params)
            items = [item for item in body.get("memories") or [] if isinstance(item, dict)]
            yield from items
            if not body.get("has_more") or not items:
                return
            offset += len(items)

    def _find(self, ids: Iterable[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """Our id -> (AutoMem's id, the AutoMem memory) for the ids that exist (memories,
        knowledge chunks)."""
        wanted = list(dict.fromkeys(ids))
        found: dict[str, tuple[str, dict[str, Any]]] = {}
        for batch in _batched(wanted, LOOKUP_BATCH):
            for item in self._by_tag([wire.id_tag(i) for i in batch]):
                block = wire.read_block(item) or {}
                our_id = block.get("id")
                if our_id in batch and item.get("id") is not None:
                    found[str(our_id)] = (str(item["id"]), item)
        return found

    def _find_memories(
        self, ids: Iterable[str], user_id: str | None
    ) -> dict[str, tuple[str, dict[str, Any], Memory]]:
        found = {}
        for our_id, (automem_id, item) in self._find(ids).items():
            memory = self._decode_memory(item)
            if memory is not None and (user_id is None or memory.user_id == user_id):
                found[our_id] = (automem_id, item, memory)
        return found

    def _scope_tag(self, user_id: str | None) -> str:
        return wire.user_tag(user_id) if user_id is not None else wire.MEMORY_TAG

    def _all_memories(self, user_id: str | None, tag: str | None = None) -> list[Memory]:
        """Every memory (of ``user_id``), listed through ``/memory/by-tag``."""
        memories: dict[str, Memory] = {}
        for item in self._by_tag([tag or self._scope_tag(user_id)]):
            memory = self._decode_memory(item)
            if memory is not None and (user_id is None or memory.user_id == user_id):
                memories[memory.id] = memory
        return list(memories.values())

    # ------------------------------------------------------------------ writing
    def _check_writable(self, memory: Memory, where: str = "") -> None:
        """What AutoMem would refuse, or accept and then get wrong, refused before sending."""
        length = len(memory.content.strip())
        if length > wire.AUTOMEM_CONTENT_LIMIT:
            raise ValidationError(
                f"{where}content is {length} characters long; AutoMem stores at most "
                f"{wire.AUTOMEM_CONTENT_LIMIT} (its MEMORY_CONTENT_HARD_LIMIT). Split it into "
                "several memories, or store it as global knowledge, which is chunked."
            )
        for tag in memory.tags:
            if tag.strip().lower().startswith(wire.RESERVED_PREFIX):
                raise ValidationError(
                    f"{where}the tag {tag!r} is in the {wire.RESERVED_PREFIX!r} namespace, which "
                    "the automem driver reserves for its own tags"
                )
        if wire.BLOCK_KEY in memory.metadata:
            raise ValidationError(
                f"{where}the metadata key {wire.BLOCK_KEY!r} is reserved by the automem driver"
            )

    def _service_health(self) -> dict[str, Any]:
        """The service's ``/health`` answer, asked once per driver: its vector size, and whether
        it is ``memory-drivers serve``."""
        if self._service is None:
            self._service = self._request("GET", "/health")
        return self._service

    def _check_vector_size(self) -> None:
        """Refuse to write when AutoMem's vectors have another size than the embedder's (AutoMem
        would answer 400 to every write)."""
        sizes = self._service_health().get("vector_dimensions") or {}
        size = sizes.get("collection") or sizes.get("effective") or sizes.get("configured")
        if isinstance(size, int) and size != self.embedder.dimension:
            self._service = None  # asked again next time: AutoMem may be reconfigured
            raise ConfigurationError(
                f"AutoMem at {self.url} keeps {size}-dimensional vectors, but the embedder "
                f"{self.embedder.name!r} makes {self.embedder.dimension}-dimensional ones. Run "
                f"AutoMem with VECTOR_SIZE={self.embedder.dimension} (a new Qdrant collection), "
                "or configure an embedder of its size (EMBEDDING_PROVIDER, EMBEDDING_MODEL)."
            )

    def _post_new(self, payloads: Sequence[dict[str, Any]], ids: Sequence[str]) -> None:
        """Store new AutoMem memories (each carrying one of our ``ids`` and its vector), all or
        none: on a failure the ones this call stored are deleted again.

        AutoMem gets one ``POST /memory`` each, as its batch endpoint ignores ``embedding`` (it
        embeds with its own model); ``memory-drivers serve``, which embeds with the same model
        as the driver, gets batches of 500, each stored in one transaction. A failed attempt
        is retried only with what did not arrive, so a retry never stores a memory twice
        (AutoMem would give the copy a new id).
        """
        self._check_vector_size()
        size = wire.AUTOMEM_BATCH_LIMIT if self._service_health().get("memory_drivers") else 1
        pending = list(zip(ids, payloads, strict=True))
        stored: list[str] = []  # AutoMem's ids of what this call stored

        def attempt() -> None:
            nonlocal pending
            if size == 1 and len(pending) > 1:
                # its threads wait with the sync client: in a worker thread in a native call
                pending, failure = bridge.blocking(self._post_each, pending, stored)
                if failure is not None:
                    raise failure
            while pending:
                batch = pending[:size]
                if len(batch) == 1:
                    _, body = self._send("POST", "/memory", None, batch[0][1])
                    stored.append(str(body.get("memory_id")))
                else:
                    memories = {"memories": [p for _, p in batch]}
                    _, body = self._send("POST", "/memory/batch", None, memories)
                    stored.extend(str(i) for i in body.get("memory_ids") or [])
                pending = pending[size:]

        def arrived() -> bool:
            nonlocal pending
            there = self._find(i for i, _ in pending)
            stored.extend(automem_id for automem_id, _ in there.values())
            pending = [(i, p) for i, p in pending if i not in there]
            return not pending

        try:
            self._retrying(attempt, done=arrived)
        except MemoryDriverError:
            for automem_id in stored:
                try:
                    self._request("DELETE", f"/memory/{automem_id}")
                except MemoryDriverError as exc:
                    log.error(
                        "could not remove %s, stored by a write that failed: %s", automem_id, exc
                    )
            raise

    def _post_each(
        self, pending: list[tuple[str, dict[str, Any]]], stored: list[str]
    ) -> tuple[list[tuple[str, dict[str, Any]]], Exception | None]:
        """``POST /memory`` each of ``pending``, :data:`PARALLEL_POSTS` at a time, adding
        AutoMem's ids to ``stored``: what did not arrive, and the first failure."""
        with ThreadPoolExecutor(PARALLEL_POSTS) as pool:
            sent = [(i, pool.submit(self._send, "POST", "/memory", None, i[1])) for i in pending]
        failed: list[tuple[str, dict[str, Any]]] = []
        first: Exception | None = None
        for item, answer in sent:
            try:
                stored.append(str(answer.result()[1].get("memory_id")))
            except (_Retryable, MemoryDriverError) as exc:
                failed.append(item)
                first = first or exc
        return failed, first

    def _delete_ids(self, ids: Sequence[str]) -> None:
        for batch in _batched(list(ids), LOOKUP_BATCH):
            params = {"tags": [wire.id_tag(i) for i in batch]}
            self._request("DELETE", "/memory/by-tag", params=params)

    def _insert_memories(self, records: Sequence[MemoryRecord]) -> None:
        memories = [r.memory for r in records]
        for index, memory in enumerate(memories):
            self._check_writable(memory, f"item #{index}: " if len(memories) > 1 else "")
        taken = sorted(self._find(m.id for m in memories))
        if taken:
            raise ConflictError(
                f"a memory with id {taken[0]} already exists ({len(taken)} of the ids given "
                "are taken); nothing was stored. Leave id out to get a new one."
            )
        ids = [m.id for m in memories]
        self._post_new([wire.memory_payload(r.memory, None, r.vector) for r in records], ids)

    def _get_memories(self, ids: Sequence[str], user_id: str | None) -> dict[str, Memory]:
        return {mid: found[2] for mid, found in self._find_memories(ids, user_id).items()}

    @staticmethod
    def _automem_extras(item: Mapping[str, Any], block: Mapping[str, Any]) -> dict[str, Any]:
        """Metadata that AutoMem itself added (enrichment, summaries): kept on updates."""
        metadata = item.get("metadata")
        if not isinstance(metadata, dict):
            return {}
        ours = block.get("metadata")
        ours = ours if isinstance(ours, dict) else {}
        return {k: v for k, v in metadata.items() if k != wire.BLOCK_KEY and k not in ours}

    def _patch(
        self,
        automem_id: str,
        item: Mapping[str, Any],
        memory: Memory,
        links: list[dict[str, Any]] | None = None,
        *,
        content: bool = False,
    ) -> None:
        """Write ``memory`` over the AutoMem memory ``automem_id`` (tags, importance, type,
        metadata with the block, times; ``links`` replaces the links its block records).
        Content only with ``content``: AutoMem embeds new content with its own model, so for
        AutoMem :meth:`_replace` writes it."""
        block = wire.read_block(item) or {}
        if links is None and isinstance(block.get("links"), list):
            links = block["links"]
        payload = wire.memory_payload(memory, links)
        body = {
            "tags": payload["tags"],
            "importance": payload["importance"],
            "type": payload["type"],
            "updated_at": payload["updated_at"],
            "metadata": {**self._automem_extras(item, block), **payload["metadata"]},
        }
        if content:
            body["content"] = payload["content"]
        self._request("PATCH", f"/memory/{automem_id}", json=body)

    def _update_memory(
        self,
        memory_id: str,
        user_id: str | None,
        changes: Mapping[str, Any],
        vector: np.ndarray | None,
        terms: str | None,
    ) -> Memory | None:
        found = self._find_memories([memory_id], user_id).get(memory_id)
        if found is None:
            return None
        automem_id, item, current = found
        updated = current.model_copy(update=dict(changes))
        self._check_writable(updated)
        if updated.content == current.content:
            self._patch(automem_id, item, updated)
        elif self._service_health().get("memory_drivers"):
            # `memory-drivers serve` embeds new content with the store's embedder, which the
            # stamp makes the same as this driver's.
            self._patch(automem_id, item, updated, content=True)
        else:
            assert vector is not None  # the shared update embeds changed content
            self._replace(automem_id, item, updated, vector)
        return updated

    def _replace(
        self, automem_id: str, item: Mapping[str, Any], memory: Memory, vector: np.ndarray
    ) -> None:
        """Write ``memory`` with new content and its vector: stored anew, AutoMem's links of
        the old one made again, then the old one deleted.

        AutoMem's ``PATCH`` would embed new content with AutoMem's own model (it takes no
        ``embedding``), and a ``POST`` always makes a new AutoMem id, so this is the one way to
        keep the driver's vector. Readers see the old or the new memory meanwhile; a failure
        before the old one is deleted removes the new one again.
        """
        self._check_vector_size()
        block = wire.read_block(item) or {}
        links = block.get("links") if isinstance(block.get("links"), list) else None
        payload = wire.memory_payload(memory, links, vector)
        payload["metadata"] = {**self._automem_extras(item, block), **payload["metadata"]}
        related = self._related(memory.id, None)
        others = self._find(r.memory.id for r in related)

        def stored_copy() -> str | None:
            copies = self._by_tag([wire.id_tag(memory.id)])
            return next((str(i["id"]) for i in copies if str(i.get("id")) != automem_id), None)

        answer = self._retrying(
            lambda: self._send("POST", "/memory", None, payload), done=lambda: bool(stored_copy())
        )
        new_id = str(answer[1].get("memory_id")) if answer else stored_copy()
        if not new_id:
            raise BackendUnavailableError(f"AutoMem at {self.url} did not say which id it gave")
        try:
            for link in related:
                other = others.get(link.memory.id)
                if other is None:
                    continue
                ends = (new_id, other[0]) if link.direction == "outgoing" else (other[0], new_id)
                self._request(
                    "POST",
                    "/associate",
                    json={
                        "memory1_id": ends[0],
                        "memory2_id": ends[1],
                        "type": link.relationship_type,
                        "strength": link.strength,
                    },
                )
            self._request("DELETE", f"/memory/{automem_id}")
        except MemoryDriverError:
            try:
                self._request("DELETE", f"/memory/{new_id}")
            except MemoryDriverError as exc:
                log.error(
                    "could not remove the new copy %s of memory %s: %s", new_id, memory.id, exc
                )
            raise

    def _delete_memories(self, ids: Sequence[str], user_id: str | None) -> list[str]:
        found = list(self._find_memories(ids, user_id))
        if found:
            self._delete_ids(found)
        return found

    # ------------------------------------------------------------------ recall
    @staticmethod
    def _query_params(text: str | None, vector: np.ndarray) -> dict[str, str]:
        """The query's vector (AutoMem searches with it instead of embedding the text with its
        own model, which would not match the stored vectors) and its text (for AutoMem's
        keyword signals)."""
        params = {"embedding": ",".join(format(float(x), ".9g") for x in vector)}
        if text is not None:
            params["query"] = text
        return params

    def _results(self, body: Mapping[str, Any]) -> list[tuple[dict[str, Any], Any]]:
        """The AutoMem memories of a recall answer with their scores, merged ones included.

        AutoMem merges results whose content has the same fingerprint (case, punctuation and
        spacing aside) into the best one, which lists every merged id in ``deduped_from``; it
        reports them in ``dedup_removed`` only sometimes. The merged ones are read back here and
        get the score of the one they were merged into.
        """
        found: list[tuple[dict[str, Any], Any]] = []
        copies: list[tuple[str, Any]] = []
        for result in body.get("results") or []:
            if not isinstance(result, dict) or not isinstance(result.get("memory"), dict):
                continue
            score = result.get("final_score", result.get("score"))
            found.append((result["memory"], score))
            own = {str(result.get("id")), str(result["memory"].get("id"))}
            merged = result.get("deduped_from")
            if isinstance(merged, list):
                # AutoMem names a merged result by its id, or by a fingerprint when it has none
                copies += [(str(o), score) for o in merged if str(o) not in own and _is_uuid(o)]
        for automem_id, score in dict(copies).items():
            try:
                memory = self._request("GET", f"/memory/{automem_id}").get("memory")
            except NotFoundError:  # deleted in between
                continue
            if isinstance(memory, dict):
                found.append((memory, score))
        return found

    @staticmethod
    def _narrowing_tags(f: MemoryFilter) -> list[str]:
        """Convention tags every match carries: AutoMem filters on them (tag_mode=all,
        exact). Filters that are not tags here are applied after (:meth:`MemoryFilter.matches`)."""
        tags = [wire.user_tag(f.user_id) if f.user_id is not None else wire.MEMORY_TAG]
        if f.conversation_id is not None:
            tags.append(wire.conversation_tag(f.conversation_id))
        if f.memory_types is not None and len(f.memory_types) == 1:
            tags.append(wire.type_tag(f.memory_types[0]))
        if f.tags is not None and (f.tag_mode == "all" or len(f.tags) == 1):
            tags += [wire.tag_tag(tag) for tag in f.tags]
        for key, value in (f.metadata or {}).items():
            tag = wire.meta_tag(key, value)
            if tag is not None:
                tags.append(tag)
        return tags

    def _window(
        self, f: MemoryFilter, query: Mapping[str, str] | None
    ) -> tuple[list[tuple[Memory, float | None]], bool, bool]:
        """AutoMem's recall window for ``f``: (memory, AutoMem's score) pairs, whether it holds
        every candidate, and whether AutoMem removed duplicate contents from it."""
        params: dict[str, Any] = {
            **_PLAIN_RECALL,
            "tags": self._narrowing_tags(f),
            "limit": wire.AUTOMEM_RECALL_LIMIT,
            "sort": "score" if query else "time_desc",
            **(query or {}),
        }
        if f.since is not None:
            params["start"] = wire.iso(f.since)
        if f.until is not None:
            params["end"] = wire.iso(f.until)  # AutoMem's end is inclusive; matches() is not
        body = self._request("GET", "/recall", params=params)
        results = self._results(body)
        removed = int(body.get("dedup_removed") or 0)
        complete = len(results) + removed < wire.AUTOMEM_RECALL_LIMIT
        window: dict[str, tuple[Memory, float | None]] = {}
        for item, score in results:
            memory = self._decode_memory(item)
            if memory is None or memory.id in window:
                continue
            window[memory.id] = (memory, float(score) if score is not None else None)
        return list(window.values()), complete, bool(removed)

    def _search_memories(self, search: MemorySearch) -> list[RecallHit]:
        f = search.filter
        if search.mode == "keyword":
            return self._keyword_search(search)
        if search.mode in ("vector", "hybrid"):
            # Hybrid search is AutoMem's own: its recall blends vector, keyword and graph
            # signals (docs/drivers/automem.md), so scores are AutoMem's.
            assert search.vector is not None
            window, _, _ = self._window(f, self._query_params(search.text, search.vector))
            # AutoMem returns its blended score, not its parts: an explanation names the mode.
            explained = Explanation(search="hybrid") if search.details is not None else None
            if search.mode == "vector":
                explained = None
            hits = [
                RecallHit(memory=m, score=s, explanation=explained)
                for m, s in window
                if f.matches(m) and s is not None
            ]
            return sorted(hits, key=hit_order)[: search.top_k]
        window, complete, deduplicated = self._window(f, None)
        candidates = [m for m, _ in window if f.matches(m)]
        if not complete and not self._newest_are_exact(search, window, candidates, deduplicated):
            tag = wire.conversation_tag(f.conversation_id) if f.conversation_id else None
            candidates = [m for m in self._all_memories(f.user_id, tag) if f.matches(m)]
        hits = [RecallHit(memory=m, score=None) for m in candidates]
        hits.sort(key=hit_order)
        return hits if search.top_k is None else hits[: search.top_k]

    def _keyword_search(self, search: MemorySearch) -> list[RecallHit]:
        """BM25 with conversation context, computed here over all of the user's memories
        (context reaches past the filter, and AutoMem has no BM25)."""
        f = search.filter
        assert search.terms
        everyone = self._all_memories(f.user_id)
        scope = [m for m in everyone if f.matches(m)]
        indexed = indexed_terms_of(everyone, self.context_window)
        evidence = evidence_from_memories(scope, indexed, search.terms)
        ranked = rank_keyword(search.terms, evidence, self.ranking, search.top_k, search.details)
        by_id = {m.id: m for m in scope}
        hits = [
            RecallHit(memory=by_id[key], score=score, explanation=search.explanation(key))
            for key, score in ranked
        ]
        hits.sort(key=hit_order)
        return hits if search.top_k is None else hits[: search.top_k]

    @staticmethod
    def _newest_are_exact(
        search: MemorySearch,
        window: Sequence[tuple[Memory, float | None]],
        candidates: Sequence[Memory],
        deduplicated: bool,
    ) -> bool:
        """A full window holds the newest memories (AutoMem picks it by creation time), so the
        newest ``top_k`` that pass are exact when the last of them is newer than anything the
        window may have left out."""
        if search.mode != "recent" or search.top_k is None or deduplicated or not window:
            return False
        if len(candidates) < search.top_k:
            return False
        ordered = sorted(candidates, key=lambda m: (-m.created_at.timestamp(), m.id))
        oldest_in_window = min(m.created_at for m, _ in window)
        return ordered[search.top_k - 1].created_at > oldest_in_window

    def _count_memories(self, user_id: str | None) -> int:
        return len(self._all_memories(user_id))

    def _iter_memories(self, user_id: str | None, batch_size: int) -> Iterator[Memory]:
        yield from sorted(self._all_memories(user_id), key=lambda m: (m.created_at, m.id))

    # ------------------------------------------------------------------ knowledge
    def _chunks(self, tag: str) -> list[KnowledgeChunk]:
        chunks: dict[str, KnowledgeChunk] = {}
        for item in self._by_tag([tag]):
            chunk = self._decode_chunk(item)
            if chunk is not None:
                chunks[chunk.id] = chunk
        return list(chunks.values())

    def _replace_knowledge(self, doc_id: str, records: Sequence[KnowledgeRecord]) -> None:
        chunks = [r.chunk for r in records]
        if any(wire.BLOCK_KEY in c.metadata for c in chunks):
            raise ValidationError(
                f"the metadata key {wire.BLOCK_KEY!r} is reserved by the automem driver"
            )
        old = [c.id for c in self._chunks(wire.doc_tag(doc_id)) if c.doc_id == doc_id]
        ids = [c.id for c in chunks]
        self._post_new([wire.chunk_payload(r.chunk, r.vector) for r in records], ids)
        stale = [i for i in old if i not in set(ids)]
        if stale:
            self._delete_ids(stale)

    def _get_knowledge(self, doc_id: str) -> list[KnowledgeChunk]:
        return [c for c in self._chunks(wire.doc_tag(doc_id)) if c.doc_id == doc_id]

    def _delete_knowledge(self, doc_id: str) -> bool:
        body = self._request("DELETE", "/memory/by-tag", params={"tags": [wire.doc_tag(doc_id)]})
        return bool(body.get("deleted_count"))

    def _search_knowledge(self, search: KnowledgeSearch) -> list[KnowledgeHit]:
        category, top_k, text, vector = search.category, search.top_k, search.text, search.vector
        if search.mode == "keyword":
            chunks = [
                c
                for c in self._chunks(wire.KNOWLEDGE_TAG)
                if category is None or c.category == category
            ]
            evidence = evidence_of(
                [c.id for c in chunks], [document_terms(c.content) for c in chunks], search.terms
            )
            by_id = {c.id: c for c in chunks}
            ranked = rank_keyword(search.terms, evidence, self.ranking, top_k)
            return [KnowledgeHit(chunk=by_id[key], score=score) for key, score in ranked]
        assert vector is not None  # vector, or hybrid: AutoMem's own ranking
        tags = [wire.KNOWLEDGE_TAG]
        if category is not None:
            tags.append(wire.category_tag(category))
        params = {
            **_PLAIN_RECALL,
            **self._query_params(text, vector),
            "tags": tags,
            "limit": min(top_k, wire.AUTOMEM_RECALL_LIMIT),
        }
        body = self._request("GET", "/recall", params=params)
        hits: dict[str, KnowledgeHit] = {}
        for item, score in self._results(body):
            chunk = self._decode_chunk(item)
            if chunk is None or score is None or (category and chunk.category != category):
                continue
            hits.setdefault(chunk.id, KnowledgeHit(chunk=chunk, score=float(score)))
        return list(hits.values())

    def _iter_knowledge(self, batch_size: int) -> Iterator[KnowledgeChunk]:
        yield from self._chunks(wire.KNOWLEDGE_TAG)

    # ------------------------------------------------------------------ associations
    def _upsert_association(self, association: Association) -> Association:
        source, target = association.source_id, association.target_id
        found = self._find_memories([source, target], None)
        for mid in (source, target):
            if mid not in found:
                raise NotFoundError(f"no memory {mid}")
        source_id, _, memory = found[source]
        current = self._request("GET", f"/memory/{source_id}").get("memory") or {}
        self._request(
            "POST",
            "/associate",
            json={
                "memory1_id": source_id,
                "memory2_id": found[target][0],
                "type": association.relationship_type,
                "strength": association.strength,
                # Not AutoMem's: `memory-drivers serve` keeps it, so imports keep link times.
                "created_at": wire.iso(association.created_at),
            },
        )
        links = _links(current)
        same = [
            link
            for link in links
            if link.get("to") == target and link.get("type") == association.relationship_type
        ]
        # An existing link keeps its time; a new one takes the time given (an import's, or
        # now), which the block records (AutoMem's own relationship time is not read back).
        created = association.created_at
        if same and same[0].get("created_at"):
            created = timestamp(same[0]["created_at"], "created_at")
        kept = [link for link in links if link not in same]
        kept.append(
            {
                "to": target,
                "type": association.relationship_type,
                "strength": association.strength,
                "created_at": wire.iso(created),
            }
        )
        self._patch(source_id, current, memory, links=kept)
        return association.model_copy(update={"created_at": created})

    def _iter_associations(self, batch_size: int) -> Iterator[Association]:
        """Each memory's block records the links it starts; a listing may leave them out
        (``memory-drivers serve`` does), and then the memory is read in full."""
        for item in self._by_tag([wire.MEMORY_TAG]):
            memory = self._decode_memory(item)
            if memory is None:
                continue
            if "links" not in (wire.read_block(item) or {}) and item.get("id") is not None:
                try:
                    item = self._request("GET", f"/memory/{item['id']}").get("memory") or {}
                except NotFoundError:  # deleted in between
                    continue
            for link in _links(item):
                try:
                    yield Association(
                        source_id=memory.id,
                        target_id=str(link.get("to")),
                        relationship_type=str(link.get("type")),
                        strength=float(link.get("strength")),  # type: ignore[arg-type]
                        created_at=timestamp(link.get("created_at"), "created_at"),
                    )
                except (TypeError, ValueError) as exc:
                    log.warning("skipping a broken link of AutoMem memory %s: %s", memory.id, exc)

    def _related(self, memory_id: str, relationship_type: str | None) -> list[RelatedMemory]:
        """Links the memory starts are in its own block; links to it are in the blocks of
        the memories AutoMem lists as related (it lists them without direction, type or
        strength, and summarized, so each is read in full)."""
        found = self._find_memories([memory_id], None).get(memory_id)
        if found is None:
            return []
        automem_id = found[0]
        current = self._request("GET", f"/memory/{automem_id}").get("memory") or {}
        body = self._request(
            "GET",
            f"/memories/{automem_id}/related",
            params={"limit": wire.AUTOMEM_RELATED_LIMIT, "max_depth": 1},
        )
        neighbours: dict[str, tuple[Memory, dict[str, Any]]] = {}
        for summary in body.get("related_memories") or []:
            if not isinstance(summary, dict) or summary.get("id") is None:
                continue
            try:
                item = self._request("GET", f"/memory/{summary['id']}").get("memory") or {}
            except NotFoundError:  # deleted in between
                continue
            memory = self._decode_memory(item)
            if memory is not None:
                neighbours[memory.id] = (memory, item)
        links: list[tuple[str, str, Any, Literal["outgoing", "incoming"], Any]] = [
            (str(link.get("to")), str(link.get("type")), link.get("strength"), "outgoing", link)
            for link in _links(current)
        ]
        for other, (_, item) in neighbours.items():
            links += [
                (other, str(link.get("type")), link.get("strength"), "incoming", link)
                for link in _links(item)
                if link.get("to") == memory_id
            ]
        memories = {mid: pair[0] for mid, pair in neighbours.items()}
        missing = [other for other, *_ in links if other not in memories]
        if missing:
            memories.update(self._get_memories(missing, None))
        return [
            RelatedMemory(
                memory=memories[other],
                relationship_type=rel,
                strength=float(strength),
                direction=direction,
                created_at=_link_time(link),
            )
            for other, rel, strength, direction, link in links
            if other in memories
            and isinstance(strength, int | float)
            and (relationship_type is None or rel == relationship_type)
        ]

    # ------------------------------------------------------------------ store info, vectors
    def _store_info_item(self) -> tuple[str, dict[str, str]] | None:
        for item in self._by_tag([wire.STORE_INFO_TAG]):
            block = wire.read_block(item) or {}
            values = block.get("values")
            if block.get("kind") == "store_info" and isinstance(values, dict):
                return str(item.get("id")), {str(k): str(v) for k, v in values.items()}
        return None

    def _read_store_info(self) -> dict[str, str]:
        found = self._store_info_item()
        return dict(found[1]) if found else {}

    def _write_store_info(self, values: Mapping[str, str]) -> None:
        found = self._store_info_item()
        merged = {**(found[1] if found else {}), **values}
        merged = {k: v for k, v in merged.items() if v}
        if found is None:
            # A fixed vector, so AutoMem does not queue the text for its own model (its health
            # says "degraded" until the queue is done); nothing searches for this memory.
            unit = np.zeros(self.embedder.dimension)
            unit[0] = 1.0
            self._check_vector_size()
            payload = {**wire.store_info_payload(merged), **wire.embedding(unit)}
            self._retrying(
                lambda: self._send("POST", "/memory", None, payload),
                done=lambda: self._store_info_item() is not None,
            )
        else:
            metadata = {wire.BLOCK_KEY: wire.store_info_block(merged)}
            self._request("PATCH", f"/memory/{found[0]}", json={"metadata": metadata})

    def reembed(self, *, batch_size: int = 256, progress: Any = None) -> dict[str, int]:
        """Not possible: AutoMem cannot replace the vector of a stored memory."""
        self._check_open()
        raise ConfigurationError(
            f"the automem driver cannot re-embed: the service at {self.url} cannot replace "
            "the vectors of stored memories. Store them again with the new embedder "
            "(memory-drivers export, then import into a new AutoMem collection); for "
            "`memory-drivers serve`, run `memory-drivers --driver <its driver> reembed` on its "
            "store."
        )

    def _set_vectors(
        self, kind: Literal["memories", "knowledge_chunks"], ids: Sequence[str], vectors: np.ndarray
    ) -> None:
        raise ConfigurationError("the automem driver cannot set vectors; AutoMem embeds itself")

    # ------------------------------------------------------------------ operations
    def _health(self) -> dict[str, Any]:
        body = self._request("GET", "/health")
        status = body.get("status")
        if status not in ("healthy", "degraded"):
            raise BackendUnavailableError(f"AutoMem at {self.url} reports status {status!r}")
        report: dict[str, Any] = {"url": self.url, "automem_status": status}
        if status == "degraded":
            report["status"] = "degraded"
            report["reason"] = self._degraded_because(body)
        if body.get("memory_count") is not None:
            report["automem_memory_count"] = body["memory_count"]
        served_by = (body.get("memory_drivers") or {}).get("driver")
        if served_by:
            report["served_by"] = f"memory-drivers serve ({served_by})"
        return report

    @staticmethod
    def _degraded_because(body: Mapping[str, Any]) -> str:
        """Why AutoMem says it is degraded, from its own health report."""
        reasons = [
            f"{part} is {body.get(part)}"
            for part in ("falkordb", "qdrant")
            if body.get(part) not in (None, "connected", "not used")
        ]
        if body.get("sync_status") == "drift_detected":
            reasons.append(
                f"{body.get('vector_count')} vectors for {body.get('memory_count')} memories "
                "(AutoMem is still embedding some, or lost vectors)"
            )
        return "; ".join(reasons) or "AutoMem reports status 'degraded'"

    def _stats(self) -> dict[str, Any]:
        memories = self._all_memories(None)
        return {
            "url": self.url,
            "memories": len(memories),
            "users": len({m.user_id for m in memories}),
            "knowledge_chunks": len(self._chunks(wire.KNOWLEDGE_TAG)),
        }

    def _close(self) -> None:
        self._http.close()
        self._async_http.close()
