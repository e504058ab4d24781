"""``BaseMemoryDriver``: the public API, its validation, and the primitives a driver implements.

The public methods (``store``, ``recall``, ...) are written once, here: they check every
argument, apply defaults, embed text, and define ordering and scoping. They then call a small set
of primitives (the ``_``-prefixed abstract methods) that a driver implements in its backend's
language. A primitive receives only validated values and must be atomic: either all of its
write happens or none.

Ordering, the same on every driver (docs/semantics.md, "Search modes and scores"):

- hybrid recall (the default): keyword and vector scores standardised over the recall's scope
  and weighted (:mod:`memory_drivers.ranking.hybrid`), highest first;
- vector recall: cosine similarity, highest first;
- keyword recall: BM25 with conversation context (:mod:`memory_drivers.ranking.keyword`),
  highest first;
- no query: newest first;
- ties: newer ``created_at`` first, then ``id`` ascending.

Why this module is long: it is the public API in one place. Every public method, its
validation and defaults, and the list of primitives a driver implements are read together by
anyone writing a driver or a front-end; split across modules, the one semantics would have to be
pieced together again. The rules it applies live in their own modules (``validation``, ``text``,
``models``); what remains here is the order in which the API applies them.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import ValidationError as PydanticValidationError

from . import bridge, metrics
from . import validation as check
from .config import Settings, get_settings
from .embeddings import Embedder, TokenCounter, check_vectors, get_embedder
from .errors import (
    ConfigurationError,
    ConflictError,
    DriverClosedError,
    EmbedderMismatchError,
    EmbeddingError,
    MemoryDriverError,
    NotFoundError,
    ValidationError,
    did_you_mean,
)
from .models import (
    Association,
    CleanupResult,
    Explanation,
    KnowledgeChunk,
    KnowledgeDocument,
    KnowledgeHit,
    KnowledgeSummary,
    Memory,
    MemoryFilter,
    MemoryInput,
    RecallHit,
    RelatedMemory,
    UserSummary,
)
from .ranking import Period, RankingRules, Reranker, find_periods, get_reranker
from .ranking.timeframe import strip_periods
from .text import chunk_text, document_terms, query_terms

__all__ = [
    "ON_CONFLICT",
    "OPERATIONS",
    "RECALL_FILTERS",
    "SEARCH_MODES",
    "BaseMemoryDriver",
    "KnowledgeRecord",
    "KnowledgeSearch",
    "MemoryRecord",
    "MemorySearch",
    "hit_order",
]

log = logging.getLogger(__name__)

#: The keyword-only filters ``recall`` accepts, beyond its positional parameters.
RECALL_FILTERS = (
    "memory_types",
    "tags",
    "tag_mode",
    "exclude_tags",
    "since",
    "until",
    "min_importance",
    "metadata",
)

#: The search modes of ``recall`` and ``recall_global_knowledge``.
SEARCH_MODES = ("hybrid", "vector", "keyword")
SearchMode = Literal["hybrid", "vector", "keyword"]

#: The largest ``batch_size`` of ``iter_memories``.
MAX_BATCH_SIZE = 100_000

#: What an import does with a record whose id (or doc_id) the store already has.
ON_CONFLICT = ("skip", "replace", "fail")
OnConflict = Literal["skip", "replace", "fail"]

_INPUT_FIELDS = tuple(MemoryInput.model_fields)
_INPUT_FIELD_SET = frozenset(_INPUT_FIELDS)


@dataclass(frozen=True)
class MemoryRecord:
    """A validated memory with what a backend indexes: its unit vector and keyword terms."""

    memory: Memory
    vector: np.ndarray
    terms: str


@dataclass(frozen=True)
class KnowledgeRecord:
    """A validated knowledge chunk with what a backend indexes: its unit vector and keyword
    terms."""

    chunk: KnowledgeChunk
    vector: np.ndarray
    terms: str


@dataclass(frozen=True)
class MemorySearch:
    """A validated recall, as drivers receive it.

    ``mode`` is ``"hybrid"`` (``vector`` is set; ``terms`` may be empty), ``"vector"``
    (``vector`` is set), ``"keyword"`` (``terms`` is set) or ``"recent"``. ``text`` is the
    query as given (for backends that embed or parse it themselves). ``top_k=None`` means
    every match (cleanup uses it). ``periods`` are the time expressions of the query and
    ``now`` the time they were resolved against (hybrid search prefers memories in them).
    """

    filter: MemoryFilter
    top_k: int | None
    mode: Literal["hybrid", "vector", "keyword", "recent"]
    vector: np.ndarray | None = None
    terms: tuple[str, ...] | None = None
    text: str | None = None
    periods: tuple[Period, ...] = ()
    now: datetime | None = None
    #: with ``explain=True`` a driver passes this dict to the ranking functions, which put the
    #: parts of each score in it, and attaches them to its hits (:meth:`explanation`)
    details: dict[Any, dict[str, Any]] | None = None

    def explanation(self, key: Any) -> Explanation | None:
        """The parts of the score of the memory the driver knows as ``key`` (when asked)."""
        if self.details is None or key not in self.details:
            return None
        return Explanation.model_validate(self.details[key])


@dataclass(frozen=True)
class KnowledgeSearch:
    """A validated knowledge recall: ``mode`` as for :class:`MemorySearch` (never recent),
    within ``category`` when given."""

    mode: Literal["hybrid", "vector", "keyword"]
    top_k: int
    category: str | None
    text: str
    vector: np.ndarray | None = None
    terms: tuple[str, ...] = ()


def hit_order(hit: RecallHit) -> tuple[float, float, str]:
    """Sort key giving the shared order of recall hits (see the module docstring)."""
    score = -hit.score if hit.score is not None else 0.0
    return (score, -hit.memory.created_at.timestamp(), hit.memory.id)


def _related_order(item: RelatedMemory) -> tuple[float, str, str, float, str]:
    return (
        -item.strength,
        item.relationship_type,
        item.direction,
        -item.memory.created_at.timestamp(),
        item.memory.id,
    )


class BaseMemoryDriver(ABC):
    """One long-term memory API; subclasses implement the primitives for one backend.

    ``settings`` default to :func:`~memory_drivers.config.get_settings`; ``embedder`` defaults
    to the one the settings describe. A store remembers which embedder made its vectors and
    refuses to open with another one (see :meth:`reembed`).
    """

    #: The registry name of the driver ("sqlite", "pgvector", ...).
    name: ClassVar[str] = "base"
    #: Whether :meth:`get_vectors` gives the stored vectors back (AutoMem keeps its own).
    vectors_readable: ClassVar[bool] = False
    #: Whether the driver's I/O goes through :mod:`memory_drivers.bridge` (async I/O awaited on
    #: the event loop in a call of the async API, instead of a worker thread per call).
    native_async: ClassVar[bool] = False

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
        allow_embedder_mismatch: bool = False,
        reranker: Reranker | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self._embedder = embedder
        self._allow_embedder_mismatch = allow_embedder_mismatch
        self._closed = False
        #: the accepted memory types (the settings compute them on every access)
        self._memory_types = frozenset(self.settings.memory_types)
        #: the size limits (docs/semantics.md, "Limits"), read once
        self.limits = check.Limits.from_settings(self.settings)
        #: the ranking settings, read once (memory_drivers.ranking)
        self.ranking = RankingRules.from_settings(self.settings)
        #: memories of a conversation are indexed with this many before them (ranking.context)
        self.context_window = self.settings.context_window
        self._question_words = frozenset(self.settings.keyword_query_stopwords)
        #: the last stage of recall, when one is configured (memory_drivers.ranking.rerank)
        self.reranker = reranker if reranker is not None else get_reranker(self.settings)
        metrics.opened(self)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A driver's own versions of the public methods are measured too (memory_drivers.metrics).
        metrics.observe(cls, OPERATIONS)

    # ------------------------------------------------------------------ embedder
    @property
    def embedder(self) -> Embedder:
        """The embedder this driver embeds with."""
        if self._embedder is None:
            self._embedder = get_embedder(self.settings)
        return self._embedder

    def _attach_embedder(self) -> None:
        """Stamp a new store with the embedder, or check an existing store's stamp.

        Drivers call this once their store is open. ``allow_embedder_mismatch=True`` (given to
        the constructor) skips the check, to open a store for :meth:`reembed`.
        """
        allow_mismatch = self._allow_embedder_mismatch
        info = self._read_store_info()
        current = {"embedder": self.embedder.name, "dimension": str(self.embedder.dimension)}
        if info.get("reembed_target") and not allow_mismatch:
            raise EmbedderMismatchError(
                f"re-embedding this store with {info['reembed_target']!r} was interrupted, so "
                "its vectors are mixed. Finish it with: memory-drivers reembed"
            )
        if "embedder" not in info:
            self._write_store_info(current)
        elif (info["embedder"], info.get("dimension")) != (
            current["embedder"],
            current["dimension"],
        ):
            if allow_mismatch:
                return
            raise EmbedderMismatchError(
                f"this store's vectors were made by {info['embedder']!r} "
                f"({info.get('dimension')} dimensions), but the configured embedder is "
                f"{current['embedder']!r} ({current['dimension']} dimensions). Either configure "
                f"the store's embedder again (EMBEDDING_MODEL / EMBEDDING_PROVIDER), or re-embed "
                "every memory with the new one: memory-drivers reembed"
            )

    def _embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        started = time.perf_counter()
        try:
            vectors = bridge.blocking(self.embedder.embed_documents, list(texts))
        except MemoryDriverError:
            raise
        except Exception as exc:
            raise EmbeddingError(f"embedder {self.embedder.name!r} failed: {exc}") from exc
        metrics.embedded(self.embedder.name, "documents", len(texts), started)
        return check_vectors(vectors, len(texts), self.embedder)

    def _embed_query(self, text: str) -> np.ndarray:
        started = time.perf_counter()
        try:
            vector = bridge.blocking(self.embedder.embed_query, text)
        except MemoryDriverError:
            raise
        except Exception as exc:
            raise EmbeddingError(f"embedder {self.embedder.name!r} failed: {exc}") from exc
        metrics.embedded(self.embedder.name, "query", 1, started)
        return check_vectors(vector, 1, self.embedder)[0]

    # ------------------------------------------------------------------ helpers
    def _check_open(self) -> None:
        if self._closed:
            raise DriverClosedError(
                f"this {self.name} driver was closed; open a new one "
                "(get_memory_driver() returns an open one)"
            )

    def _memory_from_input(self, item: Any) -> Memory:
        if isinstance(item, Memory):
            item = item.__dict__  # its fields (frozen: only read); no model_dump copy
        elif isinstance(item, MemoryInput):
            item = item.model_dump()
        if not isinstance(item, Mapping):
            raise ValidationError(
                f"each item must be a dict, a MemoryInput or a Memory, got {type(item).__name__}"
            )
        if not _INPUT_FIELD_SET.issuperset(item):
            unknown = sorted(item.keys() - _INPUT_FIELD_SET)
            raise ValidationError(
                f"unknown field {unknown[0]!r}.{did_you_mean(str(unknown[0]), _INPUT_FIELDS)} "
                f"Known fields: {', '.join(_INPUT_FIELDS)}"
            )
        s = self.settings
        limits = self.limits
        get = item.get
        created = get("created_at")
        created = check.timestamp(created, "created_at") if created is not None else check.utcnow()
        updated = get("updated_at")
        updated = check.timestamp(updated, "updated_at") if updated is not None else created
        given_id = get("id")
        mid = check.memory_id(given_id, "id") if given_id is not None else str(uuid.uuid4())
        mtype = get("memory_type")
        importance = get("importance")
        tags = get("tags")
        metadata = get("metadata")
        # Every field is checked (and given its exact type) here, in this order (the first
        # error is the one reported), so pydantic's own validation would only repeat it.
        return _new_memory(
            {
                "id": mid,
                "user_id": check.identifier(get("user_id"), "user_id"),
                "conversation_id": check.identifier(
                    get("conversation_id"), "conversation_id", optional=True
                ),
                "content": check.content(get("content"), s.memory_max_content_length),
                "memory_type": check.memory_type(
                    s.memory_default_type if mtype is None else mtype, self._memory_types
                ),
                "tags": [] if tags is None else check.tags(tags, limits=limits),
                "importance": 0.5 if importance is None else check.importance(importance),
                "metadata": {} if metadata is None else check.metadata(metadata, limits=limits),
                "source": check.identifier(get("source"), "source", optional=True),
                "created_at": created,
                "updated_at": updated,
            }
        )

    def _memories_from_items(self, items: Iterable[Any]) -> list[Memory]:
        """Each item of a batch validated into a :class:`Memory` (an error names the item),
        their ids distinct."""
        items = list(items)
        memories = []
        for index, item in enumerate(items):
            try:
                memories.append(self._memory_from_input(item))
            except ValidationError as exc:
                if len(items) == 1:
                    raise
                raise ValidationError(f"item #{index}: {exc}; nothing was stored") from None
        ids = [m.id for m in memories]
        if len(set(ids)) != len(ids):
            duplicate = next(i for i in ids if ids.count(i) > 1)
            raise ValidationError(f"the id {duplicate} appears twice in one batch")
        return memories

    def _filter(self, **values: Any) -> MemoryFilter:
        s = self.settings
        since = values.get("since")
        until = values.get("until")
        since = check.timestamp(since, "since") if since is not None else None
        until = check.timestamp(until, "until") if until is not None else None
        if since is not None and until is not None and since >= until:
            raise ValidationError(
                f"since ({since.isoformat()}) must be before until ({until.isoformat()})"
            )
        tag_mode = values.get("tag_mode", "any")
        if tag_mode not in ("any", "all"):
            raise ValidationError(f"tag_mode must be 'any' or 'all', got {tag_mode!r}")
        min_importance = values.get("min_importance")
        return MemoryFilter(
            user_id=check.identifier(values.get("user_id"), "user_id", optional=True),
            conversation_id=check.identifier(
                values.get("conversation_id"), "conversation_id", optional=True
            ),
            memory_types=check.string_list(
                values.get("memory_types"),
                "memory_types",
                lambda t: check.memory_type(t, s.memory_types, "memory_types item"),
            ),
            tags=check.string_list(
                values.get("tags"),
                "tags",
                lambda t: check.tag(t, "each of tags", self.limits),
                self.limits.max_filter_tags,
                "RECALL_MAX_TAGS",
            ),
            tag_mode=tag_mode,
            exclude_tags=check.string_list(
                values.get("exclude_tags"),
                "exclude_tags",
                lambda t: check.tag(t, "each of exclude_tags", self.limits),
                self.limits.max_exclude_tags,
                "RECALL_MAX_EXCLUDE_TAGS",
            ),
            since=since,
            until=until,
            min_importance=(
                check.importance(min_importance, "min_importance")
                if min_importance is not None
                else None
            ),
            metadata=check.metadata_filter(values.get("metadata"), self.limits),
        )

    # ------------------------------------------------------------------ memories
    def store(
        self,
        user_id: str,
        content: str,
        conversation_id: str | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        memory_type: str | None = None,
        importance: float | None = None,
        source: str | None = None,
    ) -> Memory:
        """Store one memory for ``user_id`` and return it (with its new ``id``)."""
        item = {
            "user_id": user_id,
            "content": content,
            "conversation_id": conversation_id,
            "tags": tags,
            "metadata": metadata,
            "memory_type": memory_type,
            "importance": importance,
            "source": source,
        }
        return self.store_many([item])[0]

    def store_many(self, items: Iterable[Mapping[str, Any] | MemoryInput | Memory]) -> list[Memory]:
        """Store many memories: one batched embedding call, one transaction, all or nothing.

        Each item takes the arguments of :meth:`store`, plus ``id``, ``created_at`` and
        ``updated_at`` for imports. Returns the memories in the order given.
        """
        self._check_open()
        memories = self._memories_from_items(items)
        if not memories:
            return []
        terms = [document_terms(m.content) for m in memories]
        vectors = self._embed_documents([m.content for m in memories])
        records = [MemoryRecord(m, vectors[i], terms[i]) for i, m in enumerate(memories)]
        self._insert_memories(records)
        return memories

    def get(self, memory_id: str, user_id: str | None = None) -> Memory | None:
        """The memory with this id, or None if there is none (or it belongs to another user)."""
        self._check_open()
        mid = check.memory_id(memory_id)
        user = check.identifier(user_id, "user_id", optional=True)
        return self._get_memories([mid], user).get(mid)

    def update(
        self,
        memory_id: str,
        *,
        user_id: str | None = None,
        content: str | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        importance: float | None = None,
        memory_type: str | None = None,
    ) -> Memory:
        """Change the given fields (``tags`` and ``metadata`` are replaced whole).

        A new ``content`` is re-embedded. Raises :class:`NotFoundError` when the memory does not
        exist or belongs to another user.
        """
        self._check_open()
        mid = check.memory_id(memory_id)
        user = check.identifier(user_id, "user_id", optional=True)
        changes: dict[str, Any] = {}
        if content is not None:
            changes["content"] = check.content(content, self.settings.memory_max_content_length)
        if tags is not None:
            changes["tags"] = check.tags(tags, limits=self.limits)
        if metadata is not None:
            changes["metadata"] = check.metadata(metadata, limits=self.limits)
        if importance is not None:
            changes["importance"] = check.importance(importance)
        if memory_type is not None:
            changes["memory_type"] = check.memory_type(memory_type, self.settings.memory_types)
        if not changes:
            current = self._get_memories([mid], user).get(mid)
            if current is None:
                raise NotFoundError(_not_found(mid, user))
            return current
        vector = terms = None
        if "content" in changes:
            terms = document_terms(changes["content"])
            vector = self._embed_documents([changes["content"]])[0]
        changes["updated_at"] = check.utcnow()
        updated = self._update_memory(mid, user, changes, vector, terms)
        if updated is None:
            raise NotFoundError(_not_found(mid, user))
        return updated

    def delete(self, memory_id: str, user_id: str | None = None) -> bool:
        """Delete a memory (and its associations). False if there was none for this user."""
        self._check_open()
        mid = check.memory_id(memory_id)
        user = check.identifier(user_id, "user_id", optional=True)
        return bool(self._delete_memories([mid], user))

    def recall(
        self,
        user_id: str,
        conversation_id: str | None = None,
        query: str | None = None,
        top_k: int = 10,
        use_vector: bool | None = None,
        exclude_tags: list[str] | None = None,
        *,
        search: SearchMode | None = None,
        now: datetime | str | None = None,
        explain: bool = False,
        memory_types: list[str] | None = None,
        tags: list[str] | None = None,
        tag_mode: Literal["any", "all"] = "any",
        since: Any = None,
        until: Any = None,
        min_importance: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        **unknown: Any,
    ) -> list[RecallHit]:
        """Recall up to ``top_k`` of ``user_id``'s memories that pass every filter.

        With a ``query``, ``search`` picks how they are ranked: ``"hybrid"`` (keyword and
        vector scores fused; the default, ``RECALL_SEARCH``), ``"vector"`` (cosine similarity)
        or ``"keyword"`` (BM25). ``use_vector=False`` means keyword search and ``True`` vector
        search, as in the seed signature. Time expressions in the query ("last week") are
        resolved against ``now`` (default: the current time) into a soft preference of hybrid
        search. Without a query the newest come first. Filters apply before ``top_k`` is cut.
        See :class:`~memory_drivers.models.MemoryFilter` for each filter. ``explain=True`` puts
        the parts of each hit's score in ``hit.explanation``.
        """
        self._check_open()
        if unknown:
            name = sorted(unknown)[0]
            known = (
                "conversation_id",
                "query",
                "top_k",
                "use_vector",
                "search",
                "now",
                "explain",
                *RECALL_FILTERS,
            )
            raise ValidationError(
                f"unknown recall filter {name!r}.{did_you_mean(name, known)} "
                f"Known: {', '.join(known)}"
            )
        memory_filter = self._filter(
            user_id=check.identifier(user_id, "user_id"),
            conversation_id=conversation_id,
            memory_types=memory_types,
            tags=tags,
            tag_mode=tag_mode,
            exclude_tags=exclude_tags,
            since=since,
            until=until,
            min_importance=min_importance,
            metadata=metadata,
        )
        k = check.top_k(top_k, maximum=self.limits.max_top_k)
        mode = self._search_mode(search, use_vector)
        if not isinstance(explain, bool):
            raise ValidationError(f"explain must be True or False, got {explain!r}")
        details: dict[Any, dict[str, Any]] | None = {} if explain else None
        moment = check.timestamp(now, "now") if now is not None else None
        if query is None:
            return self._search_memories(MemorySearch(memory_filter, k, "recent"))
        if not isinstance(query, str) or not query.strip():
            raise ValidationError(
                "query must be a non-empty string, or None to list the most recent memories"
            )
        check.plain_text(query, "query")
        depth = k
        if self.reranker is not None:
            depth = max(k, self.settings.rerank_depth)
        if mode == "vector":
            vector = self._embed_query(query)
            hits = self._search_memories(
                MemorySearch(memory_filter, depth, "vector", vector=vector, text=query)
            )
            if explain:
                hits = [
                    h.model_copy(
                        update={"explanation": Explanation(search="vector", cosine=h.score)}
                    )
                    for h in hits
                ]
        elif mode == "keyword":
            terms = self._query_terms(query)
            if not terms:
                return []
            hits = self._search_memories(
                MemorySearch(
                    memory_filter, depth, "keyword", terms=terms, text=query, details=details
                )
            )
        else:
            moment = moment or check.utcnow()
            periods = tuple(find_periods(query, moment))
            terms = self._query_terms(strip_periods(query, periods))
            search_ = MemorySearch(
                memory_filter,
                depth,
                "hybrid",
                vector=self._embed_query(query),
                terms=terms,
                text=query,
                periods=periods,
                now=moment,
                details=details,
            )
            hits = self._search_memories(search_)
        return self._rerank(query, hits, k)

    def _query_terms(self, query: str) -> tuple[str, ...]:
        """The keyword terms of a query, within ``KEYWORD_MAX_QUERY_TERMS``."""
        return check.query_terms(query_terms(query, self._question_words), self.limits)

    def _search_mode(self, search: Any, use_vector: Any) -> SearchMode:
        if use_vector is not None and not isinstance(use_vector, bool):
            raise ValidationError(f"use_vector must be True or False, got {use_vector!r}")
        if search is not None:
            if search not in SEARCH_MODES:
                raise ValidationError(
                    f"search must be one of {', '.join(SEARCH_MODES)}, got {search!r}"
                    f".{did_you_mean(str(search), SEARCH_MODES)}"
                )
            if use_vector is not None and use_vector != (search != "keyword"):
                raise ValidationError(
                    f"use_vector={use_vector} contradicts search={search!r}; give only search"
                )
            return search  # type: ignore[no-any-return]
        if use_vector is not None:
            return "vector" if use_vector else "keyword"
        return self.settings.recall_search

    def _rerank(self, query: str, hits: list[RecallHit], top_k: int) -> list[RecallHit]:
        """The last stage: the reranker's order and scores, when one is configured."""
        if self.reranker is None or not hits:
            return hits[:top_k]
        try:
            contents = [h.memory.content for h in hits]
            scores = list(bridge.blocking(self.reranker.score, query, contents))
        except MemoryDriverError:
            raise
        except Exception as exc:
            raise EmbeddingError(f"reranker {self.reranker.name!r} failed: {exc}") from exc
        if len(scores) != len(hits):
            raise EmbeddingError(
                f"reranker {self.reranker.name!r} returned {len(scores)} scores for "
                f"{len(hits)} candidates"
            )
        reranked = []
        for hit, score in zip(hits, scores, strict=True):
            explanation = hit.explanation
            if explanation is not None:
                explanation = explanation.model_copy(update={"first_stage": hit.score})
            reranked.append(
                RecallHit(memory=hit.memory, score=float(score), explanation=explanation)
            )
        return sorted(reranked, key=hit_order)[:top_k]

    def count(self, user_id: str | None = None) -> int:
        """How many memories ``user_id`` has (every user's when None). Knowledge is separate."""
        self._check_open()
        return self._count_memories(check.identifier(user_id, "user_id", optional=True))

    def iter_memories(
        self, user_id: str | None = None, *, batch_size: int = 500
    ) -> Iterator[Memory]:
        """Every memory (of ``user_id``, or of everyone), oldest first, read in batches."""
        self._check_open()
        user = check.identifier(user_id, "user_id", optional=True)
        size = check.top_k(batch_size, "batch_size", maximum=MAX_BATCH_SIZE, setting=None)
        return self._iter_memories(user, size)

    def list_users(self) -> list[UserSummary]:
        """Every user with memories: their count and newest activity, most recently active
        first (then by ``user_id``). Knowledge has no user and is not counted."""
        self._check_open()
        return sorted(
            self._user_summaries(), key=lambda u: (-u.last_activity.timestamp(), u.user_id)
        )

    def cleanup(
        self,
        user_id: str | None = None,
        max_age_days: float | None = None,
        min_importance: float | None = None,
        dry_run: bool = True,
    ) -> CleanupResult:
        """Remove memories older than ``max_age_days`` and/or with importance below
        ``min_importance`` (both must hold when both are given).

        ``dry_run=True`` (the default) only reports what would go.
        """
        self._check_open()
        user = check.identifier(user_id, "user_id", optional=True)
        if max_age_days is None and min_importance is None:
            raise ValidationError(
                "cleanup needs max_age_days, min_importance or both; it never removes everything"
            )
        until = None
        if max_age_days is not None:
            if (
                isinstance(max_age_days, bool)
                or not isinstance(max_age_days, int | float)
                or not math.isfinite(max_age_days)
                or max_age_days < 0
            ):
                raise ValidationError(f"max_age_days must be a number >= 0, got {max_age_days!r}")
            try:
                until = check.utcnow() - timedelta(days=max_age_days)
            except OverflowError:
                # Before the year 1: no memory is that old, so nothing is selected.
                return CleanupResult(dry_run=dry_run, count=0, memories=[])
        below = (
            check.importance(min_importance, "min_importance")
            if min_importance is not None
            else None
        )
        if not isinstance(dry_run, bool):
            raise ValidationError(f"dry_run must be True or False, got {dry_run!r}")
        memory_filter = MemoryFilter(user_id=user, until=until, importance_below=below)
        hits = self._search_memories(MemorySearch(memory_filter, None, "recent"))
        memories = [hit.memory for hit in hits]
        if not dry_run and memories:
            self._delete_memories([m.id for m in memories], user)
        return CleanupResult(dry_run=dry_run, count=len(memories), memories=memories)

    # ------------------------------------------------------------------ associations
    def associate(
        self,
        memory_id: str,
        related_memory_id: str,
        relationship_type: str = "RELATES_TO",
        strength: float = 0.5,
        user_id: str | None = None,
    ) -> Association:
        """Link ``memory_id`` to ``related_memory_id``. Linking the same pair with the same type
        again updates the strength. Both memories must belong to the same user."""
        self._check_open()
        source = check.memory_id(memory_id)
        target = check.memory_id(related_memory_id, "related_memory_id")
        rel = check.relationship_type(relationship_type)
        value = check.strength(strength)
        user = check.identifier(user_id, "user_id", optional=True)
        if source == target:
            raise ValidationError("a memory cannot be associated with itself")
        found = self._get_memories([source, target], user)
        for mid in (source, target):
            if mid not in found:
                raise NotFoundError(_not_found(mid, user))
        if found[source].user_id != found[target].user_id:
            raise ValidationError("memories of two different users cannot be associated")
        association = Association(
            source_id=source,
            target_id=target,
            relationship_type=rel,
            strength=value,
            created_at=check.utcnow(),
        )
        return self._upsert_association(association)

    def related(
        self,
        memory_id: str,
        relationship_type: str | None = None,
        user_id: str | None = None,
    ) -> list[RelatedMemory]:
        """The memories linked to ``memory_id`` in either direction, strongest first."""
        self._check_open()
        mid = check.memory_id(memory_id)
        rel = check.relationship_type(relationship_type) if relationship_type is not None else None
        user = check.identifier(user_id, "user_id", optional=True)
        if mid not in self._get_memories([mid], user):
            raise NotFoundError(_not_found(mid, user))
        return sorted(self._related(mid, rel), key=_related_order)

    # ------------------------------------------------------------------ global knowledge
    def store_global_knowledge(
        self,
        content: str,
        category: str,
        title: str | None = None,
        doc_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> KnowledgeDocument:
        """Store a document for every user, split into overlapping chunks.

        Storing a ``doc_id`` again replaces all of its chunks. Chunk size and overlap are
        ``KNOWLEDGE_CHUNK_TOKENS`` and ``KNOWLEDGE_CHUNK_OVERLAP`` tokens, and a chunk is never
        longer than the embedding model reads (:meth:`_split_document`). Chunks are embedded
        in batches of ``EMBEDDING_BATCH_SIZE``; ``progress`` is called after each with the
        number of chunks embedded in it and the document's number of chunks.
        """
        self._check_open()
        s = self.settings
        text = check.content(
            content,
            s.knowledge_max_content_length,
            setting="KNOWLEDGE_MAX_CONTENT_LENGTH",
            advice="Split the document into several, or raise KNOWLEDGE_MAX_CONTENT_LENGTH.",
        )
        cat = check.identifier(category, "category")
        if title is not None and (not isinstance(title, str) or not title.strip()):
            raise ValidationError(f"title must be a non-empty string or None, got {title!r}")
        if title is not None and len(title) > 1000:
            raise ValidationError(f"title is {len(title)} characters long; the maximum is 1000")
        if title is not None:
            check.plain_text(title, "title")
        doc = check.identifier(doc_id, "doc_id", optional=True) or str(uuid.uuid4())
        meta = check.metadata(metadata, limits=self.limits)
        pieces = self._split_document(text)
        batch = s.embedding_batch_size
        parts = []
        for start in range(0, len(pieces), batch):
            parts.append(self._embed_documents(pieces[start : start + batch]))
            if progress is not None:
                progress(len(parts[-1]), len(pieces))
        vectors = np.concatenate(parts)
        now = check.utcnow()
        chunks = [
            KnowledgeChunk(
                id=str(uuid.uuid4()),
                doc_id=doc,
                chunk_index=i,
                category=str(cat),
                title=title,
                content=piece,
                metadata=meta,
                created_at=now,
            )
            for i, piece in enumerate(pieces)
        ]
        records = [
            KnowledgeRecord(c, vectors[i], document_terms(c.content)) for i, c in enumerate(chunks)
        ]
        self._replace_knowledge(doc, records)
        return KnowledgeDocument(
            doc_id=doc, category=str(cat), title=title, metadata=meta, chunks=chunks
        )

    def _split_document(self, text: str) -> list[str]:
        """A document's chunks: ``KNOWLEDGE_CHUNK_TOKENS`` words and punctuation marks, or, when
        the embedder tells how its model splits text (a TokenCounter), that many of the model's
        tokens and at most as many as it reads, so no part of a chunk is left out of its vector.
        The overlap is at most half a chunk."""
        s = self.settings
        size, overlap = s.knowledge_chunk_tokens, s.knowledge_chunk_overlap
        embedder = self.embedder
        if not isinstance(embedder, TokenCounter):
            return chunk_text(text, size, overlap)
        try:
            size = max(1, min(size, embedder.max_tokens))
            spans = embedder.token_spans(text)
        except MemoryDriverError:
            raise
        except Exception as exc:
            raise EmbeddingError(f"tokenizer of {embedder.name!r} failed: {exc}") from exc
        return chunk_text(text, size, min(overlap, size // 2), spans)

    def recall_global_knowledge(
        self,
        query: str,
        top_k: int = 5,
        category: str | None = None,
        *,
        search: SearchMode | None = None,
    ) -> list[KnowledgeHit]:
        """The knowledge chunks that best answer ``query``, best first.

        ``search`` is ``"hybrid"``, ``"vector"`` or ``"keyword"`` as for :meth:`recall`
        (default ``RECALL_SEARCH``); the scope is every chunk (of ``category`` when given).
        """
        self._check_open()
        query = check.query(query)
        k = check.top_k(top_k, maximum=self.limits.max_top_k)
        cat = check.identifier(category, "category", optional=True)
        mode = self._search_mode(search, None)
        terms = self._query_terms(query)
        if mode == "keyword" and not terms:
            return []
        vector = self._embed_query(query) if mode != "keyword" else None
        hits = self._search_knowledge(KnowledgeSearch(mode, k, cat, query, vector, terms))
        return sorted(hits, key=lambda h: (-h.score, h.chunk.doc_id, h.chunk.chunk_index))[:k]

    def get_global_knowledge(self, doc_id: str) -> KnowledgeDocument | None:
        """A stored knowledge document with its chunks, or None."""
        self._check_open()
        doc = str(check.identifier(doc_id, "doc_id"))
        chunks = sorted(self._get_knowledge(doc), key=lambda c: c.chunk_index)
        if not chunks:
            return None
        first = chunks[0]
        return KnowledgeDocument(
            doc_id=doc,
            category=first.category,
            title=first.title,
            metadata=first.metadata,
            chunks=chunks,
        )

    def list_global_knowledge(self, category: str | None = None) -> list[KnowledgeSummary]:
        """The stored knowledge documents (of ``category`` when given) without their text,
        ordered by category, then ``doc_id``."""
        self._check_open()
        cat = check.identifier(category, "category", optional=True)
        documents: dict[str, KnowledgeSummary] = {}
        for chunk in self._iter_knowledge(500):
            if cat is not None and chunk.category != cat:
                continue
            known = documents.get(chunk.doc_id)
            if known is not None:
                documents[chunk.doc_id] = known.model_copy(update={"chunks": known.chunks + 1})
                continue
            documents[chunk.doc_id] = KnowledgeSummary(
                doc_id=chunk.doc_id,
                category=chunk.category,
                title=chunk.title,
                chunks=1,
                created_at=chunk.created_at,
            )
        return sorted(documents.values(), key=lambda d: (d.category, d.doc_id))

    def delete_global_knowledge(self, doc_id: str) -> bool:
        """Delete a knowledge document and all its chunks. False if there was none."""
        self._check_open()
        return self._delete_knowledge(str(check.identifier(doc_id, "doc_id")))

    # ------------------------------------------------------------------ moving data
    def store_info(self) -> dict[str, str]:
        """The store's stamp: which embedder made its vectors (``embedder``, ``dimension``)."""
        self._check_open()
        return self._read_store_info()

    def iter_global_knowledge(self, *, batch_size: int = 500) -> Iterator[KnowledgeChunk]:
        """Every knowledge chunk of every document, read in batches (any order)."""
        self._check_open()
        return self._iter_knowledge(
            check.top_k(batch_size, "batch_size", maximum=MAX_BATCH_SIZE, setting=None)
        )

    def iter_associations(self, *, batch_size: int = 500) -> Iterator[Association]:
        """Every association of the store (``created_at`` as stored), read in batches."""
        self._check_open()
        return self._iter_associations(
            check.top_k(batch_size, "batch_size", maximum=MAX_BATCH_SIZE, setting=None)
        )

    def get_vectors(
        self, ids: Sequence[str], kind: Literal["memories", "knowledge_chunks"] = "memories"
    ) -> dict[str, np.ndarray]:
        """The stored unit vectors of these memories (or knowledge chunks), keyed by id.

        Empty for a driver whose backend does not give its vectors back (``automem``).
        """
        self._check_open()
        if kind not in ("memories", "knowledge_chunks"):
            raise ValidationError(f"kind must be 'memories' or 'knowledge_chunks', got {kind!r}")
        wanted = [check.identifier(i, "each of ids") for i in ids]
        return self._read_vectors(kind, wanted) if wanted else {}

    def import_memories(
        self,
        items: Iterable[Mapping[str, Any] | MemoryInput | Memory],
        *,
        vectors: np.ndarray | None = None,
        embedder_name: str | None = None,
        on_conflict: OnConflict = "skip",
    ) -> dict[str, int]:
        """Store memories exactly as they were in another store: ids, ``created_at`` and
        ``updated_at`` kept.

        ``vectors`` (one row per item) are used as they are when ``embedder_name`` and their
        dimension are this driver's embedder's; otherwise the contents are embedded again, in
        one batch. An id that exists already is skipped (``on_conflict="skip"``, the default:
        importing twice changes nothing, and an interrupted import run again finishes the
        job), replaced (``"replace"``; an identical memory is left alone, a replaced one loses
        its associations until they are imported again) or a ``ConflictError`` (``"fail"``,
        before anything is written). Returns ``{"stored", "replaced", "skipped"}`` counts.
        """
        self._check_open()
        mode = _conflict_mode(on_conflict)
        memories = self._memories_from_items(items)
        ids = [m.id for m in memories]
        given = self._usable_vectors(vectors, len(memories), embedder_name)
        existing = self._get_memories(ids, None) if ids else {}
        counts = {"stored": 0, "replaced": 0, "skipped": 0}
        if existing and mode == "fail":
            taken = sorted(existing)
            raise ConflictError(
                f"a memory with id {taken[0]} already exists ({len(taken)} of the ids given are "
                "taken); nothing was stored. Import with on_conflict='skip' or 'replace'."
            )
        keep, replaced = [], []
        for i, memory in enumerate(memories):
            old = existing.get(memory.id)
            if old is None:
                keep.append(i)
            elif mode == "replace" and old != memory:
                keep.append(i)
                replaced.append(memory.id)
            else:
                counts["skipped"] += 1
        if not keep:
            return counts
        chosen = [memories[i] for i in keep]
        terms = [document_terms(m.content) for m in chosen]
        if given is not None:
            rows = given[keep]
        else:
            rows = self._embed_documents([m.content for m in chosen])
        if replaced:
            self._delete_memories(replaced, None)
        self._insert_memories([MemoryRecord(m, rows[i], terms[i]) for i, m in enumerate(chosen)])
        counts["replaced"] = len(replaced)
        counts["stored"] = len(chosen) - len(replaced)
        return counts

    def import_knowledge(
        self,
        chunks: Sequence[KnowledgeChunk | Mapping[str, Any]],
        *,
        vectors: np.ndarray | None = None,
        embedder_name: str | None = None,
        on_conflict: OnConflict = "skip",
    ) -> Literal["stored", "replaced", "skipped"]:
        """Store one knowledge document's chunks exactly as they were in another store (ids,
        chunking and times kept; no re-chunking). ``vectors`` and ``on_conflict`` as for
        :meth:`import_memories`, per document. Returns what happened to the document."""
        self._check_open()
        mode = _conflict_mode(on_conflict)
        try:
            given_order = [KnowledgeChunk.model_validate(c) for c in chunks]
        except PydanticValidationError as exc:
            raise ValidationError(f"not a knowledge chunk: {_first_error(exc)}") from None
        order = sorted(range(len(given_order)), key=lambda i: given_order[i].chunk_index)
        parsed = [
            given_order[i].model_copy(
                update={"created_at": check.timestamp(given_order[i].created_at, "created_at")}
            )
            for i in order
        ]
        if not parsed:
            raise ValidationError("a knowledge document needs at least one chunk")
        doc = str(check.identifier(parsed[0].doc_id, "doc_id"))
        for i, chunk in enumerate(parsed):
            check.memory_id(chunk.id, "chunk id")
            check.identifier(chunk.category, "category")
            check.content(chunk.content, self.settings.knowledge_max_content_length)
            if chunk.doc_id != doc or chunk.chunk_index != i:
                raise ValidationError(
                    f"the chunks of document {doc!r} must share its doc_id and be numbered "
                    f"0..{len(parsed) - 1}; got doc_id {chunk.doc_id!r}, chunk_index "
                    f"{chunk.chunk_index}"
                )
        given = self._usable_vectors(
            None if vectors is None else np.asarray(vectors)[order], len(parsed), embedder_name
        )
        existing = sorted(self._get_knowledge(doc), key=lambda c: c.chunk_index)
        if existing:
            if mode == "fail":
                raise ConflictError(
                    f"a knowledge document {doc!r} already exists; nothing was stored. Import "
                    "with on_conflict='skip' or 'replace'."
                )
            if mode == "skip" or existing == parsed:
                return "skipped"
        rows = given if given is not None else self._embed_documents([c.content for c in parsed])
        self._replace_knowledge(
            doc,
            [KnowledgeRecord(c, rows[i], document_terms(c.content)) for i, c in enumerate(parsed)],
        )
        return "replaced" if existing else "stored"

    def import_associations(
        self, associations: Iterable[Association | Mapping[str, Any]]
    ) -> list[Association]:
        """Create these links with their ``created_at`` (an existing link keeps its own and
        takes the strength given). Both memories must exist and belong to one user. Returns
        the links as stored."""
        self._check_open()
        links = []
        for index, item in enumerate(associations):
            try:
                link = Association.model_validate(item)
                links.append(
                    Association(
                        source_id=check.memory_id(link.source_id, "source_id"),
                        target_id=check.memory_id(link.target_id, "target_id"),
                        relationship_type=check.relationship_type(link.relationship_type),
                        strength=check.strength(link.strength),
                        created_at=check.timestamp(link.created_at, "created_at"),
                    )
                )
            except (ValidationError, PydanticValidationError) as exc:
                reason = _first_error(exc) if isinstance(exc, PydanticValidationError) else exc
                raise ValidationError(f"association #{index}: {reason}") from None
            if links[-1].source_id == links[-1].target_id:
                raise ValidationError(f"association #{index}: a memory cannot link to itself")
        found = self._get_memories(
            list({i for link in links for i in (link.source_id, link.target_id)}), None
        )
        for link in links:
            for mid in (link.source_id, link.target_id):
                if mid not in found:
                    raise NotFoundError(
                        f"association {link.source_id} -> {link.target_id}: no memory {mid}; "
                        "import the memories first"
                    )
            if found[link.source_id].user_id != found[link.target_id].user_id:
                raise ValidationError("memories of two different users cannot be associated")
        return [self._upsert_association(link) for link in links]

    def _usable_vectors(
        self, vectors: np.ndarray | None, count: int, embedder_name: str | None
    ) -> np.ndarray | None:
        """``vectors`` checked and scaled, when they were made by this driver's embedder (same
        name and dimension); None when the texts must be embedded again."""
        if vectors is None or embedder_name != self.embedder.name:
            return None
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != self.embedder.dimension:
            return None
        return check_vectors(array, count, self.embedder)

    # ------------------------------------------------------------------ operations
    def health_check(self) -> dict[str, Any]:
        """``{"status": "ok" | "degraded" | "error", "driver": ..., ...}``; never raises.
        ``degraded``: the backend answers but says part of it is not working (AutoMem's own
        ``degraded``), with the ``reason``."""
        report: dict[str, Any] = {"status": "ok", "driver": self.name}
        if self._closed:
            return {**report, "status": "error", "error": "the driver is closed"}
        try:
            report.update(self._health())
        except Exception as exc:  # a health check reports failures instead of raising them
            log.warning("health check of %s failed: %s", self.name, exc)
            report.update(status="error", error=f"{type(exc).__name__}: {exc}")
        return report

    def stats(self) -> dict[str, Any]:
        """Counts and sizes: memories, users, knowledge, associations, storage."""
        self._check_open()
        return {"driver": self.name, "embedder": self.embedder.name, **self._stats()}

    def rebuild_index(self, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Rebuild derived search indexes from the source of truth, where a driver keeps any.

        ``progress`` is called with the number of rows done after each batch."""
        self._check_open()
        return {"rebuilt": False, "reason": f"the {self.name} driver keeps no derived index"}

    def reembed(self, *, batch_size: int = 256, progress: Any = None) -> dict[str, int]:
        """Re-embed every memory and knowledge chunk with the configured embedder.

        Use it after changing the embedding model. It marks the store first, so an interrupted
        run is refused by other openers until it is run again to the end. ``progress`` is called
        with the number of items done after each batch.
        """
        self._check_open()
        target = self.embedder.name
        self._write_store_info({"reembed_target": target})
        self._before_reembed()
        done = {"memories": 0, "knowledge_chunks": 0}
        sources: tuple[tuple[Literal["memories", "knowledge_chunks"], Iterator[Any]], ...] = (
            ("memories", self._iter_memories(None, batch_size)),
            ("knowledge_chunks", self._iter_knowledge(batch_size)),
        )
        for kind, iterator in sources:
            while batch := list(islice(iterator, batch_size)):
                vectors = self._embed_documents([item.content for item in batch])
                self._set_vectors(kind, [item.id for item in batch], vectors)
                done[kind] += len(batch)
                if progress is not None:
                    progress(len(batch))
        self._write_store_info(
            {"embedder": target, "dimension": str(self.embedder.dimension), "reembed_target": ""}
        )
        self._after_reembed()
        return done

    def close(self) -> None:
        """Release connections and persist what needs persisting. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> BaseMemoryDriver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}{' closed' if self._closed else ''}>"

    # ------------------------------------------------------------------ primitives
    @abstractmethod
    def _read_store_info(self) -> dict[str, str]:
        """The store's stamp (embedder, dimension, ...); empty for a new store."""

    @abstractmethod
    def _write_store_info(self, values: Mapping[str, str]) -> None:
        """Set stamp keys (an empty string removes a key)."""

    @abstractmethod
    def _insert_memories(self, records: Sequence[MemoryRecord]) -> None:
        """Insert all records in one transaction; ``ConflictError`` if an id exists."""

    @abstractmethod
    def _get_memories(self, ids: Sequence[str], user_id: str | None) -> dict[str, Memory]:
        """The memories with these ids (of ``user_id`` when given), keyed by id."""

    @abstractmethod
    def _update_memory(
        self,
        memory_id: str,
        user_id: str | None,
        changes: Mapping[str, Any],
        vector: np.ndarray | None,
        terms: str | None,
    ) -> Memory | None:
        """Apply ``changes`` (field -> value; ``vector``/``terms`` when content changed)."""

    @abstractmethod
    def _delete_memories(self, ids: Sequence[str], user_id: str | None) -> list[str]:
        """Delete these memories (of ``user_id`` when given); return the ids deleted."""

    @abstractmethod
    def _search_memories(self, search: MemorySearch) -> list[RecallHit]:
        """The hits of a validated search, in the shared order, at most ``top_k``."""

    @abstractmethod
    def _count_memories(self, user_id: str | None) -> int:
        """Number of memories (of ``user_id`` when given)."""

    @abstractmethod
    def _iter_memories(self, user_id: str | None, batch_size: int) -> Iterator[Memory]:
        """Every memory, oldest first (``created_at``, then ``id``), fetched in batches."""

    @abstractmethod
    def _replace_knowledge(self, doc_id: str, records: Sequence[KnowledgeRecord]) -> None:
        """Replace every chunk of ``doc_id`` with ``records``, in one transaction."""

    @abstractmethod
    def _get_knowledge(self, doc_id: str) -> list[KnowledgeChunk]:
        """The chunks of ``doc_id``."""

    @abstractmethod
    def _delete_knowledge(self, doc_id: str) -> bool:
        """Delete the chunks of ``doc_id``; True if there were any."""

    @abstractmethod
    def _search_knowledge(self, search: KnowledgeSearch) -> list[KnowledgeHit]:
        """The ``top_k`` best chunks for a validated knowledge search (in its category when
        given), scored as the search mode says, ties at the cut included or not."""

    @abstractmethod
    def _iter_knowledge(self, batch_size: int) -> Iterator[KnowledgeChunk]:
        """Every knowledge chunk, fetched in batches."""

    @abstractmethod
    def _upsert_association(self, association: Association) -> Association:
        """Create the link, or update the strength of an existing one; return it as stored."""

    @abstractmethod
    def _related(self, memory_id: str, relationship_type: str | None) -> list[RelatedMemory]:
        """The links of ``memory_id`` in both directions (any order)."""

    @abstractmethod
    def _set_vectors(
        self, kind: Literal["memories", "knowledge_chunks"], ids: Sequence[str], vectors: np.ndarray
    ) -> None:
        """Replace the vectors of these memories or knowledge chunks (re-embedding)."""

    def _user_summaries(self) -> list[UserSummary]:
        """Each user's memory count and newest ``updated_at``, in any order. By default one
        pass over :meth:`_iter_memories`; a driver may answer it with one query instead."""
        counts: dict[str, int] = {}
        newest: dict[str, datetime] = {}
        for memory in self._iter_memories(None, 1000):
            user = memory.user_id
            counts[user] = counts.get(user, 0) + 1
            if user not in newest or memory.updated_at > newest[user]:
                newest[user] = memory.updated_at
        return [
            UserSummary(user_id=u, memories=n, last_activity=newest[u]) for u, n in counts.items()
        ]

    def _read_vectors(
        self, kind: Literal["memories", "knowledge_chunks"], ids: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """The stored vectors of these ids, keyed by id (missing ids left out). A backend that
        does not give vectors back returns ``{}`` (exports then carry none)."""
        return {}

    def _iter_associations(self, batch_size: int) -> Iterator[Association]:
        """Every association, fetched in batches."""
        raise ConfigurationError(f"the {self.name} driver cannot list its associations")

    def _before_reembed(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Hook for drivers to prepare for vectors of another dimension."""

    def _after_reembed(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Hook for drivers with derived indexes to rebuild after re-embedding."""

    @abstractmethod
    def _health(self) -> dict[str, Any]:
        """Driver details for :meth:`health_check`; raise when the backend is unusable."""

    @abstractmethod
    def _stats(self) -> dict[str, Any]:
        """Counts and sizes for :meth:`stats`."""

    @abstractmethod
    def _close(self) -> None:
        """Release resources."""


_MEMORY_FIELDS = frozenset(Memory.model_fields)
#: Whether a Memory is nothing but its fields (no aliases, extras, private attributes or
#: post-init hook): then :func:`_new_memory` may set them directly.
_PLAIN_MEMORY = (
    Memory.model_config.get("extra") != "allow"
    and not Memory.__private_attributes__
    and not Memory.__pydantic_post_init__
    and not Memory.__pydantic_root_model__
    and all(f.alias is None and f.validation_alias is None for f in Memory.model_fields.values())
)
_set_attribute = object.__setattr__


def _new_memory(fields: dict[str, Any]) -> Memory:
    """A :class:`Memory` of already checked ``fields`` (every one of them): what
    ``Memory.model_construct(**fields)`` makes, about 6x faster (a batch makes thousands).
    It skips model_construct's per-field search for aliases and defaults, which a Memory
    given every field does not need (tests/test_validation.py compares the two)."""
    if not _PLAIN_MEMORY or fields.keys() != _MEMORY_FIELDS:
        return Memory.model_construct(**fields)
    memory = Memory.__new__(Memory)
    _set_attribute(memory, "__dict__", fields)
    _set_attribute(memory, "__pydantic_fields_set__", set(_MEMORY_FIELDS))
    _set_attribute(memory, "__pydantic_extra__", None)
    _set_attribute(memory, "__pydantic_private__", None)
    return memory


def _first_error(exc: PydanticValidationError) -> str:
    """The first problem pydantic found, with the field it is in."""
    error = exc.errors()[0]
    place = ".".join(str(part) for part in error["loc"])
    return f"{place}: {error['msg']}" if place else str(error["msg"])


def _conflict_mode(value: Any) -> OnConflict:
    if value not in ON_CONFLICT:
        raise ValidationError(
            f"on_conflict must be one of {', '.join(ON_CONFLICT)}, got {value!r}"
            f".{did_you_mean(str(value), ON_CONFLICT)}"
        )
    return value  # type: ignore[no-any-return]


#: The public methods measured as operations by :mod:`memory_drivers.metrics`: all but
#: ``close`` and the ``iter_*`` methods (which return at once; the reading happens later).
OPERATIONS = frozenset(
    name
    for name, value in vars(BaseMemoryDriver).items()
    if inspect.isfunction(value) and not name.startswith(("_", "iter_")) and name != "close"
)
metrics.observe(BaseMemoryDriver, OPERATIONS)


def _not_found(memory_id: str, user_id: str | None) -> str:
    owner = f" for user {user_id!r}" if user_id is not None else ""
    return f"no memory {memory_id}{owner}"
