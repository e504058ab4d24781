"""The replicated driver: the whole conformance suite (a sqlite primary and a sqlite replica,
the replica checked equal to the primary after every test), delivery through the outbox, catching
up after a replica was down, reads from a replica while the primary is down, reconcile, and
fault tests that stop the primary's PostgreSQL mid-workload (the suite's embedded server)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memory_drivers.base import BaseMemoryDriver
from memory_drivers.config import Settings, build_settings, get_settings
from memory_drivers.drivers.replicated import ReplicatedDriver
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.errors import BackendUnavailableError, ConfigurationError
from memory_drivers.manager import MemoryDriverManager
from memory_drivers.testing import MemoryDriverConformance
from memory_drivers.testing.embedders import fast_embedder
from memory_drivers.transfer import export_records
from memory_drivers.transfer.format import End, Header


def snapshot(driver: BaseMemoryDriver) -> list[Any]:
    """Everything a store holds, vectors included, comparable between stores."""
    out = []
    for record in export_records(driver):
        if isinstance(record, Header | End):
            continue
        vector = getattr(record, "vector", None)
        vectors = getattr(record, "vectors", None)
        out.append(
            (
                repr({k: v for k, v in vars(record).items() if k not in ("vector", "vectors")}),
                None if vector is None else vector.round(6).tolist(),
                None if vectors is None else vectors.round(6).tolist(),
            )
        )
    return sorted(out)


class TestReplicatedConformance(MemoryDriverConformance):
    """The public API through the replicated driver behaves as every driver's does; after each
    test the replica holds exactly what the primary holds."""

    @pytest.fixture
    def driver_factory(self, tmp_path: Path) -> Iterator[Any]:
        opened: list[ReplicatedDriver] = []

        def factory(*, embedder: Any, settings: Settings) -> ReplicatedDriver:
            def store(name: str) -> SQLiteDriver:
                url = f"sqlite:///{tmp_path / name}.db"
                return SQLiteDriver(settings.replace(memory_db_url=url), embedder=embedder)

            primary = store("primary")
            try:
                replica = store("replica")
            except BaseException:
                primary.close()
                raise
            driver = ReplicatedDriver(
                settings,
                primary=primary,
                replicas=[replica],
                replica_names=["replica"],
                outbox_path=tmp_path / "outbox.db",
            )
            opened.append(driver)
            return driver

        yield factory
        for driver in opened:
            if not driver._closed:
                assert driver.sync_replicas() == {"replica": 0}
                assert snapshot(driver.replicas[0]) == snapshot(driver.primary)


def pair(tmp_path: Path, **options: Any) -> ReplicatedDriver:
    settings = build_settings(_env_file=None, embedding_provider="hashing")
    embedder = fast_embedder()
    primary = SQLiteDriver(
        settings.replace(memory_db_url=f"sqlite:///{tmp_path}/p.db"), embedder=embedder
    )
    replica = SQLiteDriver(
        settings.replace(memory_db_url=f"sqlite:///{tmp_path}/r.db"), embedder=embedder
    )
    return ReplicatedDriver(
        settings,
        primary=primary,
        replicas=[replica],
        replica_names=["r"],
        outbox_path=tmp_path / "outbox.db",
        **options,
    )


def test_writes_reach_the_replica_through_the_outbox(tmp_path: Path) -> None:
    """Nothing is re-embedded on the replica: it gets the primary's vectors; the outbox keeps
    only what a replica still lacks."""
    driver = pair(tmp_path, start_delivery=False)
    try:
        a = driver.store("u1", "green tea in the morning", conversation_id="c")
        b = driver.store("u1", "jazz piano at night", conversation_id="c")
        driver.associate(a.id, b.id, "LEADS_TO", 0.4)
        driver.update(b.id, content="jazz guitar at night")
        driver.store_global_knowledge("policy text", "policies", doc_id="p")
        assert driver.outbox.lag("r") == 5
        assert driver.replicas[0].count() == 0
        assert driver.sync_replicas() == {"r": 0}
        assert snapshot(driver.replicas[0]) == snapshot(driver.primary)
        assert driver.outbox.lag("r") == 0 and driver.outbox.pending("r") == []
        driver.delete(a.id)
        driver.sync_replicas()
        assert driver.replicas[0].get(a.id) is None
    finally:
        driver.close()


def test_registered_and_configured_by_environment(tmp_path: Path) -> None:
    settings = build_settings(
        _env_file=None,
        embedding_provider="hashing",
        memory_driver="replicated",
        replicated_primary=f"sqlite:///{tmp_path}/p.db",
        replicated_replicas=[f"sqlite:///{tmp_path}/r1.db", f"sqlite:///{tmp_path}/r2.db"],
        replicated_outbox_path=tmp_path / "outbox.db",
    )
    driver = MemoryDriverManager.create("replicated", settings)
    try:
        assert isinstance(driver, ReplicatedDriver) and len(driver.replicas) == 2
        m = driver.store("u", "hello")
        assert driver.sync_replicas() == {name: 0 for name in driver.replica_names}
        assert all(r.get(m.id) == m for r in driver.replicas)
        assert driver.health_check()["status"] == "ok"
    finally:
        driver.close()
    with pytest.raises(ConfigurationError, match="REPLICATED_REPLICAS"):
        MemoryDriverManager.create("replicated", settings.replace(replicated_replicas=[]))


def test_reconcile_repairs_and_reports(tmp_path: Path) -> None:
    """A replica changed behind the driver's back (or that missed writes) is made equal to the
    primary again; the report counts what differed."""
    driver = pair(tmp_path, start_delivery=False)
    try:
        kept = driver.store("u1", "kept")
        changed = driver.store("u1", "changed on the primary")
        linked = driver.store("u1", "linked")
        driver.associate(kept.id, linked.id)
        driver.sync_replicas()
        replica = driver.replicas[0]
        replica.store("u1", "only on the replica")
        replica.delete(linked.id)
        driver.primary.update(changed.id, content="changed again, not replicated")
        driver.primary.store_global_knowledge("a doc the replica missed", "c", doc_id="d")
        dry = driver.reconcile(dry_run=True)["r"]
        assert dry["memories"] == {"missing": 1, "stale": 1, "extra": 1}
        assert dry["associations"]["missing"] == 1
        assert dry["knowledge_documents"] == {"missing": 1, "stale": 0, "extra": 0}
        assert snapshot(replica) != snapshot(driver.primary)
        done = driver.reconcile()["r"]
        assert done["memories"] == dry["memories"] and done["repaired"]
        assert snapshot(replica) == snapshot(driver.primary)
        again = driver.reconcile()["r"]
        assert again["memories"] == {"missing": 0, "stale": 0, "extra": 0}
        assert again["associations"] == {"missing": 0, "extra": 0}
    finally:
        driver.close()


def test_reconcile_command(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from memory_drivers.cli import main

    for key, value in {
        "MEMORY_DRIVER": "replicated",
        "EMBEDDING_PROVIDER": "hashing",
        "REPLICATED_PRIMARY": f"sqlite:///{clean_env}/p.db",
        "REPLICATED_REPLICAS": f"sqlite:///{clean_env}/r.db",
        "REPLICATED_OUTBOX_PATH": str(clean_env / "outbox.db"),
    }.items():
        monkeypatch.setenv(key, value)
    assert main(["store", "--user", "u", "hello"]) == 0
    memory_id = capsys.readouterr().out.strip()
    other = SQLiteDriver(
        build_settings(_env_file=None, embedding_provider="hashing").replace(
            memory_db_url=f"sqlite:///{clean_env}/r.db"
        ),
        embedder=fast_embedder(),
    )
    try:
        assert other.get(memory_id) is not None  # delivered before the command ended
        other.store("u", "only on the replica")
    finally:
        other.close()
    assert main(["reconcile", "--dry-run"]) == 0
    replica = f"sqlite:///{clean_env}/r.db"
    assert capsys.readouterr().out.strip() == f"{replica}: would repair 1 extra memories"
    assert main(["reconcile", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report[replica]["memories"] == {"missing": 0, "stale": 0, "extra": 1}
    assert main(["reconcile"]) == 0
    assert capsys.readouterr().out.strip() == f"{replica}: repaired nothing (in step)"
    assert main(["get", memory_id]) == 0
    monkeypatch.setenv("MEMORY_DRIVER", "sqlite")
    monkeypatch.setenv("MEMORY_DB_URL", f"sqlite:///{clean_env}/x.db")
    capsys.readouterr()
    get_settings.cache_clear()
    assert main(["reconcile"]) == 2
    assert "MEMORY_DRIVER=replicated" in capsys.readouterr().err


def test_replica_names_hide_passwords() -> None:
    from memory_drivers.drivers.replicated import _label

    assert _label("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert _label("sqlite:///r.db") == "sqlite:///r.db" and _label("pgvector") == "pgvector"


def test_bad_configuration(tmp_path: Path) -> None:
    from memory_drivers.embeddings.hashing import HashingEmbedder

    settings = build_settings(_env_file=None, embedding_provider="hashing")
    with pytest.raises(ConfigurationError, match="REPLICATED_PRIMARY"):
        ReplicatedDriver(settings)
    primary = SQLiteDriver(
        settings.replace(memory_db_url=f"sqlite:///{tmp_path}/p.db"), embedder=HashingEmbedder(64)
    )
    replica = SQLiteDriver(
        settings.replace(memory_db_url=f"sqlite:///{tmp_path}/r.db"), embedder=HashingEmbedder(32)
    )
    try:
        with pytest.raises(ConfigurationError, match="every replica needs the primary's embedder"):
            ReplicatedDriver(settings, primary=primary, replicas=[replica])
    finally:
        primary.close()
        replica.close()
    with pytest.raises(ConfigurationError, match="cannot be the replicated driver itself"):
        ReplicatedDriver(
            settings.replace(replicated_primary="replicated", replicated_replicas=["sqlite"])
        )


# ---------------------------------------------------------------------- faults
@pytest.fixture
def embedded_postgres(postgres: Any) -> Any:
    if postgres.server is None:
        pytest.skip("the fault tests stop and start the embedded PostgreSQL; not an external one")
    return postgres


def _pg(url: str, settings: Settings, embedder: Any) -> BaseMemoryDriver:
    from memory_drivers.drivers.pgvector import PgVectorDriver

    return PgVectorDriver(
        settings.replace(
            database_url=url,
            memory_auto_migrate=True,
            pgvector_retry_seconds=0.5,
            pgvector_connect_timeout=1.0,
        ),
        embedder=embedder,
    )


def test_primary_postgres_stops_mid_workload(embedded_postgres: Any, tmp_path: Path) -> None:
    """A pgvector primary and a sqlite replica under a steady workload; PostgreSQL is stopped
    and started again in the middle. Every acknowledged write is on the replica afterwards;
    reads never fail; writes during the outage fail with BackendUnavailableError (they are not
    acknowledged); health says degraded meanwhile."""
    name, url = embedded_postgres.create_database()
    settings = build_settings(
        _env_file=None, embedding_provider="hashing", replicated_retry_interval=0.5
    )
    embedder = fast_embedder()
    replica = SQLiteDriver(
        settings.replace(memory_db_url=f"sqlite:///{tmp_path}/r.db"), embedder=embedder
    )
    driver = ReplicatedDriver(
        settings,
        primary=_pg(url, settings, embedder),
        replicas=[replica],
        replica_names=["r"],
        outbox_path=tmp_path / "outbox.db",
    )
    acknowledged: list[str] = []
    refused = 0
    read_failures: list[Exception] = []
    stop = threading.Event()

    def workload() -> None:
        nonlocal refused
        i = 0
        while not stop.is_set():
            try:
                acknowledged.append(driver.store("u1", f"memory number {i}").id)
            except BackendUnavailableError:
                refused += 1
            try:
                driver.recall("u1", query="memory number", top_k=3, search="keyword")
                driver.count("u1")
            except Exception as exc:
                read_failures.append(exc)
            i += 1
            time.sleep(0.01)

    thread = threading.Thread(target=workload)
    thread.start()
    try:
        time.sleep(1.5)
        embedded_postgres.stop()
        try:
            time.sleep(2.0)
            health = driver.health_check()
            assert health["status"] == "degraded", health
        finally:
            embedded_postgres.start()
        time.sleep(2.0)
    finally:
        stop.set()
        thread.join(timeout=60)
    try:
        assert read_failures == []
        assert refused > 0 and len(acknowledged) > 10
        assert driver.fallback_reads > 0
        deadline = time.monotonic() + 30
        while driver.sync_replicas() != {"r": 0} and time.monotonic() < deadline:
            time.sleep(0.2)
        on_replica = {m.id for m in replica.iter_memories()}
        assert set(acknowledged) <= on_replica
        assert {m.id for m in driver.primary.iter_memories()} == on_replica
    finally:
        driver.close()
        embedded_postgres.drop_database(name)


def test_replica_postgres_down_catches_up_in_order(embedded_postgres: Any, tmp_path: Path) -> None:
    """A sqlite primary and a pgvector replica: while the replica's PostgreSQL is stopped,
    writes are acknowledged and wait in the outbox; when it returns the replica catches up, in
    order (an update after its insert, a delete last), ending equal to the primary."""
    name, url = embedded_postgres.create_database()
    settings = build_settings(
        _env_file=None, embedding_provider="hashing", replicated_retry_interval=0.3
    )
    embedder = fast_embedder()
    primary = SQLiteDriver(
        settings.replace(memory_db_url=f"sqlite:///{tmp_path}/p.db"), embedder=embedder
    )
    driver = ReplicatedDriver(
        settings,
        primary=primary,
        replicas=[_pg(url, settings, embedder)],
        replica_names=["pg"],
        outbox_path=tmp_path / "outbox.db",
    )
    try:
        first = driver.store("u1", "before the outage")
        assert driver.sync_replicas() == {"pg": 0}
        embedded_postgres.stop()
        try:
            made = [driver.store("u1", f"during the outage {i}") for i in range(5)]
            driver.update(made[0].id, content="changed during the outage")
            driver.delete(first.id)
            behind = driver.sync_replicas()
            assert behind["pg"] == 7
            assert driver.health_check()["status"] == "degraded"
        finally:
            embedded_postgres.start()
        deadline = time.monotonic() + 30
        while driver.sync_replicas() != {"pg": 0} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert snapshot(driver.replicas[0]) == snapshot(primary)
        assert driver.replicas[0].get(made[0].id).content == "changed during the outage"
        assert driver.replicas[0].get(first.id) is None
    finally:
        driver.close()
        embedded_postgres.drop_database(name)
