"""Conformance: recall (hybrid, by vector, by keyword, newest first) and every filter."""

from __future__ import annotations

import math
import random
from datetime import timedelta, timezone
from typing import Any

import pytest

from ...base import BaseMemoryDriver
from ...models import MemoryFilter
from ..reference import assert_same_hits
from .base import ConformanceBase, at, contents

__all__ = ["RecallTests"]


class RecallTests(ConformanceBase):
    """Recall modes, ordering, filters, and recall by meaning with the real model."""

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
        hits = driver.recall("u1", query="green tea", top_k=5, search="vector")
        expected = self.expected(
            driver, stored, MemoryFilter(user_id="u1"), top_k=5, query="green tea", search="vector"
        )
        assert_same_hits(hits, expected, 5)
        scores = [h.score for h in hits]
        assert all(s is not None and -1.0 - 1e-6 <= s <= 1.0 + 1e-6 for s in scores)
        assert scores == sorted((s for s in scores if s is not None), reverse=True)

    def test_identical_text_scores_one(self, driver: BaseMemoryDriver) -> None:
        """A query equal to a memory's text scores 1.0 (cosine of a vector with itself)."""
        driver.store("u1", "exactly this sentence")
        driver.store("u1", "something unrelated entirely")
        hits = driver.recall("u1", query="exactly this sentence", top_k=1, search="vector")
        assert hits[0].memory.content == "exactly this sentence"
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)

    def test_top_k_limits_results(self, driver: BaseMemoryDriver) -> None:
        driver.store_many([{"user_id": "u1", "content": f"note number {i}"} for i in range(12)])
        assert len(driver.recall("u1", query="note", top_k=5)) == 5
        assert len(driver.recall("u1", query="note", top_k=50)) == 12
        assert len(driver.recall("u1", top_k=3)) == 3
        assert len(driver.recall("u1", query="note", top_k=4, use_vector=False)) == 4
        assert len(driver.recall("u1", query="note", top_k=4, search="vector")) == 4
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
            for search in ("hybrid", "vector", "keyword"):
                q = "apple zebra" if search == "keyword" else query
                hits = driver.recall("u1", query=q, top_k=3, search=search, **filters)
                assert sorted(contents(hits)) == [f"zebra quantum violin {i}" for i in range(3)], (
                    f"filter {filters}, search={search}"
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
        for kwargs in (
            {},
            {"query": "same words"},
            {"query": "same words", "search": "vector"},
            {"query": "words", "use_vector": False},
        ):
            for top_k in (2, 4, 6, 20):
                got = [h.memory.id for h in driver.recall("u1", top_k=top_k, **kwargs)]
                assert got == expected[:top_k], f"{kwargs} top_k={top_k}"

    def test_keyword_recall_matches_terms(self, driver: BaseMemoryDriver) -> None:
        """``search="keyword"`` (or ``use_vector=False``) matches shared terms (case, accents
        and word endings aside) and scores them with BM25 (docs/semantics.md). Failing usually
        means the backend's full-text search tokenizes differently from memory_drivers.text, or
        its statistics (scope size, lengths, postings) are read wrong."""
        stored = driver.store_many(
            [
                {"user_id": "u1", "content": "The user loves hiking in the Alps"},
                {"user_id": "u1", "content": "Hiking boots are in the CAFÉ closet"},
                {"user_id": "u1", "content": "Cooking pasta on Sundays"},
                {"user_id": "u1", "content": "the and of"},
                {"user_id": "u2", "content": "hiking hiking alps cafe sunday"},
            ]
        )
        for query in ("hikes alps", "cafe", "Cooking boots", "Sunday", "Ünïcödé hïkïng"):
            hits = driver.recall("u1", query=query, search="keyword", top_k=10)
            expected = self.expected(
                driver, stored, MemoryFilter(user_id="u1"), top_k=10, query=query, search="keyword"
            )
            assert_same_hits(hits, expected, 10, tol=1e-6, context=query)
            assert hits, f"nothing found for {query!r}"
        hits = driver.recall("u1", query="hiking alps", use_vector=False)
        assert contents(hits) == [
            "The user loves hiking in the Alps",
            "Hiking boots are in the CAFÉ closet",
        ]
        assert hits[0].score is not None and hits[1].score is not None
        assert hits[0].score > hits[1].score > 0
        assert driver.recall("u1", query="the of and", use_vector=False) == [], (
            "a query of stop words only matches nothing"
        )
        assert driver.recall("u1", query="What did you do?", search="keyword") == [], (
            "a query of stop words and question words only matches nothing"
        )
        assert driver.recall("u1", query="xylophone", use_vector=False) == []

    # ================================================================== filters
    def test_conversation_filter(self, driver: BaseMemoryDriver) -> None:
        driver.store("u1", "in c1", conversation_id="c1")
        driver.store("u1", "in c2", conversation_id="c2")
        driver.store("u1", "in none")
        for kwargs in (
            {},
            {"query": "in"},
            {"query": "in", "search": "vector"},
            {"query": "c1 c2 none", "use_vector": False},
        ):
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
        for case_number in range(60):
            user = rng.choice(["u1", "u2"])
            chosen = {k: rng.choice(v) for k, v in options.items()}
            chosen = {k: v for k, v in chosen.items() if v is not None}
            top_k = rng.choice([1, 3, 5, 10, 40])
            mode = ("hybrid", "vector", "keyword", "recent")[case_number % 4]
            query = None if mode == "recent" else " ".join(rng.sample(words, 2))
            conversation = chosen.pop("conversation_id", None)
            memory_filter = MemoryFilter(user_id=user, conversation_id=conversation, **chosen)
            search = None if mode == "recent" else mode
            hits = driver.recall(
                user,
                conversation,
                query,
                top_k,
                search=search,  # type: ignore[arg-type]
                **chosen,
            )
            expected = self.expected(
                driver, stored, memory_filter, top_k=top_k, query=query, search=search
            )
            assert_same_hits(
                hits,
                expected,
                top_k,
                context=f"case {case_number}: {mode} {query!r} {chosen} "
                f"conversation={conversation} top_k={top_k}",
            )

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
            for search in ("hybrid", "vector"):
                hits = driver.recall("u1", query=question, top_k=3, search=search)
                assert hits[0].memory.id == stored[key].id, (
                    f"{search}: {question!r} -> {contents(hits)}"
                )
                assert all(h.memory.user_id == "u1" for h in hits)
            assert hits[0].score is not None and 0.3 < hits[0].score <= 1.0
        exact = driver.recall("u1", query=facts["pet"], top_k=1, search="vector")[0]
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
