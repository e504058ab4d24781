"""The conformance suite every driver passes in full.

Subclass :class:`MemoryDriverConformance` in a test module and supply one fixture,
``driver_factory``: a callable ``factory(*, embedder, settings) -> driver`` that opens **the same
store** each time it is called within a test (so close-and-reopen can be tested), empty at the
first call, and that cleans up after the test::

    import pytest
    from memory_drivers.testing import MemoryDriverConformance

    class TestMyDriver(MemoryDriverConformance):
        @pytest.fixture
        def driver_factory(self, tmp_path):
            def factory(*, embedder, settings):
                return MyDriver(settings.replace(my_path=str(tmp_path)), embedder=embedder)
            yield factory

Every test's docstring says what a failure usually means. Most tests use a fast deterministic
embedder; the ``test_semantic_*`` tests use the real default model.
"""

from __future__ import annotations

import math
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest

from ..base import BaseMemoryDriver
from ..config import Settings, build_settings
from ..embeddings import Embedder
from ..embeddings.hashing import HashingEmbedder
from ..errors import (
    DriverClosedError,
    EmbedderMismatchError,
    EmbeddingError,
    NotFoundError,
    ValidationError,
)
from ..models import (
    RELATIONSHIP_TYPES,
    KnowledgeDocument,
    Memory,
    MemoryFilter,
    RecallHit,
)
from ..text import chunk_text
from .embedders import FaultyEmbedder, RecordingEmbedder, default_embedder, fast_embedder
from .reference import assert_same_hits, expected_hits

__all__ = ["MemoryDriverConformance"]

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
DriverFactory = Callable[..., BaseMemoryDriver]
MakeDriver = Callable[..., BaseMemoryDriver]


def at(hours: float) -> datetime:
    """A fixed time: ``hours`` after 2026-01-01 00:00 UTC."""
    return T0 + timedelta(hours=hours)


def contents(hits: list[RecallHit]) -> list[str]:
    return [hit.memory.content for hit in hits]


class MemoryDriverConformance:
    """The shared semantics, as tests. Subclasses supply ``driver_factory`` (see module doc)."""

    # ================================================================== fixtures
    @pytest.fixture
    def driver_factory(self) -> DriverFactory:
        pytest.fail(
            "a conformance test class must define a 'driver_factory' fixture that opens the "
            "same (initially empty) store each time it is called"
        )

    @pytest.fixture
    def base_settings(self) -> Settings:
        """Default settings, unaffected by a .env file in the working directory."""
        return build_settings(_env_file=None)

    @pytest.fixture
    def make_driver(
        self, driver_factory: DriverFactory, base_settings: Settings
    ) -> Iterator[MakeDriver]:
        """Open the test's store (again): ``make_driver(embedder=None, **settings)``."""
        opened: list[BaseMemoryDriver] = []

        def make(embedder: Embedder | None = None, **settings: Any) -> BaseMemoryDriver:
            driver = driver_factory(
                embedder=embedder or fast_embedder(),
                settings=base_settings.replace(**settings) if settings else base_settings,
            )
            opened.append(driver)
            return driver

        try:
            yield make
        finally:
            for driver in reversed(opened):
                driver.close()

    @pytest.fixture
    def driver(self, make_driver: MakeDriver) -> BaseMemoryDriver:
        """An empty store with the fast embedder."""
        return make_driver()

    @pytest.fixture
    def semantic_driver(self, make_driver: MakeDriver) -> BaseMemoryDriver:
        """An empty store with the real default embedding model."""
        return make_driver(default_embedder())

    # ================================================================== helpers
    @staticmethod
    def put(driver: BaseMemoryDriver, content: str, user: str = "u1", **fields: Any) -> Memory:
        """Store one memory through ``store_many`` (so ``created_at`` can be fixed)."""
        return driver.store_many([{"user_id": user, "content": content, **fields}])[0]

    @staticmethod
    def assert_unchanged(driver: BaseMemoryDriver, before: int) -> None:
        assert driver.count() == before, "a rejected call still wrote something"

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

    # ================================================================== recall: vector
    def test_vector_recall_ranks_by_cosine_similarity(self, driver: BaseMemoryDriver) -> None:
        """Scores are cosine similarities, highest first, computed from the embedder's vectors.
        Failing usually means distances are reported instead of similarities (the opposite
        direction), or vectors are not normalized."""
        texts = [
            "green tea in the morning",
            "black coffee at night",
            "green tea and black coffee",
            "running shoes",
            "green",
        ]
        stored = driver.store_many([{"user_id": "u1", "content": t} for t in texts])
        hits = driver.recall("u1", query="green tea", top_k=5)
        expected = expected_hits(
            stored, MemoryFilter(user_id="u1"), top_k=5, query="green tea", embedder=driver.embedder
        )
        assert_same_hits(hits, expected, 5)
        scores = [h.score for h in hits]
        assert all(s is not None and -1.0 - 1e-6 <= s <= 1.0 + 1e-6 for s in scores)
        assert scores == sorted((s for s in scores if s is not None), reverse=True)

    def test_identical_text_scores_one(self, driver: BaseMemoryDriver) -> None:
        """A query equal to a memory's text scores 1.0 (cosine of a vector with itself)."""
        driver.store("u1", "exactly this sentence")
        driver.store("u1", "something unrelated entirely")
        hits = driver.recall("u1", query="exactly this sentence", top_k=1)
        assert hits[0].memory.content == "exactly this sentence"
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)

    def test_top_k_limits_results(self, driver: BaseMemoryDriver) -> None:
        driver.store_many([{"user_id": "u1", "content": f"note number {i}"} for i in range(12)])
        assert len(driver.recall("u1", query="note", top_k=5)) == 5
        assert len(driver.recall("u1", query="note", top_k=50)) == 12
        assert len(driver.recall("u1", top_k=3)) == 3
        assert len(driver.recall("u1", query="note", top_k=4, use_vector=False)) == 4
        assert len(driver.recall("u1", query="note")) == 10, "top_k defaults to 10"

    def test_filters_apply_before_top_k(self, driver: BaseMemoryDriver) -> None:
        """Filters apply before ``top_k`` is cut: many close matches that the filter excludes
        must not crowd out the few that pass. Failing means the driver searched first and
        filtered the top k afterwards (the most reported bug of memory layers)."""
        noise: list[dict[str, Any]] = [
            {"user_id": "u1", "content": f"apple banana cherry {i}", "tags": ["noise"]}
            for i in range(60)
        ]
        keep = [
            {
                "user_id": "u1",
                "content": f"zebra quantum violin {i}",
                "tags": ["keep"],
                "memory_type": "fact",
                "importance": 0.9,
                "metadata": {"k": 1},
            }
            for i in range(3)
        ]
        driver.store_many(noise + keep)
        driver.store_many([{"user_id": "u2", "content": "zebra quantum violin other"}])
        query = "apple banana cherry"
        for filters in (
            {"tags": ["keep"]},
            {"exclude_tags": ["noise"]},
            {"memory_types": ["fact"]},
            {"min_importance": 0.8},
            {"metadata": {"k": 1}},
        ):
            for use_vector in (True, False):
                q = query if use_vector else "apple zebra"
                hits = driver.recall("u1", query=q, top_k=3, use_vector=use_vector, **filters)
                assert sorted(contents(hits)) == [f"zebra quantum violin {i}" for i in range(3)], (
                    f"filter {filters}, use_vector={use_vector}"
                )

    # ================================================================== recall: other modes
    def test_recall_without_query_is_newest_first(self, driver: BaseMemoryDriver) -> None:
        """``query=None`` lists the newest memories first, with no score."""
        driver.store_many(
            [{"user_id": "u1", "content": f"m{i}", "created_at": at(i)} for i in (3, 1, 4, 0, 2)]
        )
        hits = driver.recall("u1", top_k=3)
        assert contents(hits) == ["m4", "m3", "m2"]
        assert all(h.score is None for h in hits)

    def test_ties_break_newest_first_then_by_id(self, driver: BaseMemoryDriver) -> None:
        """Equal scores (and equal times) come in the shared order: newer first, then id."""
        same_time = driver.store_many(
            [{"user_id": "u1", "content": "same words", "created_at": at(1)} for _ in range(3)]
        )
        newer = self.put(driver, "same words", created_at=at(2))
        # Older twins stored after the newer ones, so insertion order is not the answer.
        older = driver.store_many(
            [{"user_id": "u1", "content": "same words", "created_at": at(0)} for _ in range(8)]
        )
        expected = [newer.id, *sorted(m.id for m in same_time), *sorted(m.id for m in older)]
        for kwargs in ({}, {"query": "same words"}, {"query": "words", "use_vector": False}):
            for top_k in (2, 4, 6, 20):
                got = [h.memory.id for h in driver.recall("u1", top_k=top_k, **kwargs)]
                assert got == expected[:top_k], f"{kwargs} top_k={top_k}"

    def test_keyword_recall_matches_terms(self, driver: BaseMemoryDriver) -> None:
        """``use_vector=False`` matches shared terms (case, accents and word endings aside) and
        scores by the share of query terms found. Failing usually means the backend's full-text
        search tokenizes differently from memory_drivers.text."""
        stored = driver.store_many(
            [
                {"user_id": "u1", "content": "The user loves hiking in the Alps"},
                {"user_id": "u1", "content": "Hiking boots are in the CAFÉ closet"},
                {"user_id": "u1", "content": "Cooking pasta on Sundays"},
                {"user_id": "u1", "content": "the and of"},
            ]
        )
        for query in ("hikes alps", "cafe", "Cooking boots", "Sunday"):
            hits = driver.recall("u1", query=query, use_vector=False, top_k=10)
            expected = expected_hits(
                stored, MemoryFilter(user_id="u1"), top_k=10, query=query, use_vector=False
            )
            assert_same_hits(hits, expected, 10, context=query)
            assert hits, f"nothing found for {query!r}"
        hits = driver.recall("u1", query="hiking alps", use_vector=False)
        assert contents(hits)[0] == "The user loves hiking in the Alps"
        assert [h.score for h in hits] == [1.0, 0.5]
        assert driver.recall("u1", query="the of and", use_vector=False) == [], (
            "a query of stop words only matches nothing"
        )
        assert driver.recall("u1", query="xylophone", use_vector=False) == []

    # ================================================================== filters
    def test_conversation_filter(self, driver: BaseMemoryDriver) -> None:
        driver.store("u1", "in c1", conversation_id="c1")
        driver.store("u1", "in c2", conversation_id="c2")
        driver.store("u1", "in none")
        for kwargs in ({}, {"query": "in"}, {"query": "c1 c2 none", "use_vector": False}):
            assert contents(driver.recall("u1", "c1", **kwargs)) == ["in c1"]

    def test_memory_type_filter(self, driver: BaseMemoryDriver) -> None:
        driver.store("u1", "a fact", memory_type="fact")
        driver.store("u1", "an episode", memory_type="episodic")
        driver.store("u1", "a preference", memory_type="preference")
        hits = driver.recall("u1", memory_types=["fact", "preference"])
        assert sorted(contents(hits)) == ["a fact", "a preference"]

    def test_tag_filters(self, driver: BaseMemoryDriver) -> None:
        """``tags`` with tag_mode any/all, ``exclude_tags`` (also as the sixth positional
        parameter). Tags match exactly: no prefix or case folding."""
        driver.store("u1", "both", tags=["red", "blue"])
        driver.store("u1", "red only", tags=["red"])
        driver.store("u1", "blue only", tags=["blue"])
        driver.store("u1", "untagged")
        driver.store("u1", "prefix", tags=["redder", "Red"])

        def found(**kwargs: Any) -> list[str]:
            return sorted(contents(driver.recall("u1", **kwargs)))

        assert found(tags=["red"]) == ["both", "red only"]
        assert found(tags=["red", "blue"]) == ["blue only", "both", "red only"]
        assert found(tags=["red", "blue"], tag_mode="all") == ["both"]
        assert found(exclude_tags=["red"]) == ["blue only", "prefix", "untagged"]
        assert found(tags=["blue"], exclude_tags=["red"]) == ["blue only"]
        assert found(tags=[]) == sorted(["both", "red only", "blue only", "untagged", "prefix"])
        positional = driver.recall("u1", None, None, 10, True, ["blue", "red"])
        assert sorted(contents(positional)) == ["prefix", "untagged"]

    def test_tags_with_json_and_query_syntax_match_exactly(self, driver: BaseMemoryDriver) -> None:
        """Tags holding quotes, commas, brackets, backslashes, wildcards or non-ASCII letters
        match only themselves. Failing means a backend matches tags by substring or pattern
        (a tag filter that also finds other tags)."""
        tricky = [
            'x", "red',
            "red]",
            "[red",
            '"red"',
            "re\\d",
            "red%",
            "re_d",
            "rëd",
            "RED",
            "r ed",
        ]
        stored = {t: driver.store("u1", f"tagged {i}", tags=[t]) for i, t in enumerate(tricky)}
        plain = driver.store("u1", "plain red", tags=["red"])
        assert [h.memory.id for h in driver.recall("u1", tags=["red"])] == [plain.id]
        for tag, memory in stored.items():
            assert [h.memory.id for h in driver.recall("u1", tags=[tag])] == [memory.id], tag
        excluded = {h.memory.id for h in driver.recall("u1", exclude_tags=["red"], top_k=50)}
        assert excluded == {m.id for m in stored.values()}
        both = driver.recall("u1", tags=["red", 'x", "red'], tag_mode="all")
        assert both == []

    def test_time_filters(self, driver: BaseMemoryDriver) -> None:
        """``since`` is inclusive, ``until`` exclusive, on ``created_at``; naive datetimes are
        UTC and ISO strings work."""
        for hour in range(5):
            self.put(driver, f"h{hour}", created_at=at(hour))
        assert sorted(contents(driver.recall("u1", since=at(1), until=at(3)))) == ["h1", "h2"]
        assert sorted(contents(driver.recall("u1", since=at(3)))) == ["h3", "h4"]
        assert sorted(contents(driver.recall("u1", until=at(1)))) == ["h0"]
        naive = at(3).replace(tzinfo=None)
        assert sorted(contents(driver.recall("u1", since=naive))) == ["h3", "h4"]
        assert sorted(contents(driver.recall("u1", since="2026-01-01T03:00:00Z"))) == ["h3", "h4"]
        other_zone = at(3).astimezone(timezone(timedelta(hours=-5)))
        assert sorted(contents(driver.recall("u1", since=other_zone))) == ["h3", "h4"]

    def test_importance_filter_is_inclusive(self, driver: BaseMemoryDriver) -> None:
        for value in (0.0, 0.3, 0.5, 0.7, 1.0):
            driver.store("u1", f"i{value}", importance=value)
        assert sorted(contents(driver.recall("u1", min_importance=0.5))) == ["i0.5", "i0.7", "i1.0"]
        assert len(driver.recall("u1", min_importance=0.0)) == 5

    def test_metadata_filter_is_json_equality(self, driver: BaseMemoryDriver) -> None:
        """Metadata filters compare JSON values: 1 == 1.0, but 1, true and "1" differ; None
        matches a stored null, not a missing key; several keys must all match."""
        driver.store("u1", "int", metadata={"v": 1, "lang": "en"})
        driver.store("u1", "float", metadata={"v": 1.0, "lang": "de"})
        driver.store("u1", "true", metadata={"v": True})
        driver.store("u1", "string", metadata={"v": "1"})
        driver.store("u1", "null", metadata={"v": None})
        driver.store("u1", "missing", metadata={"other": 1})
        driver.store("u1", "nested", metadata={"v": {"deep": 1}})

        def found(meta: dict[str, Any]) -> list[str]:
            return sorted(contents(driver.recall("u1", metadata=meta)))

        assert found({"v": 1}) == ["float", "int"]
        assert found({"v": 1.0}) == ["float", "int"]
        assert found({"v": True}) == ["true"]
        assert found({"v": False}) == []
        assert found({"v": "1"}) == ["string"]
        assert found({"v": None}) == ["null"]
        assert found({"v": 1, "lang": "en"}) == ["int"]
        assert found({"lang": "fr"}) == []
        assert found({'key with spaces & "quotes"': 1}) == []

    def test_filters_match_the_reference_semantics(self, driver: BaseMemoryDriver) -> None:
        """Random data and random filter combinations, in every mode, against the reference
        answer computed from MemoryFilter.matches and the shared scoring. Failing points at
        the filter or ordering rule the driver translates differently (the assertion says which
        combination)."""
        rng = random.Random(20261121)
        words = (
            "apple banana cherry delta echo falcon garden harbor island jungle kettle "
            "lemon mango nectar orbit piano quartz river sunset tiger"
        ).split()
        items = []
        for _ in range(90):
            meta: dict[str, Any] = {}
            if rng.random() < 0.7:
                meta["topic"] = rng.choice(["a", "b"])
            if rng.random() < 0.5:
                meta["n"] = rng.choice([1, 2, 2.0, True, None])
            items.append(
                {
                    "user_id": rng.choice(["u1", "u1", "u2", "u3"]),
                    "conversation_id": rng.choice(["c1", "c2", None]),
                    "content": " ".join(rng.sample(words, rng.randint(2, 6))),
                    "memory_type": rng.choice(["fact", "episodic", "preference", "semantic"]),
                    "tags": rng.sample(["t1", "t2", "t3", "t4"], rng.randint(0, 3)),
                    "importance": rng.choice([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]),
                    "metadata": meta,
                    "created_at": at(rng.randint(0, 24 * 20)),
                }
            )
        stored = driver.store_many(items)
        options: dict[str, list[Any]] = {
            "conversation_id": [None, "c1", "c2"],
            "memory_types": [None, ["fact"], ["episodic", "preference"]],
            "tags": [None, ["t1"], ["t2", "t3"]],
            "tag_mode": ["any", "all"],
            "exclude_tags": [None, ["t4"], ["t1", "t2"]],
            "since": [None, at(24 * 5)],
            "until": [None, at(24 * 15)],
            "min_importance": [None, 0.3, 0.7],
            "metadata": [
                None,
                {"topic": "a"},
                {"n": 2},
                {"n": True},
                {"n": None},
                {"topic": "b", "n": 1},
            ],
        }
        for case_number in range(45):
            user = rng.choice(["u1", "u2"])
            chosen = {k: rng.choice(v) for k, v in options.items()}
            chosen = {k: v for k, v in chosen.items() if v is not None}
            top_k = rng.choice([1, 3, 5, 10, 40])
            mode = ("vector", "keyword", "recent")[case_number % 3]
            query = None if mode == "recent" else " ".join(rng.sample(words, 2))
            conversation = chosen.pop("conversation_id", None)
            memory_filter = MemoryFilter(user_id=user, conversation_id=conversation, **chosen)
            hits = driver.recall(user, conversation, query, top_k, mode != "keyword", **chosen)
            expected = expected_hits(
                stored,
                memory_filter,
                top_k=top_k,
                query=query,
                use_vector=mode != "keyword",
                embedder=driver.embedder,
            )
            assert_same_hits(
                hits,
                expected,
                top_k,
                context=f"case {case_number}: {mode} {query!r} {chosen} "
                f"conversation={conversation} top_k={top_k}",
            )

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
        hit = driver.recall("u1", query="The user moved to Lisbon", top_k=1)[0]
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
        hits = driver.recall("u1", query="delta echo foxtrot", top_k=1)
        assert hits[0].memory.id == second.id and hits[0].score == pytest.approx(1.0, abs=1e-5)
        driver.update(first.id, content="golf hotel india")
        hits = driver.recall("u1", query="golf hotel india", top_k=1)
        assert hits[0].memory.id == first.id and hits[0].score == pytest.approx(1.0, abs=1e-5)
        driver.delete(second.id)
        assert [h.memory.id for h in driver.recall("u1", query="delta echo foxtrot")] == [first.id]
        batch = driver.store_many([{"user_id": "u1", "content": f"juliet {i}"} for i in range(5)])
        found = {h.memory.id for h in driver.recall("u1", query="juliet", top_k=10)}
        assert {m.id for m in batch} <= found
        driver.store_global_knowledge("kilo lima mike", category="c", doc_id="K")
        assert driver.recall_global_knowledge("kilo lima mike")[0].score == pytest.approx(
            1.0, abs=1e-5
        )
        driver.store_global_knowledge("november oscar papa", category="c", doc_id="K")
        hit = driver.recall_global_knowledge("november oscar papa", top_k=1)[0]
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
        from ..errors import ConflictError

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
        """Stores, deletes and content updates of three users, interleaved with recalls: after
        every step each user's recall equals the reference answer over what the store holds.
        Failing means an index kept beside the store lost track of which vector is whose (a
        tenant leak) or of a change."""
        rng = random.Random(7)
        words = "amber birch cedar dune ember fjord grove heath inlet juniper".split()
        users = ["u1", "u2", "u3"]
        for step in range(30):
            action = rng.choice(["store", "store", "delete", "update"])
            existing = list(driver.iter_memories())
            if action == "store" or not existing:
                driver.store_many(
                    [
                        {"user_id": rng.choice(users), "content": " ".join(rng.sample(words, 3))}
                        for _ in range(rng.randint(1, 6))
                    ]
                )
            elif action == "delete":
                for memory in rng.sample(existing, min(len(existing), rng.randint(1, 4))):
                    driver.delete(memory.id)
            else:
                memory = rng.choice(existing)
                driver.update(memory.id, content=" ".join(rng.sample(words, 4)))
            everything = list(driver.iter_memories())
            query = " ".join(rng.sample(words, 2))
            for user in users:
                expected = expected_hits(
                    everything,
                    MemoryFilter(user_id=user),
                    top_k=5,
                    query=query,
                    embedder=driver.embedder,
                )
                got = driver.recall(user, query=query, top_k=5)
                assert_same_hits(got, expected, 5, context=f"step {step} ({action}), {user}")

    def test_concurrent_imports_of_one_id_have_one_winner(self, make_driver: MakeDriver) -> None:
        """Two openers of the same store import batches with the same ids at the same moment:
        for each batch exactly one is told it worked, the other gets ConflictError, and the
        store holds the winner's batch whole. Failing means the id check and the write are not
        atomic across connections or processes (a check-then-add race)."""
        from ..errors import ConflictError

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

    # ================================================================== knowledge
    def test_knowledge_store_and_recall(self, driver: BaseMemoryDriver) -> None:
        doc = driver.store_global_knowledge(
            "Employees may work remotely two days a week",
            category="policies",
            title="Remote Work Policy",
            doc_id="POL-001",
            metadata={"version": 2},
        )
        assert isinstance(doc, KnowledgeDocument)
        assert (doc.doc_id, doc.category, doc.title, len(doc.chunks)) == (
            "POL-001",
            "policies",
            "Remote Work Policy",
            1,
        )
        driver.store_global_knowledge("Lunch is served at noon", category="facilities")
        hits = driver.recall_global_knowledge("work remotely", top_k=5)
        assert hits[0].chunk.doc_id == "POL-001"
        assert hits[0].chunk.title == "Remote Work Policy"
        assert hits[0].chunk.metadata == {"version": 2}
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        only = driver.recall_global_knowledge("work remotely", category="facilities")
        assert [h.chunk.category for h in only] == ["facilities"]
        assert len(driver.recall_global_knowledge("lunch", top_k=1)) == 1
        generated = driver.store_global_knowledge("no id given", category="misc")
        assert driver.get_global_knowledge(generated.doc_id) == generated

    def test_knowledge_long_document_is_chunked(self, make_driver: MakeDriver) -> None:
        """A long document is split into overlapping chunks (KNOWLEDGE_CHUNK_TOKENS and
        KNOWLEDGE_CHUNK_OVERLAP), each recallable and carrying the document's fields."""
        driver = make_driver(knowledge_chunk_tokens=40, knowledge_chunk_overlap=8)
        words = [f"word{i}" for i in range(200)]
        text = " ".join(words)
        doc = driver.store_global_knowledge(text, category="manual", title="Long", doc_id="D1")
        expected = chunk_text(text, 40, 8)
        assert [c.content for c in doc.chunks] == expected and len(expected) == 6
        assert [c.chunk_index for c in doc.chunks] == list(range(6))
        first, second = doc.chunks[0].content.split(), doc.chunks[1].content.split()
        assert first[-8:] == second[:8], "consecutive chunks overlap by 8 tokens"
        assert driver.get_global_knowledge("D1") == doc
        hit = driver.recall_global_knowledge("word150 word151 word152", top_k=1)[0]
        assert "word150" in hit.chunk.content
        assert (hit.chunk.doc_id, hit.chunk.title, hit.chunk.category) == ("D1", "Long", "manual")

    def test_knowledge_same_doc_id_replaces(self, make_driver: MakeDriver) -> None:
        """Storing a doc_id again replaces all of its chunks: old text is never recalled."""
        driver = make_driver(knowledge_chunk_tokens=20, knowledge_chunk_overlap=2)
        driver.store_global_knowledge(
            " ".join(f"old{i}" for i in range(100)), category="c", doc_id="D"
        )
        new = driver.store_global_knowledge("entirely new content", category="c2", doc_id="D")
        stored = driver.get_global_knowledge("D")
        assert stored == new and len(stored.chunks) == 1 and stored.category == "c2"
        hits = driver.recall_global_knowledge("old5 old6 old7", top_k=10)
        assert [h.chunk.content for h in hits] == ["entirely new content"]

    def test_knowledge_delete(self, driver: BaseMemoryDriver) -> None:
        driver.store_global_knowledge("to be removed", category="c", doc_id="D")
        assert driver.delete_global_knowledge("D") is True
        assert driver.delete_global_knowledge("D") is False
        assert driver.get_global_knowledge("D") is None
        assert driver.recall_global_knowledge("to be removed") == []

    # ================================================================== associations
    def test_associations(self, driver: BaseMemoryDriver) -> None:
        """Links are typed and directed; ``related`` shows both directions, strongest first,
        and re-linking the same pair and type updates the strength."""
        a = driver.store("u1", "moved to Lisbon")
        b = driver.store("u1", "learning Portuguese")
        c = driver.store("u1", "used to live in Paris")
        link = driver.associate(a.id, b.id, "LEADS_TO", 0.9, user_id="u1")
        assert (link.source_id, link.target_id, link.relationship_type, link.strength) == (
            a.id,
            b.id,
            "LEADS_TO",
            0.9,
        )
        driver.associate(c.id, a.id, "occurred_before", 0.4)
        related = driver.related(a.id, user_id="u1")
        assert [(r.memory.id, r.relationship_type, r.strength, r.direction) for r in related] == [
            (b.id, "LEADS_TO", 0.9, "outgoing"),
            (c.id, "OCCURRED_BEFORE", 0.4, "incoming"),
        ]
        assert [r.memory.id for r in driver.related(a.id, "LEADS_TO")] == [b.id]
        assert [r.direction for r in driver.related(b.id)] == ["incoming"]
        again = driver.associate(a.id, b.id, "LEADS_TO", 0.2)
        assert again.created_at == link.created_at
        assert [r.strength for r in driver.related(a.id, "LEADS_TO")] == [0.2]
        driver.associate(a.id, b.id, "RELATES_TO", 0.5)
        assert len(driver.related(b.id)) == 2

    def test_associations_go_with_deleted_memories(self, driver: BaseMemoryDriver) -> None:
        a = driver.store("u1", "a")
        b = driver.store("u1", "b")
        driver.associate(a.id, b.id)
        driver.delete(b.id)
        assert driver.related(a.id) == []

    def test_association_errors(self, driver: BaseMemoryDriver) -> None:
        a = driver.store("u1", "a")
        b = driver.store("u1", "b")
        with pytest.raises(NotFoundError):
            driver.associate(a.id, str(uuid.uuid4()))
        with pytest.raises(NotFoundError):
            driver.related(str(uuid.uuid4()))
        with pytest.raises(ValidationError, match="itself"):
            driver.associate(a.id, a.id)
        with pytest.raises(ValidationError, match="strength"):
            driver.associate(a.id, b.id, strength=1.5)
        with pytest.raises(ValidationError, match="relationship_type"):
            driver.associate(a.id, b.id, "LIKES")
        with pytest.raises(ValidationError):
            driver.associate("not-an-id", b.id)
        assert driver.related(a.id) == []
        assert len(RELATIONSHIP_TYPES) == 11

    # ================================================================== cleanup, count, iterate
    def test_cleanup(self, driver: BaseMemoryDriver) -> None:
        """``cleanup`` removes what is older than max_age_days AND below min_importance (either
        alone when only one is given); dry_run (the default) only reports."""
        now = datetime.now(timezone.utc)
        spec = {
            "old-low": (40, 0.1),
            "old-high": (40, 0.9),
            "new-low": (1, 0.1),
            "new-high": (1, 0.9),
        }
        for name, (days, importance) in spec.items():
            self.put(driver, name, created_at=now - timedelta(days=days), importance=importance)
        self.put(
            driver,
            "other user old-low",
            user="u2",
            created_at=now - timedelta(days=40),
            importance=0.1,
        )

        def names(result: Any) -> list[str]:
            return sorted(m.content for m in result.memories)

        dry = driver.cleanup("u1", max_age_days=30, min_importance=0.5)
        assert dry.dry_run and dry.count == 1 and names(dry) == ["old-low"]
        assert driver.count("u1") == 4
        assert names(driver.cleanup("u1", max_age_days=30)) == ["old-high", "old-low"]
        assert names(driver.cleanup("u1", min_importance=0.5)) == ["new-low", "old-low"]
        done = driver.cleanup("u1", max_age_days=30, min_importance=0.5, dry_run=False)
        assert not done.dry_run and names(done) == ["old-low"]
        assert sorted(contents(driver.recall("u1"))) == ["new-high", "new-low", "old-high"]
        assert driver.count("u2") == 1
        everyone = driver.cleanup(max_age_days=30, dry_run=False)
        assert names(everyone) == ["old-high", "other user old-low"]
        with pytest.raises(ValidationError, match="max_age_days"):
            driver.cleanup("u1")
        with pytest.raises(ValidationError):
            driver.cleanup("u1", max_age_days=-1)

    def test_count_and_iter_memories(self, driver: BaseMemoryDriver) -> None:
        """``iter_memories`` streams every memory, oldest first, across batch boundaries."""
        items = [
            {"user_id": "u1" if i % 2 else "u2", "content": f"m{i}", "created_at": at(i % 7)}
            for i in range(23)
        ]
        stored = driver.store_many(items)
        assert driver.count() == 23 and driver.count("u1") == 11
        streamed = list(driver.iter_memories(batch_size=4))
        assert len(streamed) == 23
        assert streamed == sorted(stored, key=lambda m: (m.created_at, m.id))
        mine = list(driver.iter_memories("u1", batch_size=3))
        assert [m.id for m in mine] == [m.id for m in streamed if m.user_id == "u1"]

    # ================================================================== lifecycle
    def test_persists_across_close_and_reopen(self, make_driver: MakeDriver) -> None:
        """Everything written is there after close and reopen: memories, knowledge, links,
        and every recall mode."""
        first = make_driver()
        m = first.store("u1", "persistent pineapple memory", tags=["t"], metadata={"k": 1})
        other = first.store("u1", "second memory about boats")
        first.associate(m.id, other.id, "RELATES_TO", 0.7)
        first.store_global_knowledge("persistent knowledge", category="c", doc_id="D")
        first.close()
        second = make_driver()
        assert second.get(m.id) == m
        assert (
            second.recall("u1", query="persistent pineapple memory", top_k=1)[0].memory.id == m.id
        )
        assert [h.memory.id for h in second.recall("u1", query="pineapple", use_vector=False)] == [
            m.id
        ]
        assert [r.memory.id for r in second.related(m.id)] == [other.id]
        assert second.get_global_knowledge("D") is not None
        assert second.recall_global_knowledge("persistent knowledge")[0].chunk.doc_id == "D"
        assert second.count() == 2

    def test_reopening_with_another_embedder_is_refused(self, make_driver: MakeDriver) -> None:
        """A store remembers which embedder made its vectors; opening it with another one is
        an error that says how to re-embed, never a silent mix of vector spaces."""
        first = make_driver(HashingEmbedder(256))
        first.store("u1", "made with 256 dimensions")
        first.close()
        with pytest.raises(EmbedderMismatchError, match="reembed"):
            make_driver(HashingEmbedder(32))

    def test_closed_driver_refuses_calls(self, make_driver: MakeDriver) -> None:
        driver = make_driver()
        with driver as same:
            assert same is driver
        driver.close()
        with pytest.raises(DriverClosedError):
            driver.store("u1", "after close")
        assert driver.health_check()["status"] == "error"

    def test_health_check(self, driver: BaseMemoryDriver) -> None:
        report = driver.health_check()
        assert report["status"] == "ok" and report["driver"] == driver.name
        stats = driver.stats()
        assert stats["driver"] == driver.name

    def test_concurrent_stores_all_land(self, driver: BaseMemoryDriver) -> None:
        """Threads storing at once all succeed and every memory is found. Failing usually
        means a shared connection or index is used without a lock."""
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(15):
                    driver.store(f"user{n}", f"thread {n} note {i}")
                    driver.recall(f"user{n}", query=f"note {i}", top_k=3)
            except BaseException as exc:  # collected and re-raised below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors[0]
        assert driver.count() == 60
        assert all(driver.count(f"user{n}") == 15 for n in range(4))

    # ================================================================== bad input
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"content": ""}, "content"),
            ({"content": "   \n\t"}, "content"),
            ({"content": 42}, "content must be a string"),
            ({"content": "x" * 101}, "maximum is 100"),
            ({"user_id": ""}, "user_id"),
            ({"user_id": None}, "user_id"),
            ({"user_id": " padded "}, "whitespace"),
            ({"importance": 1.5}, "importance"),
            ({"importance": -0.1}, "importance"),
            ({"importance": float("nan")}, "importance"),
            ({"importance": "high"}, "importance"),
            ({"metadata": {"when": datetime.now()}}, "not JSON"),
            ({"metadata": {"x": float("inf")}}, "NaN or infinity"),
            ({"metadata": {1: "int key"}}, "keys must be strings"),
            ({"metadata": ["not", "a", "dict"]}, "metadata must be a dict"),
            ({"memory_type": "dream"}, "not a known memory type"),
            ({"tags": "single"}, "list of strings"),
            ({"tags": ["ok", ""]}, "tags"),
            ({"tags": ["ok", 3]}, "tags"),
            ({"conversation_id": 7}, "conversation_id"),
        ],
    )
    def test_store_rejects_bad_input(
        self, make_driver: MakeDriver, kwargs: dict[str, Any], message: str
    ) -> None:
        """Bad input raises ValidationError naming the problem, and nothing is written."""
        driver = make_driver(memory_max_content_length=100)
        driver.store("u1", "existing")
        args = {"user_id": "u1", "content": "valid content", **kwargs}
        with pytest.raises(ValidationError, match=message):
            driver.store(**args)
        self.assert_unchanged(driver, 1)

    def test_extra_memory_types_are_accepted(self, make_driver: MakeDriver) -> None:
        driver = make_driver(memory_extra_types=["dream", "goal"])
        assert driver.store("u1", "flying", memory_type="dream").memory_type == "dream"
        assert contents(driver.recall("u1", memory_types=["dream"])) == ["flying"]
        with pytest.raises(ValidationError):
            driver.store("u1", "x", memory_type="nightmare")

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"top_k": 0}, "top_k"),
            ({"top_k": -3}, "top_k"),
            ({"top_k": 2.5}, "top_k"),
            ({"top_k": True}, "top_k"),
            ({"query": ""}, "query"),
            ({"query": "  "}, "query"),
            ({"colour": "red"}, "unknown recall filter 'colour'"),
            ({"tag": ["x"]}, "Did you mean 'tags'"),
            ({"tag_mode": "some"}, "tag_mode"),
            ({"tags": "single"}, "list of strings"),
            ({"memory_types": ["dream"]}, "not a known memory type"),
            ({"min_importance": 2}, "min_importance"),
            ({"since": "yesterday"}, "ISO 8601"),
            ({"since": at(5), "until": at(1)}, "before until"),
            ({"metadata": {"x": [1, 2]}}, "scalar"),
            ({"metadata": "x=1"}, "metadata filter must be a dict"),
            ({"use_vector": "yes"}, "use_vector"),
            ({"user_id": ""}, "user_id"),
        ],
    )
    def test_recall_rejects_bad_input(
        self, driver: BaseMemoryDriver, kwargs: dict[str, Any], message: str
    ) -> None:
        """Bad recall arguments raise ValidationError; an unknown filter is never ignored."""
        driver.store("u1", "something")
        args = {"user_id": "u1", "query": "something", **kwargs}
        with pytest.raises(ValidationError, match=message):
            driver.recall(**args)

    def test_malformed_ids_are_rejected(self, driver: BaseMemoryDriver) -> None:
        m = driver.store("u1", "x")
        for call in (
            lambda: driver.get("123"),
            lambda: driver.get(42),  # type: ignore[arg-type]
            lambda: driver.delete("not-a-uuid"),
            lambda: driver.update("nope", content="y"),
            lambda: driver.associate(m.id, "nope"),
            lambda: driver.related("nope"),
        ):
            with pytest.raises(ValidationError, match=r"memory id|UUID"):
                call()
        assert driver.get(m.id) == m

    def test_update_rejects_bad_input(self, driver: BaseMemoryDriver) -> None:
        m = driver.store("u1", "original", importance=0.4)
        for kwargs in (
            {"content": " "},
            {"importance": 2.0},
            {"tags": "x"},
            {"metadata": {"x": {1, 2}}},
            {"memory_type": "dream"},
        ):
            with pytest.raises(ValidationError):
                driver.update(m.id, **kwargs)
        assert driver.get(m.id) == m

    def test_knowledge_rejects_bad_input(self, driver: BaseMemoryDriver) -> None:
        for kwargs in (
            {"content": " "},
            {"category": ""},
            {"category": None},
            {"title": ""},
            {"metadata": {"x": object()}},
            {"doc_id": " x"},
        ):
            args: dict[str, Any] = {"content": "text", "category": "c", **kwargs}
            with pytest.raises(ValidationError):
                driver.store_global_knowledge(**args)
        with pytest.raises(ValidationError):
            driver.recall_global_knowledge("q", top_k=0)
        with pytest.raises(ValidationError):
            driver.recall_global_knowledge("")
        assert driver.recall_global_knowledge("text") == []

    @pytest.mark.parametrize("fault", ["nan", "dimension", "zero", "raise"])
    def test_bad_vectors_from_the_embedder_write_nothing(
        self, make_driver: MakeDriver, fault: str
    ) -> None:
        """An embedder returning NaN, wrong-dimension or zero vectors (or failing) raises
        EmbeddingError, and nothing of the batch is written."""
        driver = make_driver(FaultyEmbedder(fast_embedder(), fault))  # type: ignore[arg-type]
        good = driver.store("u1", "fine text")
        with pytest.raises(EmbeddingError):
            driver.store("u1", "POISON text")
        with pytest.raises(EmbeddingError):
            driver.store_many(
                [{"user_id": "u1", "content": "ok"}, {"user_id": "u1", "content": "POISON"}]
            )
        with pytest.raises(EmbeddingError):
            driver.update(good.id, content="POISON now")
        with pytest.raises(EmbeddingError):
            driver.store_global_knowledge("POISON doc", category="c")
        with pytest.raises(EmbeddingError):
            driver.recall("u1", query="POISON query")
        assert driver.count() == 1 and driver.get(good.id) == good
        assert driver.recall_global_knowledge("doc") == []

    # ================================================================== equivalence
    #: Whether scores must equal the sqlite driver's. Only a backend that ranks with its own
    #: blend (AutoMem) sets this False; it must still rank the right memory first.
    exact_scores: ClassVar[bool] = True

    EQUIVALENCE_MEMORIES: ClassVar[list[tuple[str, str, str, list[str], float, dict[str, Any]]]] = [
        # (user, conversation, content, tags, importance, metadata); types cycle below
        ("u1", "c1", "The user's favorite color is deep blue", ["preference"], 0.9, {"k": "a"}),
        ("u1", "c1", "The user is allergic to peanuts and shellfish", ["health"], 1.0, {}),
        (
            "u1",
            "c2",
            "The user works as a nurse at a hospital in Boston",
            ["work"],
            0.7,
            {"k": "b"},
        ),
        (
            "u1",
            "c2",
            "The user's dog, a golden retriever, is named Rex",
            ["family", "pet"],
            0.6,
            {"k": "a", "n": 1},
        ),
        (
            "u1",
            "c1",
            "The user prefers green tea over coffee in the morning",
            ["preference", "food"],
            0.5,
            {"n": 2},
        ),
        ("u1", "c3", "The user runs a marathon every April", ["hobby", "sport"], 0.4, {"n": True}),
        (
            "u1",
            "c3",
            "The user plays the piano and likes jazz",
            ["hobby", "music"],
            0.3,
            {"k": None},
        ),
        (
            "u1",
            "c2",
            "The user's daughter starts school in September",
            ["family"],
            0.8,
            {"k": "b", "n": 1.0},
        ),
        (
            "u1",
            "c1",
            "The user wants short answers without emojis",
            ["style", "preference"],
            0.9,
            {},
        ),
        (
            "u1",
            "c3",
            "The user is learning Portuguese before moving to Lisbon",
            ["work", "travel"],
            0.6,
            {"k": "a"},
        ),
        ("u1", "c2", "The user drives an electric car to work", ["travel"], 0.2, {}),
        (
            "u1",
            "c1",
            "The user is vegetarian and loves Italian food",
            ["food", "preference"],
            0.7,
            {"n": 2},
        ),
        ("u2", "c1", "The user's favorite color is red", ["preference"], 0.9, {"k": "a"}),
        ("u2", "c1", "The user is allergic to cats", ["health"], 1.0, {}),
    ]
    EQUIVALENCE_QUERIES: ClassVar[list[tuple[str, str]]] = [
        # (query, content of the memory that clearly answers it)
        ("What color does the user like?", "The user's favorite color is deep blue"),
        ("What is the user allergic to?", "The user is allergic to peanuts and shellfish"),
        ("What is the user's profession?", "The user works as a nurse at a hospital in Boston"),
        ("Does the user have a pet?", "The user's dog, a golden retriever, is named Rex"),
        ("What musical instrument does the user play?", "The user plays the piano and likes jazz"),
        ("How should replies be formatted?", "The user wants short answers without emojis"),
    ]

    def _equivalence_items(self) -> list[dict[str, Any]]:
        types = ["semantic", "fact", "preference", "episodic"]
        return [
            {
                "id": str(uuid.UUID(int=i + 1)),
                "user_id": user,
                "conversation_id": conversation,
                "content": content,
                "tags": tags,
                "importance": importance,
                "metadata": metadata,
                "memory_type": types[i % len(types)],
                "created_at": at(i * 7),
            }
            for i, (user, conversation, content, tags, importance, metadata) in enumerate(
                self.EQUIVALENCE_MEMORIES
            )
        ]

    def test_equivalent_to_sqlite(self, make_driver: MakeDriver, base_settings: Settings) -> None:
        """With the same memories, the real embedding model and the same queries, this driver
        gives the sqlite driver's answer: the same ranked ids and the same scores (within
        1e-4), in every mode and for every filter. Failing points at the combination that
        differs (the assertion names it): a filter translated differently, distances instead
        of similarities, another tokenizer, or ``top_k`` cut before filtering."""
        from ..drivers.sqlite import SQLiteDriver

        embedder = default_embedder()
        driver = make_driver(embedder)
        reference = SQLiteDriver(
            base_settings.replace(memory_db_url="sqlite://"), embedder=embedder
        )
        try:
            items = self._equivalence_items()
            driver.store_many(items)
            reference.store_many(items)
            filters: list[dict[str, Any]] = [
                {},
                {"conversation_id": "c1"},
                {"memory_types": ["fact", "preference"]},
                {"tags": ["preference"]},
                {"tags": ["preference", "food"], "tag_mode": "all"},
                {"tags": ["family", "hobby"], "exclude_tags": ["pet"]},
                {"since": at(14), "until": at(63)},
                {"min_importance": 0.6},
                {"metadata": {"k": "a"}},
                {"metadata": {"n": 1}},
                {"tags": ["preference"], "min_importance": 0.8, "metadata": {"k": "a"}},
            ]
            queries = [q for q, _ in self.EQUIVALENCE_QUERIES]
            for number, chosen in enumerate(filters):
                for mode in ("vector", "keyword", "recent"):
                    query = None if mode == "recent" else queries[number % len(queries)]
                    if mode == "keyword":
                        query = "user preference food color music work"
                    kwargs = {**chosen, "query": query, "use_vector": mode != "keyword"}
                    context = f"{mode} {query!r} {chosen}"
                    everything = reference.recall("u1", top_k=1000, **kwargs)
                    for top_k in (1, 3, 20):
                        got = driver.recall("u1", top_k=top_k, **kwargs)
                        if self.exact_scores or mode != "vector":
                            assert_same_hits(
                                got, everything, top_k, tol=1e-4, context=f"{context} top_k={top_k}"
                            )
                        else:
                            allowed = {h.memory.id for h in everything}
                            assert len(got) == min(top_k, len(everything)), context
                            assert all(h.memory.id in allowed for h in got), (
                                f"a hit does not pass the filter ({context})"
                            )
            for query, answer in self.EQUIVALENCE_QUERIES:
                top = driver.recall("u1", query=query, top_k=3)
                assert top and top[0].memory.content == answer, f"{query!r} -> {contents(top)}"
        finally:
            reference.close()

    # ================================================================== meaning (real model)
    def test_semantic_recall_finds_meaning(self, semantic_driver: BaseMemoryDriver) -> None:
        """With the real model, questions find the memory that answers them, not the one that
        shares words. Failing means vectors or scores are wired wrong (or the wrong model)."""
        driver = semantic_driver
        facts = {
            "color": "The user's favorite color is blue",
            "job": "The user works as a nurse at a hospital in Boston",
            "allergy": "The user is allergic to peanuts",
            "pet": "The user has a golden retriever named Rex",
            "drink": "The user prefers tea over coffee in the morning",
        }
        stored = {k: driver.store("u1", v) for k, v in facts.items()}
        driver.store("u2", "The user's favorite color is red")
        questions = {
            "color": "What color does the user like?",
            "job": "What is the user's profession?",
            "allergy": "Which foods must the user avoid?",
            "pet": "Does the user have a dog?",
            "drink": "What hot beverage does the user enjoy?",
        }
        for key, question in questions.items():
            hits = driver.recall("u1", query=question, top_k=3)
            assert hits[0].memory.id == stored[key].id, f"{question!r} -> {contents(hits)}"
            assert all(h.memory.user_id == "u1" for h in hits)
            assert hits[0].score is not None and 0.3 < hits[0].score <= 1.0
        exact = driver.recall("u1", query=facts["pet"], top_k=1)[0]
        assert exact.score == pytest.approx(1.0, abs=1e-4)

    def test_semantic_knowledge_recall(self, semantic_driver: BaseMemoryDriver) -> None:
        driver = semantic_driver
        docs = {
            "refunds": "Customers may return any item within 30 days of delivery for a full "
            "refund, provided it is unused and in its original packaging.",
            "shipping": "Orders are dispatched within two business days and arrive in three "
            "to five days by standard courier.",
            "security": "Passwords must be at least twelve characters long and are rotated "
            "every ninety days.",
        }
        for doc_id, text in docs.items():
            driver.store_global_knowledge(text, category="help", doc_id=doc_id)
        for question, doc_id in (
            ("How long do I have to send a product back?", "refunds"),
            ("When will my package arrive?", "shipping"),
            ("What are the rules for my login credentials?", "security"),
        ):
            hits = driver.recall_global_knowledge(question, top_k=3)
            assert hits[0].chunk.doc_id == doc_id, f"{question!r} -> {hits[0].chunk.doc_id}"
            assert math.isfinite(hits[0].score)
