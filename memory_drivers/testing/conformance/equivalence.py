"""Conformance: the same calls give the same answers as the sqlite driver, the reference."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from ...config import Settings
from ..embedders import default_embedder
from ..reference import assert_same_hits
from .base import ConformanceBase, MakeDriver, at, contents

__all__ = ["EquivalenceTests"]


class EquivalenceTests(ConformanceBase):
    """Equivalence with the sqlite driver."""

    # ================================================================== equivalence
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
        from ...drivers.sqlite import SQLiteDriver

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
                for mode in ("hybrid", "vector", "keyword", "recent"):
                    query = None if mode == "recent" else queries[number % len(queries)]
                    if mode == "keyword":
                        query = "user preference food color music work"
                    kwargs = {**chosen, "query": query}
                    if mode != "recent":
                        kwargs["search"] = mode
                    context = f"{mode} {query!r} {chosen}"
                    same = dict(kwargs)
                    if mode == "hybrid":
                        same["search"] = self.hybrid_ranks_as
                    everything = reference.recall("u1", top_k=1000, **same)
                    for top_k in (1, 3, 20):
                        got = driver.recall("u1", top_k=top_k, **kwargs)
                        if self.exact_scores or mode not in ("vector", "hybrid"):
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
