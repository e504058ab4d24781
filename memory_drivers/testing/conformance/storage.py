"""Conformance: storing, reading, updating and deleting memories; one user never sees another."""

from __future__ import annotations

import random
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from ...base import BaseMemoryDriver
from ...errors import NotFoundError, ValidationError
from ...models import Memory, MemoryFilter, RecallHit
from ..embedders import RecordingEmbedder, fast_embedder
from ..reference import assert_same_hits
from .base import ConformanceBase, MakeDriver, at, contents

__all__ = ["StorageTests"]


class StorageTests(ConformanceBase):
    """Storage, updates, deletes, store_many and tenant isolation."""

    # ================================================================== basics
    def test_store_starts_empty(self, driver: BaseMemoryDriver) -> None:
        """The fixture must yield an empty store. Failing means tests leak into each other
        (the factory reuses a database, collection or server without clearing it)."""
        assert driver.count() == 0
        assert driver.count("u1") == 0
        assert driver.recall("u1") == []
        assert driver.recall("u1", query="anything") == []
        assert driver.recall_global_knowledge("anything") == []
        assert list(driver.iter_memories()) == []

    def test_store_returns_complete_memory(self, driver: BaseMemoryDriver) -> None:
        """``store`` returns a Memory with every field set as given and sensible defaults."""
        before = datetime.now(timezone.utc)
        m = driver.store(
            user_id="u1",
            content="The user's favorite color is blue",
            conversation_id="c1",
            tags=["preference", "color"],
            metadata={"source": "chat", "nested": {"a": [1, 2.5, None, True]}},
            memory_type="preference",
            importance=0.8,
            source="chat",
        )
        assert uuid.UUID(m.id).version == 4
        assert (m.user_id, m.conversation_id, m.content) == (
            "u1",
            "c1",
            "The user's favorite color is blue",
        )
        assert m.tags == ["preference", "color"]
        assert m.metadata == {"source": "chat", "nested": {"a": [1, 2.5, None, True]}}
        assert (m.memory_type, m.importance, m.source) == ("preference", 0.8, "chat")
        assert m.created_at.tzinfo is not None and m.created_at == m.updated_at
        assert before - timedelta(seconds=5) <= m.created_at <= datetime.now(timezone.utc)
        defaults = driver.store("u1", "plain")
        assert defaults.memory_type == driver.settings.memory_default_type
        assert (defaults.importance, defaults.tags, defaults.metadata) == (0.5, [], {})
        assert (defaults.conversation_id, defaults.source) == (None, None)

    def test_get_returns_what_was_stored(self, driver: BaseMemoryDriver) -> None:
        """``get`` returns exactly the stored memory (same fields, same times to the
        microsecond). Failing usually means a field is not stored or loses precision."""
        m = driver.store(
            "u1",
            "Ünïcödé ✓ and emoji 🎉",
            "c1",
            ["b", "a"],
            {"k": "v", "n": 1.5},
            memory_type="fact",
            importance=0.25,
            source="import",
        )
        assert driver.get(m.id) == m
        assert driver.get(m.id, user_id="u1") == m
        assert driver.get(m.id.upper()) == m, "ids are UUIDs; any case must find the memory"

    def test_memories_are_json_serializable(self, driver: BaseMemoryDriver) -> None:
        """Results are pydantic models that round-trip through JSON."""
        m = driver.store("u1", "serialize me", tags=["t"], metadata={"x": [1, {"y": None}]})
        assert Memory.model_validate_json(m.model_dump_json()) == m
        hit = driver.recall("u1", query="serialize me")[0]
        assert RecallHit.model_validate_json(hit.model_dump_json()) == hit

    def test_tags_are_deduplicated_in_order(self, driver: BaseMemoryDriver) -> None:
        m = driver.store("u1", "tagged", tags=["b", "a", "b", "c", "a"])
        assert m.tags == ["b", "a", "c"]
        stored = driver.get(m.id)
        assert stored is not None and stored.tags == ["b", "a", "c"]

    def test_get_missing_or_foreign_is_none(self, driver: BaseMemoryDriver) -> None:
        """An id that does not exist, or belongs to another user, is not an error for get."""
        m = driver.store("u1", "mine")
        assert driver.get(str(uuid.uuid4())) is None
        assert driver.get(m.id, user_id="u2") is None

    # ================================================================== tenant isolation
    def test_users_never_see_each_other(self, driver: BaseMemoryDriver) -> None:
        """A user's recall (every mode), get, update, delete, related and cleanup never see
        another user's memories. Failing means a user filter is missing somewhere."""
        a = driver.store("alice", "secret project falcon launch date", tags=["work"])
        b = driver.store("bob", "secret project falcon launch date", tags=["work"])
        a2 = driver.store("alice", "falcon notes")
        for hits in (
            driver.recall("alice", query="secret project falcon"),
            driver.recall("alice", query="secret project falcon", use_vector=False),
            driver.recall("alice"),
            driver.recall("alice", query="falcon", tags=["work"]),
        ):
            assert hits and all(h.memory.user_id == "alice" for h in hits)
        assert driver.get(b.id, user_id="alice") is None
        with pytest.raises(NotFoundError):
            driver.update(b.id, user_id="alice", content="hijacked")
        assert driver.delete(b.id, user_id="alice") is False
        assert driver.get(b.id) == b
        with pytest.raises(NotFoundError):
            driver.related(b.id, user_id="alice")
        with pytest.raises(NotFoundError):
            driver.associate(a.id, b.id, user_id="alice")
        result = driver.cleanup(user_id="alice", min_importance=1.0, dry_run=False)
        assert {m.id for m in result.memories} == {a.id, a2.id}
        assert driver.get(b.id) == b and driver.count("bob") == 1
        assert driver.count("alice") == 0

    def test_memories_of_two_users_cannot_be_associated(self, driver: BaseMemoryDriver) -> None:
        a = driver.store("alice", "a")
        b = driver.store("bob", "b")
        with pytest.raises(ValidationError, match="different users"):
            driver.associate(a.id, b.id)

    def test_knowledge_is_separate_from_memories(self, driver: BaseMemoryDriver) -> None:
        """Global knowledge never appears in a user's recall or count, and user memories never
        in knowledge recall."""
        driver.store_global_knowledge("The refund window is thirty days", category="policy")
        m = driver.store("u1", "The refund window is thirty days")
        assert driver.count() == 1
        assert [h.memory.id for h in driver.recall("u1", query="refund window")] == [m.id]
        assert [h.memory.id for h in driver.recall("u1", query="refund", use_vector=False)] == [
            m.id
        ]
        knowledge = driver.recall_global_knowledge("refund window")
        assert len(knowledge) == 1 and knowledge[0].chunk.category == "policy"

    # ================================================================== update and delete
    def test_update_changes_fields_and_reembeds(self, driver: BaseMemoryDriver) -> None:
        """``update`` changes only the given fields, keeps created_at, moves updated_at, and
        re-embeds new content so vector and keyword recall find the new text, not the old."""
        m = self.put(
            driver, "The user lives in Paris", tags=["home"], created_at=at(0), metadata={"a": 1}
        )
        driver.store("u1", "The user works in Berlin")
        updated = driver.update(
            m.id,
            content="The user moved to Lisbon",
            importance=0.9,
            tags=["home", "moved"],
            metadata={"b": 2},
            memory_type="fact",
        )
        assert (
            updated.content,
            updated.importance,
            updated.tags,
            updated.metadata,
            updated.memory_type,
        ) == ("The user moved to Lisbon", 0.9, ["home", "moved"], {"b": 2}, "fact")
        assert updated.created_at == m.created_at and updated.updated_at > m.updated_at
        assert driver.get(m.id) == updated
        hit = driver.recall("u1", query="The user moved to Lisbon", top_k=1, search="vector")[0]
        assert hit.memory.id == m.id and hit.score == pytest.approx(1.0, abs=1e-5)
        assert [h.memory.id for h in driver.recall("u1", query="lisbon", use_vector=False)] == [
            m.id
        ]
        assert driver.recall("u1", query="paris", use_vector=False) == []
        assert driver.recall("u1", query="x", tags=["moved"], use_vector=False) == []
        assert contents(driver.recall("u1", tags=["moved"])) == ["The user moved to Lisbon"]
        only_tags = driver.update(m.id, tags=[])
        assert only_tags.tags == [] and only_tags.content == "The user moved to Lisbon"

    def test_update_missing_or_foreign_raises(self, driver: BaseMemoryDriver) -> None:
        m = driver.store("u1", "mine")
        with pytest.raises(NotFoundError):
            driver.update(str(uuid.uuid4()), content="x")
        with pytest.raises(NotFoundError):
            driver.update(m.id, user_id="u2", importance=0.1)
        with pytest.raises(NotFoundError):
            driver.update(str(uuid.uuid4()))
        assert driver.get(m.id) == m

    def test_delete(self, driver: BaseMemoryDriver) -> None:
        """``delete`` returns True once, then False; a deleted memory is never recalled, in
        any mode. Failing the recall part means the vector index drifted from the store."""
        m = driver.store("u1", "forget this please")
        keep = driver.store("u1", "keep this please")
        assert driver.recall("u1", query="forget this please")[0].memory.id == m.id
        assert driver.delete(m.id, user_id="u1") is True
        assert driver.delete(m.id, user_id="u1") is False
        assert driver.delete(str(uuid.uuid4())) is False
        assert driver.get(m.id) is None
        for kwargs in (
            {"query": "forget this please"},
            {"query": "forget please", "use_vector": False},
            {},
        ):
            found = driver.recall("u1", **kwargs)
            assert [h.memory.id for h in found] == [keep.id], f"{kwargs}: {contents(found)}"
        assert driver.delete(keep.id) is True, "delete without user_id deletes any user's"
        assert driver.count() == 0

    def test_recall_sees_every_write_at_once(self, driver: BaseMemoryDriver) -> None:
        """Each recall reflects every write acknowledged before it (stores, updates, deletes,
        in between recalls). Failing means a search index lags behind the store."""
        first = driver.store("u1", "alpha bravo charlie")
        assert contents(driver.recall("u1", query="alpha bravo charlie")) == ["alpha bravo charlie"]
        second = driver.store("u1", "delta echo foxtrot")
        hits = driver.recall("u1", query="delta echo foxtrot", top_k=1, search="vector")
        assert hits[0].memory.id == second.id and hits[0].score == pytest.approx(1.0, abs=1e-5)
        driver.update(first.id, content="golf hotel india")
        hits = driver.recall("u1", query="golf hotel india", top_k=1, search="vector")
        assert hits[0].memory.id == first.id and hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert [h.memory.id for h in driver.recall("u1", query="golf", search="keyword")] == [
            first.id
        ]
        driver.delete(second.id)
        assert [h.memory.id for h in driver.recall("u1", query="delta echo foxtrot")] == [first.id]
        batch = driver.store_many([{"user_id": "u1", "content": f"juliet {i}"} for i in range(5)])
        found = {h.memory.id for h in driver.recall("u1", query="juliet", top_k=10)}
        assert {m.id for m in batch} <= found
        driver.store_global_knowledge("kilo lima mike", category="c", doc_id="K")
        top = driver.recall_global_knowledge("kilo lima mike", search="vector")[0]
        assert top.score == pytest.approx(1.0, abs=1e-5)
        driver.store_global_knowledge("november oscar papa", category="c", doc_id="K")
        hit = driver.recall_global_knowledge("november oscar papa", top_k=1, search="vector")[0]
        assert hit.chunk.content == "november oscar papa"
        assert hit.score == pytest.approx(1.0, abs=1e-5)

    # ================================================================== store_many
    def test_store_many_batches_one_embedding_call(self, make_driver: MakeDriver) -> None:
        """``store_many`` embeds everything in one call and returns memories in order."""
        embedder = RecordingEmbedder(fast_embedder())
        driver = make_driver(embedder)
        items = [
            {"user_id": f"u{i % 3}", "content": f"memory {i}", "tags": [f"t{i}"]} for i in range(25)
        ]
        stored = driver.store_many(items)
        assert embedder.document_calls == [25]
        assert [m.content for m in stored] == [f"memory {i}" for i in range(25)]
        assert driver.count() == 25 and driver.count("u0") == 9
        assert all(driver.get(m.id) == m for m in stored)
        assert driver.store_many([]) == []

    def test_store_many_is_all_or_nothing(self, driver: BaseMemoryDriver) -> None:
        """One bad item rejects the whole batch and names it; nothing is written."""
        driver.store("u1", "existing")
        items = [{"user_id": "u1", "content": f"ok {i}"} for i in range(5)]
        items.insert(3, {"user_id": "u1", "content": "   "})
        with pytest.raises(ValidationError, match="item #3"):
            driver.store_many(items)
        with pytest.raises(ValidationError, match="unknown field 'colour'"):
            driver.store_many([{"user_id": "u1", "content": "x", "colour": "red"}])
        self.assert_unchanged(driver, 1)

    def test_store_many_imports_ids_and_times(self, driver: BaseMemoryDriver) -> None:
        """Items may carry id, created_at and updated_at (imports between stores); an id that
        exists already is a conflict and nothing of the batch is written."""
        mid = str(uuid.uuid4())
        [m] = driver.store_many(
            [
                {
                    "user_id": "u1",
                    "content": "imported",
                    "id": mid,
                    "created_at": at(5),
                    "updated_at": at(6),
                }
            ]
        )
        assert (m.id, m.created_at, m.updated_at) == (mid, at(5), at(6))
        assert driver.get(mid) == m
        from ...errors import ConflictError

        with pytest.raises(ConflictError):
            driver.store_many(
                [
                    {"user_id": "u1", "content": "new one"},
                    {"user_id": "u1", "content": "again", "id": mid},
                ]
            )
        with pytest.raises(ValidationError, match="twice"):
            twin = str(uuid.uuid4())
            driver.store_many(
                [
                    {"user_id": "u1", "content": "a", "id": twin},
                    {"user_id": "u1", "content": "b", "id": twin},
                ]
            )
        self.assert_unchanged(driver, 1)
        exported = list(driver.iter_memories())
        assert exported == [m]

    def test_recall_stays_exact_through_deletes_and_updates(self, driver: BaseMemoryDriver) -> None:
        """Stores, deletes and content updates of three users in two conversations each,
        interleaved with recalls: after every step each user's recall, in every search mode,
        equals the reference answer over what the store holds. Failing means an index kept
        beside the store lost track of which vector is whose (a tenant leak) or of a change, or
        conversation context (the terms a memory is indexed with from the ones before it) did
        not follow a neighbour that changed or went."""
        rng = random.Random(7)
        words = "amber birch cedar dune ember fjord grove heath inlet juniper".split()
        users = ["u1", "u2", "u3"]
        for step in range(30):
            action = rng.choice(["store", "store", "delete", "update"])
            existing = list(driver.iter_memories())
            if action == "store" or not existing:
                driver.store_many(
                    [
                        {
                            "user_id": rng.choice(users),
                            "conversation_id": rng.choice(["c1", "c2", None]),
                            "content": " ".join(rng.sample(words, 3)),
                            "created_at": at(rng.randint(0, 40)),
                        }
                        for _ in range(rng.randint(1, 6))
                    ]
                )
            elif action == "delete":
                for memory in rng.sample(existing, min(len(existing), rng.randint(1, 4))):
                    driver.delete(memory.id)
            else:
                memory = rng.choice(existing)
                driver.update(memory.id, content=" ".join(rng.sample(words, 2)))
            everything = list(driver.iter_memories())
            query = " ".join(rng.sample(words, 2))
            for user in users:
                for search in ("hybrid", "vector", "keyword"):
                    expected = self.expected(
                        driver,
                        everything,
                        MemoryFilter(user_id=user),
                        top_k=5,
                        query=query,
                        search=search,
                    )
                    got = driver.recall(user, query=query, top_k=5, search=search)
                    assert_same_hits(
                        got, expected, 5, context=f"step {step} ({action}), {user}, {search}"
                    )

    def test_concurrent_imports_of_one_id_have_one_winner(self, make_driver: MakeDriver) -> None:
        """Two openers of the same store import batches with the same ids at the same moment:
        for each batch exactly one is told it worked, the other gets ConflictError, and the
        store holds the winner's batch whole. Failing means the id check and the write are not
        atomic across connections or processes (a check-then-add race)."""
        from ...errors import ConflictError

        first, second = make_driver(), make_driver()

        def write(
            name: str,
            driver: BaseMemoryDriver,
            ids: list[str],
            barrier: threading.Barrier,
            outcomes: dict[str, str],
        ) -> None:
            items = [
                {"user_id": "u1", "content": f"{name} {i}", "id": mid} for i, mid in enumerate(ids)
            ]
            barrier.wait()
            try:
                driver.store_many(items)
                outcomes[name] = "stored"
            except ConflictError:
                outcomes[name] = "conflict"

        for round_number in range(6):
            ids = [str(uuid.uuid4()) for _ in range(10)]
            outcomes: dict[str, str] = {}
            barrier = threading.Barrier(2)
            threads = [
                threading.Thread(target=write, args=(name, driver, ids, barrier, outcomes))
                for name, driver in (("first", first), ("second", second))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(outcomes.values()) == ["conflict", "stored"], (round_number, outcomes)
            winner = next(name for name, outcome in outcomes.items() if outcome == "stored")
            stored = [first.get(mid) for mid in ids]
            assert all(m is not None and m.content.startswith(winner) for m in stored), (
                f"round {round_number}: the store does not hold {winner}'s batch whole"
            )
