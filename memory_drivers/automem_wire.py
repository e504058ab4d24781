"""AutoMem's wire format, and the convention memory-drivers writes on top of it.

AutoMem (``verygoodplugins/automem``) keeps a memory as ``content``, ``tags``, ``importance``,
``type``, ``timestamp`` (creation), ``updated_at`` and a free ``metadata`` object. It has no
users, no conversations and no ids of the client's choosing, and it changes some of its own
fields (strips content, may summarize it, adds enrichment tags and metadata). The ``automem``
driver therefore writes, and ``memory-drivers serve`` understands, two additions:

- **the block**: ``metadata["memory_drivers"]``, the whole memory-drivers record (id, user,
  conversation, type, source, importance, tags, metadata, content, times, and the links the
  memory starts), so a memory reads back exactly whatever AutoMem did to its own fields. The
  memory's own metadata is also written at the top level of ``metadata``, where AutoMem clients
  and AutoMem's metadata search see it.
- **convention tags** in the reserved ``mdrv:`` namespace, which AutoMem can filter on:
  ``mdrv:memory`` (every memory), ``mdrv:id:<id>``, ``mdrv:user:<user>``,
  ``mdrv:conv:<conversation>``, ``mdrv:type:<type>``, ``mdrv:tag:<tag>`` (each tag),
  ``mdrv:meta:<key>=<value>`` (each scalar metadata value, when short), and for global knowledge
  chunks ``mdrv:knowledge``, ``mdrv:doc:<doc_id>``, ``mdrv:category:<category>``; the store's
  embedder stamp is one memory tagged ``mdrv:store-info``.

AutoMem compares tags case-insensitively and splits them into prefixes at ``:`` and ``/``, so
values are encoded (:func:`encode`): lower-case letters, digits, ``-``, ``_`` and ``.`` stay as
they are, an upper-case letter becomes ``^`` and its lower-case form, anything else becomes
``%xx`` per UTF-8 byte. The encoding is lower-case and one-to-one, which makes AutoMem's
case-insensitive tag matching an exact match on the original value.

Everything here is pure data conversion, shared by the driver and the server; nothing of
AutoMem's code is used.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from . import validation as check
from .models import KnowledgeChunk, Memory, Scalar

__all__ = [
    "AUTOMEM_BATCH_LIMIT",
    "AUTOMEM_BY_TAG_LIMIT",
    "AUTOMEM_CONTENT_LIMIT",
    "AUTOMEM_RECALL_LIMIT",
    "AUTOMEM_RELATED_LIMIT",
    "AUTOMEM_TYPES",
    "BLOCK_KEY",
    "KNOWLEDGE_TAG",
    "MEMORY_TAG",
    "RESERVED_PREFIX",
    "STORE_INFO_TAG",
    "chunk_block",
    "chunk_from_block",
    "chunk_payload",
    "chunk_tags",
    "content_fingerprint",
    "decode",
    "embedding",
    "encode",
    "from_automem_type",
    "iso",
    "memory_block",
    "memory_from_block",
    "memory_payload",
    "memory_tags",
    "meta_tag",
    "parse_tag",
    "read_block",
    "tag_prefixes",
    "to_automem_type",
]

#: AutoMem refuses content longer than this (``MEMORY_CONTENT_HARD_LIMIT``), after stripping.
AUTOMEM_CONTENT_LIMIT = 2000
#: The largest ``limit`` of ``GET /recall`` (``RECALL_MAX_LIMIT``): the candidate window.
AUTOMEM_RECALL_LIMIT = 100
#: The largest page of ``GET /memory/by-tag``.
AUTOMEM_BY_TAG_LIMIT = 200
#: The largest ``limit`` of ``GET /memories/<id>/related``.
AUTOMEM_RELATED_LIMIT = 200
#: Memories per ``POST /memory/batch``.
AUTOMEM_BATCH_LIMIT = 500

#: AutoMem's canonical memory types.
AUTOMEM_TYPES: tuple[str, ...] = (
    "Decision",
    "Pattern",
    "Preference",
    "Style",
    "Habit",
    "Insight",
    "Context",
)

#: Where the block lives in AutoMem's ``metadata``.
BLOCK_KEY = "memory_drivers"
#: The version of this convention, written into every block.
VERSION = 1

RESERVED_PREFIX = "mdrv:"
MEMORY_TAG = "mdrv:memory"
KNOWLEDGE_TAG = "mdrv:knowledge"
STORE_INFO_TAG = "mdrv:store-info"
#: The id of the store-info memory that ``memory-drivers serve`` shows (AutoMem gives its own).
STORE_INFO_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "memory-drivers:store-info"))
#: A metadata value gets a ``mdrv:meta:`` tag only when the whole tag is at most this long.
META_TAG_LIMIT = 200

# Our types -> AutoMem's (when the capitalized name is not one of AutoMem's already), and back.
_TO_AUTOMEM = {
    "episodic": "Context",
    "semantic": "Context",
    "fact": "Context",
    "procedural": "Habit",
    "reflection": "Insight",
}
_FROM_AUTOMEM = {
    "Decision": "episodic",
    "Pattern": "procedural",
    "Style": "preference",
    "Habit": "procedural",
    "Insight": "reflection",
    "Preference": "preference",
    "Context": "context",
}

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
_HEX = frozenset("0123456789abcdef")
_INTEGER = re.compile(r"-?\d+")


# ---------------------------------------------------------------------- tag values
def encode(text: str) -> str:
    """``text`` as a lower-case, one-to-one tag value (see the module docstring)."""
    out: list[str] = []
    for ch in text:
        if ch in _PLAIN:
            out.append(ch)
        elif "A" <= ch <= "Z":
            out.append("^" + ch.lower())
        else:
            out.extend(f"%{byte:02x}" for byte in ch.encode("utf-8"))
    return "".join(out)


def decode(value: str) -> str:
    """The text that :func:`encode` turned into ``value``; ``ValueError`` if it is not one."""
    raw = bytearray()
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "^" and i + 1 < len(value) and "a" <= value[i + 1] <= "z":
            raw += value[i + 1].upper().encode()
            i += 2
        elif ch == "%" and len(value) >= i + 3 and set(value[i + 1 : i + 3]) <= _HEX:
            raw.append(int(value[i + 1 : i + 3], 16))
            i += 3
        elif ch in _PLAIN:
            raw += ch.encode()
            i += 1
        else:
            raise ValueError(f"{value!r} is not an encoded tag value")
    text = raw.decode("utf-8")  # strict: a malformed byte sequence raises ValueError
    if encode(text) != value:
        raise ValueError(f"{value!r} is not the canonical encoding of {text!r}")
    return text


def _meta_value(value: Any) -> str | None:
    """A scalar metadata value as a tag value; JSON-equal values (1 and 1.0) give the same."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "b.true" if value else "b.false"
    if isinstance(value, int):
        return f"n.{value}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value.is_integer():
            return f"n.{int(value)}"
        return "n." + encode(repr(value))
    if isinstance(value, str):
        return "s." + encode(value)
    return None


def _meta_from_tag(value: str) -> Scalar:
    if value == "null":
        return None
    if value in ("b.true", "b.false"):
        return value == "b.true"
    kind, _, rest = value.partition(".")
    if kind == "s":
        return decode(rest)
    if kind == "n":
        if _INTEGER.fullmatch(rest):
            # An integral float is written as an integer (1e23 as n.99999999999999991611392);
            # stored integers are 64-bit (validation), so a larger one is that float.
            whole = int(rest)
            return whole if check.MIN_INTEGER <= whole <= check.MAX_INTEGER else float(whole)
        number = float(decode(rest))
        if not math.isfinite(number):
            raise ValueError(f"{value!r} is not a finite number")
        return number
    raise ValueError(f"{value!r} is not an encoded metadata value")


def id_tag(memory_id: str) -> str:
    return f"mdrv:id:{memory_id.lower()}"


def user_tag(user_id: str) -> str:
    return f"mdrv:user:{encode(user_id)}"


def conversation_tag(conversation_id: str) -> str:
    return f"mdrv:conv:{encode(conversation_id)}"


def type_tag(memory_type: str) -> str:
    return f"mdrv:type:{encode(memory_type)}"


def tag_tag(tag: str) -> str:
    return f"mdrv:tag:{encode(tag)}"


def doc_tag(doc_id: str) -> str:
    return f"mdrv:doc:{encode(doc_id)}"


def category_tag(category: str) -> str:
    return f"mdrv:category:{encode(category)}"


def meta_tag(key: str, value: Any) -> str | None:
    """The tag for one metadata value, or None (not a scalar, or the tag would be too long)."""
    encoded = _meta_value(value)
    if encoded is None:
        return None
    tag = f"mdrv:meta:{encode(key)}={encoded}"
    return tag if len(tag) <= META_TAG_LIMIT else None


def parse_tag(tag: str) -> tuple[str, Any] | None:
    """What a convention tag says, as ``(kind, value)``; None for any other tag.

    Kinds: ``memory``, ``knowledge``, ``store-info`` (value None), ``id`` (a canonical UUID),
    ``user``, ``conv``, ``type``, ``tag``, ``doc``, ``category`` (the decoded string) and
    ``meta`` (a ``(key, value)`` pair). Tags are compared lower-cased, as AutoMem does.
    """
    tag = tag.strip().lower()
    if not tag.startswith(RESERVED_PREFIX):
        return None
    rest = tag[len(RESERVED_PREFIX) :]
    if rest in ("memory", "knowledge", "store-info"):
        return rest, None
    kind, sep, value = rest.partition(":")
    if not sep or not value:
        return None
    try:
        if kind == "id":
            canonical = str(uuid.UUID(value))
            return ("id", canonical) if canonical == value else None
        if kind in ("user", "conv", "type", "tag", "doc", "category"):
            return kind, decode(value)
        if kind == "meta":
            key, eq, encoded = value.partition("=")
            if not eq:
                return None
            return "meta", (decode(key), _meta_from_tag(encoded))
    except ValueError:
        return None
    return None


def tag_prefixes(tags: Iterable[str]) -> list[str]:
    """AutoMem's tag prefixes: each lower-cased tag split at ``:`` and ``/``, every leading run
    of parts joined with ``:`` (``a:b/c`` gives ``a``, ``a:b``, ``a:b:c``), without repeats."""
    seen: dict[str, None] = {}
    for tag in tags:
        parts = [part for part in re.split(r"[:/]", tag.strip().lower()) if part]
        for end in range(1, len(parts) + 1):
            seen[":".join(parts[:end])] = None
    return list(seen)


# ---------------------------------------------------------------------- memory types
def to_automem_type(memory_type: str) -> str:
    """The AutoMem type written for one of our memory types."""
    capitalized = memory_type.capitalize()
    if capitalized in AUTOMEM_TYPES:
        return capitalized
    return _TO_AUTOMEM.get(memory_type, "Context")


def from_automem_type(raw: str | None, allowed: Sequence[str], default: str) -> str:
    """Our memory type for an AutoMem ``type`` sent by an AutoMem client.

    A type that is one of ``allowed`` (exactly or lower-cased) is kept; AutoMem's canonical
    types map to ours (``Habit`` and ``Pattern`` to procedural, ``Insight`` to reflection,
    ``Style`` to preference, ``Decision`` to episodic); anything else becomes ``default``.
    """
    if not raw or not raw.strip():
        return default
    name = raw.strip()
    for candidate in (name, name.lower()):
        if candidate in allowed:
            return candidate
    mapped = _FROM_AUTOMEM.get(name.capitalize())
    return mapped if mapped is not None and mapped in allowed else default


# ---------------------------------------------------------------------- blocks and payloads
def iso(moment: datetime) -> str:
    """A UTC ISO 8601 time with microseconds, as AutoMem normalizes them."""
    return moment.astimezone(timezone.utc).isoformat()


def memory_tags(memory: Memory) -> list[str]:
    """The convention tags of a memory (its own tags are written beside them)."""
    tags = [MEMORY_TAG, id_tag(memory.id), user_tag(memory.user_id)]
    if memory.conversation_id is not None:
        tags.append(conversation_tag(memory.conversation_id))
    tags.append(type_tag(memory.memory_type))
    tags += [tag_tag(tag) for tag in memory.tags]
    for key, value in memory.metadata.items():
        tag = meta_tag(key, value)
        if tag is not None:
            tags.append(tag)
    return tags


def chunk_tags(chunk: KnowledgeChunk) -> list[str]:
    return [KNOWLEDGE_TAG, id_tag(chunk.id), doc_tag(chunk.doc_id), category_tag(chunk.category)]


def memory_block(memory: Memory, links: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The block of a memory: the whole record, and the links it starts when known."""
    block: dict[str, Any] = {
        "v": VERSION,
        "kind": "memory",
        "id": memory.id,
        "user_id": memory.user_id,
        "conversation_id": memory.conversation_id,
        "memory_type": memory.memory_type,
        "source": memory.source,
        "importance": memory.importance,
        "tags": list(memory.tags),
        "metadata": dict(memory.metadata),
        "content": memory.content,
        "created_at": iso(memory.created_at),
        "updated_at": iso(memory.updated_at),
    }
    if links is not None:
        block["links"] = links
    return block


def chunk_block(chunk: KnowledgeChunk) -> dict[str, Any]:
    return {
        "v": VERSION,
        "kind": "knowledge",
        "id": chunk.id,
        "doc_id": chunk.doc_id,
        "chunk_index": chunk.chunk_index,
        "category": chunk.category,
        "title": chunk.title,
        "metadata": dict(chunk.metadata),
        "content": chunk.content,
        "created_at": iso(chunk.created_at),
    }


def store_info_block(values: Mapping[str, str]) -> dict[str, Any]:
    return {"v": VERSION, "kind": "store_info", "values": dict(values)}


def _automem_content(text: str) -> str:
    """What goes into AutoMem's ``content``: at most the hard limit after stripping."""
    stripped = text.strip()
    if len(stripped) <= AUTOMEM_CONTENT_LIMIT:
        return stripped
    return stripped[:AUTOMEM_CONTENT_LIMIT].rstrip()


def embedding(vector: Iterable[float] | None) -> dict[str, Any]:
    """AutoMem's ``embedding`` field for a client's vector (nothing without one). AutoMem stores
    a given vector at once instead of queueing the text for its own model."""
    return {} if vector is None else {"embedding": [float(x) for x in vector]}


def memory_payload(
    memory: Memory,
    links: list[dict[str, Any]] | None = None,
    vector: Iterable[float] | None = None,
) -> dict[str, Any]:
    """The AutoMem memory (``POST /memory`` body) that stands for ``memory``, with its vector
    when given."""
    return {
        "content": _automem_content(memory.content),
        "tags": [*memory.tags, *memory_tags(memory)],
        "importance": memory.importance,
        "type": to_automem_type(memory.memory_type),
        "timestamp": iso(memory.created_at),
        "updated_at": iso(memory.updated_at),
        "metadata": {**memory.metadata, BLOCK_KEY: memory_block(memory, links)},
        **embedding(vector),
    }


def chunk_payload(chunk: KnowledgeChunk, vector: Iterable[float] | None = None) -> dict[str, Any]:
    """The AutoMem memory that stands for a knowledge chunk. AutoMem's ``content`` holds the
    chunk's first 2000 characters; the block holds all of it (and the vector is of all of it)."""
    return {
        "content": _automem_content(chunk.content),
        "tags": chunk_tags(chunk),
        "importance": 0.5,
        "type": "Context",
        "timestamp": iso(chunk.created_at),
        "updated_at": iso(chunk.created_at),
        "metadata": {**chunk.metadata, BLOCK_KEY: chunk_block(chunk)},
        **embedding(vector),
    }


def content_fingerprint(content: str) -> str | None:
    """AutoMem's fingerprint of a recall result's content (``_fingerprint_content`` in its
    ``api/recall.py``): lower-cased, markdown marks and punctuation made spaces, non-ASCII
    dropped, spaces collapsed, the first 320 characters. Results with the same fingerprint are
    merged into one, which lists the ids of all of them in ``deduped_from``."""
    cleaned = re.sub(r"[`*_#>~\-]", " ", content.lower()).encode("ascii", "ignore").decode()
    cleaned = re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", cleaned)).strip()
    return cleaned[:320] or None


def store_info_payload(values: Mapping[str, str]) -> dict[str, Any]:
    return {
        "content": "memory-drivers store info: the embedder of this memory space (do not delete)",
        "tags": [STORE_INFO_TAG],
        "importance": 0.0,
        "type": "Context",
        "metadata": {BLOCK_KEY: store_info_block(values)},
    }


def read_block(item: Mapping[str, Any]) -> dict[str, Any] | None:
    """The block of an AutoMem memory (its ``metadata`` may be an object or a JSON string)."""
    metadata = item.get("metadata")
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return None
    if not isinstance(metadata, Mapping):
        return None
    block = metadata.get(BLOCK_KEY)
    if isinstance(block, Mapping) and block.get("v") == VERSION:
        return dict(block)
    return None


def _optional(block: Mapping[str, Any], key: str, name: str) -> str | None:
    return check.identifier(block.get(key), name, optional=True)


def memory_from_block(
    block: Mapping[str, Any], limits: check.Limits = check.DEFAULT_LIMITS
) -> Memory:
    """The memory a block holds; ``ValueError`` when the block is not a valid memory (within
    ``limits``: the reading driver's, which stored it)."""
    if block.get("kind") != "memory":
        raise ValueError("the block is not a memory's")
    tags = block.get("tags")
    metadata = block.get("metadata")
    importance = block.get("importance")
    content = block.get("content")
    memory_type = block.get("memory_type")
    if not isinstance(content, str) or not isinstance(memory_type, str):
        raise ValueError("the block has no content or memory_type")
    return Memory(
        id=check.memory_id(block.get("id"), "id"),
        user_id=check.identifier(block.get("user_id"), "user_id"),
        conversation_id=_optional(block, "conversation_id", "conversation_id"),
        content=content,
        memory_type=memory_type,
        tags=check.tags(tags, limits=limits),
        importance=check.importance(importance),
        metadata=check.metadata(metadata, limits=limits),
        source=_optional(block, "source", "source"),
        created_at=check.timestamp(block.get("created_at"), "created_at"),
        updated_at=check.timestamp(block.get("updated_at"), "updated_at"),
    )


def chunk_from_block(block: Mapping[str, Any]) -> KnowledgeChunk:
    """The knowledge chunk a block holds; ``ValueError`` when it is not a valid chunk."""
    if block.get("kind") != "knowledge":
        raise ValueError("the block is not a knowledge chunk's")
    index = block.get("chunk_index")
    title = block.get("title")
    content = block.get("content")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError("the block's chunk_index is not a whole number >= 0")
    if title is not None and not isinstance(title, str):
        raise ValueError("the block's title is not a string")
    if not isinstance(content, str) or not content.strip():
        raise ValueError("the block has no content")
    return KnowledgeChunk(
        id=check.memory_id(block.get("id"), "id"),
        doc_id=check.identifier(block.get("doc_id"), "doc_id"),
        chunk_index=index,
        category=check.identifier(block.get("category"), "category"),
        title=title,
        content=content,
        metadata=check.metadata(block.get("metadata")),
        created_at=check.timestamp(block.get("created_at"), "created_at"),
    )
