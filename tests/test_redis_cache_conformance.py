"""The Redis cache in front of each driver passes the whole conformance suite.

Each variant wraps the driver's own conformance factory (from redis_support) with
:func:`redis_support.with_cache`, under a namespace of its own on the shared Redis server. A
variant for another driver is four lines::

    class TestCachedMineConformance(MemoryDriverConformance):
        @pytest.fixture
        def driver_factory(self, my_store, namespace):     # my_store: what its factory needs
            yield with_cache(my_factory(my_store), namespace)

The targeted cache tests (test_redis_cache.py) run against the same factories: add the driver
to their ``backend`` fixture too.
"""

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

from memory_drivers.testing import MemoryDriverConformance


class TestCachedSQLiteConformance(MemoryDriverConformance):
    @pytest.fixture
    def driver_factory(self, tmp_path, namespace):  # noqa: F811 - the fixture
        yield with_cache(sqlite_factory(tmp_path), namespace)


class TestCachedChromaConformance(MemoryDriverConformance):
    @pytest.fixture
    def driver_factory(self, tmp_path, namespace):  # noqa: F811 - the fixture
        yield with_cache(chroma_factory(tmp_path), namespace)


class TestCachedPgVectorConformance(MemoryDriverConformance):
    @pytest.fixture
    def driver_factory(self, pg_database, namespace):  # noqa: F811 - the fixture
        yield with_cache(pgvector_factory(pg_database), namespace)


@pytest.mark.slow
class TestCachedAutoMemConformance(MemoryDriverConformance):
    exact_scores = True  # memory-drivers serve in front of sqlite (see test_automem_conformance)
    hybrid_ranks_as = "vector"  # AutoMem's own recall (see test_automem_conformance)

    @pytest.fixture
    def driver_factory(self, live_server, tmp_path, namespace):  # noqa: F811 - the fixtures
        store = AutoMemStore(live_server, tmp_path)
        try:
            yield with_cache(store.factory, namespace)
        finally:
            store.close()
