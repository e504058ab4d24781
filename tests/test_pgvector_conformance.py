"""The pgvector driver runs the whole conformance suite (and the equivalence check against the
sqlite driver) against a real PostgreSQL with pgvector."""

from __future__ import annotations

import pytest

from memory_drivers.drivers.pgvector import PgVectorDriver
from memory_drivers.testing import MemoryDriverConformance


class TestPgVectorConformance(MemoryDriverConformance):
    """The driver as configured by default."""

    @pytest.fixture
    def driver_factory(self, pg_database):
        def factory(*, embedder, settings):
            return PgVectorDriver(
                settings.replace(database_url=pg_database, memory_auto_migrate=True),
                embedder=embedder,
            )

        yield factory


class TestPgVectorCachedConformance(MemoryDriverConformance):
    """The same suite with every vector recall of one user scored from the vector cache
    (PGVECTOR_VECTOR_CACHE_AFTER=0: a user is read in their first recall). By default the
    first recall of a user is the database's and the user is read in the background, so the
    default suite checks mostly the database's scoring, and this one the cache's."""

    @pytest.fixture
    def driver_factory(self, pg_database):
        def factory(*, embedder, settings):
            return PgVectorDriver(
                settings.replace(
                    database_url=pg_database,
                    memory_auto_migrate=True,
                    pgvector_vector_cache_after=0,
                ),
                embedder=embedder,
            )

        yield factory
