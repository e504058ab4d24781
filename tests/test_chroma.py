"""What is particular to the chroma driver: its two modes, the record layout, exactness beyond
what the conformance suite reaches (HNSW path, ties at the cut, the native ``where``), Chroma's
own embedding function never used, telemetry off, connection errors, retries and recovery.

Everything runs against real Chroma: embedded directories in ``tmp_path`` and ``chroma run``
servers on loopback. Nothing of Chroma is mocked; the undo tests inject a failure into the
driver's own request wrapper, on top of a real store.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import re
import socket
import string
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

try:
    import chromadb
except ImportError:  # chromadb is in the "all" extra that make test installs
    from conftest import REQUIRE_SERVERS

    reason = 'chromadb is not installed: pip install "memory-drivers[chroma]"'
    if REQUIRE_SERVERS:
        pytest.fail(f"{reason} (MEMORY_DRIVERS_REQUIRE_SERVERS is set)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

from chroma_server import ChromaServer, free_port, start_chroma

import memory_drivers
from memory_drivers import get_memory_driver
from memory_drivers.config import Settings, build_settings, get_settings
from memory_drivers.drivers.chroma import (
    ChromaDriver,
    memory_where,
    micros,
)
from memory_drivers.embeddings.hashing import HashingEmbedder
from memory_drivers.errors import (
    BackendUnavailableError,
    ConfigurationError,
    ConflictError,
    EmbedderMismatchError,
)
from memory_drivers.manager import DRIVER_EXTRAS, MemoryDriverManager
from memory_drivers.models import Memory, MemoryFilter
from memory_drivers.testing import assert_same_hits, expected_hits, fast_embedder

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.fixture
def base() -> Settings:
    return build_settings(_env_file=None)


@pytest.fixture
def opened() -> Iterator[list[ChromaDriver]]:
    drivers: list[ChromaDriver] = []
    yield drivers
    for driver in reversed(drivers):
        driver.close()


@pytest.fixture
def embedded(base: Settings, tmp_path: Path, opened: list[ChromaDriver]) -> Callable[..., Any]:
    """Open (again) this test's embedded store: ``embedded(**settings)``."""

    def make(embedder: Any = None, allow_embedder_mismatch: bool = False, **settings: Any):
        driver = ChromaDriver(
            base.replace(chroma_path=tmp_path / "chroma", **settings),
            embedder=embedder or fast_embedder(),
            allow_embedder_mismatch=allow_embedder_mismatch,
        )
        opened.append(driver)
        return driver

    return make


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    server = start_chroma(tmp_path_factory.mktemp("chroma-shared") / "data")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ChromaServer]:
    """A server for this test alone (it may be stopped and restarted)."""
    server = start_chroma(tmp_path / "server-data")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def remote(base: Settings, shared_server: ChromaServer, opened: list[ChromaDriver]):
    """Open this test's collections on the shared server: ``remote(**settings)``."""
    prefix = f"t{uuid.uuid4().hex[:12]}"

    def make(embedder: Any = None, allow_embedder_mismatch: bool = False, **settings: Any):
        values = {
            "chroma_url": shared_server.url,
            "chroma_collection": f"{prefix}_memories",
            "chroma_knowledge_collection": f"{prefix}_knowledge",
            **settings,
        }
        driver = ChromaDriver(
            base.replace(**values),
            embedder=embedder or fast_embedder(),
            allow_embedder_mismatch=allow_embedder_mismatch,
        )
        opened.append(driver)
        return driver

    return make


def fill(driver: ChromaDriver) -> tuple[Memory, Memory]:
    a = driver.store("u1", "green tea in the morning", tags=["drink"], metadata={"k": 1})
    b = driver.store("u2", "black coffee at night", memory_type="fact")
    driver.associate(a.id, driver.store("u1", "oolong").id, "RELATES_TO", 0.6)
    driver.store_global_knowledge("Refunds within thirty days", category="policy", doc_id="R")
    return a, b


# ============================================================================ registry


def test_registered_as_chroma_with_its_extra(clean_env: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MEMORY_DRIVER", "chroma")
    monkeypatch.setenv("CHROMA_PATH", str(clean_env / "store"))
    monkeypatch.setenv("EMBEDDING_PROVIDER", "hashing")
    get_settings.cache_clear()
    MemoryDriverManager.reset_cache()
    try:
        driver = get_memory_driver()
        assert type(driver) is ChromaDriver and driver.name == "chroma"
        assert driver.mode == "embedded" and driver.path == clean_env / "store"
        m = driver.store("u1", "registered")
        assert [h.memory.id for h in driver.recall("u1")] == [m.id]
    finally:
        MemoryDriverManager.reset_cache()
    assert DRIVER_EXTRAS["chroma"] == "chroma"


def test_without_chromadb_the_error_names_the_extra(tmp_path: Path):
    code = """
import sys
sys.modules["chromadb"] = None  # as if chromadb were not installed

from memory_drivers import MissingDependencyError, get_memory_driver
try:
    get_memory_driver("chroma")
except MissingDependencyError as error:
    print(error)
else:
    raise SystemExit("no MissingDependencyError")
"""
    fields = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in fields}
    env.update(CHROMA_PATH=str(tmp_path / "store"), EMBEDDING_PROVIDER="hashing")
    env["PYTHONPATH"] = str(Path(memory_drivers.__file__).resolve().parent.parent)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert 'pip install "memory-drivers[chroma]"' in result.stdout


# ============================================================================ configuration


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"chroma_url": "ftp://127.0.0.1:8000"}, "http:// or https://"),
        ({"chroma_url": "127.0.0.1:8000"}, "http:// or https://"),
        ({"chroma_url": "http://127.0.0.1:8000/chroma"}, "no path"),
        ({"chroma_url": "http://127.0.0.1:99999"}, "port"),
        ({"chroma_collection": "m"}, "CHROMA_COLLECTION='m'"),
        ({"chroma_collection": "bad name"}, "not a valid Chroma collection name"),
        ({"chroma_knowledge_collection": "-knowledge"}, "CHROMA_KNOWLEDGE_COLLECTION"),
        ({"chroma_knowledge_collection": "memories"}, "different collections"),
        ({"chroma_knowledge_collection": "memories_associations"}, "different collections"),
    ],
)
def test_bad_configuration_is_refused_before_connecting(
    base: Settings, tmp_path: Path, settings: dict[str, Any], message: str
):
    with pytest.raises(ConfigurationError, match=message):
        ChromaDriver(base.replace(chroma_path=tmp_path / "c", **settings), embedder=fast_embedder())
    assert not (tmp_path / "c").exists(), "nothing is created for a refused configuration"


def test_a_collection_with_another_distance_is_refused(base: Settings, tmp_path: Path):
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(
        path=str(tmp_path / "c"),
        settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False),
    )
    client.create_collection("memories", configuration={"hnsw": {"space": "l2"}})
    client.close()
    with pytest.raises(ConfigurationError, match="'l2' distance"):
        ChromaDriver(base.replace(chroma_path=tmp_path / "c"), embedder=fast_embedder())


# ============================================================================ health, stats


def test_health_check_embedded(embedded: Callable[..., ChromaDriver], tmp_path: Path):
    driver = embedded()
    fill(driver)
    report = driver.health_check()
    assert report["status"] == "ok" and report["driver"] == "chroma"
    assert report["mode"] == "embedded" and report["path"] == str(tmp_path / "chroma")
    assert "heartbeat" not in report and "url" not in report
    assert report["chroma_version"] == chromadb.__version__
    assert report["counts"] == {"memories": 3, "knowledge_chunks": 1, "associations": 1}
    assert report["collections"] == {
        "memories": "memories.u.<hash of the user>",
        "directory": "memories.ids",
        "knowledge": "global_knowledge",
        "associations": "memories_associations",
    }
    assert report["embedder"] == {"name": driver.embedder.name, "dimension": "256"}


def test_health_check_server(remote: Callable[..., ChromaDriver], shared_server: ChromaServer):
    driver = remote()
    fill(driver)
    report = driver.health_check()
    assert report["status"] == "ok" and report["mode"] == "server"
    assert report["url"] == shared_server.url and "path" not in report
    now = time.time_ns()
    assert abs(report["heartbeat"] - now) < 60 * 10**9, "the server's clock, in nanoseconds"
    assert isinstance(report["server_version"], str) and report["server_version"]
    assert report["counts"] == {"memories": 3, "knowledge_chunks": 1, "associations": 1}
    assert report["collections"]["directory"] == driver.collection_name + ".ids"
    session = driver._client._server._session  # chromadb's own default is no timeout at all
    assert session.timeout == httpx.Timeout(driver.settings.chroma_timeout)


def test_stats(embedded: Callable[..., ChromaDriver]):
    driver = embedded()
    fill(driver)
    driver.store_global_knowledge("Second document", category="policy", doc_id="S")
    stats = driver.stats()
    assert stats["driver"] == "chroma" and stats["mode"] == "embedded"
    assert (stats["memories"], stats["users"], stats["associations"]) == (3, 2, 1)
    assert (stats["knowledge_documents"], stats["knowledge_chunks"]) == (2, 2)
    assert stats["memory_types"] == {"fact": 1, "semantic": 2}


# ============================================================================ representation


def test_records_have_the_documented_layout(embedded: Callable[..., ChromaDriver]):
    """docs/drivers/chroma.md describes what a record holds; other Chroma tools rely on it."""
    driver = embedded()
    m = driver.store_many(
        [
            {
                "user_id": "u1",
                "content": "Hiking boots in the closet",
                "conversation_id": "c1",
                "tags": ["gear", "Gear"],
                "metadata": {"n": 2, "s": "x", "b": False, "z": None, "deep": {"a": [1]}},
                "importance": 0.7,
                "created_at": at(1),
            }
        ]
    )[0]
    other = driver.store("u1", "the and of")  # only stop words: no terms
    driver.associate(m.id, other.id, "LEADS_TO", 0.4)
    users = driver._client.list_collections()
    assert sorted(c.name for c in users if ".u." in c.name) == [
        "memories.u." + hashlib.sha256(b"u1").hexdigest()[:32]
    ], "one collection per user, named by a hash of the user id"
    mine = driver._user_collection("u1")
    assert mine.metadata["memory_drivers.user"] == "u1"
    record = mine.get(ids=[m.id], include=["metadatas", "documents", "embeddings"])
    assert record["documents"] == ["Hiking boots in the closet"]
    meta = record["metadatas"][0]
    assert {k: v for k, v in meta.items() if k != "memory"} == {
        "user_id": "u1",
        "conversation_id": "c1",
        "memory_type": "semantic",
        "importance": 0.7,
        "created_us": micros(at(1)),
        "tags": ["gear", "Gear"],
        "terms": "hike boot closet",
        "context": "",
        "meta:number:n": 2.0,
        "meta:string:s": "x",
        "meta:boolean:b": False,
        "meta:null:z": True,
    }
    assert json.loads(meta["memory"])["metadata"] == m.metadata
    assert len(record["embeddings"][0]) == 256
    entry = driver._directory.get(ids=[m.id], include=["metadatas", "documents"])
    token, user = entry["documents"][0].split(" ", 1)
    assert re.fullmatch(r"[0-9a-f]{32}", token) and user == "u1", "write token, user"
    assert entry["metadatas"] == [{"user_id": "u1", "created_us": micros(at(1))}]
    empty = mine.get(ids=[other.id], include=["metadatas"])["metadatas"][0]
    assert (empty["terms"], empty["tags"]) == ("", [""]), "an empty array holds one empty string"
    turn = driver.store("u1", "Laces are red", conversation_id="c1")
    after = mine.get(ids=[turn.id], include=["metadatas"])["metadatas"][0]
    assert (after["terms"], after["context"]) == ("lace red", "hike boot closet"), (
        "own terms, then the ones the turn before adds"
    )
    link = driver._links.get(include=["metadatas"])
    assert link["ids"] == [f"{m.id}:{other.id}:LEADS_TO"]
    assert {k: v for k, v in link["metadatas"][0].items() if k != "created_at"} == {
        "source_id": m.id,
        "target_id": other.id,
        "relationship_type": "LEADS_TO",
        "strength": 0.4,
    }
    info = driver._client.get_collection("memories_associations").metadata
    assert info["memory_drivers.layout"] == "users"
    assert info["memory_drivers.embedder"] == driver.embedder.name
    assert info["memory_drivers.dimension"] == "256"
    driver.store_global_knowledge("Refunds", category="policy", title="T", doc_id="R")
    chunk = driver._knowledge.get(include=["metadatas", "documents"])
    assert chunk["documents"] == ["Refunds"]
    assert {k: chunk["metadatas"][0][k] for k in ("doc_id", "chunk_index", "category")} == {
        "doc_id": "R",
        "chunk_index": 0,
        "category": "policy",
    }


def test_arrays_of_a_deleted_collection_never_reach_new_records(
    embedded: Callable[..., ChromaDriver],
):
    """Chroma 1.5.9 gives a record written without an array key the array of a record of a
    deleted collection (same internal id). The driver writes every array on every record, so
    filters and keyword search never see another collection's tags or terms."""
    first = embedded(chroma_collection="first", chroma_knowledge_collection="first_kb")
    first.store_many(
        [{"user_id": "u1", "content": f"zebra {i}", "tags": ["stale"]} for i in range(20)]
    )
    for collection in first._client.list_collections():  # first.u.<hash>, first.ids, ...
        first._client.delete_collection(collection.name)
    first.close()
    driver = embedded()
    plain = driver.store_many([{"user_id": "u1", "content": f"memory {i}"} for i in range(5)])
    assert driver.recall("u1", tags=["stale"]) == []
    assert driver.recall("u1", query="zebra", search="keyword") == []
    assert {h.memory.id for h in driver.recall("u1", exclude_tags=["stale"])} == {
        m.id for m in plain
    }


def test_a_store_of_the_earlier_record_layout_is_repaired_on_open(
    embedded: Callable[..., ChromaDriver],
):
    """Records written before every array was kept (no ``tags``/``terms`` key when empty, own
    terms only, no terms on knowledge chunks) are repaired and re-indexed once, on open."""
    driver = embedded(context_window=0)
    a = driver.store("u1", "I adopted a puppy", conversation_id="c", tags=["pets"])
    b = driver.store("u1", "What is its name?", conversation_id="c")
    driver.store_global_knowledge("Refunds within thirty days", category="policy", doc_id="R")
    # The earlier layout: empty arrays left out; then a stale array arrives (Chroma's bug).
    mine = driver._user_collection("u1")
    record = mine.get(ids=[b.id], include=["metadatas"])["metadatas"][0]
    mine.update(ids=[b.id], metadatas=[{"tags": ["pets"], "terms": record["terms"]}])
    driver._knowledge.update(ids=driver._knowledge.get()["ids"], metadatas=[{"terms": ["x"]}])
    driver._write_store_info({"records": "", "context_window": ""})
    driver.close()
    repaired = embedded()
    assert [h.memory.id for h in repaired.recall("u1", tags=["pets"])] == [a.id]
    assert {h.memory.id for h in repaired.recall("u1", query="puppy", search="keyword")} == {
        a.id,
        b.id,
    }, "b is indexed with the turn before it"
    knowledge = repaired.recall_global_knowledge("refunds", search="keyword")
    assert [h.chunk.doc_id for h in knowledge] == ["R"]
    info = repaired._read_store_info()
    assert (info["records"], info["context_window"]) == ("4", "2")


def test_a_store_with_neighbours_terms_in_the_array_is_migrated_on_open(
    embedded: Callable[..., ChromaDriver],
):
    """Stores of records version 2 kept a memory's neighbours' terms in its ``terms`` array
    (which Chroma fails on past 5,461 items, issue 12). Opening one keeps its own terms in
    ``terms`` and moves the others to ``context``, both strings."""
    driver = embedded()
    a, b, c = driver.store_many(
        [
            {"user_id": "u1", "content": text, "conversation_id": "c", "created_at": at(hour)}
            for hour, text in enumerate(["I adopted a puppy", "What is its name?", "Rex, a beagle"])
        ]
    )
    mine = driver._user_collection("u1")
    records = mine.get(ids=[b.id, c.id], include=["metadatas"])
    mine.update(  # version 2: own terms then the neighbours', all in the array; no context
        ids=records["ids"],
        metadatas=[
            {"terms": (meta["terms"] + " " + meta["context"]).split(), "context": None}
            for meta in records["metadatas"]
        ],
    )
    driver._write_store_info({"records": "2"})
    driver.close()
    migrated = embedded()
    metas = migrated._user_collection("u1").get(ids=[a.id, b.id, c.id], include=["metadatas"])
    assert [(m["terms"], m["context"]) for m in metas["metadatas"]] == [
        ("adopt puppi", ""),
        ("name", "adopt puppi"),
        ("rex beagl", "name adopt puppi"),
    ]
    assert {h.memory.id for h in migrated.recall("u1", query="puppy", search="keyword")} == {
        a.id,
        b.id,
        c.id,
    }
    assert migrated._read_store_info()["records"] == "4"


def three_letter_words() -> Iterator[str]:
    for letters in itertools.product(string.ascii_lowercase, repeat=3):
        yield "".join(letters)


def longest_memory(words: Iterator[str], length: int = 10_000) -> str:
    """``length`` characters of distinct words (about 2,400 terms)."""
    text = next(words)
    while len(text) + 4 <= length:
        text += " " + next(words)
    return text


@pytest.mark.parametrize("mode", ["embedded", "remote"])
def test_long_memories_in_one_conversation_keep_the_store_writable(
    request: pytest.FixtureRequest, mode: str
):
    """Issue 12: three valid memories of 10,000 characters in one conversation. A record's
    indexed terms are its own and its neighbours' (over 7,000 here); Chroma 1.5.9 fails every
    later write of the store ("Error in compaction") once one record's arrays hold more than
    5,461 items. Keyword recall must still find a turn through its neighbours' words."""
    make = request.getfixturevalue(mode)
    driver = make()
    words = three_letter_words()
    texts = [longest_memory(words) for _ in range(3)]
    stored = [driver.store("u1", text, conversation_id="c") for text in texts]
    first_word = texts[0].split()[0]
    later = driver.store("u1", "a later memory", conversation_id="c")
    driver.update(stored[1].id, content=texts[1][4:] + " zzz")
    found = {h.memory.id for h in driver.recall("u1", query=first_word, search="keyword")}
    assert found >= {m.id for m in stored}, "the two turns after the first hold its words"
    assert driver.delete(later.id)
    again = make()
    again.store("u1", "still writable", conversation_id="c")
    assert again.count("u1") == 4
    expected = expected_hits(
        [*again.iter_memories("u1")],
        MemoryFilter(user_id="u1"),
        top_k=10,
        query=f"{first_word} zzz",
        search="keyword",
    )
    found = again.recall("u1", query=f"{first_word} zzz", search="keyword")
    assert_same_hits(found, expected, 10)


def test_update_rewrites_the_filter_keys(embedded: Callable[..., ChromaDriver]):
    """Chroma merges metadata on update; keys of the old tags, metadata and terms must go."""
    driver = embedded()
    m = driver.store("u1", "alpha words", tags=["old"], metadata={"a": 1, "keep": "k"})
    driver.update(m.id, tags=[], metadata={"b": True}, content="beta")
    meta = driver._user_collection("u1").get(ids=[m.id], include=["metadatas"])["metadatas"][0]
    assert meta["tags"] == [""] and "meta:number:a" not in meta and "meta:string:keep" not in meta
    assert meta["meta:boolean:b"] is True and meta["terms"] == "beta"
    assert driver.recall("u1", tags=["old"]) == []
    assert driver.recall("u1", metadata={"a": 1}) == []
    assert driver.recall("u1", query="alpha", use_vector=False) == []
    driver.update(m.id, importance=0.9)
    meta = driver._user_collection("u1").get(ids=[m.id], include=["metadatas"])["metadatas"][0]
    assert meta["terms"] == "beta", "an update without new content keeps the terms"


# ============================================================================ layout migration


def old_layout(driver: ChromaDriver) -> None:
    """Turn ``driver``'s store (closed here) into one of the earlier layout, with raw chromadb
    calls: every memory in the one collection ``memories`` (the records as they were written
    then: the same metadata), no directory, no user collections, no ``layout`` in the info."""
    driver.close()
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(
        path=str(driver.path), settings=ChromaSettings(anonymized_telemetry=False)
    )
    old = client.create_collection(
        "memories",
        configuration={"hnsw": {"space": "cosine", "ef_search": 200}},
        metadata={"memory_drivers.format": "1"},
        embedding_function=None,
    )
    for collection in client.list_collections():
        if collection.name.startswith("memories.u."):
            records = collection.get(include=["metadatas", "documents", "embeddings"])
            old.add(
                ids=records["ids"],
                embeddings=records["embeddings"],
                metadatas=records["metadatas"],
                documents=records["documents"],
            )
            client.delete_collection(collection.name)
    client.delete_collection("memories.ids")
    links = client.get_collection("memories_associations", embedding_function=None)
    info = dict(links.metadata)
    info.pop("memory_drivers.layout")
    links.modify(metadata=info)
    client.close()


def layout_fixture(driver: ChromaDriver) -> list[Memory]:
    stored = driver.store_many(
        [
            {
                "user_id": "u1",
                "content": "I adopted a puppy",
                "conversation_id": "c",
                "tags": ["pets"],
            },
            {"user_id": "u1", "content": "What is its name?", "conversation_id": "c"},
            {"user_id": "u1", "content": "green tea in the morning", "metadata": {"k": 1}},
            {"user_id": "u2", "content": "black coffee at night", "memory_type": "fact"},
        ]
    )
    driver.associate(stored[0].id, stored[2].id, "RELATES_TO", 0.6)
    driver.store_global_knowledge("Refunds within thirty days", category="policy", doc_id="R")
    return stored


def assert_migrated(driver: ChromaDriver, stored: list[Memory]) -> None:
    names = {c.name for c in driver._client.list_collections()}
    assert "memories" not in names, "the old collection is deleted once copied"
    assert driver._read_store_info()["layout"] == "users"
    assert {n for n in names if n.startswith("memories.u.")} == {
        driver._user_collection(u).name for u in ("u1", "u2")
    }
    assert [driver.get(m.id) for m in stored] == stored
    assert (driver.count(), driver.count("u1"), driver.count("u2")) == (4, 3, 1)
    assert [h.memory.id for h in driver.recall("u1", tags=["pets"])] == [stored[0].id]
    hits = driver.recall("u1", query="puppy", search="keyword")
    assert {h.memory.id for h in hits} == {stored[0].id, stored[1].id}, "context kept"
    top = driver.recall("u1", query="green tea in the morning", top_k=1, search="vector")
    assert top[0].memory.id == stored[2].id and top[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.memory.id for h in driver.recall("u2")] == [stored[3].id]
    assert [r.memory.id for r in driver.related(stored[0].id)] == [stored[2].id]
    assert driver.get_global_knowledge("R") is not None
    with pytest.raises(ConflictError):
        driver.store_many([{"user_id": "u3", "content": "taken", "id": stored[3].id}])
    assert driver.delete(stored[3].id) is True and driver.count() == 3


def test_a_store_of_one_collection_is_migrated_to_a_collection_per_user(
    embedded: Callable[..., ChromaDriver],
):
    """A store of the earlier layout opens as it was: every memory, its vector, terms, links."""
    first = embedded()
    stored = layout_fixture(first)
    old_layout(first)
    assert_migrated(embedded(), stored)


@pytest.mark.parametrize("fail", [{"upsert": 2}, {"upsert": 3}, {"delete_collection": 1}])
def test_an_interrupted_migration_is_finished_on_the_next_open(
    embedded: Callable[..., ChromaDriver], base: Settings, tmp_path: Path, fail: dict[str, int]
):
    """Upserts 1 and 2 copy u1's and u2's records, 3 the directory; then the old collection is
    deleted. Wherever opening stops, the next open finishes the move and loses nothing."""
    first = embedded()
    stored = layout_fixture(first)
    old_layout(first)

    class DiesWhileMigrating(FailingDriver):
        pass

    DiesWhileMigrating.fail = dict(fail)
    with pytest.raises(BackendUnavailableError, match="injected"):
        DiesWhileMigrating(base.replace(chroma_path=tmp_path / "chroma"), embedder=fast_embedder())
    assert_migrated(embedded(), stored)


# ============================================================================ exactness


@pytest.mark.parametrize("mode", ["embedded", "remote"])
def test_native_where_selects_exactly_what_matches_accepts(
    request: pytest.FixtureRequest, mode: str
) -> None:
    """The ``where`` the driver sends selects exactly MemoryFilter.matches (the re-check is a
    safety net, not what makes results right). Floats are compared as 64-bit in both modes."""
    driver: ChromaDriver = request.getfixturevalue(mode)()
    specs: list[dict[str, Any]] = [
        {"metadata": {"v": 1}},
        {"metadata": {"v": 1.0}},
        {"metadata": {"v": True}},
        {"metadata": {"v": False}},
        {"metadata": {"v": "1"}},
        {"metadata": {"v": None}},
        {"metadata": {"other": 1}},
        {"metadata": {"v": {"deep": 1}}},
        {"metadata": {"v": [1]}},
        {"metadata": {"v": 2**60 + 1}},
        {"metadata": {"v": 0.1 + 0.2, "w": "x y"}},
        {"tags": ["red", "blue"]},
        {"tags": ["Red", "redder"]},
        {"tags": ["blue"]},
        {"conversation_id": "c1", "memory_type": "fact"},
        {"importance": 0.3},
        {"importance": 0.30000000000000004},
        {"importance": 0.0},
        {"importance": 1.0},
    ]
    items = []
    for i, spec in enumerate(specs):
        item = {"user_id": "u1" if i % 4 else "u2", "content": f"m{i}", **spec}
        item["created_at"] = T0 + timedelta(microseconds=i)
        items.append(item)
    stored = driver.store_many(items)
    filters = [
        MemoryFilter(user_id="u1"),
        MemoryFilter(conversation_id="c1"),
        MemoryFilter(memory_types=("fact", "episodic")),
        MemoryFilter(tags=("red",)),
        MemoryFilter(tags=("red", "blue"), tag_mode="all"),
        MemoryFilter(tags=("red", "Red"), tag_mode="any"),
        MemoryFilter(exclude_tags=("red",)),
        MemoryFilter(tags=("blue",), exclude_tags=("red", "x")),
        MemoryFilter(since=T0 + timedelta(microseconds=3)),
        MemoryFilter(until=T0 + timedelta(microseconds=3)),
        MemoryFilter(since=T0 + timedelta(microseconds=2), until=T0 + timedelta(microseconds=5)),
        MemoryFilter(min_importance=0.3),
        MemoryFilter(min_importance=0.30000000000000004),
        MemoryFilter(importance_below=0.3),
        MemoryFilter(min_importance=1.0),
        *(MemoryFilter(metadata={"v": value}) for value in (1, 1.0, True, False, "1", None)),
        MemoryFilter(metadata={"v": 0.1 + 0.2, "w": "x y"}),
        MemoryFilter(metadata={"v": 0.3}),
        MemoryFilter(metadata={"other": 1, "v": 1}),
        MemoryFilter(user_id="u1", tags=("red",), metadata={"v": 1}, min_importance=0.5),
    ]

    def native(f: MemoryFilter) -> list[str]:
        """What the where selects in the collections of f's user (every user's when None)."""
        return [
            mid
            for _, collection in driver._scan_users(f.user_id)
            for mid in collection.get(where=memory_where(f), include=[])["ids"]
        ]

    for f in filters:
        expected = {m.id for m in stored if f.matches(m)}
        assert set(native(f)) == expected, f
    # Integers beyond 2**53 are indexed as floats: the where selects 2**60 and 2**60 + 1 alike,
    # and the re-check with matches() keeps recall exact.
    big = next(m for m in stored if m.metadata.get("v") == 2**60 + 1)
    for value, found in ((2**60 + 1, [big.id]), (2**60, [])):
        f = MemoryFilter(metadata={"v": value})
        assert big.id in native(f)
        assert [h.memory.id for h in driver.recall(big.user_id, metadata={"v": value})] == found
        hits = driver.recall(big.user_id, query="m9", metadata={"v": value})
        assert [h.memory.id for h in hits] == found


def random_store(driver: ChromaDriver, seed: int, count: int = 120) -> list[Memory]:
    rng = random.Random(seed)
    words = "apple banana cherry delta echo falcon garden harbor island jungle".split()
    return driver.store_many(
        [
            {
                "user_id": rng.choice(["u1", "u1", "u2"]),
                "content": " ".join(rng.sample(words, rng.randint(1, 4))),
                "tags": rng.sample(["t1", "t2", "t3"], rng.randint(0, 2)),
                "importance": rng.choice([0.1, 0.5, 0.9]),
                "metadata": {"n": rng.choice([1, 2, True])},
                "created_at": at(rng.randint(0, 50)),
            }
            for _ in range(count)
        ]
    )


@pytest.mark.parametrize(
    ("limit", "walk", "cache"),
    [(0, 200, 256), (7, 200, 0), (20_000, 200, 0), (20_000, 0, 0), (7, 200, 256), (20_000, 0, 256)],
)
def test_vector_recall_is_exact_in_every_path(
    embedded: Callable[..., ChromaDriver], limit: int, walk: int, cache: int
):
    """limit 0: always Chroma's HNSW index; 7: exhaustive scoring for users with few memories,
    HNSW for larger ones; 20000: always exhaustive, a filter checked on the records read best
    first (walk 200) or, walk 0, evaluated by Chroma. With the vector cache (256 MiB), the
    exhaustive scoring is done on the cached vectors. Many equal contents make ties at the
    cut."""
    driver = embedded(chroma_exact_search_limit=limit, chroma_vector_cache_mb=cache)
    driver.walk_limit = walk
    stored = random_store(driver, seed=limit)
    rng = random.Random(5)
    filters: list[dict[str, Any]] = [
        {},
        {"tags": ["t1"]},
        {"tags": ["t1", "t2"], "tag_mode": "all"},
        {"exclude_tags": ["t3"], "min_importance": 0.5},
        {"metadata": {"n": 1}},
        {"since": at(10), "until": at(30)},
    ]
    for chosen in filters:
        for top_k in (1, 5, 40):
            query = rng.choice(["apple", "banana cherry", "delta echo falcon"])
            hits = driver.recall("u1", query=query, top_k=top_k, search="vector", **chosen)
            f = driver._filter(user_id="u1", **chosen)
            want = expected_hits(stored, f, top_k=top_k, query=query, embedder=driver.embedder)
            assert_same_hits(hits, want, top_k, context=f"limit={limit} {chosen} top_k={top_k}")
    driver.store_global_knowledge("apple banana", category="a", doc_id="A")
    driver.store_global_knowledge("cherry delta", category="b", doc_id="B")
    found = driver.recall_global_knowledge("apple", top_k=2, search="vector")
    assert [h.chunk.doc_id for h in found] == ["A", "B"]
    assert [h.chunk.doc_id for h in driver.recall_global_knowledge("apple", category="b")] == ["B"]


@pytest.mark.parametrize(("limit", "cache"), [(0, 0), (20_000, 0), (20_000, 256)])
def test_ties_at_the_cut_follow_the_shared_order(
    embedded: Callable[..., ChromaDriver], limit: int, cache: int
):
    """Forty memories with the same text (same score) and distinct times: top 5 are the five
    newest, in every mode and every vector path."""
    driver = embedded(chroma_exact_search_limit=limit, chroma_vector_cache_mb=cache)
    hours = list(range(40))
    random.Random(1).shuffle(hours)
    stored = driver.store_many(
        [{"user_id": "u1", "content": "same words", "created_at": at(h)} for h in hours]
        + [{"user_id": "u1", "content": "other text", "created_at": at(100)}]
    )
    newest = [m.id for m in sorted(stored[:40], key=lambda m: m.created_at, reverse=True)[:5]]
    assert [h.memory.id for h in driver.recall("u1", query="same words", top_k=5)] == newest
    keyword = driver.recall("u1", query="words", use_vector=False, top_k=5)
    assert [h.memory.id for h in keyword] == newest
    assert [h.memory.id for h in driver.recall("u1", top_k=6)][1:] == newest


def test_recent_recall_reads_the_newest_windows_first(embedded: Callable[..., ChromaDriver]):
    """With many candidates, recent recall reads the last day, month or year first; the answer
    is the same whichever window holds the top_k (or none does)."""
    driver = embedded()
    driver.recent_scan = 3  # normally 1000 candidates
    now = datetime.now(timezone.utc)
    ages = [-1, 1, 2, 24 * 3, 24 * 40, 24 * 400, 24 * 1000, 5, 24 * 2]  # hours ago (-1: future)
    stored = driver.store_many(
        [
            {
                "user_id": "u1",
                "content": f"{age} hours ago",
                "tags": ["even"] if i % 2 == 0 else [],
                "created_at": now - timedelta(hours=age),
            }
            for i, age in enumerate(ages)
        ]
        + [{"user_id": "u2", "content": "other user", "created_at": now}]
    )
    mine = sorted(stored[:-1], key=lambda m: m.created_at, reverse=True)
    for top_k in range(1, len(ages) + 2):
        assert [h.memory.id for h in driver.recall("u1", top_k=top_k)] == [
            m.id for m in mine[:top_k]
        ], top_k
        even = [m.id for m in mine if m.tags == ["even"]][:top_k]
        assert [h.memory.id for h in driver.recall("u1", top_k=top_k, tags=["even"])] == even


def test_exhaustive_scoring_agrees_with_chromas_distances(embedded: Callable[..., ChromaDriver]):
    """Candidates are scored from their stored vectors: the scores equal 1 - Chroma's own cosine
    distance, and a candidate deleted after it was counted is left out, not an error."""
    driver = embedded(chroma_vector_cache_mb=0)
    stored = driver.store_many([{"user_id": "u1", "content": f"note {i}"} for i in range(6)])
    query = driver._embed_query("note 3")
    ids = [m.id for m in stored]
    mine = driver._user_collection("u1")
    answer = mine.query(query_embeddings=[query], n_results=len(ids), include=["distances"])
    chroma_scores = {
        mid: 1.0 - d for mid, d in zip(answer["ids"][0], answer["distances"][0], strict=True)
    }
    gone = str(uuid.uuid4())
    found, scores = driver._score_all(mine, query, [*ids, gone])
    assert sorted(found) == sorted(ids)
    for mid, score in zip(found, scores, strict=True):
        assert score == pytest.approx(chroma_scores[mid], abs=1e-6)
    assert found[int(np.argmax(scores))] == stored[3].id


# ============================================================================ embeddings


@pytest.fixture
def poisoned_chroma_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chroma's default embedding function (and its model download) raise if ever used."""
    from chromadb.api.types import DefaultEmbeddingFunction
    from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

    def poisoned(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Chroma's own embedding function was used")

    def poisoned_call(self: Any, input: Any) -> Any:  # the signature chromadb checks
        raise AssertionError("Chroma's own embedding function was used")

    monkeypatch.setattr(DefaultEmbeddingFunction, "__call__", poisoned_call)
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "__call__", poisoned_call)
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "_download_model_if_not_exists", poisoned)


@pytest.mark.parametrize("mode", ["embedded", "remote"])
@pytest.mark.usefixtures("poisoned_chroma_model")
def test_chroma_never_embeds_and_telemetry_is_off(
    request: pytest.FixtureRequest, mode: str
) -> None:
    driver: ChromaDriver = request.getfixturevalue(mode)()
    m = driver.store("u1", "green tea", tags=["t"])
    for collection in (driver._user_collection("u1"), driver._directory, driver._knowledge):
        assert collection._embedding_function is None
    assert driver._links._embedding_function is None
    assert driver._client.get_settings().anonymized_telemetry is False
    driver.store_many([{"user_id": "u1", "content": f"note {i}"} for i in range(3)])
    driver.update(m.id, content="green tea and lemon")
    assert driver.recall("u1", query="green tea lemon", top_k=1)[0].memory.id == m.id
    assert driver.recall("u1", query="lemon", use_vector=False)[0].memory.id == m.id
    assert len(driver.recall("u1")) == 4
    driver.store_global_knowledge("a knowledge document", category="c", doc_id="D")
    assert driver.recall_global_knowledge("knowledge")[0].chunk.doc_id == "D"
    assert driver.reembed() == {"memories": 4, "knowledge_chunks": 1}


# ============================================================================ re-embedding


def stored_everything(driver: ChromaDriver) -> tuple[Memory, Memory, Any]:
    a = driver.store("u1", "switch the model", tags=["t"], metadata={"k": 1})
    b = driver.store("u1", "another memory")
    driver.associate(a.id, b.id, "LEADS_TO", 0.7)
    doc = driver.store_global_knowledge("a knowledge document", category="c", doc_id="D")
    return a, b, doc


def assert_reembedded(driver: ChromaDriver, a: Memory, b: Memory, doc: Any) -> None:
    assert driver.get(a.id) == a and driver.get(b.id) == b
    hit = driver.recall("u1", query="switch the model", top_k=1)[0]
    assert hit.memory.id == a.id and hit.score == pytest.approx(1.0, abs=1e-5)
    assert [h.memory.id for h in driver.recall("u1", metadata={"k": 1})] == [a.id]
    assert [(r.memory.id, r.strength) for r in driver.related(a.id)] == [(b.id, 0.7)]
    assert driver.get_global_knowledge("D") == doc
    knowledge = driver.recall_global_knowledge("a knowledge document")[0]
    assert knowledge.score == pytest.approx(1.0, abs=1e-5)
    names = {c.name for c in driver._client.list_collections()}
    assert not any(name.endswith(".reembed") for name in names)
    assert driver.health_check()["embedder"]["dimension"] == str(driver.embedder.dimension)


@pytest.mark.parametrize("mode", ["embedded", "remote"])
def test_reembed_with_another_dimension(request: pytest.FixtureRequest, mode: str):
    """Chroma fixes a collection's dimension; re-embedding with another one writes new
    collections and puts them in place. Everything else stays as it was."""
    make = request.getfixturevalue(mode)
    a, b, doc = stored_everything(make())
    with pytest.raises(EmbedderMismatchError):
        make(embedder=HashingEmbedder(32))
    migrating = make(embedder=HashingEmbedder(32), allow_embedder_mismatch=True)
    assert migrating.reembed(batch_size=1) == {"memories": 2, "knowledge_chunks": 1}
    assert_reembedded(migrating, a, b, doc)
    assert_reembedded(make(embedder=HashingEmbedder(32)), a, b, doc)


def test_an_interrupted_reembed_copy_is_started_again(failing: FailingDriver, base: Settings):
    a, b, doc = stored_everything(failing)
    failing.close()
    settings = failing.settings
    again = FailingDriver(settings, embedder=HashingEmbedder(32), allow_embedder_mismatch=True)
    again.fail = {"add": 2}  # the copy dies half way
    with pytest.raises(BackendUnavailableError, match="injected"):
        again.reembed(batch_size=1)
    again.close()
    with pytest.raises(EmbedderMismatchError, match="interrupted"):
        ChromaDriver(settings, embedder=HashingEmbedder(32))
    with ChromaDriver(
        settings, embedder=HashingEmbedder(32), allow_embedder_mismatch=True
    ) as rerun:
        assert rerun.reembed() == {"memories": 2, "knowledge_chunks": 1}
    with ChromaDriver(settings, embedder=HashingEmbedder(32)) as done:
        assert_reembedded(done, a, b, doc)


def test_an_interrupted_reembed_swap_is_finished_on_open(failing: FailingDriver):
    a, b, doc = stored_everything(failing)
    failing.close()
    settings = failing.settings
    again = FailingDriver(settings, embedder=HashingEmbedder(32), allow_embedder_mismatch=True)
    # modify: 1 marks the store, 2 writes the new stamp, 3 renames the new memories collection
    # (the old one is already deleted): the process dies right there.
    again.fail = {"modify": 3}
    with pytest.raises(BackendUnavailableError, match="injected"):
        again.reembed()
    again.close()
    with ChromaDriver(settings, embedder=HashingEmbedder(32)) as reopened:
        assert_reembedded(reopened, a, b, doc)


# ============================================================================ batches, undo


def test_batches_beyond_chromas_maximum(embedded: Callable[..., ChromaDriver]):
    driver = embedded(knowledge_chunk_tokens=20, knowledge_chunk_overlap=2)
    driver._max_batch = 7  # Chroma's real maximum is thousands; the same code path
    stored = driver.store_many([{"user_id": "u1", "content": f"m{i}"} for i in range(30)])
    assert driver.count() == 30 and all(driver.get(m.id) == m for m in stored[::7])
    items = [{"user_id": "u1", "content": f"n{i}"} for i in range(20)]
    items.append({"user_id": "u1", "content": "taken", "id": stored[-1].id})
    with pytest.raises(ConflictError, match=stored[-1].id):
        driver.store_many(items)
    assert driver.count() == 30
    doc = driver.store_global_knowledge(" ".join(f"w{i}" for i in range(300)), "c", doc_id="D")
    assert len(doc.chunks) > 7 and driver.get_global_knowledge("D") == doc
    again = driver.store_global_knowledge(" ".join(f"v{i}" for i in range(300)), "c", doc_id="D")
    assert driver.get_global_knowledge("D") == again
    assert len(driver._knowledge.get(include=[])["ids"]) == len(again.chunks)


class FailingDriver(ChromaDriver):
    """A real ChromaDriver whose request wrapper fails on chosen Chroma calls."""

    fail: dict[str, int]  # method name -> which call fails (1 = the next one)

    def _call(self, function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        name = getattr(function, "__name__", "")
        fail = getattr(self, "fail", {})
        if name in fail:
            fail[name] -= 1
            if fail[name] == 0:
                raise BackendUnavailableError(f"injected failure of {name}")
        return super()._call(function, *args, **kwargs)


@pytest.fixture
def failing(base: Settings, tmp_path: Path, opened: list[ChromaDriver]) -> FailingDriver:
    driver = FailingDriver(base.replace(chroma_path=tmp_path / "c"), embedder=fast_embedder())
    opened.append(driver)
    driver._max_batch = 5
    return driver


@pytest.mark.parametrize("failing_add", [3, 5, 7])
def test_a_failed_batch_is_undone(failing: FailingDriver, failing_add: int):
    """Adds 1-4 write the directory, 5 and 6 u1's collection, 7 u2's: wherever the write
    fails, nothing of it remains."""
    existing = failing.store("u1", "existing")
    items = [{"user_id": "u1", "content": f"m{i}", "id": str(uuid.uuid4())} for i in range(9)]
    items += [{"user_id": "u2", "content": f"n{i}", "id": str(uuid.uuid4())} for i in range(8)]
    failing.fail = {"add": failing_add}
    with pytest.raises(BackendUnavailableError, match="injected"):
        failing.store_many(items)
    assert failing.count() == 1 and failing.get(existing.id) == existing
    ids = [i["id"] for i in items]
    assert failing._directory.get(ids=ids, include=[])["ids"] == []
    for user in ("u1", "u2"):
        collection = failing._user_collection(user, create=True)
        assert collection.get(ids=ids, include=[])["ids"] == []
    failing.fail = {}
    assert len(failing.store_many(items)) == 17, "the same ids can be stored afterwards"


def test_a_failed_knowledge_replacement_keeps_the_old_document(failing: FailingDriver):
    old = failing.store_global_knowledge(" ".join(f"old{i}" for i in range(2000)), "c", doc_id="D")
    assert len(old.chunks) > 1
    failing.fail = {"delete": 1}
    with pytest.raises(BackendUnavailableError, match="injected"):
        failing.store_global_knowledge("the new text", category="c2", doc_id="D")
    assert failing.get_global_knowledge("D") == old
    failing.fail = {"add": 1}
    with pytest.raises(BackendUnavailableError, match="injected"):
        failing.store_global_knowledge("the new text", category="c2", doc_id="D")
    assert failing.get_global_knowledge("D") == old
    assert len(failing._knowledge.get(include=[])["ids"]) == len(old.chunks)


def test_a_failed_undo_says_what_may_remain(failing: FailingDriver):
    items = [{"user_id": "u1", "content": f"m{i}"} for i in range(12)]
    failing.fail = {"add": 2, "delete": 1}
    with pytest.raises(BackendUnavailableError, match=r"undoing .* failed too.*may remain"):
        failing.store_many(items)


def test_a_link_to_a_vanished_memory_is_skipped(embedded: Callable[..., ChromaDriver]):
    """If a delete stops between the memory and its links, related() ignores the leftover."""
    driver = embedded()
    a, b, c = (driver.store("u1", text) for text in ("a", "b", "c"))
    driver.associate(a.id, b.id)
    driver.associate(c.id, a.id, "LEADS_TO")
    driver._user_collection("u1").delete(ids=[b.id])  # as if the links' deletion had not happened
    assert [(r.memory.id, r.direction) for r in driver.related(a.id)] == [(c.id, "incoming")]
    assert driver.delete(c.id) is True
    assert driver._links.count() == 1, "deleting a memory deletes its links"


# ============================================================================ connection


@pytest.mark.parametrize("mode", ["embedded", "remote"])
def test_a_deleted_collection_is_a_typed_error(request: pytest.FixtureRequest, mode: str):
    driver: ChromaDriver = request.getfixturevalue(mode)()
    driver.store("u1", "x")
    driver.recall("u1")
    driver._client.delete_collection(driver._user_collection("u1").name)  # as an admin might
    with pytest.raises(BackendUnavailableError, match="collection of this store is gone") as e:
        driver.recall("u1")
    assert driver.location in str(e.value)
    assert request.getfixturevalue(mode)().recall("u1") == [], "opened again: no memories"


def test_unreachable_server_is_a_typed_error_naming_the_url(base: Settings):
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="2 attempts") as caught:
        ChromaDriver(base.replace(chroma_url=url, chroma_retries=1), embedder=fast_embedder())
    assert url in str(caught.value) and isinstance(caught.value, ConnectionError)
    assert time.monotonic() - started >= 0.25, "one retry after the backoff"


def test_a_server_that_never_answers_times_out(base: Settings):
    with socket.socket() as listener:  # accepts connections, never says a word
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError, match="Timeout") as caught:
            ChromaDriver(
                base.replace(chroma_url=url, chroma_timeout=0.3, chroma_retries=0),
                embedder=fast_embedder(),
            )
        assert url in str(caught.value)
        assert time.monotonic() - started < 5


def test_server_stopped_then_restarted(base: Settings, own_server: ChromaServer):
    """Stopped: every call raises BackendUnavailableError naming the URL, health_check says so.
    Restarted on the same port and directory: the same driver works again, data intact."""
    driver = ChromaDriver(
        base.replace(chroma_url=own_server.url, chroma_retries=1), embedder=fast_embedder()
    )
    try:
        m = driver.store("u1", "survives a restart")
        own_server.stop()
        for call in (
            lambda: driver.recall("u1", query="survives"),
            lambda: driver.store("u1", "while down"),
            lambda: driver.get(m.id),
        ):
            with pytest.raises(BackendUnavailableError) as caught:
                call()
            assert own_server.url in str(caught.value)
        report = driver.health_check()
        assert report["status"] == "error" and own_server.url in report["error"]
        own_server.start()
        assert driver.get(m.id) == m
        assert [h.memory.id for h in driver.recall("u1", query="survives a restart")] == [m.id]
        assert driver.count() == 1, "the failed store wrote nothing"
        assert driver.health_check()["status"] == "ok"
    finally:
        driver.close()


def test_transient_failures_are_retried(
    base: Settings, own_server: ChromaServer, caplog: pytest.LogCaptureFixture
):
    """A server that comes back within the retries is never noticed by the caller."""
    driver = ChromaDriver(
        base.replace(chroma_url=own_server.url, chroma_retries=6), embedder=fast_embedder()
    )
    try:
        m = driver.store("u1", "still here")
        own_server.stop()
        restart = threading.Thread(target=own_server.start)
        restart.start()
        try:
            with caplog.at_level("WARNING", logger="memory_drivers.drivers.chroma"):
                assert [h.memory.id for h in driver.recall("u1")] == [m.id]
        finally:
            restart.join()
        assert any("retrying" in r.getMessage() for r in caplog.records)
    finally:
        driver.close()
