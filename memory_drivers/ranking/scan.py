"""Keyword evidence from memories in hand, for backends that read a whole scope anyway.

A backend without a keyword index of its own (the automem driver, which reads a user's memories
over HTTP) or one that reads every candidate's record (chroma) builds the
:class:`~memory_drivers.ranking.pipeline.KeywordEvidence` here, from the same rules.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from ..models import Memory
from ..text import document_terms
from .context import indexed_terms
from .pipeline import KeywordEvidence

Key = TypeVar("Key", bound=Hashable)

__all__ = ["conversation_order", "evidence_from_memories", "evidence_of", "indexed_terms_of"]


def indexed_terms_of(memories: Sequence[Memory], window: int) -> dict[str, str]:
    """The indexed terms of each memory (by id), given every memory of its conversations."""
    result = {m.id: document_terms(m.content) for m in memories}
    if window <= 0:
        return result
    groups: dict[tuple[str, str], list[Memory]] = defaultdict(list)
    for m in memories:
        if m.conversation_id is not None:
            groups[(m.user_id, m.conversation_id)].append(m)
    for group in groups.values():
        group.sort(key=lambda m: (m.created_at, m.id))
        own = [result[m.id] for m in group]
        result.update(zip((m.id for m in group), indexed_terms(own, window), strict=True))
    return result


def conversation_order(scope: Sequence[Memory]) -> list[Memory]:
    """``scope`` in conversation order: each conversation's memories together, by
    ``created_at`` then ``id``; memories without a conversation first."""
    return sorted(
        scope,
        key=lambda m: (
            m.conversation_id is not None,
            m.user_id,
            m.conversation_id or "",
            m.created_at,
            m.id,
        ),
    )


def evidence_of(
    keys: Sequence[Key], indexed: Sequence[str], terms: Sequence[str]
) -> KeywordEvidence[Key]:
    """The keyword evidence of items that are not in conversations (knowledge chunks), given
    each one's indexed terms."""
    wanted = set(terms)
    postings: dict[str, list[Key]] = {term: [] for term in wanted}
    lengths = np.zeros(len(keys), dtype=np.int64)
    for i, (key, words) in enumerate(zip(keys, indexed, strict=True)):
        split = words.split()
        lengths[i] = len(split)
        for term in wanted.intersection(split):
            postings[term].append(key)
    return KeywordEvidence(list(keys), lengths, np.zeros(len(keys), dtype=bool), postings)


def evidence_from_memories(
    scope: Sequence[Memory],
    indexed: Mapping[str, str] | Callable[[Memory], str],
    terms: Sequence[str],
) -> KeywordEvidence[str]:
    """The keyword evidence of ``scope`` (every memory that passes the filter), given each
    memory's indexed terms (a mapping by id, or a function of the memory)."""
    ordered = conversation_order(scope)
    wanted = set(terms)
    lengths = np.zeros(len(ordered), dtype=np.int64)
    continues = np.zeros(len(ordered), dtype=bool)
    postings: dict[str, list[str]] = {term: [] for term in wanted}
    for i, m in enumerate(ordered):
        words = indexed[m.id] if isinstance(indexed, Mapping) else indexed(m)
        split = words.split()
        lengths[i] = len(split)
        for term in wanted.intersection(split):
            postings[term].append(m.id)
        if i and m.conversation_id is not None:
            before = ordered[i - 1]
            continues[i] = (before.user_id, before.conversation_id) == (
                m.user_id,
                m.conversation_id,
            )
    return KeywordEvidence([m.id for m in ordered], lengths, continues, postings)
