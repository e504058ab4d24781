"""What every area of the conformance suite shares: the fixtures, the helpers, fixed times."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import pytest

from ...base import BaseMemoryDriver
from ...config import Settings, build_settings
from ...embeddings import Embedder
from ...models import Memory, MemoryFilter, RecallHit
from ..embedders import default_embedder, fast_embedder
from ..reference import expected_hits

__all__ = ["ConformanceBase", "DriverFactory", "MakeDriver", "at", "contents"]

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
DriverFactory = Callable[..., BaseMemoryDriver]
MakeDriver = Callable[..., BaseMemoryDriver]


def at(hours: float) -> datetime:
    """A fixed time: ``hours`` after 2026-01-01 00:00 UTC."""
    return T0 + timedelta(hours=hours)


def contents(hits: list[RecallHit]) -> list[str]:
    return [hit.memory.content for hit in hits]


class ConformanceBase:
    """The fixtures and helpers of :class:`~memory_drivers.testing.MemoryDriverConformance`."""

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

    #: What hybrid search is on this driver: "hybrid" (the shared fusion), or the mode a
    #: backend's own ranking matches (the automem driver leaves hybrid search to AutoMem,
    #: whose recall ranks by its vectors against ``memory-drivers serve``).
    hybrid_ranks_as: ClassVar[str] = "hybrid"

    #: Whether vector and hybrid scores must equal the reference's. Only a backend that ranks
    #: with its own blend (AutoMem) sets this False; it must still rank the right memory first.
    exact_scores: ClassVar[bool] = True

    def expected(
        self,
        driver: BaseMemoryDriver,
        memories: list[Memory],
        memory_filter: MemoryFilter,
        **kwargs: Any,
    ) -> list[RecallHit]:
        """The reference answer (testing.reference) with the driver's embedder and ranking
        settings."""
        mode = kwargs.get("search") or driver.settings.recall_search
        if kwargs.get("query") is not None and mode == "hybrid":
            kwargs["search"] = self.hybrid_ranks_as
        return expected_hits(
            memories,
            memory_filter,
            embedder=driver.embedder,
            rules=driver.ranking,
            context_window=driver.context_window,
            question_words=frozenset(driver.settings.keyword_query_stopwords),
            **kwargs,
        )

    @staticmethod
    def assert_unchanged(driver: BaseMemoryDriver, before: int) -> None:
        assert driver.count() == before, "a rejected call still wrote something"
