"""Export, import and copy (memory_drivers.transfer) on real stores: every pair of built-in
drivers round-trips (sqlite files, pgvector on the suite's PostgreSQL, embedded Chroma, automem
over HTTP against ``memory-drivers serve``), imports are idempotent and resumable, and vectors
are reused or re-embedded as the embedders say."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from automem_support import TOKEN, sqlite_store

from memory_drivers.base import BaseMemoryDriver
from memory_drivers.config import Settings, build_settings
from memory_drivers.drivers.automem import AutoMemDriver
from memory_drivers.embeddings.hashing import HashingEmbedder
from memory_drivers.errors import ConflictError, EmbeddingError, ValidationError
from memory_drivers.server import ServerThread, create_app
from memory_drivers.testing.embedders import FaultyEmbedder
from memory_drivers.transfer import (
    copy_store,
    export_records,
    export_store,
    import_store,
    location_settings,
)
from memory_drivers.transfer.format import (
    AssociationRecord,
    DocumentRecord,
    End,
    Header,
    MemoryRecordLine,
)

KINDS = ("sqlite", "pgvector", "chroma", "automem")
T0 = datetime(2024, 3, 1, 9, 30, 15, 123456, tzinfo=timezone.utc)

Opener = Callable[..., BaseMemoryDriver]


def settings() -> Settings:
    return build_settings(_env_file=None, embedding_provider="hashing")


@pytest.fixture
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """``open_store(kind, embedder=None)``: a new, empty store of that kind (two calls give two
    stores), closed and removed afterwards."""
    cleanups: list[Callable[[], None]] = []
    counter = iter(range(1000))

    def open_(kind: str, embedder: Any = None) -> BaseMemoryDriver:
        embedder = embedder or HashingEmbedder(64)
        place = tmp_path / f"{kind}-{next(counter)}"
        base = settings()
        driver: BaseMemoryDriver
        if kind == "sqlite":
            driver = sqlite_store(place, base, embedder)
        elif kind == "pgvector":
            from memory_drivers.drivers.pgvector import PgVectorDriver

            postgres = request.getfixturevalue("postgres")
            name, url = postgres.create_database()
            cleanups.append(lambda: postgres.drop_database(name))
            driver = PgVectorDriver(
                base.replace(database_url=url, memory_auto_migrate=True), embedder=embedder
            )
        elif kind == "chroma":
            from memory_drivers.drivers.chroma import ChromaDriver

            driver = ChromaDriver(
                base.replace(chroma_path=place, chroma_url=None), embedder=embedder
            )
        else:
            served = sqlite_store(place, base, embedder)
            thread = ServerThread(create_app(served, api_token=TOKEN)).start()
            cleanups.append(served.close)
            cleanups.append(thread.stop)
            driver = AutoMemDriver(
                base.replace(
                    automem_url=thread.url, automem_api_token=TOKEN, automem_retry_backoff=0.01
                ),
                embedder=embedder,
            )
        cleanups.append(driver.close)
        return driver

    try:
        yield open_
    finally:
        for cleanup in reversed(cleanups):
            cleanup()


def fill(driver: BaseMemoryDriver) -> dict[str, str]:
    """Two users' memories (a conversation, tags, metadata, fixed times), two links and a
    knowledge document of three chunks. Returns the memories' ids by name."""
    items = [
        {
            "user_id": "alice",
            "conversation_id": "c1",
            "content": "I adopted a puppy named Rex",
            "tags": ["pets", "home"],
            "metadata": {"n": 1, "ok": True, "x": None, "nested": {"a": [1, 2.5]}},
            "importance": 0.9,
            "memory_type": "episodic",
            "source": "chat",
            "created_at": T0,
            "updated_at": T0 + timedelta(hours=1),
        },
        {
            "user_id": "alice",
            "conversation_id": "c1",
            "content": 'What is its name? Ünïcödé "quotes"\nsecond line',
            "created_at": T0 + timedelta(minutes=1),
        },
        {"user_id": "bob", "content": "Bob likes green tea", "created_at": T0 + timedelta(days=2)},
    ]
    stored = driver.store_many(items)
    ids = {"puppy": stored[0].id, "name": stored[1].id, "tea": stored[2].id}
    driver.import_associations(
        [
            {
                "source_id": ids["puppy"],
                "target_id": ids["name"],
                "relationship_type": "LEADS_TO",
                "strength": 0.75,
                "created_at": T0 + timedelta(minutes=5),
            },
            {
                "source_id": ids["name"],
                "target_id": ids["puppy"],
                "relationship_type": "RELATES_TO",
                "strength": 0.25,
                "created_at": T0 + timedelta(minutes=6),
            },
        ]
    )
    text = " ".join(f"Sentence number {i} of the travel policy." for i in range(150))
    driver.store_global_knowledge(
        text, "policies", title="Travel", doc_id="travel", metadata={"v": 2}
    )
    return ids


def comparable(driver: BaseMemoryDriver, **filters: Any) -> dict[str, Any]:
    """What an export holds, in a form two exports can be compared by (vectors apart)."""
    out: dict[str, Any] = {"memories": [], "vectors": {}, "associations": [], "knowledge": []}
    for record in export_records(driver, **filters):
        if isinstance(record, MemoryRecordLine):
            out["memories"].append(record.memory.model_dump(mode="json"))
            if record.vector is not None:
                out["vectors"][record.memory.id] = record.vector
        elif isinstance(record, AssociationRecord):
            out["associations"].append(record.association.model_dump(mode="json"))
        elif isinstance(record, DocumentRecord):
            out["knowledge"].append([c.model_dump(mode="json") for c in record.chunks])
            if record.vectors is not None:
                for chunk, vector in zip(record.chunks, record.vectors, strict=True):
                    out["vectors"][chunk.id] = vector
        elif isinstance(record, End):
            out["counts"] = record.counts
    out["associations"].sort(key=lambda a: (a["source_id"], a["target_id"]))
    return out


@pytest.mark.parametrize("target_kind", KINDS)
@pytest.mark.parametrize("source_kind", KINDS)
def test_round_trip_between_every_pair_of_drivers(
    open_store: Opener, tmp_path: Path, source_kind: str, target_kind: str
) -> None:
    """export -> import -> export gives the same records: ids, contents, times, tags,
    metadata, associations (with their times), knowledge chunks; vectors equal within 1e-6
    when both ends keep them. Failing on one pair usually means a driver drops or rounds a
    field on write or read (times to milliseconds, a null metadata value, tag order)."""
    source = open_store(source_kind)
    fill(source)
    before = comparable(source)
    assert before["counts"] == {"memories": 3, "associations": 2, "knowledge_documents": 1}
    path = tmp_path / "export.jsonl.gz"
    export_store(source, path)
    target = open_store(target_kind)
    result = import_store(target, path)
    assert result.memories == {"stored": 3, "replaced": 0, "skipped": 0}
    assert result.associations == 2
    assert result.knowledge_documents["stored"] == 1
    assert result.vectors == ("reused" if source.vectors_readable else "re-embedded")
    after = comparable(target)
    for key in ("memories", "associations", "knowledge", "counts"):
        assert after[key] == before[key], key
    if source.vectors_readable and target.vectors_readable:
        assert before["vectors"].keys() == after["vectors"].keys()
        for key, vector in before["vectors"].items():
            np.testing.assert_allclose(after["vectors"][key], vector, atol=1e-6)
    # The store works as one filled directly: keyword recall finds the puppy via context.
    hits = target.recall("alice", query="puppy", search="keyword")
    assert {h.memory.content[:8] for h in hits} >= {"I adopte"}


def test_import_twice_and_resume_after_a_crash(open_store: Opener, tmp_path: Path) -> None:
    """Importing the same file again changes nothing; an import that died half way (here: the
    embedder crashes on the third batch) finishes when run again, nothing doubled."""
    source = open_store("sqlite")
    source.store_many(
        [
            {"user_id": "u", "content": f"memory {i}" + (" POISON" if i == 25 else "")}
            for i in range(30)
        ]
    )
    path = tmp_path / "all.jsonl"
    export_store(source, path)
    other = HashingEmbedder(32)  # another model: the import embeds, so the crash can happen
    target = open_store("sqlite", FaultyEmbedder(other, "raise"))
    with pytest.raises(EmbeddingError, match=r"memories #21-#30: .*20 memories before them"):
        import_store(target, path, batch_size=10)
    assert target.count() == 20
    target.close()
    healed = sqlite_store(
        Path(target.settings.memory_db_url[len("sqlite:///") :]).parent, settings(), other
    )
    try:
        done = import_store(healed, path, batch_size=10)
        assert done.memories == {"stored": 10, "replaced": 0, "skipped": 20}
        assert done.vectors == "re-embedded"
        again = import_store(healed, path, batch_size=10)
        assert again.memories == {"stored": 0, "replaced": 0, "skipped": 30}
        assert healed.count() == 30
        assert comparable(healed)["memories"] == comparable(source)["memories"]
    finally:
        healed.close()


def test_on_conflict_replace_and_fail(open_store: Opener, tmp_path: Path) -> None:
    source = open_store("sqlite")
    ids = fill(source)
    path = tmp_path / "x.jsonl"
    export_store(source, path)
    target = open_store("sqlite")
    import_store(target, path)
    target.update(ids["tea"], content="Bob now prefers coffee")
    target.delete_global_knowledge("travel")
    target.store_global_knowledge("a different travel policy", "policies", doc_id="travel")

    with pytest.raises(ConflictError, match="already exists"):
        import_store(target, path, on_conflict="fail")
    assert target.get(ids["tea"]).content == "Bob now prefers coffee"  # nothing written

    kept = import_store(target, path)  # skip: the changed memory stays as it is
    assert kept.memories == {"stored": 0, "replaced": 0, "skipped": 3}
    assert target.get(ids["tea"]).content == "Bob now prefers coffee"

    replaced = import_store(target, path, on_conflict="replace")
    assert replaced.memories == {"stored": 0, "replaced": 1, "skipped": 2}
    assert replaced.knowledge_documents == {"stored": 0, "replaced": 1, "skipped": 0}
    now, then = comparable(target), comparable(source)
    assert (now["memories"], now["knowledge"]) == (then["memories"], then["knowledge"])
    assert target.get(ids["tea"]).content == "Bob likes green tea"
    assert len(target.get_global_knowledge("travel").chunks) == 3
    with pytest.raises(ValidationError, match="on_conflict must be one of skip, replace, fail"):
        import_store(target, path, on_conflict="overwrite")


def test_vectors_reused_only_for_the_same_model(open_store: Opener, tmp_path: Path) -> None:
    """Same embedder: the stored vectors are copied, not recomputed. Another model (or another
    dimension): every text is embedded again, in batches, by the target's model."""
    source = open_store("sqlite", HashingEmbedder(64))
    fill(source)
    same = open_store("sqlite", HashingEmbedder(64))
    assert copy_store(source, same).vectors == "reused"
    other_model = HashingEmbedder(48)
    different = open_store("sqlite", other_model)
    assert copy_store(source, different).vectors == "re-embedded"
    memories = list(different.iter_memories())
    vectors = different.get_vectors([m.id for m in memories])
    expected = other_model.embed_documents([m.content for m in memories])
    for memory, row in zip(memories, expected, strict=True):
        np.testing.assert_allclose(vectors[memory.id], row / np.linalg.norm(row), atol=1e-6)


def test_partial_exports(open_store: Opener) -> None:
    """--user and --since/--until narrow the memories; links only between exported memories;
    no knowledge unless asked."""
    source = open_store("sqlite")
    ids = fill(source)
    alice = comparable(source, user_id="alice")
    assert [m["id"] for m in alice["memories"]] == [ids["puppy"], ids["name"]]
    assert len(alice["associations"]) == 2 and alice["knowledge"] == []
    first = comparable(source, until=T0 + timedelta(seconds=30), include_knowledge=True)
    assert [m["id"] for m in first["memories"]] == [ids["puppy"]]
    assert first["associations"] == [] and len(first["knowledge"]) == 1
    with pytest.raises(ValidationError, match=r"since .* must be before until"):
        comparable(source, since=T0, until=T0)


def test_file_format_checks(open_store: Opener, tmp_path: Path) -> None:
    """A file cut short, a newer version, another format and a damaged gzip are typed errors
    that say what is wrong; a header-less file of the first export command still imports."""
    source = open_store("sqlite")
    fill(source)
    path = tmp_path / "x.jsonl"
    export_store(source, path)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    header = json.loads(lines[0])
    assert header["format"] == "memory-drivers-export" and header["version"] == 1
    assert header["embedder"] == {"name": "hashing-64", "dimension": 64}
    target = open_store("sqlite")

    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:3]), encoding="utf-8")
    with pytest.raises(ValidationError, match="without its end record: it was cut short"):
        import_store(target, cut)
    assert target.count() == 2  # what was read is stored; importing the whole file finishes

    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({**header, "version": 99}) + "\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=r"version 99, newer than .* Upgrade"):
        import_store(target, newer)
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"kind": "header", "format": "mem0"}\n', encoding="utf-8")
    with pytest.raises(ValidationError, match="not a memory-drivers export"):
        import_store(target, foreign)
    damaged = tmp_path / "damaged.jsonl.gz"
    damaged.write_bytes(gzip.compress("".join(lines).encode())[:-30])
    with pytest.raises(ValidationError, match="damaged or cut-short gzip"):
        import_store(open_store("sqlite"), damaged)

    legacy = tmp_path / "legacy.jsonl"
    memories = [json.loads(line)["memory"] for line in lines if '"kind":"memory"' in line]
    legacy.write_text("".join(json.dumps(m) + "\n" for m in memories), encoding="utf-8")
    fresh = open_store("sqlite")
    assert import_store(fresh, legacy).memories["stored"] == 3
    assert comparable(fresh)["memories"] == comparable(source)["memories"]


def test_locations() -> None:
    base = settings()
    assert location_settings("sqlite:///tmp/x.db", base)[1].memory_db_url == "sqlite:///tmp/x.db"
    name, pg = location_settings("postgresql://u@h:5/db", base)
    assert (name, pg.database_url) == ("pgvector", "postgresql://u@h:5/db")
    name, am = location_settings("http://127.0.0.1:9/", base)
    assert (name, am.automem_url) == ("automem", "http://127.0.0.1:9/")
    name, ch = location_settings("chroma+http://127.0.0.1:8000", base)
    assert (name, ch.chroma_url) == ("chroma", "http://127.0.0.1:8000")
    name, local = location_settings("chroma:///data/chroma", base)
    assert (name, local.chroma_path, local.chroma_url) == ("chroma", Path("/data/chroma"), None)
    assert location_settings("PgVector", base) == ("pgvector", base)
    with pytest.raises(ValueError, match="cannot tell which store 'ftp://x' is"):
        location_settings("ftp://x", base)


def test_header_names_the_embedder_or_none(open_store: Opener) -> None:
    """automem keeps its vectors to itself: its export carries none, and says so."""
    automem = open_store("automem")
    automem.store("u", "hello")
    records = list(export_records(automem))
    assert isinstance(records[0], Header) and records[0].embedder is None
    assert isinstance(records[1], MemoryRecordLine) and records[1].vector is None


def test_copy_reads_the_source_ahead_in_order_and_stops_with_the_consumer() -> None:
    """copy_store reads the source on a thread of its own (overlapping the target's writes):
    every record comes through in order across chunks, a reader's error is raised after the
    records before it, and a consumer that stops early stops the reader and closes the
    source."""
    import threading

    from memory_drivers.transfer.core import _read_ahead

    assert list(_read_ahead(iter(range(23)), 4)) == list(range(23))  # type: ignore[arg-type]

    def failing() -> Iterator[int]:
        yield from range(10)
        raise ConflictError("the source broke")

    got: list[int] = []
    with pytest.raises(ConflictError, match="the source broke"):
        for record in _read_ahead(failing(), 3):  # type: ignore[arg-type]
            got.append(record)  # type: ignore[arg-type]
    assert got == list(range(10))

    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    before = threading.active_count()
    stream = _read_ahead(endless(), 5)  # type: ignore[arg-type]
    assert [next(stream) for _ in range(12)] == list(range(12))
    stream.close()
    assert closed.is_set(), "the source generator was closed"
    assert threading.active_count() == before, "the reader thread ended"
