"""How the chroma driver lays out memories: a collection per user, and the id directory.

A user's recall then reads one small collection with no ``user_id`` filter: Chroma's embedded
engine evaluates a ``where`` against its metadata store on each call, which made a user's recall
in one shared collection cost tens of milliseconds at 100,000 memories.

- ``<CHROMA_COLLECTION>.u.<hash>``: the memories of one user (the first 32 hex digits of the
  SHA-256 of the user id; the id itself is in the collection's metadata, ``memory_drivers.user``).
- ``<CHROMA_COLLECTION>.ids``: one record per memory (id; ``user_id`` and ``created_us`` as
  metadata; ``"<write token> <user id>"`` as the document, which Chroma returns several times
  faster than metadata; the constant vector ``[1.0]``): whose a memory is, for the calls that
  name no user, and the one place that says an id is taken (see
  ``ChromaDriver._insert_memories``).

A store of the earlier layout (every memory in the collection ``CHROMA_COLLECTION``) is migrated
in place when opened: its records are copied into the new collections (upserts, so a copy
interrupted half way is simply done again), the store info ``layout`` is set, then the old
collection is deleted. Re-embedding writes ``<name>.reembed`` copies of every user collection
and of the knowledge collection, then puts them in place.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from ...models import Memory
from .records import (
    ID_BATCH,
    K_CREATED,
    K_USER,
    K_WRITE,
    LAYOUT,
    LAYOUT_KEY,
    LINK_VECTOR,
    OWNER_KEY,
    PAGE,
    REEMBED_SUFFIX,
    USER_INFIX,
    batches,
    memory_from_record,
    micros,
    user_collection_name,
)
from .store import ChromaStore

__all__ = ["ChromaUsers"]

log = logging.getLogger(__name__)

#: Length of the hash in a user collection's name.
_HASH = 32


class ChromaUsers(ChromaStore):
    """The memories' collections: one per user, found by user or, through the directory, by
    memory id."""

    def _after_open(self) -> None:
        self._migrate_layout()

    # ------------------------------------------------------------------ user collections
    def _user_collection(self, user_id: str, *, create: bool = False) -> Any | None:
        """``user_id``'s collection (None when the user has none and ``create`` is False)."""
        collection = self._users.get(user_id)
        if collection is not None:
            return collection
        name = user_collection_name(self.collection_name, user_id)
        collection = self._find_collection(name)
        if collection is not None:
            collection = self._keep_log_short(collection)
        elif create:
            collection = self._open_collection(
                name, vector_space=True, metadata={OWNER_KEY: user_id}
            )
            if self._vectors is not None:  # new and empty: its vectors are known from now on
                self._vectors.created(name, self.embedder.dimension)
            # Chroma prepares a collection for reading on its first read in the process: 10
            # to 45 ms once it holds records, 2 to 5 ms while it is empty (measured). Read it
            # now, so the user's first recall does not pay for it.
            self._call(collection.count)
        if collection is not None:
            self._users[user_id] = collection
        return collection

    def _is_user_collection(self, name: str) -> bool:
        prefix = self.collection_name + USER_INFIX
        return name.startswith(prefix) and len(name) == len(prefix) + _HASH

    def _user_collections(self) -> list[tuple[str, Any]]:
        """(user, collection) of every user who has one, by user."""
        found = []
        for listed in self._call(self._client.list_collections):
            if self._is_user_collection(listed.name):
                # Opened again by name: a listed collection carries Chroma's default
                # embedding function, which this driver never lets near its collections.
                user = str((listed.metadata or {})[OWNER_KEY])
                collection = self._user_collection(user)
                if collection is not None:
                    found.append((user, collection))
        return sorted(found, key=lambda pair: pair[0])

    # ------------------------------------------------------------------ the directory
    def _directory_documents(self, ids: Sequence[str]) -> Iterator[tuple[str, str, str]]:
        """(id, write token, user) of each of these ids that the directory knows."""
        for batch in batches(list(dict.fromkeys(ids)), ID_BATCH):
            page = self._get(self._directory, ids=list(batch), include=["documents"])
            for mid, document in zip(page["ids"], page["documents"], strict=True):
                token, user = (document or "").split(" ", 1)
                yield mid, token, user

    def _owners(self, ids: Sequence[str]) -> dict[str, str]:
        """The user of each of these ids that the directory knows."""
        return {mid: user for mid, _, user in self._directory_documents(ids)}

    def _by_user(self, ids: Sequence[str], user_id: str | None) -> dict[str, list[str]]:
        """These ids grouped by user: all under ``user_id`` when given, else by the directory
        (ids it does not know are left out)."""
        if user_id is not None:
            return {user_id: list(dict.fromkeys(ids))}
        groups: dict[str, list[str]] = {}
        for mid, user in self._owners(ids).items():
            groups.setdefault(user, []).append(mid)
        return groups

    def _fetch_memories(self, ids: Sequence[str], user_id: str | None = None) -> dict[str, Memory]:
        """The memories with these ids (of ``user_id`` when given), keyed by id."""
        found: dict[str, Memory] = {}
        for user, group in self._by_user(ids, user_id).items():
            collection = self._user_collection(user)
            if collection is None:
                continue
            for batch in batches(group, ID_BATCH):
                result = self._get(collection, ids=list(batch), include=["metadatas", "documents"])
                for mid, doc, meta in zip(
                    result["ids"], result["documents"], result["metadatas"], strict=True
                ):
                    found[mid] = memory_from_record(mid, doc, meta)
        return found

    def _register(self, memories: Sequence[Memory], token: str) -> None:
        """Add the directory records of new memories (ids already taken are ignored by
        Chroma: the token read back tells)."""
        self._add(
            self._directory,
            [m.id for m in memories],
            embeddings=[LINK_VECTOR] * len(memories),
            metadatas=[directory_entry(m.user_id, micros(m.created_at)) for m in memories],
            documents=[f"{token} {m.user_id}" for m in memories],
        )

    # ------------------------------------------------------------------ migration
    def _migrate_layout(self) -> None:
        """Move a store of the earlier layout (one collection of every memory) into a
        collection per user; see the module docstring."""
        old = self._find_collection(self.collection_name)
        done = self._read_store_info().get(LAYOUT_KEY) == LAYOUT
        if old is None:
            if not done:
                self._write_store_info({LAYOUT_KEY: LAYOUT})
            return
        if done:  # the copy was complete; deleting the old collection was interrupted
            self._call(self._client.delete_collection, name=self.collection_name)
            return
        self._check_space(old, self.collection_name)
        total = int(self._call(old.count))
        log.warning(
            "Chroma %s: moving %d memories from the collection %r into a collection per user",
            self.location,
            total,
            self.collection_name,
        )
        with self._write_lock:
            moved = 0
            include = ["metadatas", "documents", "embeddings"]
            while True:
                page = self._get(old, include=include, limit=PAGE, offset=moved)
                self._copy_records(page["ids"], page["metadatas"], page["documents"], page)
                moved += len(page["ids"])
                log.info("Chroma %s: moved %d of %d memories", self.location, moved, total)
                if len(page["ids"]) < PAGE:
                    break
            self._write_store_info({LAYOUT_KEY: LAYOUT})
            self._call(self._client.delete_collection, name=self.collection_name)
        log.warning("Chroma %s: moved %d memories", self.location, moved)

    def _copy_records(
        self,
        ids: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]],
        documents: Sequence[str | None],
        page: Mapping[str, Any],
    ) -> None:
        groups: dict[str, list[int]] = {}
        for i, meta in enumerate(metadatas):
            groups.setdefault(meta[K_USER], []).append(i)
        for user, rows in groups.items():
            collection = self._user_collection(user, create=True)
            assert collection is not None  # create=True makes it
            self._forget_vectors(collection.name)
            for batch in batches(rows, self._max_batch):
                self._call(
                    collection.upsert,
                    ids=[ids[i] for i in batch],
                    embeddings=[page["embeddings"][i] for i in batch],
                    metadatas=[metadatas[i] for i in batch],
                    documents=[documents[i] or "" for i in batch],
                )
        for batch in batches(range(len(ids)), self._max_batch):
            self._call(
                self._directory.upsert,
                ids=[ids[i] for i in batch],
                embeddings=[LINK_VECTOR] * len(batch),
                metadatas=[
                    directory_entry(metadatas[i][K_USER], int(metadatas[i][K_CREATED]))
                    for i in batch
                ],
                documents=[
                    f"{metadatas[i].get(K_WRITE) or 'migrated'} {metadatas[i][K_USER]}"
                    for i in batch
                ],
            )

    # ------------------------------------------------------------------ re-embedding
    # Chroma fixes a collection's dimension at its first vector, so new vectors (of any
    # dimension) go to fresh collections "<name>.reembed", with copies of the records; once
    # the base class has written the new stamp, they replace the live ones (delete, rename).
    # The stamp lives in the associations collection, which is never replaced. An interrupted
    # run leaves either the stamp's reembed mark (copy unfinished: the store is refused until
    # reembed() runs again, which starts the copy over) or, without the mark, complete copies
    # not yet renamed: the next open renames them (_finish_interrupted_reembed).
    def _reembeds_live(self, name: str) -> bool:
        """Whether ``name`` is a live collection a re-embedding copies (including the one
        collection of the earlier layout)."""
        return name in (self.collection_name, self.knowledge_collection_name) or (
            self._is_user_collection(name)
        )

    def _leftover_copies(self) -> list[Any]:
        return [
            c
            for c in self._call(self._client.list_collections)
            if c.name.endswith(REEMBED_SUFFIX)
            and self._reembeds_live(c.name[: -len(REEMBED_SUFFIX)])
        ]

    def _replace_live(self, copy: Any) -> None:
        """Put ``copy`` (a complete re-embedded copy, or a listed one: only its name is used)
        in place of its live collection."""
        live = copy.name[: -len(REEMBED_SUFFIX)]
        self._forget_vectors(live)
        self._forget_vectors(copy.name)
        if self._find_collection(live) is not None:
            self._call(self._client.delete_collection, name=live)
        self._call(copy.modify, name=live)

    def _finish_interrupted_reembed(self) -> None:
        if self._read_store_info().get("reembed_target"):
            return  # the copy was not finished; reembed() starts it again
        for copy in self._leftover_copies():
            log.warning(
                "Chroma %s: finishing an interrupted re-embedding of %s", self.location, copy.name
            )
            self._replace_live(copy)

    def _before_reembed(self) -> None:
        with self._write_lock:
            for copy in self._leftover_copies():  # left by an interrupted run
                self._forget_vectors(copy.name)
                self._call(self._client.delete_collection, name=copy.name)
            self._reembedding = {
                collection.name: self._open_collection(
                    collection.name + REEMBED_SUFFIX,
                    vector_space=True,
                    metadata={OWNER_KEY: user},
                )
                for user, collection in self._user_collections()
            }
            self._reembedding[self.knowledge_collection_name] = self._open_collection(
                self.knowledge_collection_name + REEMBED_SUFFIX, vector_space=True
            )

    def _set_vectors(
        self, kind: Literal["memories", "knowledge_chunks"], ids: Sequence[str], vectors: np.ndarray
    ) -> None:
        vector_of = dict(zip(ids, vectors, strict=True))
        if kind == "knowledge_chunks":
            groups = [(self._knowledge, list(ids))]
        else:
            groups = [
                (self._user_collection(user), group)
                for user, group in self._by_user(ids, None).items()
            ]
        for live, group in groups:
            if live is None:
                continue
            target = self._reembedding.get(live.name)
            if target is None:  # not through reembed(): same dimension, in place
                self._forget_vectors(live.name)
                for batch in batches(group, self._max_batch):
                    self._call(
                        live.update, ids=list(batch), embeddings=[vector_of[i] for i in batch]
                    )
                self._forget_vectors(live.name)
                continue
            for batch in batches(group, min(self._max_batch, ID_BATCH)):
                records = self._get(live, ids=list(batch), include=["metadatas", "documents"])
                if records["ids"]:
                    self._call(
                        target.add,
                        ids=records["ids"],
                        embeddings=[vector_of[rid] for rid in records["ids"]],
                        metadatas=records["metadatas"],
                        documents=records["documents"],
                    )

    def _after_reembed(self) -> None:
        with self._write_lock:
            for copy in self._reembedding.values():
                self._replace_live(copy)
            self._reembedding = {}
            self._users = {}
            self._forget_vectors()
            self._knowledge = self._open_collection(
                self.knowledge_collection_name, vector_space=True
            )

    # ------------------------------------------------------------------ scanning
    def _scan_users(self, user_id: str | None) -> Iterator[tuple[str, Any]]:
        """(user, collection) of ``user_id`` (when it has one) or of every user."""
        if user_id is None:
            yield from self._user_collections()
            return
        collection = self._user_collection(user_id)
        if collection is not None:
            yield user_id, collection


def directory_entry(user_id: str, created_us: int) -> dict[str, Any]:
    """The metadata of a memory's directory record."""
    return {K_USER: user_id, K_CREATED: created_us}
