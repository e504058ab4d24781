"""The chroma driver runs the whole conformance suite twice: embedded (a persistent directory per
test) and against a real ``chroma run`` server on loopback (collections unique to each test,
dropped afterwards)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memory_drivers.testing import MemoryDriverConformance

try:
    import chromadb
except ImportError:  # chromadb is in the "all" extra that make test installs
    from conftest import REQUIRE_SERVERS

    reason = 'chromadb is not installed: pip install "memory-drivers[chroma]"'
    if REQUIRE_SERVERS:
        pytest.fail(f"{reason} (MEMORY_DRIVERS_REQUIRE_SERVERS is set)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

from chroma_server import ChromaServer, running_chroma

from memory_drivers.drivers.chroma import ChromaDriver


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """One ``chroma run`` for this module, on a free port, storing in a temporary directory."""
    with running_chroma(tmp_path_factory.mktemp("chroma-server") / "data") as server:
        yield server


@pytest.fixture(scope="module")
def server_client(chroma_server: ChromaServer) -> Iterator[object]:
    """A plain chromadb client of the module's server, to drop each test's collections."""
    client = chromadb.HttpClient(host="127.0.0.1", port=chroma_server.port)
    try:
        yield client
    finally:
        client.close()


class TestChromaEmbeddedConformance(MemoryDriverConformance):
    @pytest.fixture
    def driver_factory(self, tmp_path: Path):
        def factory(*, embedder, settings):
            return ChromaDriver(
                settings.replace(chroma_path=tmp_path / "chroma", chroma_url=None),
                embedder=embedder,
            )

        yield factory


class TestChromaServerConformance(MemoryDriverConformance):
    @pytest.fixture
    def driver_factory(self, chroma_server: ChromaServer, server_client: Any):
        prefix = f"t{uuid.uuid4().hex[:12]}"
        names = {
            "chroma_collection": f"{prefix}_memories",
            "chroma_knowledge_collection": f"{prefix}_knowledge",
        }

        def factory(*, embedder, settings):
            return ChromaDriver(
                settings.replace(chroma_url=chroma_server.url, **names), embedder=embedder
            )

        yield factory
        for collection in server_client.list_collections():
            if collection.name.startswith(prefix):  # memories.ids, memories.u.<hash>, ...
                server_client.delete_collection(collection.name)
