"""The pgvector driver runs the whole conformance suite (and the equivalence check against the
sqlite driver) against a real PostgreSQL with pgvector."""

from __future__ import annotations

import pytest

from memory_drivers.drivers.pgvector import PgVectorDriver
from memory_drivers.testing import MemoryDriverConformance


class TestPgVectorConformance(MemoryDriverConformance):
    @pytest.fixture
    def driver_factory(self, pg_database):
        def factory(*, embedder, settings):
            return PgVectorDriver(
                settings.replace(database_url=pg_database, memory_auto_migrate=True),
                embedder=embedder,
            )

        yield factory
