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
    K_CONTEXT,
    K_CONVERSATION,
    K_CREATED,
    K_DOC,
    K_LINK_CREATED,
    K_RELATION,
    K_SOURCE,
    K_STRENGTH,
    K_TARGET,
    K_TYPE,
    LINK_VECTOR,
    USER_INFIX,
    Where,
    all_of,
    batches,
    chunk_from_record,
    chunk_metadata,
    link_id,
    memory_from_record,
    memory_metadata,
    own_words,
)
from .search import ChromaSearch

__all__ = ["ChromaDriver"]


class ChromaDriver(ChromaSearch):
    """Memories (a collection per user, and the id directory), knowledge chunks and
    associations in Chroma collections.

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
            # The directory is where an id is taken: Chroma keeps the first add of an id and
            # silently ignores later ones, so the ids holding our token are ours; any other was
            # taken already (or by another process meanwhile), and ours are removed again. No
            # check before: reading the token back tells both, one request fewer per write.
            self._register([r.memory for r in records], token)
            mine = {mid for mid, held, _ in self._directory_documents(ids) if held == token}
            taken = sorted(set(ids) - mine)
            if taken:
                self._undo(self._directory, sorted(mine), ConflictError("ids taken"))
            else:
                try:
                    self._add_records(records, token)
                except BaseException as exc:
                    self._undo(self._directory, ids, exc)
                    raise
            if taken:
                raise ConflictError(
                    f"a memory with id {sorted(taken)[0]} already exists ({len(taken)} of the "
                    "ids given are taken); nothing was stored. Leave id out to get a new one."
                )

    def _add_records(self, records: Sequence[MemoryRecord], token: str) -> None:
        """Add the records to their users' collections (all, or none: a failure deletes what
        was added) and re-index the conversations they join."""
        indexed = self._context_changes(
            new=[r.memory for r in records], terms={r.memory.id: r.terms for r in records}
        )
        groups: dict[str, list[MemoryRecord]] = {}
        for r in records:
            groups.setdefault(r.memory.user_id, []).append(r)
        added: list[tuple[Any, list[str]]] = []
        try:
            for user, group in groups.items():
                collection = self._user_collection(user, create=True)
                ids = [r.memory.id for r in group]
                context = [indexed.pop(mid, (user, ""))[1] for mid in ids]
                self._add(
                    collection,
                    ids,
                    embeddings=[r.vector for r in group],
                    metadatas=[
                        memory_metadata(r.memory, r.terms, extra)
                        for r, extra in zip(group, context, strict=True)
                    ],
                    documents=[r.memory.content for r in group],
                )
                added.append((collection, ids))
        except BaseException as exc:
            for collection, ids in reversed(added):
                self._undo(collection, ids, exc)
            raise
        self._write_user_terms(indexed)

    def _get_memories(self, ids: Sequence[str], user_id: str | None) -> dict[str, Memory]:
        return self._fetch_memories(ids, user_id)

    def _update_memory(
        self,
        memory_id: str,
        user_id: str | None,
        changes: Mapping[str, Any],
        vector: np.ndarray | None,
        terms: str | None,
    ) -> Memory | None:
        with self._write_lock:
            owner = user_id if user_id is not None else self._owners([memory_id]).get(memory_id)
            collection = self._user_collection(owner) if owner is not None else None
            if collection is None:
                return None
            result = self._get(collection, ids=[memory_id], include=["metadatas", "documents"])
            if not result["ids"]:
                return None
            old_meta = result["metadatas"][0]
            current = memory_from_record(memory_id, result["documents"][0], old_meta)
            updated = current.model_copy(update=dict(changes))
            updated = Memory.model_validate(updated.model_dump())
            if terms is None:
                terms = " ".join(own_words(old_meta))
            # The neighbours' terms stay until the context is recomputed below (new content).
            meta: dict[str, Any] = memory_metadata(updated, terms, old_meta.get(K_CONTEXT) or "")
            # Chroma merges metadata on update: a key to drop is set to None.
            for key in old_meta:
                meta.setdefault(key, None)
            columns: dict[str, Any] = {"metadatas": [meta]}
            if vector is not None:
                columns["embeddings"] = [vector]
                columns["documents"] = [updated.content]
            try:
                self._call(collection.update, ids=[memory_id], **columns)
            except BaseException:
                self._forget_vectors(collection.name)
                raise
            if vector is not None and self._vectors is not None:
                self._vectors.replaced(collection.name, [memory_id], [vector])
            if vector is not None and updated.conversation_id is not None:
                place = (updated.user_id, updated.conversation_id, updated.created_at, memory_id)
                self._write_user_terms(self._context_changes(places=[place]))
            return updated

    def _delete_memories(self, ids: Sequence[str], user_id: str | None) -> list[str]:
        with self._write_lock:
            owners = self._owners(ids)
            if user_id is not None:
                owners = {mid: user for mid, user in owners.items() if user == user_id}
            found: list[str] = []
            places: list[tuple[str, str, datetime, str]] = []
            for user, group in self._by_user(list(owners), None).items():
                collection = self._user_collection(user)
                if collection is None:
                    continue
                mine: list[str] = []
                for batch in batches(group, ID_BATCH):
                    page = self._get(collection, ids=list(batch), include=["metadatas"])
                    mine += page["ids"]
                    places += [
                        (user, meta[K_CONVERSATION], moment(meta[K_CREATED]), mid)
                        for mid, meta in zip(page["ids"], page["metadatas"], strict=True)
                        if meta.get(K_CONVERSATION) is not None
                    ]
                # Records first, then their directory entries: an entry left behind by a
                # failure in between is found (and removed) by the next delete of that id.
                self._delete_ids(collection, mine)
                found += mine
            if not owners:
                return []
            self._write_user_terms(self._context_changes(places=places))
            self._delete_ids(self._directory, list(owners))
            # Memories first: a link left behind by a failure here is skipped by related().
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
            return int(self._call(self._directory.count))
        collection = self._user_collection(user_id)
        return 0 if collection is None else int(self._call(collection.count))

    def _iter_memories(self, user_id: str | None, batch_size: int) -> Iterator[Memory]:
        keys = sorted(
            (meta[K_CREATED], mid, user)
            for user, collection in self._scan_users(user_id)
            for mid, meta in self._scan(collection)
        )
        for batch in batches(keys, batch_size):
            found: dict[str, Memory] = {}
            groups: dict[str, list[str]] = {}
            for _, mid, user in batch:
                groups.setdefault(user, []).append(mid)
            for user, group in groups.items():
                found.update(self._fetch_memories(group, user))
            yield from (found[mid] for _, mid, _ in batch if mid in found)

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
            present = set(self._existing_ids(self._directory, [source, target]))
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
        if kind == "memories":
            groups = [
                (self._user_collection(user), group)
                for user, group in self._by_user(ids, None).items()
            ]
        else:
            groups = [(self._knowledge, list(dict.fromkeys(ids)))]
        found: dict[str, np.ndarray] = {}
        for collection, group in groups:
            if collection is None:
                continue
            for batch in batches(group, ID_BATCH):
                result = self._get(collection, ids=list(batch), include=["embeddings"])
                for rid, vector in zip(result["ids"], result["embeddings"], strict=True):
                    found[rid] = np.asarray(vector, dtype=np.float32)
        return found

    # ------------------------------------------------------------------ operations
    def _counts(self) -> dict[str, Any]:
        users = 0
        by_type: dict[str, int] = {}
        memories = 0
        for _, collection in self._user_collections():
            held = 0
            for _, meta in self._scan(collection):
                held += 1
                by_type[meta[K_TYPE]] = by_type.get(meta[K_TYPE], 0) + 1
            memories += held
            users += held > 0
        chunks = 0
        documents: set[str] = set()
        for _, meta in self._scan(self._knowledge):
            chunks += 1
            documents.add(meta[K_DOC])
        return {
            "memories": memories,
            "users": users,
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
            "memories": f"{self.collection_name}{USER_INFIX}<hash of the user>",
            "directory": self.directory_name,
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
            "memories": int(self._call(self._directory.count)),
            "knowledge_chunks": int(self._call(self._knowledge.count)),
            "associations": int(self._call(self._links.count)),
        }
        info = self._read_store_info()
        report["embedder"] = {"name": info.get("embedder"), "dimension": info.get("dimension")}
        return report

    def _stats(self) -> dict[str, Any]:
        return {**self._counts(), **self._where_it_lives()}

    def _close(self) -> None:
        self._release_vectors()
        if self._client is not None:
            self._client.close()
