"""Conversation context: what a memory is indexed with for keyword search.

Chat turns are short ("Yes, last week!"), so a turn alone often cannot be found by its words. A
memory stored with a ``conversation_id`` is indexed with its own keyword terms followed by those
of the ``CONTEXT_WINDOW`` memories before it in the same conversation of the same user (ordered by
``created_at``, then ``id``). A memory without a conversation, or ``CONTEXT_WINDOW=0``, is indexed
with its own terms only. Only the keyword side uses context: embedding neighbouring turns into
the vector made MiniLM worse on the development set.

Drivers keep this true through every write: inserting, re-wording or deleting a memory re-indexes
the ``CONTEXT_WINDOW`` memories after it (:func:`refresh`), in the same transaction. The window a
store was indexed with is kept in its store info (``context_window``); opening it with another
window re-indexes every memory once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from ..models import Memory
from ..text import document_terms

__all__ = [
    "STORE_KEY",
    "ContextRow",
    "Stretch",
    "StretchRequest",
    "changes",
    "indexed_terms",
    "plan",
    "refresh",
]

#: The store-info key holding the window a store's terms were indexed with (absent: 0).
STORE_KEY = "context_window"

Key = TypeVar("Key", bound=Hashable)


@dataclass(frozen=True)
class ContextRow(Generic[Key]):
    """One memory of a conversation, as a driver reads it to re-index: its key, its place in
    the conversation (``created_at``, ``id``), its text, and the terms it is indexed with now.
    ``own``: its own terms (``document_terms(content)``) when the caller has them already,
    so they are not computed twice."""

    key: Key
    created_at: datetime
    id: str
    content: str
    indexed: str
    own: str | None = None


def indexed_terms(own: Sequence[str], window: int) -> list[str]:
    """The indexed terms of each memory of one conversation, given each one's own terms
    (space-separated, in conversation order): its own, then the new ones of the ``window``
    memories before it, nearest first, each term once."""
    words = [terms.split() for terms in own]  # each split once, not once per later memory
    result = []
    for i in range(len(words)):
        seen = dict.fromkeys(words[i])
        for j in range(i - 1, max(i - window, 0) - 1, -1):
            seen.update(dict.fromkeys(words[j]))
        result.append(" ".join(seen))
    return result


def refresh(rows: Sequence[ContextRow[Key]], start: int, window: int) -> dict[Key, str]:
    """The memories whose indexed terms must change, with their new terms.

    ``rows`` is a stretch of one conversation in order (``created_at``, then ``id``);
    ``rows[start:]`` are the memories that may need re-indexing and ``rows[:start]`` the (at
    most ``window``) memories before them, read only as their context. Rows already indexed
    right are left out.
    """
    own = [document_terms(row.content) if row.own is None else row.own for row in rows]
    wanted = indexed_terms(own, window)
    return {
        row.key: terms
        for row, terms in zip(rows[start:], wanted[start:], strict=True)
        if terms != row.indexed
    }


Position = tuple[datetime, str]


@dataclass(frozen=True)
class Stretch(Generic[Key]):
    """What a driver reads of one conversation to re-index around ``low`` .. ``high``: up to
    ``window`` memories before ``low``, every memory from ``low`` to ``high``, and up to
    ``window`` memories after ``high`` (each list in conversation order)."""

    before: Sequence[ContextRow[Key]]
    inside: Sequence[ContextRow[Key]]
    after: Sequence[ContextRow[Key]]


def plan(
    changed: Sequence[Position],
    new: Sequence[ContextRow[Key]],
    window: int,
    read: Callable[[Position, Position], Stretch[Key]],
) -> dict[Key, str]:
    """The indexed terms to write in one conversation after a change.

    ``changed``: the places (``created_at``, ``id``) where memories are inserted, re-worded or
    deleted; ``new``: the memories being inserted (not yet stored; their ``indexed`` is
    ignored); ``read(low, high)``: what the store holds around that stretch (after deletes and
    re-wordings, before inserts). Returns the new indexed terms of every memory whose terms
    change, the inserted ones included.
    """
    places = sorted([*changed, *((row.created_at, row.id) for row in new)])
    if not places:
        return {}
    stretch = read(places[0], places[-1])
    rows = sorted(
        [
            *stretch.inside,
            *stretch.after,
            *(ContextRow(r.key, r.created_at, r.id, r.content, "\0", r.own) for r in new),
        ],
        key=lambda r: (r.created_at, r.id),
    )
    context = list(stretch.before)[-window:] if window > 0 else []
    # Inserted rows carry an impossible "indexed" value, so they are always written.
    return refresh([*context, *rows], len(context), window)


#: (user, conversation, low, high): a stretch of one conversation to read.
StretchRequest = tuple[str, str, Position, Position]


def changes(
    places: Iterable[tuple[str, str, datetime, str]],
    new: Iterable[Memory],
    window: int,
    read: Callable[[str, str, Position, Position], Stretch[str]],
    read_many: Callable[[Sequence[StretchRequest]], Mapping[tuple[str, str], Stretch[str]]]
    | None = None,
    *,
    terms: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The indexed terms (by memory id) that change when ``new`` memories are inserted, or
    memories at ``places`` (user, conversation, ``created_at``, id) are re-worded or deleted.

    ``read(user, conversation, low, high)`` gives what the store holds around a stretch of a
    conversation (see :func:`plan`); it is called once per conversation changed. A driver that
    can read many stretches at once (one round trip) gives ``read_many`` too, which is then
    called once with every conversation's stretch instead. ``terms``: the own terms of
    ``new`` memories by id, when the caller has them (they are then not computed again).
    """
    if window <= 0:
        return {}
    groups: dict[tuple[str, str], tuple[list[Position], list[ContextRow[str]]]] = {}
    for user, conversation, created, mid in places:
        groups.setdefault((user, conversation), ([], []))[0].append((created, mid))
    for m in new:
        if m.conversation_id is not None:
            own = terms.get(m.id) if terms is not None else None
            row = ContextRow(m.id, m.created_at, m.id, m.content, "", own)
            group = groups.get((m.user_id, m.conversation_id))
            if group is None:
                group = groups[m.user_id, m.conversation_id] = ([], [])
            group[1].append(row)
    result: dict[str, str] = {}
    known: Mapping[tuple[str, str], Stretch[str]] = {}
    if read_many is not None and groups:
        requests = []
        for (user, conversation), (at, rows) in groups.items():
            spots = [*at, *((row.created_at, row.id) for row in rows)]
            requests.append((user, conversation, min(spots), max(spots)))
        known = read_many(requests)
    for (user, conversation), (at, rows) in groups.items():

        def stretch(
            low: Position, high: Position, user: str = user, conversation: str = conversation
        ) -> Stretch[str]:
            if (user, conversation) in known:
                return known[user, conversation]
            return read(user, conversation, low, high)

        result.update(plan(at, rows, window, stretch))
    return result
