"""Every driver runs the whole conformance suite again through the async API
(:class:`memory_drivers.AsyncMemoryDriver`): the same tests, each call of the public API awaited
on one event loop (memory_drivers.testing.through_async)."""

from __future__ import annotations

import pytest
from automem_support import live_server  # noqa: F401 - a fixture
from redis_support import (  # noqa: F401 - fixtures
    AutoMemStore,
    chroma_factory,
    namespace,
    pgvector_factory,
    redis_client,
    sqlite_factory,
    with_cache,
)

from memory_drivers.testing import MemoryDriverConformance, through_async


class TestAsyncSQLiteConformance(MemoryDriverConformance):
    @pytest.fixture
    def driver_factory(self, tmp_path):
        yield through_async(sqlite_factory(tmp_path))


class TestAsyncPgVectorConformance(MemoryDriverConformance):
    @pytest.fixture
    def driver_factory(self, pg_database):
        yield through_async(pgvector_factory(pg_database))


class TestAsyncChromaConformance(MemoryDriverConformance):
    @pytest.fixture
    def driver_factory(self, tmp_path):
        yield through_async(chroma_factory(tmp_path))


class TestAsyncCachedPgVectorConformance(MemoryDriverConformance):
    """The Redis cache in front of pgvector: native calls, Redis through redis.asyncio."""

    @pytest.fixture
    def driver_factory(self, pg_database, namespace):  # noqa: F811 - the fixture
        yield through_async(with_cache(pgvector_factory(pg_database), namespace))


@pytest.mark.slow
class TestAsyncAutoMemConformance(MemoryDriverConformance):
    exact_scores = True  # memory-drivers serve in front of sqlite (see test_automem_conformance)
    hybrid_ranks_as = "vector"  # AutoMem's own recall (see test_automem_conformance)

    @pytest.fixture
    def driver_factory(self, live_server, tmp_path):  # noqa: F811 - the fixture
        store = AutoMemStore(live_server, tmp_path)
        try:
            yield through_async(store.factory)
        finally:
            store.close()
