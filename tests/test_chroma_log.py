"""Chroma's log stays short: every collection of the chroma driver has its HNSW index written
every ``HNSW_SYNC_THRESHOLD`` records (collections of older stores are changed on open), so
Chroma purges its log (``embeddings_queue``) behind the writes, and an add does not read the
log of every other collection (with Chroma's default of 1,000, an add's time grew with the
whole store).

Real Chroma (embedded, and a server for the setting); nothing is mocked.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# test_chroma fails (in CI) or skips (elsewhere) when chromadb is missing: so does this module.
from test_chroma import base, opened, remote, shared_server  # noqa: F401 (fixtures)

from memory_drivers.config import build_settings
from memory_drivers.drivers.chroma import ChromaDriver
from memory_drivers.drivers.chroma.records import HNSW_SYNC_THRESHOLD
from memory_drivers.testing import fast_embedder


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Callable[[], ChromaDriver]]:
    """Open (again) this test's embedded store."""
    drivers: list[ChromaDriver] = []

    def make() -> ChromaDriver:
        settings = build_settings(_env_file=None, chroma_path=tmp_path / "chroma")
        drivers.append(ChromaDriver(settings, embedder=fast_embedder()))
        return drivers[-1]

    yield make
    for driver in reversed(drivers):
        driver.close()


def _thresholds(driver: ChromaDriver) -> dict[str, Any]:
    """Each of the store's collections' ``sync_threshold``, by name."""
    names = [c.name for c in driver._client.list_collections()]
    prefix = driver.collection_name.split("_")[0] if driver.mode == "server" else ""
    return {
        name: (driver._client.get_collection(name).configuration_json["hnsw"] or {}).get(
            "sync_threshold"
        )
        for name in names
        if name.startswith(prefix)
    }


@pytest.mark.parametrize("mode", ["embedded", "server"])
def test_every_collection_writes_its_index_every_few_records(
    request: pytest.FixtureRequest, mode: str
) -> None:
    driver = request.getfixturevalue("local" if mode == "embedded" else "remote")()
    driver.store_many([{"user_id": f"u{i}", "content": f"note {i}"} for i in range(3)])
    driver.store_global_knowledge("Refunds within thirty days", category="policy")
    found = _thresholds(driver)
    assert len(found) >= 5, found  # three users, the directory, knowledge (and links)
    assert set(found.values()) == {HNSW_SYNC_THRESHOLD}, found


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Chroma's, from modify below
def test_collections_of_an_older_store_are_changed_on_open(
    local: Callable[[], ChromaDriver],
) -> None:
    driver = local()
    first = driver.store("u1", "the ferry leaves at noon")
    for collection in (driver._user_collection("u1"), driver._directory):
        collection.modify(configuration={"hnsw": {"sync_threshold": 1000}})  # Chroma's default
    assert set(_thresholds(driver).values()) == {1000, HNSW_SYNC_THRESHOLD}
    driver.close()

    again = local()
    second = again.store("u1", "the ferry is late")
    assert set(_thresholds(again).values()) == {HNSW_SYNC_THRESHOLD}
    hits = again.recall("u1", query="ferry", search="keyword")
    assert {h.memory.id for h in hits} == {first.id, second.id}


def test_chromas_log_is_purged_as_memories_arrive(
    local: Callable[[], ChromaDriver], tmp_path: Path
) -> None:
    """1,000 memories of 10 users in batches of 50: Chroma's log keeps a few records per
    collection, not every memory (with Chroma's default threshold, 1,000, it kept 1,051)."""
    driver = local()
    for batch in range(20):
        driver.store_many(
            [{"user_id": f"u{i % 10}", "content": f"batch {batch} note {i}"} for i in range(50)]
        )
    assert driver.count() == 1000
    with sqlite3.connect(tmp_path / "chroma" / "chroma.sqlite3") as log:
        [(kept,)] = log.execute("SELECT count(*) FROM embeddings_queue").fetchall()
    assert kept <= 100, f"Chroma's log holds {kept} records"
