"""Conformance: search modes and their scores (BM25, hybrid fusion, conversation context, time
preference, reranking) against the reference implementation."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ...base import BaseMemoryDriver
from ...errors import ValidationError
from ...models import MemoryFilter
from ..reference import assert_same_hits
from .base import ConformanceBase, MakeDriver, at, contents

__all__ = ["RankingTests"]

NOW = datetime(2026, 3, 18, 15, 0, tzinfo=timezone.utc)  # a Wednesday


class ReverseReranker:
    """A small deterministic reranker: prefers shorter texts (the opposite of no order)."""

    name = "shortest-first"

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def score(self, query: str, documents: Sequence[str]) -> list[float]:
        self.calls.append((query, len(documents)))
        return [1.0 / (1 + len(text)) for text in documents]


class RankingTests(ConformanceBase):
    """Hybrid, vector and keyword search, each equal to the reference on every driver."""

    CHAT: tuple[tuple[str | None, str], ...] = (
        # (conversation, content), in time order
        ("s1", "Anna: I adopted a puppy from the shelter on Saturday"),
        ("s1", "Ben: What is its name?"),
        ("s1", "Anna: Biscuit! She loves chasing tennis balls"),
        ("s1", "Ben: Cute. Does she sleep well?"),
        ("s1", "Anna: Yes, all night!"),
        ("s2", "Ben: I started learning the violin"),
        ("s2", "Anna: How is it going?"),
        ("s2", "Ben: Slowly, my teacher is patient"),
        (None, "Anna prefers tea over coffee"),
    )

    def _chat(self, driver: BaseMemoryDriver, user: str = "u1") -> list[Any]:
        return driver.store_many(
            [
                {
                    "user_id": user,
                    "conversation_id": conversation,
                    "content": content,
                    "created_at": at(i),
                }
                for i, (conversation, content) in enumerate(self.CHAT)
            ]
        )

    # ================================================================== modes and scores
    def test_every_mode_matches_the_reference(self, driver: BaseMemoryDriver) -> None:
        """Hybrid (the default), vector and keyword scores equal the reference within 1e-6
        (keyword) and 1e-5 (cosine-based), with and without filters. Failing points at the
        statistic a backend reads wrong: the scope's size or lengths, a term's postings, the
        conversation order, or the cosine similarities of the scope."""
        stored = self._chat(driver)
        stored += self._chat(driver, "u2")  # another user's data never changes u1's scores
        queries = ("puppy name", "sleep", "violin teacher", "Biscuit tennis", "tea")
        for query in queries:
            for search in ("hybrid", "vector", "keyword"):
                for filters in ({}, {"conversation_id": "s1"}, {"since": at(2)}):
                    got = driver.recall("u1", query=query, top_k=9, search=search, **filters)
                    expected = self.expected(
                        driver,
                        stored,
                        MemoryFilter(user_id="u1", **filters),
                        top_k=9,
                        query=query,
                        search=search,
                    )
                    tolerance = 1e-6 if search == "keyword" else 1e-5
                    assert_same_hits(
                        got, expected, 9, tol=tolerance, context=f"{search} {query!r} {filters}"
                    )
        default = driver.recall("u1", query="puppy name", top_k=9)
        hybrid = driver.recall("u1", query="puppy name", top_k=9, search="hybrid")
        assert [(h.memory.id, h.score) for h in default] == [
            (h.memory.id, h.score) for h in hybrid
        ], "the default search mode is hybrid (RECALL_SEARCH)"

    def test_conversation_context_finds_a_short_turn(self, driver: BaseMemoryDriver) -> None:
        """A turn is indexed for keyword search with the turns before it in its conversation
        (CONTEXT_WINDOW, 2 by default), so "What is its name?" is found by "puppy", and a turn
        outside any conversation is not. Failing means a backend indexes a memory's own terms
        only."""
        stored = self._chat(driver)
        found = contents(driver.recall("u1", query="puppy", search="keyword", top_k=9))
        assert "Ben: What is its name?" in found
        assert "Anna: Biscuit! She loves chasing tennis balls" in found
        assert found[0] == "Anna: I adopted a puppy from the shelter on Saturday"
        assert "Anna prefers tea over coffee" not in found
        tea = driver.recall("u1", query="coffee", search="keyword", top_k=9)
        assert [h.memory.id for h in tea] == [stored[-1].id]

    def test_context_follows_updates_and_deletes(self, driver: BaseMemoryDriver) -> None:
        """When a neighbour is re-worded or deleted, what the turns after it are indexed with
        follows at once. Failing means a write re-indexed only the memory it changed."""
        stored = self._chat(driver)
        puppy, name = stored[0], stored[1]

        def finds(query: str) -> set[str]:
            return {h.memory.id for h in driver.recall("u1", query=query, search="keyword")}

        assert name.id in finds("shelter")
        driver.update(puppy.id, content="Anna: I adopted a kitten last week")
        assert name.id not in finds("shelter") and name.id in finds("kitten")
        assert stored[2].id in finds("kitten"), "the second turn after it follows too"
        driver.delete(puppy.id)
        assert finds("kitten") == set()
        everything = list(driver.iter_memories())
        got = driver.recall("u1", query="name biscuit", search="keyword", top_k=9)
        expected = self.expected(
            driver,
            everything,
            MemoryFilter(user_id="u1"),
            top_k=9,
            query="name biscuit",
            search="keyword",
        )
        assert_same_hits(got, expected, 9, tol=1e-6)

    def test_context_of_a_batch_over_stored_and_new_conversations(
        self, driver: BaseMemoryDriver
    ) -> None:
        """One batch adding turns to stored conversations (s1 of u1 in the middle and at the
        end, s2 at the end) and to new ones (s3 of u1, s1 of u2) indexes every turn with its
        neighbours, as the reference does. Failing means a batch read the context of some
        conversations only (or of the wrong ones)."""
        self._chat(driver)
        driver.store_many(
            [
                {
                    "user_id": "u2",
                    "conversation_id": "s1",
                    "content": "Cleo: my puppy snores",
                    "created_at": at(3),
                },
                {
                    "user_id": "u1",
                    "conversation_id": "s3",
                    "content": "Ben: I bought a kayak",
                    "created_at": at(20),
                },
                {
                    "user_id": "u1",
                    "conversation_id": "s1",
                    "content": "Ben: Which shelter?",
                    "created_at": at(1.5),
                },
                {
                    "user_id": "u1",
                    "conversation_id": "s3",
                    "content": "Anna: Where to?",
                    "created_at": at(21),
                },
                {
                    "user_id": "u1",
                    "conversation_id": "s2",
                    "content": "Anna: Nice!",
                    "created_at": at(22),
                },
                {
                    "user_id": "u1",
                    "conversation_id": "s1",
                    "content": "Ben: Good night",
                    "created_at": at(23),
                },
                {
                    "user_id": "u2",
                    "conversation_id": "s1",
                    "content": "Dan: How loud?",
                    "created_at": at(4),
                },
            ]
        )
        everything = list(driver.iter_memories())
        for user in ("u1", "u2"):
            for query in ("puppy", "kayak", "violin teacher", "sleep night", "shelter"):
                got = driver.recall(user, query=query, search="keyword", top_k=20)
                expected = self.expected(
                    driver,
                    everything,
                    MemoryFilter(user_id=user),
                    top_k=20,
                    query=query,
                    search="keyword",
                )
                assert_same_hits(got, expected, 20, tol=1e-6)
        found = contents(driver.recall("u1", query="kayak", search="keyword", top_k=9))
        assert "Anna: Where to?" in found
        found = contents(driver.recall("u2", query="puppy", search="keyword", top_k=9))
        assert "Dan: How loud?" in found

    def test_context_window_zero_indexes_own_terms(self, make_driver: MakeDriver) -> None:
        """CONTEXT_WINDOW=0 indexes each memory with its own terms only; reopening a store with
        another window re-indexes it. (Without the neighbour share, which would also find the
        turns next to a match.)"""
        first = make_driver(context_window=0, context_neighbor_share=0.0)
        stored = self._chat(first)
        found = {h.memory.id for h in first.recall("u1", query="puppy", search="keyword")}
        assert found == {stored[0].id}
        first.close()
        second = make_driver(context_window=1, context_neighbor_share=0.0)
        found = {h.memory.id for h in second.recall("u1", query="puppy", search="keyword")}
        assert found == {stored[0].id, stored[1].id}

    def test_queries_of_stop_words_and_unicode(self, driver: BaseMemoryDriver) -> None:
        """A query of stop words and question words only: keyword search finds nothing, hybrid
        search ranks by meaning alone (its keyword side is 0 for everyone). Accents and case do
        not matter."""
        stored = driver.store_many(
            [
                {"user_id": "u1", "content": "Café crème at the Zürich station"},
                {"user_id": "u1", "content": "Cafe creme in Zurich, again"},
                {"user_id": "u1", "content": "Nothing related at all"},
            ]
        )
        assert driver.recall("u1", query="What did they do?", search="keyword") == []
        got = driver.recall("u1", query="What did they do?", search="hybrid", top_k=3)
        expected = self.expected(
            driver, stored, MemoryFilter(user_id="u1"), top_k=3, query="What did they do?"
        )
        assert_same_hits(got, expected, 3)
        assert len(got) == 3
        keyword = driver.recall("u1", query="CAFÉ zurich", search="keyword")
        assert sorted(contents(keyword)) == sorted(m.content for m in stored[:2])

    def test_search_mode_arguments(self, driver: BaseMemoryDriver) -> None:
        """``search`` is hybrid, vector or keyword; ``use_vector`` keeps its seed meaning;
        contradicting both is an error, as is an unknown mode."""
        driver.store("u1", "green tea")
        assert driver.recall("u1", query="green", use_vector=False)[0].score == (
            driver.recall("u1", query="green", search="keyword")[0].score
        )
        assert driver.recall("u1", query="green", use_vector=True)[0].score == pytest.approx(
            driver.recall("u1", query="green", search="vector")[0].score
        )
        with pytest.raises(ValidationError, match="search"):
            driver.recall("u1", query="green", search="fuzzy")  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="contradicts"):
            driver.recall("u1", query="green", search="vector", use_vector=False)
        with pytest.raises(ValidationError, match="now"):
            driver.recall("u1", query="green", now="yesterday")

    def _shared_hybrid(self) -> None:
        if self.hybrid_ranks_as != "hybrid":
            pytest.skip("this driver's hybrid search is its backend's own ranking")

    def test_explain_gives_the_parts_of_each_score(self, driver: BaseMemoryDriver) -> None:
        """``recall(..., explain=True)`` puts the parts of each score on the hit: the query
        terms the memory is indexed with, its keyword score (and the neighbour's part of it),
        coverage, cosine and time gain, consistent with the scores of each mode. Failing
        means a driver drops the explanation or reports parts that do not add up."""
        self._chat(driver)
        query = "puppy name"
        vector = {
            h.memory.id: h.score
            for h in driver.recall("u1", query=query, top_k=20, search="vector")
        }
        keyword = {
            h.memory.id: h.score
            for h in driver.recall("u1", query=query, top_k=20, search="keyword")
        }
        plain = driver.recall("u1", query=query, top_k=5)
        hits = driver.recall("u1", query=query, top_k=5, explain=True)
        assert [(h.memory.id, h.score) for h in hits] == [(h.memory.id, h.score) for h in plain]
        assert all(h.explanation is None for h in plain), "no explanation unless asked"
        for hit in hits:
            why = hit.explanation
            assert why is not None and why.search == "hybrid"
            if self.hybrid_ranks_as != "hybrid":
                continue  # the backend's own blend: its parts are not reported
            assert why.cosine == pytest.approx(vector[hit.memory.id], abs=1e-5)
            assert why.keyword == pytest.approx(keyword.get(hit.memory.id, 0.0), abs=1e-6)
            assert set(why.terms) <= {"puppi", "name"}
            assert bool(why.terms) or not why.keyword or (why.neighbour or 0) > 0
            w = driver.ranking.vector_weight
            assert hit.score == pytest.approx(
                (1 - w) * (why.coverage or 0) + w * (why.cosine or 0) + (why.time or 0), abs=1e-9
            )
        for hit in driver.recall("u1", query=query, search="keyword", explain=True):
            assert hit.explanation is not None and hit.explanation.keyword == hit.score
            assert hit.explanation.terms or hit.explanation.neighbour
        for hit in driver.recall("u1", query=query, search="vector", top_k=3, explain=True):
            assert hit.explanation is not None and hit.explanation.cosine == hit.score

    # ================================================================== time
    def test_time_expressions_prefer_their_period(self, driver: BaseMemoryDriver) -> None:
        """ "last week" is read against ``now``: of two memories with the same words, the one
        created in that week ranks first in hybrid search; nothing outside it is dropped.
        Failing means time expressions are ignored, or resolved against another clock."""
        self._shared_hybrid()
        last_week = NOW - timedelta(days=8)  # Tuesday of the week before NOW's
        long_ago = NOW - timedelta(days=200)
        old = self.put(driver, "We talked about the garden plans", created_at=long_ago)
        recent = self.put(driver, "We talked about the garden plans", created_at=last_week)
        other = self.put(driver, "Shopping list: eggs and milk", created_at=last_week)
        query = "What did we say about the garden last week?"
        hits = driver.recall("u1", query=query, now=NOW, top_k=3)
        assert [h.memory.id for h in hits][:2] == [recent.id, old.id]
        assert {h.memory.id for h in hits} == {old.id, recent.id, other.id}
        everything = [old, recent, other]
        expected = self.expected(
            driver, everything, MemoryFilter(user_id="u1"), top_k=3, query=query, now=NOW
        )
        assert_same_hits(hits, expected, 3)
        then = driver.recall("u1", query=query, now=long_ago + timedelta(days=8), top_k=1)
        assert then[0].memory.id == old.id, "the same words, another now"

    def test_recency_half_life(self, make_driver: MakeDriver) -> None:
        """RECENCY_HALF_LIFE_DAYS prefers newer memories in hybrid search (off by default)."""
        self._shared_hybrid()
        driver = make_driver(recency_half_life_days=30.0)
        old = self.put(driver, "the project deadline moved", created_at=NOW - timedelta(days=90))
        new = self.put(driver, "the project deadline moved", created_at=NOW - timedelta(days=1))
        hits = driver.recall("u1", query="project deadline", now=NOW, top_k=2)
        assert [h.memory.id for h in hits] == [new.id, old.id]
        expected = self.expected(
            driver,
            [old, new],
            MemoryFilter(user_id="u1"),
            top_k=2,
            query="project deadline",
            now=NOW,
        )
        assert_same_hits(hits, expected, 2)

    # ================================================================== reranking, knowledge
    def test_reranker_orders_the_best_candidates(self, driver: BaseMemoryDriver) -> None:
        """A reranker re-scores the RERANK_DEPTH best candidates (at least top_k) and the hits
        carry its scores, in its order."""
        texts = ["tea with a long description of leaves", "tea", "tea and cake", "coffee"]
        for text in texts:
            driver.store("u1", text)
        first_stage = {h.memory.id: h.score for h in driver.recall("u1", query="tea", top_k=4)}
        reranker = ReverseReranker()
        driver.reranker = reranker
        try:
            hits = driver.recall("u1", query="tea", top_k=2)
            explained = driver.recall("u1", query="tea", top_k=2, explain=True)
        finally:
            driver.reranker = None
        assert [h.explanation.first_stage for h in explained if h.explanation] == [
            first_stage[h.memory.id] for h in explained
        ]
        assert contents(hits) == ["tea", "coffee"], "the reranker's order, not the first stage's"
        assert hits[0].score == pytest.approx(1 / 4)
        assert reranker.calls[0] == ("tea", 4), "every candidate up to RERANK_DEPTH is read"

    def test_knowledge_search_modes(self, driver: BaseMemoryDriver) -> None:
        """Knowledge recall has the same modes; keyword search finds exact words that meaning
        alone misses, and scores are BM25 over every chunk of the category."""
        driver.store_global_knowledge("Error E1234 means the disk is full", category="errors")
        driver.store_global_knowledge("Error E5678 means the network is down", category="errors")
        driver.store_global_knowledge("Refunds take five business days", category="billing")
        keyword = driver.recall_global_knowledge("E5678", search="keyword")
        assert [h.chunk.content for h in keyword] == ["Error E5678 means the network is down"]
        assert keyword[0].score > 0
        hybrid = driver.recall_global_knowledge("What does E5678 mean?", top_k=3)
        assert hybrid[0].chunk.content == "Error E5678 means the network is down"
        assert driver.recall_global_knowledge("E5678", search="keyword", category="billing") == []
        assert driver.recall_global_knowledge("what is it", search="keyword") == []

    # ================================================================== random differential
    def test_ranked_recall_matches_the_reference_on_random_chats(
        self, driver: BaseMemoryDriver
    ) -> None:
        """Random conversations of three users and random filters, in every mode: the driver's
        answer equals the reference's. The assertion names the case that differs."""
        rng = random.Random(20261206)
        words = "lake boat river fish rain storm bread oven garden tomato bike hill".split()
        items = []
        for n in range(80):
            items.append(
                {
                    "user_id": rng.choice(["u1", "u1", "u2", "u3"]),
                    "conversation_id": rng.choice(["c1", "c2", "c3", None]),
                    "content": " ".join(rng.sample(words, rng.randint(1, 4))),
                    "tags": rng.sample(["a", "b", "c"], rng.randint(0, 2)),
                    "importance": rng.choice([0.2, 0.5, 0.8]),
                    "created_at": at(n if rng.random() < 0.8 else rng.randint(0, 80)),
                }
            )
        stored = driver.store_many(items)
        options: dict[str, list[Any]] = {
            "tags": [None, ["a"], ["b", "c"]],
            "exclude_tags": [None, ["c"]],
            "min_importance": [None, 0.5],
            "conversation_id": [None, "c1"],
            "since": [None, at(20)],
        }
        for case in range(36):
            chosen = {k: rng.choice(v) for k, v in options.items()}
            chosen = {k: v for k, v in chosen.items() if v is not None}
            search = ("hybrid", "vector", "keyword")[case % 3]
            query = " ".join(rng.sample(words, rng.randint(1, 3)))
            top_k = rng.choice([1, 3, 10, 50])
            user = rng.choice(["u1", "u2"])
            got = driver.recall(
                user,
                query=query,
                top_k=top_k,
                search=search,  # type: ignore[arg-type]
                **chosen,
            )
            expected = self.expected(
                driver,
                stored,
                MemoryFilter(user_id=user, **chosen),
                top_k=top_k,
                query=query,
                search=search,
            )
            assert_same_hits(
                got, expected, top_k, context=f"case {case}: {search} {query!r} {chosen}"
            )
