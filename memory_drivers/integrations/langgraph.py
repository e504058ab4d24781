"""A LangGraph ``BaseStore`` over any memory-drivers driver: a LangGraph agent's long-term
store (``graph.compile(store=...)``) kept in SQLite, PostgreSQL, Chroma or AutoMem.

::

    from memory_drivers import get_memory_driver
    from memory_drivers.integrations.langgraph import MemoryStore

    store = MemoryStore(get_memory_driver())
    store.put(("alice", "food"), "tea", {"text": "Alice drinks green tea", "since": 2019})
    store.search(("alice",), query="what does Alice drink?", limit=3)    # [SearchItem]

How items map onto memories (docs/integrations.md):

- The namespace label at ``user_label`` (default 0, the first: ``(user_id, ...)`` as in
  LangGraph's memory docs) is the memory's user. Every item is tagged with each prefix of its
  namespace (``langgraph-ns:alice``, ``langgraph-ns:alice.food``) and its key
  (``langgraph-key:tea``); labels never contain ``.`` (LangGraph forbids it).
- The value (a JSON object) is the memory's metadata, read back exactly. The memory's content,
  which is embedded and searched, is the text at the store's ``fields`` (LangGraph's paths,
  such as ``"text"`` or ``"facts[*].body"``; ``put(index=[...])`` overrides them per item), or
  the whole value as JSON when no field is configured or none holds text. ``index=False``
  still embeds the item: every memory has a vector.
- The memory id is derived from the namespace and key (UUID 5), so ``get``, ``put`` over an
  existing item (``update``: ``created_at`` kept) and ``delete`` go straight to the memory.
- ``search`` with a query is ``recall`` (``search`` picks the mode; the store's default is the
  driver's ``RECALL_SEARCH``) within the namespace prefix; without a query it lists the newest
  first. ``filter`` compares values for equality (``{"k": v}`` or ``{"k": {"$eq": v}}``); other
  operators are refused with a ``ValidationError``. Scores are recall's.
- A search whose prefix stops before the user label, and ``list_namespaces``, read every
  memory (``iter_memories``): their cost grows with the store (``list_namespaces`` with the user
  in its prefix reads only that user's memories).
- No TTL (``supports_ttl = False``). Async methods run the sync ones in the event loop's
  executor.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ..base import BaseMemoryDriver, SearchMode, hit_order
from ..errors import MissingDependencyError, ValidationError
from ..models import Memory, MemoryFilter, RecallHit
from ..validation import content as check_content
from ..validation import metadata as check_metadata
from ..validation import tags as check_tags

try:
    from langgraph.store.base import (
        BaseStore,
        GetOp,
        Item,
        ListNamespacesOp,
        MatchCondition,
        Op,
        PutOp,
        Result,
        SearchItem,
        SearchOp,
        get_text_at_path,
        validate_op_namespace,
    )
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise MissingDependencyError(
        f"memory_drivers.integrations.langgraph needs langgraph ({exc}). "
        'Install with: pip install "memory-drivers[langchain]"'
    ) from exc

__all__ = ["KEY_TAG_PREFIX", "NAMESPACE_TAG_PREFIX", "MemoryStore"]

#: Tags of an item: one per prefix of its namespace, and its key.
NAMESPACE_TAG_PREFIX = "langgraph-ns:"
KEY_TAG_PREFIX = "langgraph-key:"
_ID_NAMESPACE = uuid.UUID("0b6f4a51-8a9e-5c43-a1d2-7e3f5b9c8d20")
_OPERATORS = ("$eq",)


def namespace_tag(namespace: Sequence[str]) -> str:
    return NAMESPACE_TAG_PREFIX + ".".join(namespace)


def item_id(namespace: Sequence[str], key: str) -> str:
    """The memory id of the item ``key`` in ``namespace``."""
    return str(uuid.uuid5(_ID_NAMESPACE, json.dumps([list(namespace), key])))


def item_location(memory: Memory) -> tuple[tuple[str, ...], str] | None:
    """The namespace and key of a memory written by :class:`MemoryStore`, else None."""
    prefixes = [
        t[len(NAMESPACE_TAG_PREFIX) :] for t in memory.tags if t.startswith(NAMESPACE_TAG_PREFIX)
    ]
    keys = [t[len(KEY_TAG_PREFIX) :] for t in memory.tags if t.startswith(KEY_TAG_PREFIX)]
    if not prefixes or not keys:
        return None
    return tuple(max(prefixes, key=len).split(".")), keys[0]


class MemoryStore(BaseStore):
    """LangGraph's ``BaseStore`` over ``driver`` (see the module docstring for the mapping).

    ``user_label``: which namespace label is the user. ``fields``: the paths of the value whose
    text is embedded (None: the whole value as JSON). ``search``: the search mode of queries.
    """

    supports_ttl = False

    def __init__(
        self,
        driver: BaseMemoryDriver,
        *,
        user_label: int = 0,
        fields: Sequence[str] | None = None,
        search: SearchMode | None = None,
    ) -> None:
        if isinstance(user_label, bool) or not isinstance(user_label, int) or user_label < 0:
            raise ValidationError(f"user_label must be a whole number >= 0, got {user_label!r}")
        self.driver = driver
        self.user_label = user_label
        self.fields = list(fields) if fields is not None else None
        self.search_mode = search

    # ------------------------------------------------------------------ batch
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops`` in order; runs of puts are written together (new items in one
        transaction, the last put of an item winning)."""
        ops = list(ops)
        for op in ops:
            validate_op_namespace(op)
        results: list[Result] = []
        index = 0
        while index < len(ops):
            op = ops[index]
            if isinstance(op, PutOp):
                end = index
                while end < len(ops) and isinstance(ops[end], PutOp):
                    end += 1
                self._put([o for o in ops[index:end] if isinstance(o, PutOp)])
                results.extend([None] * (end - index))
                index = end
                continue
            if isinstance(op, GetOp):
                results.append(self._get(op))
            elif isinstance(op, SearchOp):
                results.append(self._search(op))
            elif isinstance(op, ListNamespacesOp):
                results.append(self._list_namespaces(op))
            else:
                raise ValidationError(f"unknown store operation {type(op).__name__}")
            index += 1
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        return await asyncio.get_running_loop().run_in_executor(None, self.batch, ops)

    # ------------------------------------------------------------------ operations
    def _user(self, namespace: tuple[str, ...]) -> str:
        if len(namespace) <= self.user_label:
            raise ValidationError(
                f"namespace {namespace!r} has no label {self.user_label} (user_label): the "
                "store keeps items in the user that label names"
            )
        return namespace[self.user_label]

    def _get(self, op: GetOp) -> Item | None:
        memory = self.driver.get(item_id(op.namespace, op.key), self._user(op.namespace))
        if memory is None or item_location(memory) != (tuple(op.namespace), op.key):
            return None
        return _item(memory, Item)

    def _put(self, ops: Sequence[PutOp]) -> None:
        """Every item is checked before anything is written."""
        last = {(tuple(op.namespace), op.key): op for op in ops}  # the last put of an item wins
        new: list[dict[str, Any]] = []
        replaced: list[dict[str, Any]] = []
        deleted: list[tuple[str, str]] = []
        for (namespace, key), op in last.items():
            user = self._user(namespace)
            mid = item_id(namespace, key)
            if op.value is None:
                deleted.append((mid, user))
                continue
            if not namespace or namespace[0] == "langgraph":
                raise ValidationError(f"namespace {namespace!r} cannot hold items")
            value = check_metadata(op.value, "value", self.driver.limits)
            item: dict[str, Any] = {
                "id": mid,
                "user_id": user,
                "content": check_content(self._text(value, op.index), self._limit),
                "metadata": value,
                "tags": check_tags(
                    [
                        *(namespace_tag(namespace[:n]) for n in range(1, len(namespace) + 1)),
                        KEY_TAG_PREFIX + key,
                    ],
                    limits=self.driver.limits,
                ),
            }
            exists = self.driver.get(mid, user) is not None
            (replaced if exists else new).append(item)
        self.driver.store_many(new)
        for item in replaced:
            self.driver.update(
                item["id"],
                user_id=item["user_id"],
                content=item["content"],
                metadata=item["metadata"],
                tags=item["tags"],
            )
        for mid, user in deleted:
            self.driver.delete(mid, user)

    @property
    def _limit(self) -> int:
        return self.driver.settings.memory_max_content_length

    def _text(self, value: dict[str, Any], index: Any) -> str:
        fields = index if isinstance(index, list) else self.fields
        if fields:
            texts = [t for path in fields for t in get_text_at_path(value, path) if t.strip()]
            if texts:
                return "\n".join(texts)
        return json.dumps(value, ensure_ascii=False, sort_keys=True)

    def _search(self, op: SearchOp) -> list[SearchItem]:
        prefix = tuple(op.namespace_prefix)
        wanted = _equality_filter(op.filter)
        top_k = op.limit + op.offset
        if op.limit < 1 or op.offset < 0:
            raise ValidationError(
                f"limit must be >= 1 and offset >= 0, got {op.limit}, {op.offset}"
            )
        if len(prefix) > self.user_label:
            hits = self.driver.recall(
                prefix[self.user_label],
                query=op.query,
                top_k=top_k,
                search=self.search_mode if op.query is not None else None,
                tags=[namespace_tag(prefix)],
                metadata=wanted,
            )
        else:
            if op.query is not None:
                raise ValidationError(
                    f"a search with a query needs the user label (label {self.user_label}) in "
                    f"its namespace prefix, got {prefix!r}: scores are computed within one user"
                )
            scope = MemoryFilter(tags=(namespace_tag(prefix),) if prefix else None, metadata=wanted)
            hits = sorted(
                (RecallHit(memory=m, score=None) for m in self._items(None) if scope.matches(m)),
                key=hit_order,
            )[:top_k]
        return [_item(h.memory, SearchItem, h.score) for h in hits[op.offset :]]

    def _items(self, user_id: str | None) -> Iterator[Memory]:
        for memory in self.driver.iter_memories(user_id):
            if item_location(memory) is not None:
                yield memory

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        conditions = op.match_conditions or ()
        user = None
        for condition in conditions:
            if condition.match_type == "prefix" and len(condition.path) > self.user_label:
                label = condition.path[self.user_label]
                user = None if label == "*" else label
        namespaces = {loc[0] for m in self._items(user) if (loc := item_location(m))}
        found = [ns for ns in namespaces if all(_matches(c, ns) for c in conditions)]
        if op.max_depth is not None:
            found = [ns[: op.max_depth] for ns in found]
        return sorted(set(found))[op.offset : op.offset + op.limit]


def _item(memory: Memory, kind: Any, score: float | None = None) -> Any:
    location = item_location(memory)
    assert location is not None
    namespace, key = location
    fields: dict[str, Any] = {
        "namespace": namespace,
        "key": key,
        "value": memory.metadata,
        "created_at": memory.created_at,
        "updated_at": memory.updated_at,
    }
    return kind(**fields, score=score) if kind is SearchItem else kind(**fields)


def _equality_filter(flt: dict[str, Any] | None) -> dict[str, Any] | None:
    """LangGraph's filter as recall's metadata filter (equality only)."""
    if not flt:
        return None
    wanted = {}
    for key, value in flt.items():
        if isinstance(value, dict) and any(str(k).startswith("$") for k in value):
            operators = sorted(set(value) - set(_OPERATORS))
            if operators:
                raise ValidationError(
                    f"filter {key!r} uses {operators[0]!r}: memory-drivers filters values by "
                    "equality only ({'key': value} or {'key': {'$eq': value}})"
                )
            value = value["$eq"]
        wanted[key] = value
    return wanted


def _matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    """LangGraph's namespace match: a prefix or suffix, ``"*"`` matching any one label."""
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    labels = namespace[: len(path)] if condition.match_type == "prefix" else namespace[-len(path) :]
    if not path:
        return True
    return all(p == "*" or p == label for p, label in zip(path, labels, strict=True))
