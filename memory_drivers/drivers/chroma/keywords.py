"""Keyword search on Chroma: conversation context kept in the records, and BM25's evidence.

A memory's indexed terms (memory_drivers.ranking.context) are its ``terms`` metadata (its own
terms) followed by its ``context`` (the terms its neighbours add), both space-separated strings:
an array of them could outgrow what Chroma holds in a record (records.MAX_ARRAY_ITEMS). Writes
re-index the memories after the ones they change, under the process's write lock; a store
indexed with another ``CONTEXT_WINDOW`` (or by a version without context) is re-indexed once
when opened. Keyword and hybrid search read every record of the scope in one request and build
the evidence here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from ...models import Memory, MemoryFilter
from ...ranking import KeywordEvidence
from ...ranking import context as ctx
from ...text import document_terms
from .records import (
    EMPTY,
    EPOCH,
    ID_BATCH,
    K_CONTEXT,
    K_CONVERSATION,
    K_CREATED,
    K_TAGS,
    K_TERMS,
    MICROSECOND,
    batches,
    context_of,
    memory_from_record,
    own_words,
    typed_metadata,
    words,
)
from .users import ChromaUsers

__all__ = ["ChromaKeywords", "where_is_exact"]

log = logging.getLogger(__name__)

#: Store info: the version of the records' arrays (1, or absent: empty arrays left out and no
#: terms on knowledge chunks; 2: every array present, see records.EMPTY, a memory's ``terms``
#: array holding its neighbours' terms too; 3: ``terms`` its own, ``context`` its neighbours';
#: 4: ``terms`` a string, not an array).
RECORDS_KEY = "records"
RECORDS_VERSION = "4"


def moment(micros: int) -> datetime:
    return EPOCH + micros * MICROSECOND


def where_is_exact(f: MemoryFilter) -> bool:
    """Whether ``memory_where(f)`` selects exactly what ``f.matches`` accepts (then records
    need no decoding to be checked): not for metadata values a typed key cannot hold."""
    for value in (f.metadata or {}).values():
        typed = typed_metadata("k", value)
        if typed is None or (
            isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53
        ):
            return False
    return f.memory_types != () and f.tags != () and f.exclude_tags != ()


class ChromaKeywords(ChromaUsers):
    """Conversation context and keyword evidence over the user collections."""

    def _after_open(self) -> None:
        super()._after_open()
        self._check_keyword_index()

    # ------------------------------------------------------------------ context on writes
    def _conversation(self, user_id: str, conversation_id: str) -> list[ctx.ContextRow[str]]:
        collection = self._user_collection(user_id)
        if collection is None:
            return []
        where = {K_CONVERSATION: {"$eq": conversation_id}}
        result = self._get(collection, where=where, include=["metadatas"])
        # The own terms are the stored ones: the content is neither read nor tokenised again.
        rows = [
            ctx.ContextRow(
                mid,
                moment(meta[K_CREATED]),
                mid,
                "",
                " ".join(words(meta)),
                " ".join(own_words(meta)),
            )
            for mid, meta in zip(result["ids"], result["metadatas"], strict=True)
        ]
        return sorted(rows, key=lambda r: (r.created_at, r.id))

    def _context_changes(
        self,
        new: Sequence[Memory] = (),
        places: Sequence[tuple[str, str, datetime, str]] = (),
        terms: Mapping[str, str] | None = None,
    ) -> dict[str, tuple[str, str]]:
        """The user and the neighbours' terms (``context``, by id) of the memories whose
        indexed terms change when ``new`` memories are inserted, or the memories at ``places``
        (user, conversation, created_at, id) are re-worded or deleted (``terms``: the new
        memories' own terms by id, not computed again). Call it under the write lock, after
        deletes and re-wordings and before inserts."""
        window = self.context_window
        owner = {m.id: m.user_id for m in new} | {mid: user for user, _, _, mid in places}
        own: dict[str, str] = {
            m.id: terms[m.id] if terms is not None and m.id in terms else document_terms(m.content)
            for m in new
            if m.conversation_id is not None
        }

        def read(
            user: str, conversation: str, low: ctx.Position, high: ctx.Position
        ) -> ctx.Stretch[str]:
            stored = self._conversation(user, conversation)
            owner.update((r.id, user) for r in stored)
            own.update((r.id, r.own or "") for r in stored if r.id not in own)
            place = [(r.created_at, r.id) for r in stored]
            before = [r for r, p in zip(stored, place, strict=True) if p < low][-window:]
            inside = [r for r, p in zip(stored, place, strict=True) if low <= p <= high]
            after = [r for r, p in zip(stored, place, strict=True) if p > high][:window]
            return ctx.Stretch(before, inside, after)

        changed = ctx.changes(places, new, window, read, terms=own)
        return {
            mid: (owner[mid], context_of(own.get(mid, ""), indexed))
            for mid, indexed in changed.items()
        }

    def _write_user_terms(self, contexts: Mapping[str, tuple[str, str]]) -> None:
        """Set the ``context`` of existing memories (id -> (user, neighbours' terms))."""
        groups: dict[str, dict[str, dict[str, Any]]] = {}
        for mid, (user, context) in contexts.items():
            groups.setdefault(user, {})[mid] = {K_CONTEXT: context}
        for user, changes in groups.items():
            collection = self._user_collection(user)
            if collection is not None:
                self._write_metadata(collection, changes)

    def _write_metadata(self, collection: Any, changes: Mapping[str, Mapping[str, Any]]) -> None:
        """Set these metadata keys of existing records (Chroma keeps the other keys)."""
        items = list(changes.items())
        for batch in batches(items, min(self._max_batch, ID_BATCH)):
            self._call(
                collection.update,
                ids=[mid for mid, _ in batch],
                metadatas=[dict(meta) for _, meta in batch],
            )

    def _check_keyword_index(self) -> None:
        """Re-index once: memories when ``CONTEXT_WINDOW`` differs from the store's; and every
        record's arrays when the store was written by an earlier version (which left empty
        arrays out, see ``records.EMPTY``, and gave knowledge chunks no terms)."""
        info = self._read_store_info()
        repair = info.get(RECORDS_KEY) != RECORDS_VERSION
        stored = int(info.get(ctx.STORE_KEY) or 0)
        if stored == self.context_window and not repair:
            return
        log.info(
            "chroma: re-indexing keyword terms (CONTEXT_WINDOW=%d, the store has %d%s)",
            self.context_window,
            stored,
            "; arrays written by an earlier version" if repair else "",
        )
        with self._write_lock:
            if repair:
                chunks = {
                    cid: {K_TERMS: document_terms(document)}
                    for cid, (meta, document) in self._scan_with_documents(self._knowledge)
                    if meta.get(K_TERMS) != document_terms(document)
                }
                self._write_metadata(self._knowledge, chunks)
            changed = repaired = 0
            for _, collection in self._user_collections():
                changes, tags = self._reindex(collection, repair)
                self._write_metadata(collection, changes)
                self._write_metadata(
                    collection, {mid: {K_TAGS: value} for mid, value in tags.items()}
                )
                changed += len(changes)
                repaired += len(tags)
            self._write_store_info(
                {ctx.STORE_KEY: str(self.context_window), RECORDS_KEY: RECORDS_VERSION}
            )
        log.info("chroma: re-indexed %d memories, repaired the tags of %d", changed, repaired)

    def _reindex(
        self, collection: Any, repair: bool
    ) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
        """The terms and context (and, repairing, the tags) of one user's memories that are
        not as they should be, as the metadata to write."""
        groups: dict[str | None, list[tuple[datetime, str, str, Any]]] = {}
        for mid, (meta, document) in self._scan_with_documents(collection):
            key = meta.get(K_CONVERSATION)
            groups.setdefault(key, []).append((moment(meta[K_CREATED]), mid, document, meta))
        changes: dict[str, dict[str, Any]] = {}
        tags: dict[str, list[str]] = {}
        for conversation, rows in groups.items():
            rows.sort(key=lambda row: row[:2])
            if repair:
                own = [document_terms(document) for _, _, document, _ in rows]
            else:
                own = [" ".join(own_words(meta)) for _, _, _, meta in rows]
            wanted = ctx.indexed_terms(own, self.context_window) if conversation else own
            for (_, mid, document, meta), mine, terms in zip(rows, own, wanted, strict=True):
                change: dict[str, Any] = {}
                if meta.get(K_TERMS) != mine:
                    change[K_TERMS] = mine
                context = context_of(mine, terms)
                if context != meta.get(K_CONTEXT):
                    change[K_CONTEXT] = context
                if change:
                    changes[mid] = change
                if repair:
                    true_tags = memory_from_record(mid, document, meta).tags or [EMPTY]
                    if list(meta.get(K_TAGS) or ()) != true_tags:
                        tags[mid] = true_tags
        return changes, tags

    def _scan_with_documents(self, collection: Any) -> list[tuple[str, tuple[Any, str]]]:
        """(id, (metadata, document)) of every record."""
        found = []
        offset = 0
        while True:
            page = self._get(
                collection, include=["metadatas", "documents"], limit=2000, offset=offset
            )
            found += [
                (rid, (meta, doc or ""))
                for rid, meta, doc in zip(
                    page["ids"], page["metadatas"], page["documents"], strict=True
                )
            ]
            if len(page["ids"]) < 2000:
                return found
            offset += 2000

    # ------------------------------------------------------------------ evidence
    @staticmethod
    def _evidence(
        ids: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]],
        terms: Sequence[str],
        *,
        conversations: bool,
    ) -> KeywordEvidence[str]:
        """The keyword evidence of these records (the whole scope)."""
        if conversations:
            order = sorted(
                range(len(ids)),
                key=lambda i: (
                    metadatas[i].get(K_CONVERSATION) is not None,
                    metadatas[i].get(K_CONVERSATION) or "",
                    metadatas[i][K_CREATED],
                    ids[i],
                ),
            )
        else:
            order = list(range(len(ids)))
        wanted = set(terms)
        lengths = np.zeros(len(order), dtype=np.int64)
        continues = np.zeros(len(order), dtype=bool)
        postings: dict[str, list[str]] = {term: [] for term in wanted}
        previous = None
        for n, i in enumerate(order):
            held = words(metadatas[i])
            lengths[n] = len(held)
            for term in wanted.intersection(held):
                postings[term].append(ids[i])
            conversation = metadatas[i].get(K_CONVERSATION) if conversations else None
            continues[n] = conversation is not None and conversation == previous
            previous = conversation
        return KeywordEvidence([ids[i] for i in order], lengths, continues, postings)

    def _scope(
        self, collection: Any, f: MemoryFilter, where: Any, *, embeddings: bool
    ) -> tuple[list[str], list[Any], list[Any]]:
        """Every record of the scope in the user's collection: ids, metadatas, embeddings (one
        request; no documents, which cost Chroma as much again: a hit's is read with it)."""
        include = ["metadatas", *(["embeddings"] if embeddings else [])]
        result = self._get(collection, where=where, include=include)
        ids, metas = result["ids"], result["metadatas"]
        vectors = list(result["embeddings"]) if embeddings else [None] * len(ids)
        if where_is_exact(f):
            return list(ids), list(metas), vectors
        # The filters never look at the content.
        keep = [i for i in range(len(ids)) if f.matches(memory_from_record(ids[i], "", metas[i]))]
        return [ids[i] for i in keep], [metas[i] for i in keep], [vectors[i] for i in keep]
