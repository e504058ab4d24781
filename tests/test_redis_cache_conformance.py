"""The Redis cache in front of a driver passes the whole conformance suite.

Each variant wraps the driver's own conformance factory with :func:`redis_support.with_cache`
under a namespace of its own on the shared Redis server. To add a driver (pgvector, chroma,
automem), copy the class below with that driver's conformance factory::

    class TestCachedPgvectorConformance(MemoryDriverConformance):
        @pytest.fixture
        def driver_factory(self, pg_factory, namespace):   # pg_factory: its usual factory
            yield with_cache(pg_factory, namespace)

The targeted cache tests (test_redis_cache.py) take the same factories: add the driver to
their ``inner_factory`` fixture.
"""

from __future__ import annotations

import pytest
from redis_support import (  # noqa: F401 - fixtures
    namespace,
    redis_client,
    sqlite_factory,
    with_cache,
)

from memory_drivers.testing import MemoryDriverConformance


class TestCachedSQLiteConformance(MemoryDriverConformance):
    @pytest.fixture
    def driver_factory(self, tmp_path, namespace):  # noqa: F811 - the fixture
        yield with_cache(sqlite_factory(tmp_path), namespace)
