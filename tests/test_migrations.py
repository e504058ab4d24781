"""The schema comes from Alembic migrations: ``memory-drivers migrate`` and the driver's own
upgrade.

``memory-drivers migrate`` runs as a real subprocess (the installed console script, as a user
runs it), on a SQLite file in ``tmp_path`` given through ``MEMORY_DB_URL``. The database is
inspected with the ``sqlite3`` module, not through the code under test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Index, MetaData, Table, Text, create_engine, event
from sqlite_worker import WorkerProcess, connect

from memory_drivers.config import Settings, build_settings
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.embeddings.hashing import HashingEmbedder
from memory_drivers.errors import SchemaError
from memory_drivers.sql import migrations
from memory_drivers.sql.schema import metadata

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "memory-drivers"
SCHEMA_TABLES = {
    "memory_store_info",
    "memories",
    "memory_associations",
    "knowledge_chunks",
}
#: SQLite-only objects made by the migrations, deliberately absent from the shared metadata.
FTS_PARTS = ("", "_config", "_data", "_docsize", "_idx")
SQLITE_ONLY_TABLES = {
    "vector_log",
    *(f"{fts}{part}" for fts in ("memories_fts", "knowledge_fts") for part in FTS_PARTS),
}


def migrate(
    db: Path, *args: str, command: tuple[str, ...] = (str(SCRIPT), "migrate"), **env_vars: str
) -> subprocess.CompletedProcess[str]:
    """``memory-drivers migrate ARGS`` with MEMORY_DB_URL pointing at ``db``, ``env_vars`` set
    and no terminal, in ``db``'s folder (``command`` replaces ``memory-drivers migrate``)."""
    fields = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in fields}
    env["MEMORY_DB_URL"] = f"sqlite:///{db}"
    env.update(env_vars)
    return subprocess.run(
        [*command, *args],
        cwd=db.parent,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def objects(db: Path, kind: str = "table") -> set[str]:
    with connect(db) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = ?", (kind,))
        return {name for (name,) in rows if not name.startswith("sqlite_")}


def store_info(db: Path) -> dict[str, str]:
    with connect(db) as connection:
        return dict(connection.execute("SELECT key, value FROM memory_store_info").fetchall())


def open_store(db: Path, **changes: object) -> SQLiteDriver:
    settings = build_settings(_env_file=None, memory_db_url=f"sqlite:///{db}", **changes)
    return SQLiteDriver(settings, embedder=HashingEmbedder(256))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "m.db"


def test_status_upgrade_status(db: Path) -> None:
    """status lists 0001 as pending on an empty database; migrate applies it (tables, FTS5,
    vector log and triggers created); status then says up to date. A failure means migrate
    cannot find the scripts (are they in the wheel?), or the initial migration is incomplete."""
    status = migrate(db, "status")
    assert status.returncode == 0, status.stderr
    assert "pending:  0001" in status.stdout and "pending:  0002" in status.stdout
    assert "up to date" not in status.stdout
    assert objects(db) == set(), "status must not create the schema"

    upgrade = migrate(db)
    assert upgrade.returncode == 0, upgrade.stderr
    assert "applied 0001" in upgrade.stdout and "applied 0002" in upgrade.stdout
    assert objects(db) >= SCHEMA_TABLES | SQLITE_ONLY_TABLES
    triggers = objects(db, "trigger")
    assert {"memories_fts_delete", "memories_log_insert", "knowledge_chunks_log_delete"} <= triggers
    assert "memories_fts_insert" not in triggers  # 0007: the driver writes new postings
    assert store_info(db)["store_id"]

    status = migrate(db, "status")
    assert status.returncode == 0, status.stderr
    head = migrations.head_revision()
    assert f"current:  {head}" in status.stdout and "up to date" in status.stdout
    assert "pending" not in status.stdout

    again = migrate(db)  # nothing pending: harmless
    assert again.returncode == 0, again.stderr


def test_fresh_drops_everything_only_when_confirmed(db: Path) -> None:
    """fresh without --yes (no terminal) refuses and changes nothing; fresh --yes drops every
    memory, deletes the index file and gives the store a new identity."""
    with open_store(db) as driver:
        driver.store_many([{"user_id": "u1", "content": f"memory {i}"} for i in range(5)])
        driver.recall("u1", query="memory")
    index = db.with_suffix(".faiss")
    assert index.exists()
    old_id = store_info(db)["store_id"]

    refused = migrate(db, "fresh")
    assert refused.returncode != 0
    assert "--yes" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    assert index.exists() and store_info(db)["store_id"] == old_id
    with open_store(db) as driver:
        assert driver.count() == 5

    fresh = migrate(db, "fresh", "--yes")
    assert fresh.returncode == 0, fresh.stderr
    assert not index.exists(), "fresh must delete the derived FAISS index file"
    new_id = store_info(db)["store_id"]
    assert new_id and new_id != old_id
    with open_store(db) as driver:
        assert driver.count() == 0
        assert driver.recall("u1", query="memory") == []


def test_rollback_then_upgrade(db: Path) -> None:
    """rollback removes the schema (tables, FTS5, vector log, triggers); migrate restores
    it. A failure means the downgrade of a migration is incomplete."""
    assert migrate(db).returncode == 0
    rollback = migrate(db, "rollback", "--steps", "7")
    assert rollback.returncode == 0, rollback.stderr
    assert "rolled back 0007 -> (empty)" in rollback.stdout
    left = objects(db) - {migrations.VERSION_TABLE}
    assert left == set(), f"rollback left {left}"
    assert objects(db, "trigger") == set()
    assert "pending:  0001" in migrate(db, "status").stdout

    assert migrate(db).returncode == 0
    assert objects(db) >= SCHEMA_TABLES | SQLITE_ONLY_TABLES
    with open_store(db) as driver:
        driver.store("u1", "works again")
        assert driver.count() == 1


def test_driver_creates_the_schema_itself(db: Path) -> None:
    """Opening a driver on a new file applies the migrations (MEMORY_AUTO_MIGRATE default)."""
    with open_store(db) as driver:
        driver.store("u1", "hello")
    assert objects(db) >= SCHEMA_TABLES | SQLITE_ONLY_TABLES
    assert "up to date" in migrate(db, "status").stdout


def test_auto_migrate_off_refuses_an_empty_database(db: Path) -> None:
    """MEMORY_AUTO_MIGRATE=false on an empty database raises SchemaError giving the command
    that migrates it (``memory-drivers migrate --url ...``, which pip installs) and creates
    nothing; after running that very command the same settings open it."""
    with pytest.raises(SchemaError) as refused:
        open_store(db, memory_auto_migrate=False)
    assert objects(db) == set()
    advice = re.search(r"Run: memory-drivers migrate (--url \S+)", str(refused.value))
    assert advice, str(refused.value)
    other = db.with_name("unrelated.db")  # the URL in the message, not MEMORY_DB_URL, is used
    assert migrate(other, *advice.group(1).split()).returncode == 0
    assert not other.exists()
    with open_store(db, memory_auto_migrate=False) as driver:
        assert driver.count() == 0


def test_rollback_past_the_first_migration_is_refused(db: Path) -> None:
    """rollback --steps N with N above the applied migrations exits 2 with a message saying
    how many steps there are (not Alembic's traceback), and changes nothing."""
    assert migrate(db).returncode == 0
    applied = len(migrations.known_revisions())  # every one, after an upgrade
    too_many = migrate(db, "rollback", "--steps", str(applied + 1))
    assert too_many.returncode == 2
    assert "Traceback" not in too_many.stderr
    assert too_many.stderr.startswith(f"error: --steps {applied + 1} is more than the {applied}")
    assert f"--steps {applied} rolls back to an empty database" in too_many.stderr
    assert "up to date" in migrate(db, "status").stdout
    half = migrate(db, "rollback")  # one fewer is applied: --steps {applied} is one too many
    assert half.returncode == 0, half.stderr
    fewer = migrate(db, "rollback", "--steps", str(applied))
    assert fewer.returncode == 2
    assert f"more than the {applied - 1} migration" in fewer.stderr
    assert migrate(db, "rollback", "--steps", str(applied - 1)).returncode == 0
    assert migrate(db, "rollback").stdout.endswith("has no schema; nothing to roll back\n")


@pytest.mark.parametrize("driver", ["chroma", "automem"])
def test_no_sql_schema_no_database(tmp_path: Path, driver: str) -> None:
    """MEMORY_DRIVER=chroma or automem: status and upgrade say there is no SQL schema to
    migrate (exit 2, as for other configuration errors) and create no SQLite file, neither
    MEMORY_DB_URL's nor the default one."""
    db = tmp_path / "m.db"
    for action in ("status", "upgrade"):
        result = migrate(db, action, MEMORY_DRIVER=driver)
        assert result.returncode == 2
        assert result.stdout == "" and "Traceback" not in result.stderr
        assert result.stderr == (
            f"error: the {driver!r} driver keeps no SQL schema, so there is nothing to migrate "
            "(migrate works on the databases of the sqlite and pgvector drivers); pass --url to "
            "migrate a SQL database anyway\n"
        )
    assert list(tmp_path.iterdir()) == []


def test_python_migrate_py_in_a_checkout(db: Path) -> None:
    """The checkout's ``python migrate.py`` is the same command as ``memory-drivers migrate``."""
    wrapper = (sys.executable, str(ROOT / "migrate.py"))
    assert migrate(db, command=wrapper).returncode == 0
    status = migrate(db, "status", command=wrapper)
    assert status.returncode == 0, status.stderr
    assert status.stdout == migrate(db, "status").stdout
    assert "up to date" in status.stdout


def test_docs_and_messages_give_the_installed_command() -> None:
    """``migrate.py`` is not in the wheel: the README, the docs, .env.example and the package's
    messages tell users to run ``memory-drivers migrate``, mentioning ``python migrate.py``
    only as the checkout's equivalent."""
    files = [ROOT / "README.md", ROOT / ".env.example", *sorted((ROOT / "docs").rglob("*.md"))]
    files += sorted((ROOT / "memory_drivers").rglob("*.py"))
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "python migrate.py" in line:
                assert "checkout" in line, f"{path.relative_to(ROOT)}:{number}: {line.strip()}"


def test_two_processes_create_a_new_store_at_once(tmp_path: Path) -> None:
    """Two processes open the same brand-new database at the same moment, twenty times over:
    both succeed every time (one creates the schema, the other waits and sees it), never
    'table already exists' or 'database is locked'."""
    workers = [WorkerProcess("opener", stderr_path=tmp_path / f"opener{i}.err") for i in range(2)]
    try:
        for worker in workers:
            assert worker.read_line() == "ready"
        for round_no in range(20):
            db = tmp_path / f"new{round_no}" / "m.db"
            for worker in workers:
                worker.send(f"sqlite:///{db}")
            replies = [worker.read_line() for worker in workers]
            assert all(r.startswith("opened ") for r in replies), replies
            with connect(db) as connection:
                assert connection.execute("SELECT count(*) FROM memories").fetchone()[0] == 2
                version = connection.execute(
                    f"SELECT version_num FROM {migrations.VERSION_TABLE}"
                ).fetchall()
            assert version == [(migrations.head_revision(),)]
    finally:
        for worker in workers:
            worker.close()


def _schema_differences(db: Path, target: MetaData) -> list[object]:
    """Alembic's autogenerate comparison of the migrated database with ``target``, leaving out
    what migrations/env.py leaves out (the SQLite-only FTS5 tables and vector log, the
    metadata's PostgreSQL-only indexes)."""
    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "include_object": migrations.include_object("sqlite"),
                    "compare_type": True,
                    "version_table": migrations.VERSION_TABLE,
                },
            )
            return list(compare_metadata(context, target))
    finally:
        engine.dispose()


def test_schema_module_matches_the_migrations(db: Path) -> None:
    """After upgrading, memory_drivers.sql.schema and the database agree exactly (columns,
    types, nullability, indexes, constraints). A failure means schema.py was changed without a
    migration (or a migration without schema.py): write the missing migration."""
    assert migrate(db).returncode == 0
    assert _schema_differences(db, metadata) == []
    assert objects(db) - set(metadata.tables) == SQLITE_ONLY_TABLES | {migrations.VERSION_TABLE}

    # The comparison is sensitive: a column, an index or a table added to the metadata alone
    # is reported.
    changed = MetaData()
    for table in metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["memories"].append_column(Column("mood", Text))
    Index("ix_knowledge_chunks_title", changed.tables["knowledge_chunks"].c.title)
    Table("memory_extras", changed, Column("key", Text, primary_key=True))
    kinds = {diff[0] for diff in _schema_differences(db, changed)}
    assert {"add_column", "add_index", "add_table"} <= kinds


def test_database_from_a_newer_version_is_refused(db: Path) -> None:
    """A database stamped with a revision this version does not know is refused with a
    SchemaError saying it was made by a newer version, by the driver (migrating or not) and
    by migrate (a message, not a traceback); nothing is changed."""
    assert migrate(db).returncode == 0
    with connect(db) as connection:
        connection.execute(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '9999_future'")
    for auto_migrate in (None, False):
        with pytest.raises(SchemaError, match="newer version"):
            open_store(db, memory_auto_migrate=auto_migrate)
    for args in ((), ("status",)):
        result = migrate(db, *args)
        assert result.returncode != 0
        assert "newer version" in result.stderr
        assert "Traceback" not in result.stderr
    with connect(db) as connection:
        assert connection.execute(
            f"SELECT version_num FROM {migrations.VERSION_TABLE}"
        ).fetchall() == [("9999_future",)]


def test_0003_downgrade_and_upgrade_keep_keyword_search_right(db: Path) -> None:
    """0003 gives knowledge chunks keyword terms and memories their lengths; its downgrade
    takes memories back to their own terms (what 0002's code indexes). Upgrading again fills
    everything in, and opening the store re-indexes conversation context."""
    with open_store(db) as driver:
        puppy = driver.store("u1", "I adopted a puppy", conversation_id="c")
        name = driver.store("u1", "What is its name?", conversation_id="c")
        driver.store_global_knowledge("Refunds take five days", category="policy", doc_id="R")
        assert {h.memory.id for h in driver.recall("u1", query="puppy", search="keyword")} == {
            puppy.id,
            name.id,
        }
    rollback = migrate(db, "rollback", "--steps", "5")
    assert rollback.returncode == 0 and "0007 -> 0002" in rollback.stdout, rollback.stderr
    with connect(db) as connection:
        terms = dict(connection.execute("SELECT id, search_terms FROM memories").fetchall())
        assert terms == {puppy.id: "adopt puppi", name.id: "name"}, "own terms only"
        columns = {row[1] for row in connection.execute("PRAGMA table_info(knowledge_chunks)")}
        assert "search_terms" not in columns and "term_count" not in columns
    with open_store(db) as driver:  # migrates to the head and re-indexes with the context
        assert {h.memory.id for h in driver.recall("u1", query="puppy", search="keyword")} == {
            puppy.id,
            name.id,
        }
        found = driver.recall_global_knowledge("refunds", search="keyword")
        assert [h.chunk.doc_id for h in found] == ["R"]
    with connect(db) as connection:
        counts = dict(connection.execute("SELECT id, term_count FROM memories").fetchall())
        assert counts == {puppy.id: 2, name.id: 3}


def _filtered_plans(driver: SQLiteDriver, **recall: object) -> list[str]:
    """SQLite's query plan of every statement a recall ran that reads memories by user."""
    seen: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "FROM memories" in statement and "user_id = ?" in statement:
            seen.append((statement, parameters))

    event.listen(driver.engine, "before_cursor_execute", capture)
    try:
        hits = driver.recall("u1", **recall)  # type: ignore[arg-type]
    finally:
        event.remove(driver.engine, "before_cursor_execute", capture)
    assert hits, "the recall found nothing"
    with driver.engine.connect() as connection:
        return [
            " | ".join(row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {s}", p))
            for s, p in seen
        ]


def test_0006_tag_and_time_filters_read_the_index_alone(db: Path) -> None:
    """A vector recall filtered by user, tags and time finds its candidates in
    ix_memories_user_created_tags without reading the rows (SQLite 'COVERING INDEX'); rolled
    back to 0005 it reads the old index and the rows, with the same answers. A failure means
    the tag test (or the index) changed so that every candidate's row is read again."""
    since = datetime(2025, 3, 1, tzinfo=timezone.utc)
    filters = {"query": "trip", "search": "vector", "tags": ["travel"], "since": since}
    with open_store(db) as driver:
        driver.store_many(
            [
                {
                    "user_id": user,
                    "content": f"trip note {i}",
                    "tags": ["travel", "work"][: 1 + i % 2] if i % 3 else ["food"],
                    "created_at": since + timedelta(days=i - 10),
                }
                for user in ("u1", "u2")
                for i in range(40)
            ]
        )
        before = [(h.memory.id, h.score) for h in driver.recall("u1", **filters)]  # type: ignore[arg-type]
        plans = _filtered_plans(driver, **filters)
    assert any("COVERING INDEX ix_memories_user_created_tags" in plan for plan in plans), plans

    rollback = migrate(db, "rollback", "--steps", "2")
    assert rollback.returncode == 0 and "0007 -> 0005" in rollback.stdout, rollback.stderr
    assert "ix_memories_user_created" in objects(db, "index")
    assert "ix_memories_user_created_tags" not in objects(db, "index")
    with pytest.raises(SchemaError, match=r"revision 0005, but .* needs 0007"):
        open_store(db, memory_auto_migrate=False)
    with open_store(db) as driver:  # migrates to the head again
        assert [(h.memory.id, h.score) for h in driver.recall("u1", **filters)] == before  # type: ignore[arg-type]
        assert "ix_memories_user_created" not in objects(db, "index")
        passing = {
            m.id for m in driver.iter_memories("u1") if "travel" in m.tags and m.created_at >= since
        }
        assert {i for i, _ in before} <= passing and len(before) == min(10, len(passing))


def test_0007_postings_come_from_the_driver_not_a_trigger(db: Path) -> None:
    """0007 drops the FTS5 insert trigger: store_many writes a batch's postings itself, with
    the trigger's own text (a contentless FTS5 table forgets postings only when given that
    exact text, so updates and deletes, still by trigger, must find them). Rolled back, the
    trigger is there again and its memories are found the same; migrated again, both kinds
    are updated and deleted cleanly. A failure means new memories are missing from keyword
    search, or an update leaves the old words findable."""
    import importlib

    from memory_drivers.drivers.sqlite.dbapi import SCOPED_TERMS

    initial = importlib.import_module("memory_drivers.migrations.versions.0001_initial")
    assert initial._SCOPED.format(row="new").replace("new.", "") == SCOPED_TERMS

    def words(driver: SQLiteDriver, user: str, query: str) -> set[str]:
        return {h.memory.content for h in driver.recall(user, query=query, search="keyword")}

    with open_store(db) as driver:
        driver.store_many(
            [
                {"user_id": "u1", "content": "The puppy sleeps in the garden"},
                {"user_id": "ü-2", "content": "A puppy named Ödön"},
                {"user_id": "u1", "content": "..."},  # no terms at all
            ]
        )
        assert words(driver, "u1", "puppy") == {"The puppy sleeps in the garden"}
        assert words(driver, "ü-2", "puppy") == {"A puppy named Ödön"}
    assert "memories_fts_insert" not in objects(db, "trigger")
    assert {"memories_fts_update", "memories_fts_delete"} <= objects(db, "trigger")

    rollback = migrate(db, "rollback")
    assert rollback.returncode == 0 and "0007 -> 0006" in rollback.stdout, rollback.stderr
    assert "memories_fts_insert" in objects(db, "trigger")
    with connect(db) as connection:  # a write at 0006, as an older version makes it
        connection.execute(
            "INSERT INTO memories (id, user_id, content, memory_type, tags, importance, "
            "metadata, created_at, updated_at, search_terms, embedding, term_count) VALUES "
            "('00000000-0000-4000-8000-000000000001', 'u1', 'Kitten by the door', 'semantic', "
            "'[]', 0.5, '{}', '2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000', "
            "'kitten door', x'0000803f' || zeroblob(1020), 2)"  # a unit vector of 256
        )

    with open_store(db) as driver:  # migrates to 0007 again (and rebuilds its index)
        assert "memories_fts_insert" not in objects(db, "trigger")
        assert words(driver, "u1", "kitten") == {"Kitten by the door"}
        [garden] = driver.recall("u1", query="garden", search="keyword")
        driver.update(garden.memory.id, content="The dog sleeps in the yard")
        kitten = driver.get("00000000-0000-4000-8000-000000000001")
        assert kitten is not None
        driver.update(kitten.id, content="A cat by the window")
        assert words(driver, "u1", "puppy") == set() and words(driver, "u1", "kitten") == set()
        assert words(driver, "u1", "dog") == {"The dog sleeps in the yard"}
        assert words(driver, "u1", "window") == {"A cat by the window"}
        [ödön] = driver.recall("ü-2", query="puppy", search="keyword")
        assert driver.delete(ödön.memory.id)
        assert words(driver, "ü-2", "puppy") == set()
