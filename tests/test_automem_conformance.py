"""The automem driver runs the whole conformance suite over real HTTP, against
``memory-drivers serve`` (uvicorn on a free loopback port, in a thread of this process) in front
of a fresh sqlite store per test.

The server embeds with the same model as the driver (the factory gives the sqlite store the
test's embedder, minus the test's instrumentation: a server is another process with its own
embedder), so vector scores are the store's exact cosine similarities: this class keeps
``exact_scores = True``. Against a real AutoMem, scores are AutoMem's blend instead (see
docs/drivers/automem.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from automem_support import LiveServer, live_server, sqlite_store  # noqa: F401 - a fixture

from memory_drivers.base import BaseMemoryDriver
from memory_drivers.drivers.automem import AutoMemDriver
from memory_drivers.testing import MemoryDriverConformance

pytestmark = pytest.mark.slow


class TestAutoMemConformance(MemoryDriverConformance):
    exact_scores = True
    # Hybrid search is AutoMem's own recall, which `memory-drivers serve` ranks by vectors.
    hybrid_ranks_as = "vector"

    @pytest.fixture
    def driver_factory(self, live_server: LiveServer, tmp_path: Path) -> Iterator[Any]:  # noqa: F811
        stores: list[BaseMemoryDriver] = []

        def factory(*, embedder: Any, settings: Any) -> AutoMemDriver:
            if not stores:  # the first call of a test opens the store; later calls reuse it
                model = embedder
                while hasattr(model, "inner"):  # RecordingEmbedder, FaultyEmbedder
                    model = model.inner
                stores.append(sqlite_store(tmp_path / "served", settings, model))
                live_server.use(stores[0])
            return AutoMemDriver(live_server.client_settings(settings), embedder=embedder)

        try:
            yield factory
        finally:
            live_server.use(None)
            for store in stores:
                store.close()
