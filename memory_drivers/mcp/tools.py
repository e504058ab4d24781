"""The memory tools: thin functions over the public API whose docstrings and typed parameters
are the tools' descriptions and JSON schemas (the MCP SDK derives them from the signatures).

Every memory tool takes ``user_id`` as its first parameter; :func:`bind_user` removes it from
the signature (and so from the schema) when the server's user is fixed. The knowledge tools and
``health`` concern the whole store (global knowledge is shared by every user). A
:class:`~memory_drivers.errors.MemoryDriverError` becomes the SDK's ``ToolError`` with the
error's type and message, which the client receives as a tool result with ``isError``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypedDict

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from ..base import BaseMemoryDriver, SearchMode
from ..errors import MemoryDriverError
from ..models import (
    RELATIONSHIP_TYPES,
    Association,
    KnowledgeHit,
    Memory,
    RecallHit,
    RelatedMemory,
)

__all__ = ["KnowledgeStored", "MemoryTools", "bind_user"]

UserId = Annotated[str, Field(description="The user whose memories this call reads or writes.")]
MemoryId = Annotated[str, Field(description="A memory's id (a UUID, as returned by the tools).")]
Tags = Annotated[
    list[str] | None,
    Field(description="Exact strings to label the memory with, e.g. ['preference', 'food']."),
]
Metadata = Annotated[
    dict[str, Any] | None, Field(description="Any JSON object to keep with the memory.")
]
Importance = Annotated[
    float | None,
    Field(description="How much the memory matters, from 0 to 1 (default 0.5)."),
]
MemoryType = Annotated[
    str | None,
    Field(
        description="The kind of memory: episodic, semantic, procedural, reflection, fact, "
        "context or preference (plus the server's MEMORY_EXTRA_TYPES); default semantic."
    ),
]
Search = Annotated[
    SearchMode | None,
    Field(
        description="How to rank: 'hybrid' (keywords and meaning, the server's default), "
        "'vector' (meaning only; the score is the cosine similarity) or 'keyword' (BM25 on "
        "the words)."
    ),
]
Relationship = Annotated[
    str,
    Field(description=f"The kind of link, one of {', '.join(RELATIONSHIP_TYPES)}."),
]


class KnowledgeStored(TypedDict):
    """What ``store_knowledge`` answers: the document and how many chunks it was split into."""

    doc_id: str
    category: str
    title: str | None
    chunks: int


def _translated(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with memory-drivers errors turned into tool errors of the same message."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MemoryDriverError as exc:
            raise ToolError(f"{type(exc).__name__}: {exc}") from exc

    call.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    return call


def bind_user(fn: Callable[..., Any], user_id: str) -> Callable[..., Any]:
    """``fn`` without its ``user_id`` parameter, always called with ``user_id`` (``fn`` itself
    when it has none: the knowledge tools and ``health`` concern every user)."""
    signature = inspect.signature(fn, eval_str=True)
    if "user_id" not in signature.parameters:
        return fn
    parameters = [p for p in signature.parameters.values() if p.name != "user_id"]

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, user_id=user_id, **kwargs)

    call.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return call


class MemoryTools:
    """The tools over one driver. Each public method is one tool; its name is the tool's."""

    #: The tools in the order they are listed, with whether each only reads.
    READ_ONLY: dict[str, bool] = {
        "store_memory": False,
        "recall_memories": True,
        "get_memory": True,
        "update_memory": False,
        "delete_memory": False,
        "associate_memories": False,
        "related_memories": True,
        "search_knowledge": True,
        "store_knowledge": False,
        "health": True,
    }
    #: The writing tools that may replace or remove what is stored.
    DESTRUCTIVE = frozenset({"update_memory", "delete_memory", "store_knowledge"})

    def __init__(self, driver: BaseMemoryDriver) -> None:
        self.driver = driver

    def functions(self) -> list[Callable[..., Any]]:
        """The tool functions, errors translated, in :attr:`READ_ONLY`'s order."""
        return [_translated(getattr(self, name)) for name in self.READ_ONLY]

    def store_memory(
        self,
        user_id: UserId,
        content: Annotated[str, Field(description="The text to remember, in full sentences.")],
        tags: Tags = None,
        metadata: Metadata = None,
        memory_type: MemoryType = None,
        importance: Importance = None,
        conversation_id: Annotated[
            str | None, Field(description="The conversation this memory comes from.")
        ] = None,
    ) -> Memory:
        """Store a long-term memory and return it with its new id.

        Use it for facts, preferences and events worth remembering across conversations.
        """
        return self.driver.store(
            user_id,
            content,
            conversation_id,
            tags,
            metadata,
            memory_type=memory_type,
            importance=importance,
        )

    def recall_memories(
        self,
        user_id: UserId,
        query: Annotated[
            str | None,
            Field(
                description="What to look for, e.g. 'What does the user drink?'. Time words "
                "('last week') prefer memories from then. Leave it out to list the newest "
                "memories."
            ),
        ] = None,
        top_k: Annotated[int, Field(description="How many memories at most (1 or more).")] = 10,
        search: Search = None,
        tags: Annotated[
            list[str] | None, Field(description="Only memories with these tags (see tag_mode).")
        ] = None,
        tag_mode: Annotated[
            Literal["any", "all"],
            Field(description="'any': at least one of the tags; 'all': every one."),
        ] = "any",
        exclude_tags: Annotated[
            list[str] | None, Field(description="Leave out memories with any of these tags.")
        ] = None,
        memory_types: Annotated[
            list[str] | None, Field(description="Only memories of these types.")
        ] = None,
        conversation_id: Annotated[
            str | None, Field(description="Only memories of this conversation.")
        ] = None,
        since: Annotated[
            datetime | None,
            Field(description="Only memories created at or after this time (ISO 8601)."),
        ] = None,
        until: Annotated[
            datetime | None, Field(description="Only memories created before this time.")
        ] = None,
        min_importance: Annotated[
            float | None, Field(description="Only memories at least this important (0 to 1).")
        ] = None,
        metadata: Annotated[
            dict[str, Any] | None,
            Field(description="Only memories whose metadata has these keys with equal values."),
        ] = None,
        now: Annotated[
            datetime | None,
            Field(description="The time that time words in the query are read against."),
        ] = None,
        explain: Annotated[
            bool,
            Field(description="Add each hit's explanation: the parts its score is made of."),
        ] = False,
    ) -> list[RecallHit]:
        """Recall the memories that best answer a query, best first, each with its score.

        Filters narrow the memories before the best top_k are taken. Scores: hybrid about
        -0.5 to 1.41, vector the cosine similarity (-1 to 1), keyword BM25 (0 or more);
        without a query, newest first and no score.
        """
        return self.driver.recall(
            user_id,
            conversation_id,
            query,
            top_k,
            exclude_tags=exclude_tags,
            search=search,
            now=now,
            memory_types=memory_types,
            tags=tags,
            tag_mode=tag_mode,
            since=since,
            until=until,
            min_importance=min_importance,
            metadata=metadata,
            explain=explain,
        )

    def get_memory(self, user_id: UserId, memory_id: MemoryId) -> Memory | None:
        """One memory by its id, or null when there is none for this user."""
        return self.driver.get(memory_id, user_id)

    def update_memory(
        self,
        user_id: UserId,
        memory_id: MemoryId,
        content: Annotated[str | None, Field(description="New text (it is re-embedded).")] = None,
        tags: Annotated[
            list[str] | None, Field(description="New tags, replacing the old ones whole.")
        ] = None,
        metadata: Annotated[
            dict[str, Any] | None,
            Field(description="New metadata, replacing the old object whole."),
        ] = None,
        importance: Importance = None,
        memory_type: MemoryType = None,
    ) -> Memory:
        """Change a memory's fields (only those given) and return it as stored."""
        return self.driver.update(
            memory_id,
            user_id=user_id,
            content=content,
            tags=tags,
            metadata=metadata,
            importance=importance,
            memory_type=memory_type,
        )

    def delete_memory(self, user_id: UserId, memory_id: MemoryId) -> bool:
        """Delete a memory and its links. False when there was none for this user."""
        return self.driver.delete(memory_id, user_id)

    def associate_memories(
        self,
        user_id: UserId,
        memory_id: Annotated[str, Field(description="The id of the memory the link starts at.")],
        related_memory_id: Annotated[
            str, Field(description="The id of the memory the link points to.")
        ],
        relationship_type: Relationship = "RELATES_TO",
        strength: Annotated[float, Field(description="How strong the link is, from 0 to 1.")] = 0.5,
    ) -> Association:
        """Link two memories of the user with a typed, directed relationship.

        Linking the same pair with the same type again updates the strength.
        """
        return self.driver.associate(
            memory_id, related_memory_id, relationship_type, strength, user_id=user_id
        )

    def related_memories(
        self,
        user_id: UserId,
        memory_id: MemoryId,
        relationship_type: Annotated[
            str | None, Field(description="Only links of this kind (all kinds when left out).")
        ] = None,
    ) -> list[RelatedMemory]:
        """The memories linked to a memory, in both directions, strongest link first."""
        return self.driver.related(memory_id, relationship_type, user_id=user_id)

    def search_knowledge(
        self,
        query: Annotated[str, Field(description="What to look for in the shared documents.")],
        top_k: Annotated[int, Field(description="How many chunks at most (1 or more).")] = 5,
        category: Annotated[
            str | None, Field(description="Only documents of this category.")
        ] = None,
        search: Search = None,
    ) -> list[KnowledgeHit]:
        """Search the global knowledge (documents shared by every user, split into chunks)
        and return the best chunks with their scores."""
        return self.driver.recall_global_knowledge(query, top_k, category, search=search)

    def store_knowledge(
        self,
        content: Annotated[str, Field(description="The document's full text.")],
        category: Annotated[str, Field(description="A category to search it by, e.g. 'docs'.")],
        title: Annotated[str | None, Field(description="The document's title.")] = None,
        doc_id: Annotated[
            str | None,
            Field(description="The document's id; storing the same id again replaces it."),
        ] = None,
        metadata: Metadata = None,
    ) -> KnowledgeStored:
        """Store a document in the global knowledge, shared by every user; it is split into
        overlapping chunks for search."""
        document = self.driver.store_global_knowledge(content, category, title, doc_id, metadata)
        return {
            "doc_id": document.doc_id,
            "category": document.category,
            "title": document.title,
            "chunks": len(document.chunks),
        }

    def health(self) -> dict[str, Any]:
        """Whether the memory store works: status 'ok' or 'error', the driver, and details."""
        return self.driver.health_check()
