"""The sqlite driver runs the whole conformance suite against real SQLite files and FAISS."""

from __future__ import annotations

import pytest

from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.testing import MemoryDriverConformance


class TestSQLiteConformance(MemoryDriverConformance):
    @pytest.fixture
    def driver_factory(self, tmp_path):
        def factory(*, embedder, settings):
            return SQLiteDriver(
                settings.replace(memory_db_url=f"sqlite:///{tmp_path}/store/memories.db"),
                embedder=embedder,
            )

        yield factory
