"""pgvector-specific behaviour against a real PostgreSQL: index use, batching, restarts and
dropped connections, migrations, missing extension, health, re-embedding."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from conftest import require_server
from sqlalchemy import event, text

from memory_drivers.config import Settings, build_settings
from memory_drivers.drivers.pgvector import PgVectorDriver
from memory_drivers.embeddings.hashing import HashingEmbedder
from memory_drivers.errors import (
    BackendUnavailableError,
    ConfigurationError,
    ConflictError,
    EmbedderMismatchError,
    SchemaError,
)

REPO = Path(__file__).resolve().parents[1]
WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu amber bronze "
    "cobalt denim ember fern granite hazel indigo jade khaki lilac maroon navy olive pearl"
).split()


def settings_for(url: str, **values: Any) -> Settings:
    values.setdefault("memory_auto_migrate", True)
    return build_settings(_env_file=None, database_url=url, **values)


@pytest.fixture
def driver(pg_database: str) -> Iterator[PgVectorDriver]:
    with PgVectorDriver(settings_for(pg_database), embedder=HashingEmbedder(64)) as opened:
        yield opened


def statements(driver: PgVectorDriver) -> list[tuple[str, Any]]:
    """Record every statement the driver's engine sends from now on."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any):
        seen.append((statement, params))

    event.listen(driver.engine, "before_cursor_execute", record)
    return seen


def plan(driver: PgVectorDriver, statement: str, params: Any) -> str:
    with driver.engine.connect() as connection:
        rows = connection.exec_driver_sql("EXPLAIN " + statement, params).all()
    return "\n".join(row[0] for row in rows)


def random_texts(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.sample(WORDS, 5)) for _ in range(count)]


# ---------------------------------------------------------------------- vector search
def test_large_unfiltered_search_uses_the_hnsw_index(pg_database: str) -> None:
    """With PGVECTOR_MEMORY_HNSW=true the driver creates the HNSW index over memories; above
    PGVECTOR_EXACT_SCAN_LIMIT candidates vector recall goes through it (cosine), and its answers
    agree with an exact scan (recall@10 >= 0.9)."""
    embedder = HashingEmbedder(64)
    exact = PgVectorDriver(settings_for(pg_database), embedder=embedder)
    assert exact.health_check()["memory_hnsw"] is False
    approximate = PgVectorDriver(
        settings_for(pg_database, pgvector_exact_scan_limit=100, pgvector_memory_hnsw=True),
        embedder=embedder,
    )
    assert approximate.health_check()["memory_hnsw"] is True
    try:
        approximate.store_many([{"user_id": "u1", "content": t} for t in random_texts(1500)])
        with approximate.engine.begin() as connection:
            connection.execute(text("ANALYZE memories"))
        seen = statements(approximate)
        found = 0
        queries = random_texts(20, seed=2)
        for query in queries:
            got = {
                h.memory.id
                for h in approximate.recall("u1", query=query, top_k=10, search="vector")
            }
            want = {h.memory.id for h in exact.recall("u1", query=query, top_k=10, search="vector")}
            assert len(got) == 10
            found += len(got & want)
        assert found / (10 * len(queries)) >= 0.9
        search = [s for s in seen if "<=>" in s[0]][-1]
        assert "ix_memories_embedding_hnsw" in plan(approximate, *search)
    finally:
        approximate.close()
        exact.close()


@pytest.mark.parametrize("memory_hnsw", [False, True])
def test_selective_filter_scans_exactly(pg_database: str, memory_hnsw: bool) -> None:
    """A filter matching few rows is answered by an exact scan of them, not the HNSW index;
    without that index nothing is counted first. (The vector cache is off: it would answer a
    recall of one user without the scan.)"""
    settings = settings_for(
        pg_database, pgvector_memory_hnsw=memory_hnsw, pgvector_vector_cache_mb=0
    )
    with PgVectorDriver(settings, embedder=HashingEmbedder(64)) as driver:
        driver.store_many(
            [{"user_id": f"u{i % 50}", "content": t} for i, t in enumerate(random_texts(500))]
        )
        seen = statements(driver)
        hits = driver.recall("u3", query="alpha bravo", top_k=5, search="vector")
        assert len(hits) == 5 and all(h.memory.user_id == "u3" for h in hits)
        search = [s for s in seen if "<=>" in s[0]][-1]
        assert "MATERIALIZED" in search[0]
        assert "hnsw" not in plan(driver, *search)
        counted = any("count(" in s.lower() for s, _ in seen)
        assert counted is memory_hnsw


@pytest.mark.parametrize("cache_mb", [0, 256])
def test_a_vector_recall_is_one_statement_outside_a_transaction(
    pg_database: str, cache_mb: int
) -> None:
    """Without an index over memories, a vector recall is one statement run in autocommit (the
    ranking and the rows together: no BEGIN, second statement or ROLLBACK round trips); its
    hits are the exact nearest; the pooled connection goes back to transactions afterwards.
    With the vector cache (its user read by an earlier recall), the one statement reads the
    winning rows and the user's version."""
    settings = settings_for(pg_database, pgvector_vector_cache_mb=cache_mb)
    with PgVectorDriver(settings, embedder=HashingEmbedder(64)) as driver:
        texts = random_texts(300, seed=5)
        driver.store_many([{"user_id": f"u{i % 3}", "content": t} for i, t in enumerate(texts)])
        if cache_mb:
            driver.recall("u1", query="delta", top_k=3, search="vector")  # reads u1
        seen: list[tuple[str, bool]] = []

        def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            seen.append((statement, conn.connection.driver_connection.autocommit))

        event.listen(driver.engine, "before_cursor_execute", record)
        hits = driver.recall("u1", query="alpha bravo charlie", top_k=7, search="vector")
        assert len(seen) == 1 and seen[0][1] is True
        assert ("memory_user_versions" if cache_mb else "<=>") in seen[0][0]
        query = driver.embedder.embed_query("alpha bravo charlie")
        mine = list(driver.iter_memories("u1"))
        exact = driver.embedder.embed_documents([m.content for m in mine]) @ query
        assert [h.score for h in hits] == pytest.approx(sorted(exact, reverse=True)[:7], abs=1e-5)
        by_id = {m.id: float(score) for m, score in zip(mine, exact, strict=True)}
        assert all(h.score == pytest.approx(by_id[h.memory.id], abs=1e-5) for h in hits)
        assert hits[0].memory == next(m for m in mine if m.id == hits[0].memory.id)
        with driver.engine.connect() as connection:  # the pool's one connection, handed back
            assert connection.connection.driver_connection.autocommit is False


def test_a_page_of_iter_memories_is_an_index_range(driver: PgVectorDriver) -> None:
    """iter_memories can read a page after the last one as a range of the (created_at, id)
    index, not by scanning and sorting every memory after it (which made reading a store
    quadratic). Sorting is discouraged so that the plan shows the path exists whatever the
    table's size."""
    driver.store_many([{"user_id": f"u{i % 7}", "content": f"memory {i}"} for i in range(300)])
    seen = statements(driver)
    assert len(list(driver.iter_memories(batch_size=100))) == 300
    statement, params = next(s for s in seen if "ORDER BY" in s[0] and "created_at >=" in s[0])
    with driver.engine.connect() as connection:
        connection.exec_driver_sql("SET enable_sort = off")
        found = connection.exec_driver_sql("EXPLAIN " + statement, params).all()
    plan_ = "\n".join(row[0] for row in found)
    assert "Index Scan using ix_memories_created" in plan_
    assert "Index Cond: (created_at >=" in plan_


def test_filtered_recall_through_the_index_still_returns_top_k(pg_database: str) -> None:
    """With the HNSW index and a filter that only a few percent of rows pass, pgvector's
    iterative index scan keeps going until top_k matches are found."""
    with PgVectorDriver(
        settings_for(pg_database, pgvector_exact_scan_limit=10, pgvector_memory_hnsw=True),
        embedder=HashingEmbedder(64),
    ) as driver:
        texts = random_texts(1200, seed=3)
        driver.store_many(
            [
                {"user_id": "u1", "content": t, "tags": ["rare"] if i % 40 == 0 else ["common"]}
                for i, t in enumerate(texts)
            ]
        )
        hits = driver.recall("u1", query="alpha bravo charlie", top_k=20, tags=["rare"])
        assert len(hits) == 20 and all(h.memory.tags == ["rare"] for h in hits)


# ---------------------------------------------------------------------- batching
def test_store_many_is_one_copy(driver: PgVectorDriver) -> None:
    """store_many sends every row in one binary COPY on the transaction's connection, not a
    statement per memory, nor one huge multi-row INSERT (which psycopg parsed anew for every
    batch); what is stored is what was given."""
    seen = statements(driver)
    given = [
        {"user_id": "u1", "content": f"memory {i}", "tags": ["a", "b"], "metadata": {"i": i}}
        for i in range(800)
    ]
    stored = driver.store_many(given)
    inserts = [s for s, _ in seen if "INSERT" in s.upper()]
    assert inserts == []
    assert len(seen) <= 4, [s[:60] for s, _ in seen]
    assert driver.count() == 800
    assert driver._get_memories([m.id for m in stored], None) == {m.id: m for m in stored}
    assert stored[7].metadata == {"i": 7} and stored[7].tags == ["a", "b"]


def test_a_failed_copy_is_a_typed_error_and_stores_nothing(driver: PgVectorDriver) -> None:
    """An id taken by a concurrent writer fails the COPY inside the transaction: the batch is
    a ConflictError naming the id, and none of it is stored."""
    from memory_drivers.base import MemoryRecord

    taken = driver.store("u1", "first")
    rows = [
        MemoryRecord(m, np.ones(driver.embedder.dimension, dtype=np.float32), "x")
        for m in (
            taken.model_copy(update={"content": "again"}),
            taken.model_copy(update={"id": "00000000-0000-4000-8000-000000000001"}),
        )
    ]
    with pytest.raises(ConflictError, match=taken.id):
        driver._insert_memories(rows[::-1])
    assert driver.count() == 1
    assert driver.get(taken.id) == taken


# ---------------------------------------------------------------------- connections
def test_dropped_connections_are_retried(driver: PgVectorDriver, postgres: Any) -> None:
    """Every pooled connection killed by the server: the next calls succeed."""
    memory = driver.store("u1", "survives a dropped connection")
    database = driver.engine.url.database
    postgres.admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    )
    assert driver.get(memory.id) == memory
    assert driver.recall("u1", query="dropped connection")[0].memory.id == memory.id
    assert driver.store("u1", "written after the drop").content == "written after the drop"


def test_server_restart_is_retried_and_a_dead_server_is_a_typed_error(
    pg_database: str, postgres: Any
) -> None:
    """A server that restarts while a call retries: the call succeeds. A server that stays
    down: BackendUnavailableError naming the host, after PGVECTOR_RETRY_SECONDS."""
    if postgres.server is None:
        require_server("restarting needs the embedded server (PGVECTOR_TEST_URL is set)")
    with PgVectorDriver(
        settings_for(pg_database, pgvector_retry_seconds=1.5), embedder=HashingEmbedder(64)
    ) as driver:
        memory = driver.store("u1", "before the restart")
        postgres.stop()
        try:
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError) as caught:
                driver.get(memory.id)
            assert 1.0 <= time.monotonic() - started < 15
            assert "PostgreSQL at " in str(caught.value)
            host = driver.engine.url.host or driver.engine.url.query.get("host")
            assert str(host) in str(caught.value)
        finally:
            postgres.start()
        assert driver.get(memory.id) == memory, "the next call succeeds once it is back"

    with PgVectorDriver(
        settings_for(pg_database, pgvector_retry_seconds=30), embedder=HashingEmbedder(64)
    ) as driver:
        driver.get(memory.id)
        postgres.stop()
        restarter = threading.Timer(1.0, postgres.start)
        restarter.start()
        try:
            assert driver.recall("u1", query="before the restart")[0].memory.id == memory.id
            assert driver.store("u1", "after the restart").content == "after the restart"
        finally:
            restarter.join()


def test_unknown_database_is_a_typed_error_at_once(postgres: Any) -> None:
    url = postgres.url(f"missing_{uuid.uuid4().hex[:8]}")
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="does not exist"):
        PgVectorDriver(settings_for(url), embedder=HashingEmbedder(64))
    assert time.monotonic() - started < 5, "a permanent error is not retried"


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        PgVectorDriver(build_settings(_env_file=None), embedder=HashingEmbedder(64))
    with pytest.raises(ConfigurationError, match="postgresql://"):
        PgVectorDriver(
            build_settings(_env_file=None, database_url="mysql://u@h/db"),
            embedder=HashingEmbedder(64),
        )


# ---------------------------------------------------------------------- schema
def run_migrate(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "MEMORY_DRIVER": "pgvector",
        "DATABASE_URL": url,
        "EMBEDDING_PROVIDER": "hashing",
        "EMBEDDING_DIMENSION": "64",
        **env,
    }
    return subprocess.run(
        [sys.executable, "migrate.py", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def embedding_storage(postgres: Any, database: str) -> dict[str, str]:
    """attstorage of each table's embedding column ('m' main: in the row; 'e' external)."""
    rows = postgres.admin(
        "SELECT attrelid::regclass::text, attstorage FROM pg_attribute "
        "WHERE attname = 'embedding' AND attrelid IN ('memories'::regclass, "
        "'knowledge_chunks'::regclass)",
        database,
    )
    return {table: str(storage) for table, storage in rows}


def test_migrate_py_on_postgres(pg_database: str, postgres: Any) -> None:
    """migrate.py drives PostgreSQL like SQLite: status, upgrade (extension, tables, HNSW and
    GIN indexes), rollback of the last step, fresh."""
    status = run_migrate(pg_database, "status")
    assert status.returncode == 0, status.stderr
    assert all(f"pending:  000{n}" in status.stdout for n in (1, 2, 3))
    with pytest.raises(SchemaError, match=r"memory-drivers migrate"):
        PgVectorDriver(
            settings_for(pg_database, memory_auto_migrate=False), embedder=HashingEmbedder(64)
        )

    upgrade = run_migrate(pg_database, "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    name = pg_database.rsplit("/", 1)[-1].split("?")[0]
    indexes = {row[0] for row in postgres.admin("SELECT indexname FROM pg_indexes", name)}
    assert {
        "ix_knowledge_chunks_embedding_hnsw",
        "ix_memories_search_tsv",
        "ix_memories_metadata",
        "ix_memories_tags",
    } <= indexes
    assert "ix_memories_embedding_hnsw" not in indexes  # dropped by 0002
    assert embedding_storage(postgres, name) == {"memories": "m", "knowledge_chunks": "m"}
    assert postgres.admin("SELECT extversion FROM pg_extension WHERE extname='vector'", name)
    assert "up to date" in run_migrate(pg_database, "status").stdout

    with PgVectorDriver(
        settings_for(pg_database, memory_auto_migrate=False), embedder=HashingEmbedder(64)
    ) as driver:
        driver.store("u1", "kept until fresh")
        assert driver.count() == 1

    rollback = run_migrate(pg_database, "rollback")  # 0007 and 0006 are SQLite's alone
    assert rollback.returncode == 0, rollback.stderr
    assert "rolled back 0007 -> 0006" in rollback.stdout
    rollback = run_migrate(pg_database, "rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert "rolled back 0006 -> 0005" in rollback.stdout
    indexes = {row[0] for row in postgres.admin("SELECT indexname FROM pg_indexes", name)}
    assert {"ix_memories_user_created", "ix_memories_created"} <= indexes
    assert "ix_memories_user_created_tags" not in indexes
    rollback = run_migrate(pg_database, "rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert "rolled back 0005 -> 0004" in rollback.stdout
    assert not postgres.admin(
        "SELECT tablename FROM pg_tables WHERE tablename IN "
        "('memory_user_versions', 'memory_vector_changes')",
        name,
    ) and not postgres.admin("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal", name)
    rollback = run_migrate(pg_database, "rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert "rolled back 0004 -> 0003" in rollback.stdout
    indexes = {row[0] for row in postgres.admin("SELECT indexname FROM pg_indexes", name)}
    assert "ix_memories_created" not in indexes
    rollback = run_migrate(pg_database, "rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert "rolled back 0003 -> 0002" in rollback.stdout
    columns = postgres.admin(
        "SELECT column_name FROM information_schema.columns WHERE table_name='knowledge_chunks'",
        name,
    )
    assert "search_tsv" not in {row[0] for row in columns}
    rollback = run_migrate(pg_database, "rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert "rolled back 0002 -> 0001" in rollback.stdout
    indexes = {row[0] for row in postgres.admin("SELECT indexname FROM pg_indexes", name)}
    assert "ix_memories_embedding_hnsw" in indexes
    assert embedding_storage(postgres, name) == {"memories": "e", "knowledge_chunks": "e"}
    # A schema behind the code: the driver says to migrate, and upgrades when allowed to.
    with pytest.raises(SchemaError, match=r"revision 0001, behind 0007.*memory-drivers migrate"):
        PgVectorDriver(
            settings_for(pg_database, memory_auto_migrate=False), embedder=HashingEmbedder(64)
        )
    with PgVectorDriver(settings_for(pg_database), embedder=HashingEmbedder(64)) as driver:
        assert driver.count() == 1 and driver.health_check()["memory_hnsw"] is False
    assert "up to date" in run_migrate(pg_database, "status").stdout
    # 0005 gave the existing user a version (the vector cache's check)
    assert postgres.admin("SELECT user_id, version FROM memory_user_versions", name) == [("u1", 1)]

    rollback = run_migrate(pg_database, "rollback", "--steps", "7")
    assert rollback.returncode == 0, rollback.stderr
    tables = {
        row[0]
        for row in postgres.admin("SELECT tablename FROM pg_tables WHERE schemaname='public'", name)
    }
    assert "memories" not in tables
    assert run_migrate(pg_database).returncode == 0

    with PgVectorDriver(settings_for(pg_database), embedder=HashingEmbedder(64)) as driver:
        driver.store("u1", "gone after fresh")
    refused = run_migrate(pg_database, "fresh")
    assert refused.returncode != 0 and "--yes" in refused.stderr
    fresh = run_migrate(pg_database, "fresh", "--yes")
    assert fresh.returncode == 0, fresh.stderr
    with PgVectorDriver(settings_for(pg_database), embedder=HashingEmbedder(64)) as driver:
        assert driver.count() == 0


def test_two_processes_migrating_at_once(pg_database: str) -> None:
    """An advisory lock serializes migrations: both succeed, the schema is made once."""
    results = []

    def migrate() -> None:
        results.append(run_migrate(pg_database))

    threads = [threading.Thread(target=migrate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]


def test_a_user_who_may_not_create_the_extension_is_told_what_to_run(postgres: Any) -> None:
    """A database where pgvector is not enabled and the user is no superuser: the error says to
    ask a superuser to run CREATE EXTENSION vector."""
    role = f"md_user_{uuid.uuid4().hex[:8]}"
    name = f"md_owned_{uuid.uuid4().hex[:8]}"
    postgres.admin(f"CREATE ROLE {role} LOGIN")
    postgres.admin(f'CREATE DATABASE "{name}" OWNER {role}')
    try:
        from sqlalchemy.engine import make_url

        url = make_url(postgres.url(name)).set(username=role).render_as_string(False)
        result = run_migrate(url)
        assert result.returncode != 0
        assert "CREATE EXTENSION vector" in result.stderr and "superuser" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        postgres.drop_database(name)
        postgres.admin(f"DROP ROLE IF EXISTS {role}")


def test_a_server_without_pgvector_is_told_to_install_it() -> None:
    """The machine's own PostgreSQL has no pgvector package: the error says to install it."""
    admin = os.environ.get("PLAIN_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as connection:
            if connection.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone():
                pytest.skip("this server has pgvector; the case cannot be shown here")
            name = f"md_plain_{uuid.uuid4().hex[:8]}"
            connection.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        require_server(f"no plain PostgreSQL at {admin}: {exc}")
    from sqlalchemy.engine import make_url

    url = make_url(admin).set(database=name).render_as_string(False)
    try:
        result = run_migrate(url)
        assert result.returncode != 0
        assert "Install pgvector" in result.stderr and "CREATE EXTENSION vector" in result.stderr
        with pytest.raises(SchemaError, match="Install pgvector"):
            PgVectorDriver(settings_for(url), embedder=HashingEmbedder(64))
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------------- operations
def test_health_check_reports_the_server(driver: PgVectorDriver) -> None:
    driver.store("u1", "one")
    driver.store_global_knowledge("doc", category="c")
    report = driver.health_check()
    assert report["status"] == "ok"
    assert str(report["server_version"]).split(".")[0].isdigit()
    assert report["pgvector_version"].count(".") == 2
    assert report["memories"] == 1 and report["knowledge_chunks"] == 1
    assert all(report["indexes"].values())
    assert driver.rebuild_index()["rebuilt"] is True


def test_reembed_with_another_dimension(pg_database: str, postgres: Any) -> None:
    """Re-embedding with an embedder of another dimension retypes the vector columns and
    recreates the HNSW indexes; recall then scores with the new embedder."""
    with PgVectorDriver(settings_for(pg_database), embedder=HashingEmbedder(64)) as driver:
        memory = driver.store("u1", "switch the model")
        driver.store_global_knowledge("a document", category="c")
    with pytest.raises(EmbedderMismatchError):
        PgVectorDriver(settings_for(pg_database), embedder=HashingEmbedder(32))
    with PgVectorDriver(
        settings_for(pg_database), embedder=HashingEmbedder(32), allow_embedder_mismatch=True
    ) as driver:
        assert driver.reembed() == {"memories": 1, "knowledge_chunks": 1}
    with PgVectorDriver(settings_for(pg_database), embedder=HashingEmbedder(32)) as driver:
        hit = driver.recall("u1", query="switch the model", top_k=1)[0]
        assert hit.memory.id == memory.id and hit.score == pytest.approx(1.0, abs=1e-5)
        report = driver.health_check()
        assert report["indexes"]["ix_knowledge_chunks_embedding_hnsw"] is True
        name = pg_database.rsplit("/", 1)[-1].split("?")[0]
        assert embedding_storage(postgres, name) == {"memories": "m", "knowledge_chunks": "m"}
        assert report["memory_hnsw"] is False
        assert driver.recall_global_knowledge("a document", top_k=1)[0].score == pytest.approx(
            1.0, abs=1e-5
        )
