"""``ChromaDriver``: the primitives that store, read, change and delete records.

Searching is :class:`~.search.ChromaSearch`'s, the connection and collections
:class:`~.store.ChromaStore`'s.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import chromadb
import chromadb.errors
import numpy as np

from ...base import KnowledgeRecord, MemoryRecord
from ...errors import ConflictError, NotFoundError
from ...models import Association, KnowledgeChunk, Memory, RelatedMemory
from .keywords import moment
from .records import (
    ID_BATCH,
    K_CHUNK_INDEX,
    K_CONVERSATION,
    K_CREATED,
    K_DOC,
    K_LINK_CREATED,
    K_RELATION,
    K_SOURCE,
    K_STRENGTH,
    K_TARGET,
    K_TYPE,
    K_USER,
    K_WRITE,
    LINK_VECTOR,
    Where,
    all_of,
    batches,
    chunk_from_record,
    chunk_metadata,
    link_id,
    memory_from_record,
    memory_metadata,
    words,
)
from .search import ChromaSearch

__all__ = ["ChromaDriver"]


class ChromaDriver(ChromaSearch):
    """Memories, knowledge chunks and associations in three Chroma collections.

    ``CHROMA_URL`` set: a Chroma server over HTTP (retries, typed connection errors). Unset: an
    embedded persistent client on ``CHROMA_PATH`` (one process per directory, as Chroma
    requires).
    """

    name = "chroma"
    vectors_readable = True

    # ------------------------------------------------------------------ memories
    def _insert_memories(self, records: Sequence[MemoryRecord]) -> None:
        ids = [r.memory.id for r in records]
        token = uuid.uuid4().hex
        with self._write_lock:
            taken = self._existing_ids(self._memories, ids)
            if not taken:
                indexed = self._context_changes(new=[r.memory for r in records])
                metadatas = [
                    {**memory_metadata(r.memory, indexed.pop(r.memory.id, r.terms)), K_WRITE: token}
                    for r in records
                ]
                self._add(
                    self._memories,
                    ids,
                    embeddings=[r.vector for r in records],
                    metadatas=metadatas,
                    documents=[r.memory.content for r in records],
                )
                # Another process may have added some of these ids since the check above:
                # Chroma then kept its record and ignored ours. The ids holding our token are
                # ours; any other was taken, and what we added is removed again.
                mine: set[str] = set()
                for batch in batches(ids, ID_BATCH):
                    where = {K_WRITE: {"$eq": token}}
                    mine.update(
                        self._get(self._memories, ids=list(batch), where=where, include=[])["ids"]
                    )
                taken = sorted(set(ids) - mine)
                if taken:
                    self._undo(self._memories, sorted(mine), ConflictError("taken meanwhile"))
                else:
                    self._write_terms(self._memories, indexed)
            if taken:
                raise ConflictError(
                    f"a memory with id {sorted(taken)[0]} already exists ({len(taken)} of the "
                    "ids given are taken); nothing was stored. Leave id out to get a new one."
                )

    def _get_memories(self, ids: Sequence[str], user_id: str | None) -> dict[str, Memory]:
        where = {K_USER: {"$eq": user_id}} if user_id is not None else None
        return self._fetch_memories(ids, where)

    def _update_memory(
        self,
        memory_id: str,
        user_id: str | None,
        changes: Mapping[str, Any],
        vector: np.ndarray | None,
        terms: str | None,
    ) -> Memory | None:
        with self._write_lock:
            where = {K_USER: {"$eq": user_id}} if user_id is not None else None
            result = self._get(
                self._memories, ids=[memory_id], where=where, include=["metadatas", "documents"]
            )
            if not result["ids"]:
                return None
            old_meta = result["metadatas"][0]
            current = memory_from_record(memory_id, result["documents"][0], old_meta)
            updated = current.model_copy(update=dict(changes))
            updated = Memory.model_validate(updated.model_dump())
            if terms is None:
                terms = " ".join(words(old_meta))
            meta: dict[str, Any] = memory_metadata(updated, terms)
            # Chroma merges metadata on update: a key to drop is set to None.
            for key in old_meta:
                meta.setdefault(key, None)
            columns: dict[str, Any] = {"metadatas": [meta]}
            if vector is not None:
                columns["embeddings"] = [vector]
                columns["documents"] = [updated.content]
            self._call(self._memories.update, ids=[memory_id], **columns)
            if vector is not None and updated.conversation_id is not None:
                place = (updated.user_id, updated.conversation_id, updated.created_at, memory_id)
                self._write_terms(self._memories, self._context_changes(places=[place]))
            return updated

    def _delete_memories(self, ids: Sequence[str], user_id: str | None) -> list[str]:
        with self._write_lock:
            where = {K_USER: {"$eq": user_id}} if user_id is not None else None
            found: list[str] = []
            places: list[tuple[str, str, datetime, str]] = []
            for batch in batches(list(dict.fromkeys(ids)), ID_BATCH):
                page = self._get(
                    self._memories, ids=list(batch), where=where, include=["metadatas"]
                )
                found += page["ids"]
                places += [
                    (meta[K_USER], meta[K_CONVERSATION], moment(meta[K_CREATED]), mid)
                    for mid, meta in zip(page["ids"], page["metadatas"], strict=True)
                    if meta.get(K_CONVERSATION) is not None
                ]
            if not found:
                return []
            # Memories first: a link left behind by a failure here is skipped by related().
            self._delete_ids(self._memories, found)
            self._write_terms(self._memories, self._context_changes(places=places))
            for batch in batches(found, ID_BATCH):
                self._call(
                    self._links.delete,
                    where={
                        "$or": [
                            {K_SOURCE: {"$in": list(batch)}},
                            {K_TARGET: {"$in": list(batch)}},
                        ]
                    },
                )
            return found

    def _count_memories(self, user_id: str | None) -> int:
        if user_id is None:
            return int(self._call(self._memories.count))
        where = {K_USER: {"$eq": user_id}}
        return len(self._get(self._memories, where=where, include=[])["ids"])

    def _iter_memories(self, user_id: str | None, batch_size: int) -> Iterator[Memory]:
        where = {K_USER: {"$eq": user_id}} if user_id is not None else None
        keys = sorted((meta[K_CREATED], mid) for mid, meta in self._scan(self._memories, where))
        for batch in batches(keys, batch_size):
            found = self._fetch_memories([mid for _, mid in batch])
            yield from (found[mid] for _, mid in batch if mid in found)

    # ------------------------------------------------------------------ knowledge
    def _replace_knowledge(self, doc_id: str, records: Sequence[KnowledgeRecord]) -> None:
        with self._write_lock:
            where = {K_DOC: {"$eq": doc_id}}
            old = self._get(self._knowledge, where=where, include=[])["ids"]
            new = [r.chunk.id for r in records]
            self._add(
                self._knowledge,
                new,
                embeddings=[r.vector for r in records],
                metadatas=[chunk_metadata(r.chunk, r.terms) for r in records],
                documents=[r.chunk.content for r in records],
            )
            stale = sorted(set(old) - set(new))
            if stale:
                try:
                    self._delete_ids(self._knowledge, stale)
                except BaseException as exc:
                    self._undo(self._knowledge, new, exc)
                    raise

    def _get_knowledge(self, doc_id: str) -> list[KnowledgeChunk]:
        result = self._get(
            self._knowledge, where={K_DOC: {"$eq": doc_id}}, include=["metadatas", "documents"]
        )
        return [
            chunk_from_record(cid, doc, meta)
            for cid, doc, meta in zip(
                result["ids"], result["documents"], result["metadatas"], strict=True
            )
        ]

    def _delete_knowledge(self, doc_id: str) -> bool:
        with self._write_lock:
            ids = self._get(self._knowledge, where={K_DOC: {"$eq": doc_id}}, include=[])["ids"]
            if ids:
                self._delete_ids(self._knowledge, ids)
            return bool(ids)

    def _iter_knowledge(self, batch_size: int) -> Iterator[KnowledgeChunk]:
        keys = sorted(
            (meta[K_DOC], meta[K_CHUNK_INDEX], cid) for cid, meta in self._scan(self._knowledge)
        )
        for batch in batches(keys, batch_size):
            ids = [cid for _, _, cid in batch]
            result = self._get(self._knowledge, ids=ids, include=["metadatas", "documents"])
            found = {
                cid: chunk_from_record(cid, doc, meta)
                for cid, doc, meta in zip(
                    result["ids"], result["documents"], result["metadatas"], strict=True
                )
            }
            yield from (found[cid] for cid in ids if cid in found)

    # ------------------------------------------------------------------ associations
    def _upsert_association(self, association: Association) -> Association:
        source, target = association.source_id, association.target_id
        with self._write_lock:
            present = set(self._existing_ids(self._memories, [source, target]))
            for mid in (source, target):
                if mid not in present:
                    raise NotFoundError(f"no memory {mid}")
            lid = link_id(source, target, association.relationship_type)
            existing = self._get(self._links, ids=[lid], include=["metadatas"])
            created = association.created_at
            if existing["ids"]:
                created = datetime.fromisoformat(existing["metadatas"][0][K_LINK_CREATED])
            self._call(
                self._links.upsert,
                ids=[lid],
                embeddings=[LINK_VECTOR],
                metadatas=[
                    {
                        K_SOURCE: source,
                        K_TARGET: target,
                        K_RELATION: association.relationship_type,
                        K_STRENGTH: float(association.strength),
                        K_LINK_CREATED: created.isoformat(),
                    }
                ],
            )
        return association.model_copy(update={"created_at": created})

    def _related(self, memory_id: str, relationship_type: str | None) -> list[RelatedMemory]:
        conditions: list[Where] = [
            {"$or": [{K_SOURCE: {"$eq": memory_id}}, {K_TARGET: {"$eq": memory_id}}]}
        ]
        if relationship_type is not None:
            conditions.append({K_RELATION: {"$eq": relationship_type}})
        links = [meta for _, meta in self._scan(self._links, all_of(conditions))]
        others = [
            link[K_TARGET] if link[K_SOURCE] == memory_id else link[K_SOURCE] for link in links
        ]
        found = self._fetch_memories(others)
        related = []
        for link, other in zip(links, others, strict=True):
            if other not in found:
                continue  # a link whose memory is gone (a delete interrupted half way)
            related.append(
                RelatedMemory(
                    memory=found[other],
                    relationship_type=link[K_RELATION],
                    strength=link[K_STRENGTH],
                    direction="outgoing" if link[K_SOURCE] == memory_id else "incoming",
                    created_at=datetime.fromisoformat(link[K_LINK_CREATED]),
                )
            )
        return related

    def _iter_associations(self, batch_size: int) -> Iterator[Association]:
        for _, link in self._scan(self._links):
            yield Association(
                source_id=link[K_SOURCE],
                target_id=link[K_TARGET],
                relationship_type=link[K_RELATION],
                strength=link[K_STRENGTH],
                created_at=datetime.fromisoformat(link[K_LINK_CREATED]),
            )

    # ------------------------------------------------------------------ vectors
    def _read_vectors(
        self, kind: Literal["memories", "knowledge_chunks"], ids: Sequence[str]
    ) -> dict[str, np.ndarray]:
        collection = self._memories if kind == "memories" else self._knowledge
        found: dict[str, np.ndarray] = {}
        for batch in batches(list(dict.fromkeys(ids)), ID_BATCH):
            result = self._get(collection, ids=list(batch), include=["embeddings"])
            for rid, vector in zip(result["ids"], result["embeddings"], strict=True):
                found[rid] = np.asarray(vector, dtype=np.float32)
        return found

    # ------------------------------------------------------------------ operations
    def _counts(self) -> dict[str, Any]:
        users: set[str] = set()
        by_type: dict[str, int] = {}
        memories = 0
        for _, meta in self._scan(self._memories):
            memories += 1
            users.add(meta[K_USER])
            by_type[meta[K_TYPE]] = by_type.get(meta[K_TYPE], 0) + 1
        chunks = 0
        documents: set[str] = set()
        for _, meta in self._scan(self._knowledge):
            chunks += 1
            documents.add(meta[K_DOC])
        return {
            "memories": memories,
            "users": len(users),
            "associations": int(self._call(self._links.count)),
            "knowledge_documents": len(documents),
            "knowledge_chunks": chunks,
            "memory_types": dict(sorted(by_type.items())),
        }

    def _where_it_lives(self) -> dict[str, Any]:
        place: dict[str, Any] = {"mode": self.mode}
        if self.mode == "server":
            place["url"] = self.url
        else:
            place["path"] = str(self.path)
        place["collections"] = {
            "memories": self.collection_name,
            "knowledge": self.knowledge_collection_name,
            "associations": self.associations_collection_name,
        }
        return place

    def _health(self) -> dict[str, Any]:
        report = self._where_it_lives()
        if self.mode == "server":
            report["heartbeat"] = int(self._call(self._client.heartbeat))
            report["server_version"] = str(self._call(self._client.get_version))
        report["chroma_version"] = chromadb.__version__
        report["counts"] = {
            "memories": int(self._call(self._memories.count)),
            "knowledge_chunks": int(self._call(self._knowledge.count)),
            "associations": int(self._call(self._links.count)),
        }
        info = self._read_store_info()
        report["embedder"] = {"name": info.get("embedder"), "dimension": info.get("dimension")}
        return report

    def _stats(self) -> dict[str, Any]:
        return {**self._counts(), **self._where_it_lives()}

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
