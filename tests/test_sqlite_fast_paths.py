"""The sqlite driver's hot paths that bypass SQLAlchemy must answer exactly as SQLAlchemy's.

Recall reads memories, the log position and keyword postings through the DB-API
(``sqlite_rows``) and converts each value by hand; store_many writes rows the same way. Each
is checked here against the generic SQLAlchemy path on a real SQLite file.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from memory_drivers.config import build_settings
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.embeddings.hashing import HashingEmbedder
from memory_drivers.errors import BackendUnavailableError
from memory_drivers.models import MemoryFilter
from memory_drivers.sql.driver import SQLDriver, only_user
from memory_drivers.sql.engines import read_connection, sqlite_rows
from memory_drivers.sql.schema import memories


@pytest.fixture
def driver(tmp_path: Path) -> SQLiteDriver:
    settings = build_settings(_env_file=None, memory_db_url=f"sqlite:///{tmp_path}/m.db")
    with SQLiteDriver(settings, embedder=HashingEmbedder(64)) as opened:
        yield opened


def _odd_memories(driver: SQLiteDriver) -> None:
    base = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone.utc)
    driver.store_many(
        [
            {"user_id": "u1", "content": "plain"},
            {
                "user_id": "u1",
                "content": "all fields set",
                "conversation_id": "c1",
                "tags": ["a", 'quote"d', "ünï"],
                "metadata": {"n": 1.5, "s": "x", "nested": {"k": [1, None, True]}, "z": None},
                "memory_type": "fact",
                "importance": 0.123456789,
                "source": "import",
                "created_at": base,
                "updated_at": base + timedelta(days=400),
            },
            {
                "user_id": "u2",
                "content": "an offset and an old year",
                "created_at": datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=5))),
                "importance": 1,
                "metadata": {},
                "tags": [],
            },
        ]
    )


def test_memories_by_pk_matches_sqlalchemy(driver: SQLiteDriver) -> None:
    _odd_memories(driver)
    with read_connection(driver.engine) as connection:
        pks = list(connection.execute(select(memories.c.pk)).scalars())
        fast = driver._memories_by_pk(connection, pks)
        generic = SQLDriver._memories_by_pk(driver, connection, pks)
    assert len(fast) == 3
    assert fast == generic
    for pk, memory in fast.items():
        other = generic[pk]
        assert memory.model_dump() == other.model_dump()
        assert memory.created_at.tzinfo is other.created_at.tzinfo is timezone.utc
        assert type(memory.importance) is float


def test_written_rows_match_sqlalchemy(driver: SQLiteDriver, tmp_path: Path) -> None:
    """store_many's own bind conversion stores the text SQLAlchemy would have stored."""
    _odd_memories(driver)
    settings = build_settings(_env_file=None, memory_db_url=f"sqlite:///{tmp_path}/g.db")
    with SQLiteDriver(settings, embedder=HashingEmbedder(64)) as generic:
        generic._insert_many = lambda c, t, rows: SQLDriver._insert_many(generic, c, t, rows)
        generic.store_many([m for m in driver.iter_memories()])
        columns = [c for c in memories.c if c.name != "pk"]

        def stored(store: SQLiteDriver) -> list[tuple[object, ...]]:
            names = ", ".join(f'"{c.name}"' for c in columns)
            with read_connection(store.engine) as connection:
                return sqlite_rows(connection, f"SELECT {names} FROM memories ORDER BY id")

        assert stored(driver) == stored(generic)


def test_sqlite_rows_raises_sqlalchemy_errors(driver: SQLiteDriver) -> None:
    with read_connection(driver.engine) as connection, pytest.raises(OperationalError) as caught:
        sqlite_rows(connection, "SELECT pk FROM nowhere")
    assert "nowhere" in str(caught.value.orig)


def test_a_locked_database_is_unavailable_through_the_raw_begin(driver: SQLiteDriver) -> None:
    """BEGIN IMMEDIATE goes through the DB-API too; a writer held elsewhere still surfaces as
    BackendUnavailableError ("locked"), not as a raw sqlite3 error."""
    import sqlite3

    holder = sqlite3.connect(str(driver.path), isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")
    try:
        settings = driver.settings.replace(sqlite_busy_timeout=0.05)
        other = SQLiteDriver(settings, embedder=HashingEmbedder(64))
        with other, pytest.raises(BackendUnavailableError, match="locked"):
            other.store(user_id="u1", content="blocked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"user_id": None},
        {"tags": ("a",)},
        {"tag_mode": "all"},
        {"conversation_id": "c"},
        {"since": datetime(2024, 1, 1, tzinfo=timezone.utc)},
        {"min_importance": 0.0},
        {"metadata": {}},
        {"exclude_tags": ()},
    ],
)
def test_only_user_is_the_filter_of_one_user(changes: dict[str, object]) -> None:
    f = MemoryFilter(**{"user_id": "u1", **changes})
    assert only_user(f) == (f == MemoryFilter(user_id=f.user_id))


def test_memories_grouped_by_owner_score_exactly() -> None:
    """The memories index regroups its storage by owner (one user's vectors side by side, scored
    in place); a user's scores stay exact before, after, and with rows added or removed since."""
    import numpy as np

    from memory_drivers.drivers.sqlite import faiss_index
    from memory_drivers.drivers.sqlite.faiss_index import VectorIndexes
    from memory_drivers.drivers.sqlite.rows import RUN_MIN

    rng = np.random.default_rng(0)
    index = VectorIndexes(None, store_id="s", embedder="e", dimension=8)
    vectors: dict[int, np.ndarray] = {}
    owner_of: dict[int, str] = {}

    def add(pks: range) -> None:
        rows = []
        for pk in pks:
            vectors[pk] = rng.standard_normal(8).astype(np.float32)
            owner_of[pk] = f"u{rng.integers(5)}"
            rows.append((pk, vectors[pk].tobytes(), owner_of[pk]))
        index._add("memories", rows)

    def check() -> None:
        query = rng.standard_normal(8).astype(np.float32)
        for user in {*owner_of.values()}:
            mine = sorted(pk for pk, owner in owner_of.items() if owner == user)
            exact = {pk: float(vectors[pk] @ query) for pk in mine}
            pks, scores = index.scores_owner(query, user)
            assert sorted(pks.tolist()) == mine
            for pk, score in zip(pks.tolist(), scores.tolist(), strict=True):
                assert abs(score - exact[pk]) < 1e-5
            best = index.search_owner(query, 3, user)
            assert [pk for pk, _ in best] == sorted(exact, key=lambda pk: -exact[pk])[:3]
        ids = faiss_index.faiss.vector_to_array(index.indexes["memories"].id_map)
        assert ids.tolist() == index.rows["memories"].ids.tolist()
        # Each owner's layout (runs kept per segment, fresh rows scanned) is its rows in
        # storage order, every position read once: in a run of consecutive rows or gathered.
        owners = index.rows["memories"].owners
        for code in set(owners.tolist()):
            found = index.rows["memories"].owner_rows(code)
            assert found.rows.tolist() == np.flatnonzero(owners == code).tolist()
            covered = np.zeros(len(found.rows), dtype=int)
            for at, first, length in found.runs:
                assert length >= RUN_MIN
                assert found.rows[at : at + length].tolist() == list(range(first, first + length))
                covered[at : at + length] += 1
            if found.scattered is not None:
                covered[found.scattered] += 1
            assert (covered == 1).all()

    rows = index.rows["memories"]
    add(range(1, 200))
    assert rows.grouped() < 199  # interleaved as written
    check()
    index._keep_grouped(force=True)
    assert rows.segments == [0] and rows.sorted_end == rows.grouped() == 199
    check()
    add(range(200, 260))  # a tail after the groups
    check()
    index._sort_from(rows.sorted_end)  # sealed: a second segment, sorted in place
    assert rows.segments == [0, 199] and rows.sorted_end == 259
    assert (np.diff(rows.owners[199:]) >= 0).all()
    check()
    add(range(260, 300))  # fresh rows after two segments
    check()
    gone = np.array([3, 50, 201, 202, 270], dtype=np.int64)
    index.indexes["memories"].remove_ids(gone)
    rows.remove(gone)
    for pk in gone.tolist():
        del vectors[pk], owner_of[pk]
    assert rows.segments == [0, 197] and rows.sorted_end == 255  # bounds moved down
    check()
    index._keep_grouped(force=True)  # everything in one segment again
    assert rows.segments == [0] and rows.sorted_end == rows.count == 294
    check()


def test_file_connections_read_through_a_map_and_keep_a_large_cache(driver: SQLiteDriver) -> None:
    """Every connection to a file maps it for reads and keeps a page cache large enough for a
    batch's index pages (sql/engines.py); the answers are those of any connection."""
    from memory_drivers.sql.engines import SQLITE_CACHE_KIB

    driver.store_many([{"user_id": "u1", "content": f"note {i} about tea"} for i in range(50)])
    with read_connection(driver.engine) as connection:
        assert sqlite_rows(connection, "PRAGMA mmap_size")[0][0] > 0
        assert sqlite_rows(connection, "PRAGMA cache_size")[0][0] == -SQLITE_CACHE_KIB
        assert sqlite_rows(connection, "PRAGMA wal_autocheckpoint")[0][0] > 1000
    hits = driver.recall("u1", query="note 7 about tea", top_k=3, search="vector")
    assert hits[0].memory.content == "note 7 about tea"


def test_a_taken_id_ends_the_batch_whole_and_the_store_goes_on(driver: SQLiteDriver) -> None:
    """store_many inserts with OR ROLLBACK (no statement journal): SQLite itself ends the
    transaction at a taken id. Nothing of the batch stays (rows, keyword postings, vectors,
    context terms of the conversation's earlier memories), and the same driver writes again."""
    from memory_drivers.errors import ConflictError

    kept = driver.store("u1", "the harbour ferry leaves at noon", conversation_id="c1")
    before = {m.id: m for m in driver.iter_memories()}
    batch = [
        {"user_id": "u1", "content": f"zeppelin note w{i}x", "conversation_id": "c1"}
        for i in range(300)
    ]
    with pytest.raises(ConflictError, match=kept.id):
        driver.store_many([*batch, {"user_id": "u1", "content": "again", "id": kept.id}])
    assert {m.id: m for m in driver.iter_memories()} == before
    assert driver.recall("u1", query="zeppelin", search="keyword") == []
    assert [h.memory.id for h in driver.recall("u1", query="zeppelin note w7x")] == [kept.id]
    with read_connection(driver.engine) as connection:
        assert sqlite_rows(connection, "SELECT count(*) FROM memories_fts_docsize") == [(1,)]

    stored = driver.store_many(batch)
    hits = driver.recall("u1", query="w7x", top_k=3, search="keyword")
    assert stored[7].id in [h.memory.id for h in hits]  # its neighbours carry its terms too
    assert driver.count("u1") == 301
