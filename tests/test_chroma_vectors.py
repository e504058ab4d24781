"""The chroma driver's cache of vectors (embedded mode): it follows every write of the process,
is shared by the drivers of one directory, is filled again from Chroma when a store is opened,
and never answers from a stale or partial copy (recall stays exactly the reference answer).

Real Chroma stores in ``tmp_path``; nothing is mocked.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("chromadb")

from test_chroma import FailingDriver  # a real ChromaDriver that fails chosen calls

from memory_drivers.config import Settings, build_settings
from memory_drivers.drivers.chroma import ChromaDriver
from memory_drivers.drivers.chroma.vectors import CachedVectors, VectorCache
from memory_drivers.errors import BackendUnavailableError
from memory_drivers.models import Memory
from memory_drivers.testing import assert_same_hits, expected_hits, fast_embedder

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
WORDS = "apple banana cherry delta echo falcon garden harbor island jungle".split()


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Callable[..., ChromaDriver]]:
    drivers: list[ChromaDriver] = []
    base: Settings = build_settings(_env_file=None)

    def make(cls: type[ChromaDriver] = ChromaDriver, **settings: Any) -> ChromaDriver:
        driver = cls(
            base.replace(chroma_path=tmp_path / "chroma", **settings), embedder=fast_embedder()
        )
        drivers.append(driver)
        return driver

    yield make
    for driver in reversed(drivers):
        driver.close()


def items(rng: random.Random, count: int, user: str = "u1") -> list[dict[str, Any]]:
    return [
        {
            "user_id": user,
            "content": " ".join(rng.sample(WORDS, rng.randint(1, 4))),
            "tags": rng.sample(["t1", "t2"], rng.randint(0, 1)),
            "created_at": T0 + timedelta(hours=rng.randint(0, 50)),
        }
        for _ in range(count)
    ]


def check_recall(driver: ChromaDriver, stored: list[Memory], context: str) -> None:
    """Vector and hybrid recall, with and without a filter, are the reference answer over
    ``stored``."""
    for query in ("apple", "banana cherry", "delta echo falcon"):
        for chosen in ({}, {"tags": ["t1"]}):
            for top_k in (1, 5, 40):
                hits = driver.recall("u1", query=query, top_k=top_k, search="vector", **chosen)
                f = driver._filter(user_id="u1", **chosen)
                want = expected_hits(stored, f, top_k=top_k, query=query, embedder=driver.embedder)
                assert_same_hits(hits, want, top_k, context=f"{context}: {query} {chosen}")
            now = T0 + timedelta(hours=100)  # hybrid: the scope's vectors come from the cache
            hits = driver.recall("u1", query=query, top_k=5, search="hybrid", now=now, **chosen)
            want = expected_hits(
                stored, f, top_k=5, query=query, search="hybrid", embedder=driver.embedder, now=now
            )
            assert_same_hits(hits, want, 5, context=f"{context}: hybrid {query} {chosen}")


def cached(driver: ChromaDriver, user: str) -> CachedVectors | None:
    assert driver._vectors is not None
    return driver._vectors.get(driver._user_collection(user).name)


def assert_cache_is_chroma(driver: ChromaDriver, user: str) -> None:
    """The cached ids and vectors are exactly what Chroma holds."""
    entry = cached(driver, user)
    assert entry is not None
    held = driver._user_collection(user).get(include=["embeddings"])
    assert sorted(entry.ids) == sorted(held["ids"])
    for rid, vector in zip(held["ids"], held["embeddings"], strict=True):
        assert np.array_equal(entry.matrix[entry.rows[rid]], np.asarray(vector, np.float32))


def test_the_cache_follows_every_write_of_the_process(open_store: Callable[..., ChromaDriver]):
    driver = open_store()
    rng = random.Random(1)
    stored = driver.store_many(items(rng, 60))
    assert cached(driver, "u1") is not None, "a collection this process made is cached"
    check_recall(driver, stored, "after the first store")
    stored += driver.store_many(items(rng, 30) + items(rng, 5, user="u2"))
    check_recall(driver, stored, "after a second store")
    gone = stored[:10]
    for m in gone:
        assert driver.delete(m.id)
    stored = stored[10:]
    changed = driver.update(stored[0].id, content="jungle harbor island")
    assert changed is not None
    stored[0] = changed
    stored[1] = driver.update(stored[1].id, tags=["t1"]) or stored[1]
    check_recall(driver, [m for m in stored if m.user_id == "u1"], "after deletes and updates")
    assert_cache_is_chroma(driver, "u1")
    assert_cache_is_chroma(driver, "u2")


def test_drivers_of_one_directory_share_the_cache(open_store: Callable[..., ChromaDriver]):
    """A write through one driver is seen by the recall of another of the same process."""
    first, second = open_store(), open_store()
    rng = random.Random(2)
    stored = first.store_many(items(rng, 40))
    check_recall(second, stored, "written by the first, read by the second")
    stored += second.store_many(items(rng, 20))
    deleted = stored.pop(0)
    assert second.delete(deleted.id)
    check_recall(first, stored, "written by the second, read by the first")
    second.close()
    check_recall(first, stored, "the other driver closed")


def test_a_store_opened_again_fills_the_cache_from_chroma(open_store: Callable[..., ChromaDriver]):
    driver = open_store()
    stored = driver.store_many(items(random.Random(3), 50))
    driver.close()
    again = open_store()
    assert again._vectors is not None and again._vectors.get("anything") is None
    check_recall(again, stored, "opened again")
    assert_cache_is_chroma(again, "u1")


def test_without_room_or_with_a_zero_budget_recall_asks_chroma(
    open_store: Callable[..., ChromaDriver],
):
    rng = random.Random(4)
    stored = open_store(chroma_vector_cache_mb=0).store_many(items(rng, 40))
    off = open_store(chroma_vector_cache_mb=0)
    assert off._vectors is None
    check_recall(off, stored, "no cache")
    small = open_store(chroma_vector_cache_mb=1)
    assert small._vectors is not None
    small._vectors.budget = 1000  # less than one user's vectors
    check_recall(small, stored, "too small a cache")
    assert cached(small, "u1") is None


@pytest.mark.parametrize("failing", [{"add": 5}, {"add": 5, "delete": 1}, {"delete": 1}])
def test_a_failed_write_never_leaves_the_cache_stale(
    open_store: Callable[..., ChromaDriver], failing: dict[str, int]
):
    """A write that fails (and may have landed, or been half undone) drops the collection's
    cached vectors: the next recall reads them from Chroma again. (Adds 1-3 write the
    directory, 4-6 the user's collection; with the undo failing too, the first batch remains,
    as documented.)"""
    driver = open_store(FailingDriver)
    assert isinstance(driver, FailingDriver)
    driver._max_batch = 5
    rng = random.Random(5)
    stored = driver.store_many(items(rng, 20))
    check_recall(driver, stored, "before")
    driver.fail = dict(failing)
    with pytest.raises(BackendUnavailableError, match="injected"):
        if "add" in failing:
            driver.store_many(items(rng, 12))
        else:
            driver.delete(stored[0].id)
    driver.fail = {}
    held = list(driver.iter_memories(user_id="u1"))
    assert len(held) == len(stored) + (5 if "add" in failing and "delete" in failing else 0)
    check_recall(driver, held, "after the failure")
    assert_cache_is_chroma(driver, "u1")


def test_a_fill_that_raced_a_write_is_not_kept():
    """The generation read before a fill no longer matches once a write came in between."""
    cache = VectorCache(1 << 20)
    generation = cache.generation("c")
    cache.added("c", ["x"], np.ones((1, 4), np.float32))  # not cached: nothing to append to
    stale = CachedVectors.of([], [], 4)
    assert not cache.install("c", stale, generation)
    assert cache.get("c") is None
    assert cache.install("c", CachedVectors.of(["x"], np.ones((1, 4))), cache.generation("c"))
    cache.removed("c", ["x"])
    entry = cache.get("c")
    assert entry is not None and entry.ids == ()


def test_the_cache_keeps_to_its_budget():
    """Least recently used collections go first; one larger than the budget is not kept."""
    entry = CachedVectors.of([str(uuid.uuid4()) for _ in range(10)], np.ones((10, 100)))
    cache = VectorCache(entry.nbytes * 2)
    for name in ("a", "b"):
        assert cache.install(name, entry, cache.generation(name))
    assert cache.get("a") is not None  # a is now the most recently used
    assert cache.install("c", entry, cache.generation("c"))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    big = CachedVectors.of(["x"] * 1, np.ones((1, 10_000)))
    assert not cache.install("d", big, cache.generation("d"))


def test_a_full_cache_does_not_evict_to_fill(open_store: Callable[..., ChromaDriver]):
    """With room for one user's vectors, the first user recalled is cached and stays; the
    second is searched by Chroma (exact all the same), not cached in turn."""
    rng = random.Random(6)
    writer = open_store(chroma_vector_cache_mb=0)
    stored = writer.store_many(items(rng, 40) + items(rng, 40, user="u2"))
    writer.close()
    driver = open_store()
    assert driver._vectors is not None
    driver._vectors.budget = 60_000  # one user: 40 x (256 x 4 + 100) bytes
    check_recall(driver, [m for m in stored if m.user_id == "u1"], "u1, cached")
    for query in ("apple", "delta echo"):
        hits = driver.recall("u2", query=query, top_k=5, search="vector")
        f = driver._filter(user_id="u2")
        want = expected_hits(stored, f, top_k=5, query=query, embedder=driver.embedder)
        assert_same_hits(hits, want, 5, context=f"u2 {query}")
    assert cached(driver, "u1") is not None and cached(driver, "u2") is None
