"""The sqlite driver on a disk that fills up: a real 2 MB tmpfs, nothing simulated.

Writes get a typed ``StorageFullError`` and store nothing; reads (recall, get, count, stats,
health, close) go on, the index file is not half-written, and when space returns the store
takes writes again without anything lost. Mounting needs root (CI runs as root); elsewhere the
test is skipped, saying why.
"""

from __future__ import annotations

import logging
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_sqlite_durability import USER, assert_found, assert_index_in_sync, open_store, url_of

from memory_drivers.errors import StorageFullError


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs mounted for the test, unmounted afterwards whatever happens."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _grow(mount_point: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount_point)], check=True)


def _batch(n: int) -> list[dict[str, str]]:
    items = []
    for _ in range(10):
        memory_id = str(uuid.uuid4())
        content = f"filler {n} tok{memory_id.replace('-', '')} " + "word " * 60
        items.append({"id": memory_id, "user_id": USER, "content": content})
    return items


def test_full_disk_is_a_typed_error_reads_go_on_and_it_recovers(small_disk: Path, caplog) -> None:
    """Fill the disk with stores until one fails. A failure here usually means a raw
    sqlite3/OSError escaped (the error translation), a read tried to save the index file and
    raised, a failed write left part of its batch behind, or the store did not take writes
    again once space returned."""
    db = small_disk / "m.db"
    url = url_of(db)
    stored: dict[str, str] = {}
    caplog.set_level(logging.WARNING)
    driver = open_store(url, faiss_persist_every=5)
    try:
        for n in range(10_000):
            batch = _batch(n)
            try:
                driver.store_many(batch)
            except StorageFullError as exc:
                failed, error = batch, exc
                break
            stored.update({item["id"]: item["content"] for item in batch})
            driver.recall(USER, query=f"filler {n}", top_k=2)
        else:
            pytest.fail("a 2 MB disk never filled up")
        assert isinstance(error, OSError)
        message = str(error)
        assert "disk is full" in message and str(db) in message, message
        assert len(stored) > 50, "the disk filled before the store could hold anything"

        # Nothing of the failed batch, everything acknowledged, and reads go on.
        assert all(driver.get(item["id"]) is None for item in failed)
        assert driver.count() == len(stored)
        for memory_id, content in list(stored.items())[::17]:
            assert_found(driver, memory_id, content)
        assert driver.recall(USER, query="filler 3", top_k=3, search="hybrid")
        assert driver.stats()["memories"] == len(stored)
        assert driver.health_check()["status"] == "ok"

        # A second process (here: a second driver) opening the full store rebuilds its index
        # in memory and answers, though it cannot save the rebuilt file.
        with open_store(url) as other:
            memory_id, content = next(iter(stored.items()))
            assert_found(other, memory_id, content)
        # Writes still fail with the typed error: a single memory may fit in what the failed
        # batch left, but the disk fills again within a few.
        with pytest.raises(StorageFullError):
            for attempt in range(50):
                one = driver.store(USER, f"one more {attempt} " + "word " * 60)
                stored[one.id] = one.content
    finally:
        driver.close()  # saving the index fails for want of space: a warning, not an error
    assert any("cannot save the FAISS index" in r.getMessage() for r in caplog.records)
    assert not [p.name for p in small_disk.iterdir() if p.name.startswith(".m.faiss.")]

    _grow(small_disk, "64m")
    with open_store(url) as driver:
        more = _batch(-1)
        driver.store_many(more)
        stored.update({item["id"]: item["content"] for item in more})
        for memory_id, content in list(stored.items())[::7]:
            assert_found(driver, memory_id, content)
        assert driver.count() == len(stored)
        assert_index_in_sync(driver)
    # Space is back: the index file is saved and the next open loads it instead of rebuilding.
    with open_store(url) as driver:
        assert driver.count() == len(stored)
        driver.recall(USER, query="filler", top_k=1)
        assert driver.stats()["index"]["rebuilds"] == 0
