"""The pgvector driver's vector cache (drivers/pgvector/vector_cache.py) against a real
PostgreSQL: recalls scored from cached vectors give what the database gives, every write by any
driver is seen at once (versions and the change log, migration 0005), the budget holds."""

from __future__ import annotations

import importlib
import random
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from memory_drivers.config import Settings, build_settings
from memory_drivers.drivers.pgvector import PgVectorDriver
from memory_drivers.drivers.pgvector.vector_cache import CachedVectors, with_changes
from memory_drivers.embeddings.hashing import HashingEmbedder

m0005 = importlib.import_module("memory_drivers.migrations.versions.0005_user_vector_versions")

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu amber bronze"
).split()
QUERIES = ["alpha bravo", "echo golf hotel", "zulu", "lima mike november oscar", "amber delta"]


def settings_for(url: str, **values: Any) -> Settings:
    return build_settings(_env_file=None, database_url=url, memory_auto_migrate=True, **values)


def open_driver(url: str, dimension: int = 64, **values: Any) -> PgVectorDriver:
    return PgVectorDriver(settings_for(url, **values), embedder=HashingEmbedder(dimension))


@pytest.fixture
def drivers(pg_database: str) -> Iterator[tuple[PgVectorDriver, PgVectorDriver]]:
    """(cached, plain): one database, one driver that reads a user into its cache in their first
    recall (PGVECTOR_VECTOR_CACHE_AFTER=0) and one without a cache."""
    cached = open_driver(pg_database, pgvector_vector_cache_after=0)
    plain = open_driver(pg_database, pgvector_vector_cache_mb=0)
    try:
        yield cached, plain
    finally:
        cached.close()
        plain.close()


def texts(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.sample(WORDS, 4)) for _ in range(count)]


def load(driver: PgVectorDriver, users: int, per_user: int, seed: int = 1) -> None:
    contents = texts(users * per_user, seed)
    driver.store_many([{"user_id": f"u{i % users}", "content": c} for i, c in enumerate(contents)])


def answers(driver: PgVectorDriver, user: str, query: str, k: int = 10) -> list[tuple[str, float]]:
    hits = driver.recall(user, query=query, search="vector", top_k=k)
    return [(hit.memory.id, hit.score) for hit in hits]


def assert_same(left: list[tuple[str, float]], right: list[tuple[str, float]]) -> None:
    assert [i for i, _ in left] == [i for i, _ in right]
    assert [s for _, s in left] == pytest.approx([s for _, s in right], abs=1e-6)


def cache_stats(driver: PgVectorDriver) -> dict[str, Any]:
    return driver.stats()["vector_cache"]


def version_of(driver: PgVectorDriver, user: str) -> int | None:
    with driver.engine.connect() as connection:
        return connection.execute(
            text("SELECT version FROM memory_user_versions WHERE user_id = :u"), {"u": user}
        ).scalar()


# ---------------------------------------------------------------------- same answers
def test_cached_recalls_give_the_database_answers(drivers) -> None:
    """Recalls scored from the cache rank the same memories, with the same scores, as the
    database does, ties and k larger than the user's memories included."""
    cached, plain = drivers
    load(cached, users=3, per_user=150)
    for user in ("u0", "u1", "u2"):
        for query in QUERIES:
            for k in (1, 10, 200):
                assert_same(answers(cached, user, query, k), answers(plain, user, query, k))
    stats = cache_stats(cached)
    assert stats["fills"] == 3 and stats["hits"] == 3 * len(QUERIES) * 3
    assert stats["users"] == 3 and stats["bytes"] == 450 * (64 * 4 + 8)
    assert cache_stats(plain)["hits"] == 0 and cache_stats(plain)["users"] == 0


def test_a_user_is_read_after_the_recalls_it_leaves_to_the_database(pg_database: str) -> None:
    """PGVECTOR_VECTOR_CACHE_AFTER=2: the first two recalls of a user go to the database, the
    third reads the user's vectors and is scored from them, as are the recalls after it."""
    with open_driver(pg_database, pgvector_vector_cache_after=2) as driver:
        load(driver, users=1, per_user=20)
        first = answers(driver, "u0", "alpha")
        for expected in ((0, 0), (1, 1), (1, 2)):
            assert_same(answers(driver, "u0", "alpha"), first)
            stats = cache_stats(driver)
            assert (stats["fills"], stats["hits"]) == expected


def test_a_broken_schema_fails_the_read_with_the_database_error(pg_database: str) -> None:
    """A read of a user that fails (here: the versions table is gone) fails the recall, as
    the database would; the next recall tries again."""
    with open_driver(pg_database) as driver:
        load(driver, users=1, per_user=5)
        with driver.engine.begin() as connection:
            connection.execute(text("ALTER TABLE memory_user_versions RENAME TO moved"))
        with pytest.raises(DBAPIError, match="memory_user_versions"):
            answers(driver, "u0", "alpha")
        with driver.engine.begin() as connection:
            connection.execute(text("ALTER TABLE moved RENAME TO memory_user_versions"))
        assert len(answers(driver, "u0", "alpha")) == 5
        assert cache_stats(driver)["fills"] == 1


# ---------------------------------------------------------------------- every write is seen
def test_writes_by_another_driver_are_seen_at_once(drivers) -> None:
    """A store, an update of the content (a new vector), a delete and a move to another user,
    made by another driver, change the very next cached recall; the copy is brought up to date
    from the log, not read again whole."""
    cached, writer = drivers
    load(writer, users=2, per_user=60)
    query = "quebec romeo sierra tango"
    assert_same(answers(cached, "u0", query), answers(writer, "u0", query))
    assert cache_stats(cached)["fills"] == 1

    new = writer.store(user_id="u0", content=query)
    assert answers(cached, "u0", query)[0] == (new.id, pytest.approx(1.0))
    changed = writer.update(new.id, content="xray yankee zulu")
    assert changed is not None
    assert_same(answers(cached, "u0", query), answers(writer, "u0", query))
    assert new.id not in [i for i, _ in answers(cached, "u0", query)]
    assert answers(cached, "u0", "xray yankee zulu")[0][0] == new.id
    assert writer.delete(new.id)
    assert new.id not in [i for i, _ in answers(cached, "u0", "xray yankee zulu")]
    assert_same(answers(cached, "u0", query), answers(writer, "u0", query))

    stats = cache_stats(cached)
    assert stats["fills"] == 1 and stats["refreshes"] == 3


def test_a_memory_moved_to_another_user_leaves_the_first_users_copy(drivers) -> None:
    """An UPDATE of user_id (by hand, in SQL) is logged for both users."""
    cached, plain = drivers
    load(plain, users=2, per_user=30)
    top = answers(cached, "u0", "alpha")[0][0]
    answers(cached, "u1", "alpha")
    with plain.engine.begin() as connection:
        connection.execute(text("UPDATE memories SET user_id = 'u1' WHERE id = :i"), {"i": top})
    assert top not in [i for i, _ in answers(cached, "u0", "alpha", 100)]
    assert top in [i for i, _ in answers(cached, "u1", "alpha", 100)]
    for user in ("u0", "u1"):
        assert_same(answers(cached, user, "alpha", 100), answers(plain, user, "alpha", 100))


def test_only_changes_to_vectors_bump_the_version(drivers) -> None:
    """Stores and deletes bump the user's version; an update of tags or importance (no new
    vector) does not, so cached copies stay valid; a store for one user leaves the others."""
    _, plain = drivers
    load(plain, users=2, per_user=5)
    start = version_of(plain, "u0")
    assert start is not None and version_of(plain, "u1") is not None
    memory = plain.store(user_id="u0", content="alpha bravo")
    assert version_of(plain, "u0") == start + 1
    plain.update(memory.id, tags=["x"], importance=0.9)
    assert version_of(plain, "u0") == start + 1
    other = version_of(plain, "u1")
    plain.store(user_id="u0", content="charlie")
    assert version_of(plain, "u1") == other
    assert plain.delete(memory.id)
    assert version_of(plain, "u0") == start + 3


def test_a_gap_in_the_log_reads_the_user_whole(drivers) -> None:
    """After a TRUNCATE (no log entries) or more versions than the log keeps, a copy cannot be
    brought up to date: it is read again whole, and the answers still match the database."""
    cached, plain = drivers
    load(plain, users=1, per_user=20)
    answers(cached, "u0", "alpha")
    for i in range(m0005.KEEP_VERSIONS + 1):
        plain.store(user_id="u0", content=f"golf {WORDS[i % len(WORDS)]}")
    with plain.engine.connect() as connection:
        kept = connection.execute(
            text("SELECT count(DISTINCT version) FROM memory_vector_changes WHERE user_id = 'u0'")
        ).scalar()
    assert kept == m0005.KEEP_VERSIONS
    assert_same(answers(cached, "u0", "golf alpha"), answers(plain, "u0", "golf alpha"))
    assert cache_stats(cached)["fills"] == 2 and cache_stats(cached)["refreshes"] == 0

    with plain.engine.begin() as connection:
        connection.execute(text("TRUNCATE memories CASCADE"))
    plain.store(user_id="u0", content="hotel india")
    assert answers(cached, "u0", "golf alpha") == answers(plain, "u0", "golf alpha")
    assert len(answers(cached, "u0", "golf alpha")) == 1
    assert cache_stats(cached)["fills"] == 3


def test_concurrent_writers_never_deadlock_and_the_cache_ends_in_step(pg_database: str) -> None:
    """Two writers storing batches over the same users in opposite orders while a reader
    recalls from its cache: no deadlock (versions are taken in user order), no error, and
    afterwards the cached answers are the database's. (8 dimensions and queries of 12 words:
    every memory shares a bucket with every query, so no more than TIE_MARGIN memories tie at
    the cut, where the order of a larger tie is not defined on any driver.)"""
    queries = [" ".join(random.Random(i).sample(WORDS, 12)) for i in range(5)]
    users = [f"u{i}" for i in range(8)]
    errors: list[BaseException] = []
    reader = open_driver(pg_database, 8, pgvector_vector_cache_after=0)
    plain = open_driver(pg_database, 8, pgvector_vector_cache_mb=0)
    load(plain, users=8, per_user=10)

    def write(order: list[str], seed: int) -> None:
        try:
            with open_driver(pg_database, 8) as writer:
                for batch in range(15):
                    contents = texts(len(order) * 3, seed * 100 + batch)
                    writer.store_many(
                        [
                            {"user_id": order[i % len(order)], "content": c}
                            for i, c in enumerate(contents)
                        ]
                    )
        except BaseException as exc:  # reported below
            errors.append(exc)

    def read() -> None:
        try:
            for i in range(60):
                answers(reader, users[i % len(users)], queries[i % len(queries)])
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=(users, 1)),
        threading.Thread(target=write, args=(users[::-1], 2)),
        threading.Thread(target=read),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert plain.count() == 80 + 2 * 15 * 24
        for user in users:
            for query in queries:
                assert_same(answers(reader, user, query), answers(plain, user, query))
        assert cache_stats(reader)["hits"] > 0
    finally:
        reader.close()
        plain.close()


# ---------------------------------------------------------------------- budget
def test_the_budget_holds_and_only_users_recalled_more_often_push_others_out(
    pg_database: str,
) -> None:
    """PGVECTOR_VECTOR_CACHE_MB=1 holds two users of 1,500 64-dimensional vectors (396 kB
    each) but not three. When it is full, a user is read only if recalled more often than the
    least recently used copy, which then goes; otherwise the database answers."""
    with open_driver(
        pg_database, pgvector_vector_cache_mb=1, pgvector_vector_cache_after=0
    ) as driver:
        load(driver, users=3, per_user=1500)
        answers(driver, "u0", "alpha")
        answers(driver, "u1", "alpha")
        answers(driver, "u0", "bravo")  # u0: 2 recalls, the most recent; u1: 1
        stats = cache_stats(driver)
        assert (stats["users"], stats["fills"], stats["refused"]) == (2, 2, 0)

        first = answers(driver, "u2", "alpha")  # 1 recall, no more than u1's: refused
        stats = cache_stats(driver)
        assert (stats["users"], stats["fills"], stats["refused"]) == (2, 2, 1)
        plain = open_driver(pg_database, pgvector_vector_cache_mb=0)
        with plain:
            assert_same(first, answers(plain, "u2", "alpha"))

        answers(driver, "u2", "bravo")  # 2 recalls, more than u1's: read, u1 goes
        stats = cache_stats(driver)
        assert (stats["users"], stats["fills"], stats["evictions"]) == (2, 3, 1)
        assert 0 < stats["bytes"] <= stats["budget_bytes"] == 1 << 20
        answers(driver, "u0", "charlie")  # still kept
        assert cache_stats(driver)["fills"] == 3 and cache_stats(driver)["hits"] == 5
        answers(driver, "u1", "charlie")  # 2 recalls, no more than u2's: refused
        assert cache_stats(driver)["fills"] == 3 and cache_stats(driver)["refused"] == 2


def test_a_user_larger_than_the_budget_is_read_once_then_left_to_the_database(
    pg_database: str,
) -> None:
    """A user whose vectors alone exceed PGVECTOR_VECTOR_CACHE_MB is not kept, and not read
    again on every recall (4,000 vectors of 64 dimensions: 1.06 MB against 1 MB)."""
    with open_driver(pg_database, pgvector_vector_cache_mb=1) as driver:
        load(driver, users=1, per_user=4000)
        first = answers(driver, "u0", "alpha")
        for _ in range(3):
            assert_same(answers(driver, "u0", "alpha"), first)
        stats = cache_stats(driver)
        assert (stats["fills"], stats["refused"], stats["users"], stats["bytes"]) == (1, 1, 0, 0)


def test_no_cache_when_the_budget_is_zero(pg_database: str) -> None:
    with open_driver(pg_database, pgvector_vector_cache_mb=0) as driver:
        load(driver, users=1, per_user=10)
        for _ in range(3):
            answers(driver, "u0", "alpha")
        assert cache_stats(driver) == {
            "budget_bytes": 0,
            "bytes": 0,
            "users": 0,
            "hits": 0,
            "misses": 0,
            "fills": 0,
            "refreshes": 0,
            "evictions": 0,
            "refused": 0,
        }


# ---------------------------------------------------------------------- the copy itself
def copy_of(pks: list[int], vectors: np.ndarray, version: int = 3) -> CachedVectors:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return CachedVectors(version=version, pks=np.array(pks), unit=unit.astype(np.float32))


def packed(vector: list[float]) -> bytes:
    return len(vector).to_bytes(2, "big") + b"\0\0" + np.asarray(vector, ">f4").tobytes()


def test_nearest_keeps_the_ties_at_the_cut() -> None:
    """Like statements.nearest: the limit nearest, then only those within the slack of the
    k-th, so every memory tied with the k-th reaches the shared tie order."""
    copy = copy_of([1, 2, 3, 4], np.array([[1, 0], [1, 0], [0.6, 0.8], [0, 1]], dtype=float))
    ranked = copy.nearest(np.array([1.0, 0.0]), limit=3, kth=0, slack=2e-6)
    assert sorted(pk for pk, _ in ranked) == [1, 2]
    ranked = copy.nearest(np.array([1.0, 0.0]), limit=4, kth=2, slack=2e-6)
    assert sorted(pk for pk, _ in ranked) == [1, 2, 3]
    assert dict(ranked)[3] == pytest.approx(0.6)
    assert copy.nearest(np.zeros(2), limit=3, kth=0, slack=0) is None
    assert copy.nearest(np.ones(3), limit=3, kth=0, slack=0) is None


def test_changes_apply_only_without_a_gap() -> None:
    copy = copy_of([1, 2], np.array([[1.0, 0.0], [0.0, 1.0]]), version=3)
    newer = with_changes(
        copy, 5, [(4, 2, None), (5, 7, packed([3.0, 4.0])), (5, 1, packed([0.0, 2.0]))]
    )
    assert newer is not None and newer.version == 5
    assert dict(zip(newer.pks.tolist(), newer.unit.tolist(), strict=True)) == {
        7: [pytest.approx(0.6), pytest.approx(0.8)],
        1: [0.0, 1.0],
    }
    assert with_changes(copy, 5, [(5, 7, packed([3.0, 4.0]))]) is None  # version 4 missing
    assert with_changes(copy, 4, [(4, 7, packed([0.0, 0.0]))]) is None  # a zero vector
    assert with_changes(copy, 4, [(4, 1, None), (4, 2, None)]) is None  # nothing left


async def test_the_async_api_reads_users_into_the_cache_too(drivers) -> None:
    """Through AsyncMemoryDriver the driver runs on psycopg's async connections, where a user
    is read with SQLAlchemy's text results instead of a binary cursor: the same copies, the
    same answers."""
    from memory_drivers.aio import AsyncMemoryDriver

    cached, plain = drivers
    load(plain, users=2, per_user=40)
    for user in ("u0", "u1"):
        hits = await AsyncMemoryDriver(cached).recall(
            user, query="alpha bravo", search="vector", top_k=10
        )
        ours = [(hit.memory.id, hit.score) for hit in hits]
        assert_same(ours, answers(plain, user, "alpha bravo"))
    stats = cache_stats(cached)
    assert (stats["fills"], stats["hits"], stats["users"]) == (2, 2, 2)
