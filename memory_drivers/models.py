"""Typed results and inputs (pydantic, JSON-serializable), and the recall filter.

:class:`MemoryFilter` carries the one definition of what each filter means: ``matches()`` is the
reference every driver's translation (SQL, a Chroma ``where``, AutoMem parameters) must agree
with, and the conformance suite checks drivers against it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "RELATIONSHIP_TYPES",
    "Association",
    "CleanupResult",
    "KnowledgeChunk",
    "KnowledgeDocument",
    "KnowledgeHit",
    "KnowledgeSummary",
    "Memory",
    "MemoryFilter",
    "MemoryInput",
    "RecallHit",
    "RelatedMemory",
    "Scalar",
    "UserSummary",
]

#: Relationship types an application may create (AutoMem's authorable relations).
RELATIONSHIP_TYPES: tuple[str, ...] = (
    "RELATES_TO",
    "LEADS_TO",
    "OCCURRED_BEFORE",
    "PREFERS_OVER",
    "EXEMPLIFIES",
    "CONTRADICTS",
    "REINFORCES",
    "INVALIDATED_BY",
    "EVOLVED_INTO",
    "DERIVED_FROM",
    "PART_OF",
)

Scalar = str | int | float | bool | None


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Memory(_Model):
    """One long-term memory of one user."""

    id: str
    user_id: str
    conversation_id: str | None = None
    content: str
    memory_type: str
    tags: list[str] = Field(default_factory=list)
    importance: float
    metadata: dict[str, Any] = Field(default_factory=dict)
    source: str | None = None
    created_at: datetime
    updated_at: datetime


class MemoryInput(BaseModel):
    """What ``store_many`` takes per item (a dict with these keys, or a :class:`Memory`, works too).

    ``id``, ``created_at`` and ``updated_at`` are for imports (moving memories between stores);
    leave them out and the driver assigns them.
    """

    model_config = ConfigDict(extra="forbid")

    user_id: Any
    content: Any
    conversation_id: Any = None
    tags: Any = None
    metadata: Any = None
    memory_type: Any = None
    importance: Any = None
    source: Any = None
    id: Any = None
    created_at: Any = None
    updated_at: Any = None


class Explanation(_Model):
    """Why a memory came back: the parts of its score (docs/semantics.md, "Search modes and
    scores"). Parts a search mode does not use are None."""

    #: the search mode that scored it: "hybrid", "vector" or "keyword"
    search: str
    #: the query's keyword terms the memory is indexed with (its own words and its context)
    terms: list[str] = []
    #: the keyword score: BM25 plus the neighbour share
    keyword: float | None = None
    #: the part of ``keyword`` that came from a neighbouring memory of the conversation
    neighbour: float | None = None
    #: hybrid: the keyword score divided by the query's keyword weight
    coverage: float | None = None
    #: the cosine similarity of the query's and the memory's embeddings
    cosine: float | None = None
    #: hybrid: what the time preference (time expressions, recency) added
    time: float | None = None
    #: the score before a reranker re-scored it (None without a reranker)
    first_stage: float | None = None


class RecallHit(_Model):
    """A recalled memory and its score.

    ``score`` is the hybrid score for hybrid recall (the default), the cosine similarity for
    vector recall (in [-1, 1]), the BM25 keyword score for keyword recall (higher is better
    every time; docs/semantics.md), and ``None`` when no query was given (most recent first).
    ``explanation`` holds the parts of the score when ``recall(..., explain=True)``.
    """

    memory: Memory
    score: float | None
    explanation: Explanation | None = None


class KnowledgeChunk(_Model):
    """One chunk of a global knowledge document."""

    id: str
    doc_id: str
    chunk_index: int
    category: str
    title: str | None = None
    content: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class KnowledgeDocument(_Model):
    """A global knowledge document as stored: its chunks in order."""

    doc_id: str
    category: str
    title: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    chunks: list[KnowledgeChunk]


class KnowledgeSummary(_Model):
    """A stored knowledge document without its text: what ``list_global_knowledge`` lists."""

    doc_id: str
    category: str
    title: str | None = None
    chunks: int
    created_at: datetime


class KnowledgeHit(_Model):
    """A recalled knowledge chunk and its cosine similarity (higher is better)."""

    chunk: KnowledgeChunk
    score: float


class Association(_Model):
    """A directed, typed link from one memory to another."""

    source_id: str
    target_id: str
    relationship_type: str
    strength: float
    created_at: datetime


class RelatedMemory(_Model):
    """A memory linked to the one asked about, seen from that one."""

    memory: Memory
    relationship_type: str
    strength: float
    direction: Literal["outgoing", "incoming"]
    #: when the link was made (None where a backend does not say)
    created_at: datetime | None = None


class UserSummary(_Model):
    """A user of the store: how many memories they have, and the newest ``updated_at`` among
    them (a memory's ``updated_at`` is its ``created_at`` until it is changed)."""

    user_id: str
    memories: int
    last_activity: datetime


class CleanupResult(_Model):
    """What ``cleanup`` removed (``dry_run=False``) or would remove (``dry_run=True``)."""

    dry_run: bool
    count: int
    memories: list[Memory]


class MemoryFilter(_Model):
    """Which memories a recall (or cleanup) considers. Every field narrows the set; None = any.

    - ``tags`` with ``tag_mode="any"``: the memory has at least one of them; ``"all"``: every one.
    - ``exclude_tags``: the memory has none of them.
    - ``since`` <= ``created_at`` < ``until``.
    - ``min_importance`` <= ``importance``; ``importance_below`` > ``importance`` (cleanup).
    - ``metadata``: for every key, the memory's metadata has the key with an equal JSON value
      (``1 == 1.0``, but ``1 != true != "1"``; ``None`` matches a stored ``null``, not a
      missing key).
    """

    user_id: str | None = None
    conversation_id: str | None = None
    memory_types: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    tag_mode: Literal["any", "all"] = "any"
    exclude_tags: tuple[str, ...] | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_importance: float | None = None
    importance_below: float | None = None
    metadata: dict[str, Scalar] | None = None

    def matches(self, memory: Memory) -> bool:
        """The reference semantics of this filter for one memory."""
        if self.user_id is not None and memory.user_id != self.user_id:
            return False
        if self.conversation_id is not None and memory.conversation_id != self.conversation_id:
            return False
        if self.memory_types is not None and memory.memory_type not in self.memory_types:
            return False
        tags = set(memory.tags)
        if self.tags is not None:
            wanted = set(self.tags)
            if self.tag_mode == "all" and not wanted <= tags:
                return False
            if self.tag_mode == "any" and not wanted & tags:
                return False
        if self.exclude_tags is not None and tags & set(self.exclude_tags):
            return False
        if self.since is not None and memory.created_at < self.since:
            return False
        if self.until is not None and memory.created_at >= self.until:
            return False
        if self.min_importance is not None and memory.importance < self.min_importance:
            return False
        if self.importance_below is not None and memory.importance >= self.importance_below:
            return False
        if self.metadata is not None:
            for key, value in self.metadata.items():
                if key not in memory.metadata or not json_equal(memory.metadata[key], value):
                    return False
        return True


def json_type(value: Any) -> str:
    """The JSON type name of a scalar: null, boolean, number, string (or array/object)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


def json_equal(stored: Any, wanted: Scalar) -> bool:
    """JSON equality of a stored metadata value and a filter value (types must agree)."""
    return json_type(stored) == json_type(wanted) and stored == wanted
