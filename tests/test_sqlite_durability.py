"""Durability of the sqlite driver: crashes, several processes, and the FAISS index file.

Everything here uses real SQLite files, real FAISS indexes and real subprocesses
(``tests/sqlite_worker.py``); nothing is mocked. SQLite is the source of truth; the FAISS index
(in memory, and its snapshot file beside the database) must always answer as if it had just been
rebuilt from SQLite.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest
from sqlite_worker import WorkerProcess, connect

from memory_drivers.config import Settings, build_settings
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.embeddings import Embedder
from memory_drivers.embeddings.hashing import HashingEmbedder
from memory_drivers.errors import BackendUnavailableError, EmbedderMismatchError, MemoryDriverError

USER = "u1"
INDEX_LOGGER = "memory_drivers.drivers.sqlite.faiss_index"


# ---------------------------------------------------------------------- helpers
def settings_for(url: str, **changes: object) -> Settings:
    """Settings for ``url`` that ignore any .env file."""
    return build_settings(_env_file=None, memory_db_url=url, **changes)


def open_store(url: str, embedder: Embedder | None = None, **changes: object) -> SQLiteDriver:
    return SQLiteDriver(settings_for(url, **changes), embedder=embedder or HashingEmbedder(256))


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def unique_content(label: str, rng: random.Random) -> str:
    """A content no other memory shares a term with, except the label words."""
    return f"{label} tok{rng.getrandbits(48):012x} tok{rng.getrandbits(48):012x}"


def populate(driver: SQLiteDriver, label: str, count: int, seed: int = 0) -> dict[str, str]:
    """Store ``count`` memories of USER; id -> content."""
    rng = random.Random(f"{label}-{seed}")
    memories = driver.store_many(
        [{"user_id": USER, "content": unique_content(label, rng)} for _ in range(count)]
    )
    return {m.id: m.content for m in memories}


def true_score(driver: SQLiteDriver, query: str, content: str) -> float:
    """The cosine similarity the embedder gives, computed without any index."""
    embedder = driver.embedder
    return float(np.dot(embedder.embed_query(query), embedder.embed_documents([content])[0]))


def assert_found(driver: SQLiteDriver, memory_id: str, content: str, user: str = USER) -> None:
    """The memory is in SQLite and the vector index finds it by its exact content."""
    memory = driver.get(memory_id)
    assert memory is not None, f"memory {memory_id} ({content!r}) is lost"
    assert memory.content == content
    hits = driver.recall(user, query=content, top_k=1, search="vector")
    assert hits, f"vector recall of {content!r} found nothing"
    assert hits[0].memory.id == memory_id, (
        f"vector recall of {content!r} returned {hits[0].memory.content!r} "
        f"(score {hits[0].score}): the FAISS index does not match SQLite"
    )
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)


def assert_gone(driver: SQLiteDriver, memory_id: str, content: str, user: str = USER) -> None:
    """The memory is not in SQLite, and neither vector nor keyword recall returns it."""
    assert driver.get(memory_id) is None, f"deleted memory {memory_id} came back"
    for search in ("vector", "keyword", "hybrid"):
        hits = driver.recall(user, query=content, top_k=20, search=search)
        assert memory_id not in {h.memory.id for h in hits}, (
            f"recall (search={search}) returned deleted memory {memory_id}"
        )


def assert_scores_true(driver: SQLiteDriver, query: str, user: str = USER) -> None:
    """Every vector hit's score is the embedder's cosine similarity of query and content.

    A mismatch means the index holds a vector that is not the memory's current one (a stale,
    foreign or future index file was trusted)."""
    for hit in driver.recall(user, query=query, top_k=10, search="vector"):
        expected = true_score(driver, query, hit.memory.content)
        assert hit.score == pytest.approx(expected, abs=1e-4), (
            f"{hit.memory.content!r} scored {hit.score} for {query!r}; its vector says {expected}"
        )


def assert_index_in_sync(driver: SQLiteDriver) -> None:
    health = driver.health_check()
    assert health["status"] == "ok", health
    assert health["index"]["in_sync"] is True, health["index"]


def vector_log_rows(db: Path) -> int:
    with connect(db) as connection:
        return int(connection.execute("SELECT count(*) FROM vector_log").fetchone()[0])


def saved_position(db: Path) -> int:
    """The log position of the index file the database records as saved."""
    with connect(db) as connection:
        row = connection.execute(
            "SELECT value FROM memory_store_info WHERE key = 'vector_log_compacted'"
        ).fetchone()
    return int(row[0]) if row else 0


def log_floor(db: Path) -> int:
    """Log entries up to here are deleted (an index older than this cannot replay)."""
    with connect(db) as connection:
        first, last = connection.execute(
            "SELECT (SELECT min(seq) FROM vector_log), "
            "(SELECT seq FROM sqlite_sequence WHERE name = 'vector_log')"
        ).fetchone()
    return int(last or 0) if first is None else int(first) - 1


def sqlite_files(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "m.db"


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread() -> Iterator[None]:
    """FAISS's OpenMP threads cost ~5 ms per tiny search on 2 cores, and these tests search
    thousands of times. One thread changes the speed only, never the results."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


# ---------------------------------------------------------------------- crash safety
def _wait_stopped(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return
        time.sleep(0.0005)
    raise AssertionError(f"process {pid} did not stop")


def _kill_during_index_save(worker: WorkerProcess, index: Path, timeout: float = 10.0) -> bool:
    """Freeze the worker at random moments until it is caught writing the index file (its
    temporary file exists), then SIGKILL it there. False if never caught (killed anyway)."""
    rng = random.Random(7)
    prefix = f".{index.name}.{worker.pid}."
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        os.kill(worker.pid, signal.SIGSTOP)
        _wait_stopped(worker.pid)
        if any(p.name.startswith(prefix) for p in index.parent.iterdir()):
            worker.kill()
            return True
        os.kill(worker.pid, signal.SIGCONT)
        time.sleep(rng.uniform(0, 0.004))
    worker.kill()
    return False


def test_kill_at_any_instant_keeps_every_acknowledged_write(db: Path, tmp_path: Path) -> None:
    """A worker stores, batches, deletes and recalls (saving the index file every 5 changes)
    and is SIGKILLed three times at different moments, once while writing the index file.

    After each kill every acknowledged store is found by get() and by vector recall, every
    acknowledged delete is gone, and the index agrees with SQLite. A failure means a returned
    store was not committed, a delete came back, or the index file/log replay after a crash is
    wrong."""
    url = url_of(db)
    stored: dict[str, str] = {}
    deleted: set[str] = set()
    in_doubt: set[str] = set()  # deletes that had started but not returned when killed
    caught_in_save = False
    for round_no, moment in enumerate(["at once", "a little later", "during an index save"]):
        with WorkerProcess(
            "churn", url, f"r{round_no}", "5", stderr_path=tmp_path / f"churn{round_no}.err"
        ) as worker:
            assert worker.read_line() == "ready"
            lines: list[str] = []
            while sum(line.startswith("stored ") for line in lines) < 60:
                lines.append(worker.read_line())
            if moment == "a little later":
                time.sleep(0.05)
            if moment == "during an index save":
                caught_in_save = _kill_during_index_save(worker, db.with_suffix(".faiss"))
            worker.kill()
            lines += worker.rest()
            assert "Traceback" not in worker.stderr(), worker.stderr()
        for line in lines:
            word, memory_id, *content = line.split(" ", 2)
            if word == "stored":
                stored[memory_id] = content[0]
            elif word == "deleting":
                in_doubt.add(memory_id)
            elif word == "deleted":
                in_doubt.discard(memory_id)
                deleted.add(memory_id)

        with open_store(url) as driver:
            for memory_id, content in stored.items():
                if memory_id in deleted:
                    assert_gone(driver, memory_id, content, "crash-user")
                elif memory_id in in_doubt:
                    # Either outcome is fine, but SQLite and the index must agree on it.
                    if driver.get(memory_id) is None:
                        assert_gone(driver, memory_id, content, "crash-user")
                    else:
                        assert_found(driver, memory_id, content, "crash-user")
                else:
                    assert_found(driver, memory_id, content, "crash-user")
            # Stores in flight when killed may or may not have landed; whatever is in SQLite
            # must be found through the index too.
            for memory in driver.iter_memories():
                if memory.id not in stored:
                    assert_found(driver, memory.id, memory.content, "crash-user")
            assert driver.count() >= len(stored) - len(deleted) - len(in_doubt)
            assert_index_in_sync(driver)
    assert deleted, "the worker never deleted anything; the test did not exercise deletes"
    if not caught_in_save:
        pytest.skip("could not freeze the worker inside an index save (all else passed)")


# ---------------------------------------------------------------------- several processes
def test_another_process_sees_my_writes_and_i_see_its_writes(db: Path, tmp_path: Path) -> None:
    """Process A (this test, its index already loaded) and worker B share the files: each sees
    the other's stores, knowledge, deletes and content updates, by vector and keyword recall.

    A failure means the in-memory FAISS index of a long-running process does not follow the
    vector log written by another process (stale results, or deleted memories returned)."""
    url = url_of(db)
    rng = random.Random(1)
    with (
        open_store(url) as a,
        WorkerProcess("serve", url, "1000", stderr_path=tmp_path / "serve.err") as b,
    ):
        mine = populate(a, "seed", 3)
        a.recall(USER, query="seed")  # A's index is loaded now
        assert b.read_line() == '{"ready": true}'
        b.call("recall", user=USER, query="seed")  # and B's

        # B writes, A reads.
        contents = [unique_content("from b", rng) for _ in range(4)]
        ids = [b.call("store", user=USER, content=c) for c in contents]
        doc_text = unique_content("knowledge written by b", rng)
        b.call("store_knowledge", content=doc_text, category="docs", doc_id="doc-b")
        for memory_id, content in zip(ids, contents, strict=True):
            assert_found(a, memory_id, content)
            keyword = a.recall(USER, query=content, top_k=1, use_vector=False)
            assert [h.memory.id for h in keyword] == [memory_id]
        knowledge = a.recall_global_knowledge(doc_text, top_k=1)
        assert knowledge[0].chunk.doc_id == "doc-b"
        assert knowledge[0].score == pytest.approx(1.0, abs=1e-4)

        assert b.call("delete", id=ids[0]) is True
        assert_gone(a, ids[0], contents[0])

        new_content = unique_content("rewritten by b", rng)
        assert b.call("update", id=ids[1], content=new_content) == ids[1]
        assert_found(a, ids[1], new_content)
        assert_scores_true(a, contents[1])  # the old vector is gone from A's index

        # A writes, B reads.
        mine_contents = [unique_content("from a", rng) for _ in range(3)]
        mine_ids = [a.store(USER, c).id for c in mine_contents]
        a.store_global_knowledge(doc_text + " revised", "docs", doc_id="doc-b")
        for memory_id, content in zip(mine_ids, mine_contents, strict=True):
            assert b.call("recall", user=USER, query=content, top_k=1)[0][0] == memory_id
            assert (
                b.call("recall", user=USER, query=content, top_k=1, use_vector=False)[0][0]
                == memory_id
            )
        doc_hits = b.call("recall_knowledge", query=doc_text + " revised")
        assert doc_hits[0][0] == "doc-b" and doc_hits[0][1] == pytest.approx(1.0, abs=1e-4)

        a.delete(mine_ids[0])
        assert b.call("get", id=mine_ids[0]) is None
        for use_vector in (True, False):
            hits = b.call(
                "recall", user=USER, query=mine_contents[0], top_k=20, use_vector=use_vector
            )
            assert mine_ids[0] not in [h[0] for h in hits]

        rewritten = unique_content("rewritten by a", rng)
        a.update(mine_ids[1], content=rewritten)
        best = b.call("recall", user=USER, query=rewritten, top_k=1)[0]
        assert best[0] == mine_ids[1] and best[1] == pytest.approx(1.0, abs=1e-4)
        old_hits = b.call("recall", user=USER, query=mine_contents[1], top_k=5)
        assert all(score < 0.99 for _, score in old_hits), "B still has the old vector"

        assert b.call("count") == a.count() == len(mine) + 3 + 2
        assert b.call("close") is True
        assert b.wait() == 0
        assert_index_in_sync(a)


def test_two_processes_writing_at_once_both_land(db: Path, tmp_path: Path) -> None:
    """Two workers store 100 memories each at the same time (recalling and saving the index
    file as they go): all 200 land, no 'database is locked'. A failure means writers do not
    queue on the busy timeout (BEGIN IMMEDIATE) or index saves/compaction collide."""
    url = url_of(db)
    open_store(url).close()  # the schema exists before both start
    workers = [
        WorkerProcess("store", url, USER, "100", f"w{i}", "5", stderr_path=tmp_path / f"w{i}.err")
        for i in range(2)
    ]
    try:
        for worker in workers:
            assert worker.read_line() == "ready"
        for worker in workers:
            worker.send("go")
        ids: set[str] = set()
        for worker in workers:
            lines = worker.rest(timeout=60)
            assert worker.wait() == 0, worker.stderr()
            assert lines[-1] == "done"
            ids |= {line.split()[1] for line in lines if line.startswith("stored ")}
            assert "locked" not in worker.stderr()
        assert len(ids) == 200
    finally:
        for worker in workers:
            worker.close()
    with open_store(url) as driver:
        assert driver.count() == 200
        assert_index_in_sync(driver)
        for memory in driver.iter_memories():
            assert_found(driver, memory.id, memory.content)


def test_writers_and_readers_at_once_never_rebuild(db: Path, tmp_path: Path) -> None:
    """Two writers and two readers share a store whose index file exists; the writers' saves
    replace the file meanwhile. No process rebuilds its index from SQLite
    (each loads the file once and then follows the log), and a process opening afterwards
    loads the last file. A failure means processes throw away each other's work: a file
    overwritten by an older snapshot, a reader distrusting a file saved after its snapshot
    began, or the log compacted before the others could replay it."""
    url = url_of(db)
    with open_store(url) as driver:
        for user in range(8):
            driver.store_many(
                [{"user_id": f"user{user}", "content": f"seed {user} {i}"} for i in range(50)]
            )
    roles = ["writer", "reader"] * 2
    workers = [
        WorkerProcess("mix", url, role, str(i), "60", "50", stderr_path=tmp_path / f"{i}.err")
        for i, role in enumerate(roles)
    ]
    try:
        for worker in workers:
            assert worker.read_line(timeout=120) == "ready"
        for worker in workers:
            worker.send("go")
        reports = []
        for worker in workers:
            assert worker.read_line(timeout=120) == "done", worker.stderr()
            reports.append(json.loads(worker.read_line()))
            assert worker.wait() == 0, worker.stderr()
    finally:
        for worker in workers:
            worker.close()
    for role, report in zip(roles, reports, strict=True):
        assert report["rebuilds"] == 0, f"a {role} rebuilt its index: {report}"
        # a reader loads the file at its first search; a writer only once the file lacks
        # enough of its writes to be saved (SQLiteDriver._after_write), which depends on timing
        loaded = role == "reader" or report["loaded"]
        assert (report["file_loads"] >= 1) == loaded, report
        assert report["saves"] == 0 or report["loaded"], report
    with open_store(url) as driver:
        assert driver.count() == 400 + 2 * 60 * 20
        assert_index_in_sync(driver)
        assert driver.stats()["index"]["rebuilds"] == 0


def test_an_index_ahead_of_an_older_snapshot_is_kept(db: Path) -> None:
    """A read transaction that began before this process's index took in newer writes (another
    thread of a server, say) finds the index ahead of its snapshot: that is not a database
    restored from a backup, so the index is neither reloaded nor rebuilt, and the writes are
    found afterwards. A failure means every such read reloads the whole index."""
    with open_store(url_of(db)) as driver:
        populate(driver, "before", 5)
        driver.recall(USER, query="before")
        counters = dict(driver.stats()["index"])
        with driver._read() as older:
            older.exec_driver_sql("SELECT count(*) FROM memories").fetchall()  # snapshot taken
            later = populate(driver, "later", 3)  # committed on another connection
            index = driver._vector_index(older)
            assert index.seq > int(
                older.exec_driver_sql(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'vector_log'"
                ).fetchone()[0]
            )
            index.ensure_current(older)
        after = driver.stats()["index"]
        for counter in ("rebuilds", "file_loads"):
            assert after[counter] == counters[counter], (counter, counters, after)
        for memory_id, content in later.items():
            assert_found(driver, memory_id, content)


# ---------------------------------------------------------------------- the index file
def _store_with_data(url: str, label: str = "own", count: int = 20) -> tuple[dict[str, str], str]:
    with open_store(url) as driver:
        memories = populate(driver, label, count)
        doc_text = f"{label} knowledge text about saffron rice"
        driver.store_global_knowledge(doc_text, "docs", doc_id=f"{label}-doc")
        driver.recall(USER, query=label)  # load the index, so closing saves it
    return memories, doc_text


def _assert_store_answers(
    url: str,
    memories: dict[str, str],
    gone: dict[str, str] | None = None,
    doc: tuple[str, str] | None = None,
) -> None:
    with open_store(url) as driver:
        for memory_id, content in memories.items():
            assert_found(driver, memory_id, content)
        for memory_id, content in (gone or {}).items():
            assert_gone(driver, memory_id, content)
        if doc is not None:
            hit = driver.recall_global_knowledge(doc[1], top_k=1)[0]
            assert hit.chunk.doc_id == doc[0] and hit.score == pytest.approx(1.0, abs=1e-4)
        assert_index_in_sync(driver)


def test_missing_index_file_is_rebuilt(db: Path) -> None:
    """Deleting the .faiss file while closed loses nothing: it is rebuilt from SQLite."""
    memories, doc_text = _store_with_data(url_of(db))
    index = db.with_suffix(".faiss")
    assert index.exists(), "closing a store with a loaded index should save it beside the DB"
    index.unlink()
    _assert_store_answers(url_of(db), memories, doc=("own-doc", doc_text))
    assert index.exists()


def test_index_stats_have_the_same_keys_before_the_index_is_loaded(db: Path) -> None:
    """stats()["index"] of a process that has not loaded its index yet has the counters, at
    zero, so a caller (or a test) never meets a missing key; a search loads it and counts."""
    from memory_drivers.drivers.sqlite.faiss_index import COUNTERS

    memories, _ = _store_with_data(url_of(db))
    with open_store(url_of(db)) as driver:
        before = driver.stats()["index"]
        assert before["loaded"] is False
        assert {k: before[k] for k in COUNTERS} == dict.fromkeys(COUNTERS, 0)
        driver.recall(USER, query=next(iter(memories.values())), top_k=1, search="vector")
        after = driver.stats()["index"]
        assert after["loaded"] is True and after["file_loads"] == 1 and after["rebuilds"] == 0


def _corrupt_middle(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.seek(size // 2)
        handle.write(os.urandom(64))


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size * 2 // 3)


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(5000))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _split(path: Path) -> tuple[dict, bytes]:
    """The header and the parts (one run of bytes) of an index file."""
    data = path.read_bytes()
    assert data[:8] == b"MDFAISS1"
    size = int.from_bytes(data[8:12], "little")
    return json.loads(data[12 : 12 + size]), data[12 + size :]


def _join(path: Path, header: dict, payload: bytes) -> None:
    """Write an index file whose header is exactly its own length (no room padded)."""
    text = json.dumps(header).encode()
    path.write_bytes(b"MDFAISS1" + len(text).to_bytes(4, "little") + text + payload)


def _sizes_misaligned(path: Path) -> None:
    """Parts that do not end where the header says (checksum and total still right): FAISS
    reads the first index and stops short of its declared end."""
    header, payload = _split(path)
    first, second = header["sizes"]
    header["sizes"] = [first + 8, second - 8]
    _join(path, header, payload)


@pytest.mark.parametrize(
    "damage",
    [_corrupt_middle, _truncate, _garbage, _empty, _sizes_misaligned],
    ids=["bytes-overwritten", "truncated", "garbage", "empty", "parts-misaligned"],
)
def test_corrupt_index_file_is_rebuilt_and_rewritten(db: Path, damage, caplog) -> None:
    """A damaged index file is detected (checksum, sizes, magic), rebuilt from SQLite, and
    replaced by a valid file on close, so the next open does not rebuild again. A failure
    means a corrupt file was trusted, crashed FAISS, or is rebuilt on every open forever."""
    memories, doc_text = _store_with_data(url_of(db))
    index = db.with_suffix(".faiss")
    damage(index)
    _assert_store_answers(url_of(db), memories, doc=("own-doc", doc_text))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=INDEX_LOGGER):
        _assert_store_answers(url_of(db), memories)
    rebuilt = [r.getMessage() for r in caplog.records if "rebuilding" in r.getMessage()]
    assert not rebuilt, f"the damaged file was not replaced by a valid one: {rebuilt}"
    assert index.read_bytes().startswith(b"MDFAISS1")


def test_index_file_with_a_header_of_its_own_length_is_loaded(db: Path) -> None:
    """Files are written with the header last, into room padded with spaces; a file whose
    header is exactly its length (as earlier versions wrote) is read the same, not rebuilt.
    Reading streams each part to FAISS and must stop at its declared end."""
    memories, doc_text = _store_with_data(url_of(db))
    index = db.with_suffix(".faiss")
    header, payload = _split(index)
    assert int.from_bytes(index.read_bytes()[8:12], "little") > len(json.dumps(header))  # room
    _join(index, header, payload)
    with open_store(url_of(db)) as driver:
        memory_id, content = next(iter(memories.items()))
        hits = driver.recall(USER, query=content, top_k=1, search="vector")
        assert hits[0].memory.id == memory_id
        state = driver.stats()["index"]
        assert state["file_loads"] == 1 and state["rebuilds"] == 0
    _assert_store_answers(url_of(db), memories, doc=("own-doc", doc_text))


def test_stale_index_file_is_caught_up_or_rebuilt(db: Path) -> None:
    """An old index file put back (or left behind) never returns deleted memories nor misses
    new ones: either the vector log is replayed on top of it, or, when the log was compacted
    past it, it is rebuilt."""
    url = url_of(db)
    memories, _ = _store_with_data(url)
    index = db.with_suffix(".faiss")
    oldest = index.with_name("oldest.faiss")
    shutil.copy(index, oldest)
    oldest_position = saved_position(db)

    # Writes without any recall leave the index file behind the vector log (not compacted).
    with open_store(url) as driver:
        more = populate(driver, "later", 10)
        victims = dict(list(memories.items())[:4])
        for memory_id in victims:
            assert driver.delete(memory_id)
    live = {k: v for k, v in {**memories, **more}.items() if k not in victims}
    _assert_store_answers(url, live, victims)  # replays the log on top of the file

    # More writes, and saves that compact the log past the oldest copy.
    with open_store(url, faiss_persist_every=5) as driver:
        for label in ("newer", "newest"):
            newest = populate(driver, label, 5)
            live.update(newest)
        victim_id = next(iter(more))
        driver.delete(victim_id)
        driver.recall(USER, query="newest")
    victims[victim_id] = live.pop(victim_id)
    assert log_floor(db) > oldest_position, "the log was not compacted past the oldest copy"
    shutil.copy(oldest, index)
    _assert_store_answers(url, live, victims)


def test_index_file_of_another_store_is_not_used(tmp_path: Path) -> None:
    """Another store's index file (same embedder, same pks) copied over this one's is refused
    (its store id differs): own memories are found with their own vectors, and the other
    store's contents do not match anything here exactly."""
    own_db, other_db = tmp_path / "own.db", tmp_path / "other.db"
    own, doc_text = _store_with_data(url_of(own_db), "own", 20)
    other, _ = _store_with_data(url_of(other_db), "other", 25)
    shutil.copy(other_db.with_suffix(".faiss"), own_db.with_suffix(".faiss"))
    _assert_store_answers(url_of(own_db), own, doc=("own-doc", doc_text))
    with open_store(url_of(own_db)) as driver:
        for content in list(other.values())[:5]:
            assert_scores_true(driver, content)
            hits = driver.recall(USER, query=content, top_k=5, search="vector")
            assert all(h.score < 0.99 for h in hits)


def test_index_file_newer_than_a_restored_database_is_not_used(db: Path, tmp_path: Path) -> None:
    """The database is restored from an older copy while the newer index file stays. The index
    must describe the restored database, right away and after the restored database's vector
    log grows past the file's position (as many rows as the file has vectors, so counting
    cannot tell). A failure means the file from the future was trusted: contents of the lost
    future are matched, restored or newer contents are missed."""
    url = url_of(db)
    rng = random.Random(5)
    old, _ = _store_with_data(url, "old", 30)
    backup = tmp_path / "backup"
    backup.mkdir()
    for path in sqlite_files(db):
        if path.exists():
            shutil.copy(path, backup / path.name)

    lost: dict[str, str] = {}
    with open_store(url) as driver:  # the future that will be lost: 4 rewrites, 1 delete, 1 add
        for memory_id in list(old)[:4]:
            lost[memory_id] = unique_content("lost rewrite", rng)
            driver.update(memory_id, content=lost[memory_id])
        driver.delete(list(old)[4])
        lost.update(populate(driver, "lost", 1, seed=1))
        driver.recall(USER, query="lost")

    for path in sqlite_files(db):
        path.unlink(missing_ok=True)
        if (backup / path.name).exists():
            shutil.copy(backup / path.name, path)

    _assert_store_answers(url, old)
    current = dict(old)
    with open_store(url) as driver:  # 7 log entries, one more than the lost future wrote
        for memory_id in list(old)[10:15]:
            current[memory_id] = unique_content("rewritten after restore", rng)
            driver.update(memory_id, content=current[memory_id])
        driver.delete(list(old)[15])
        del current[list(old)[15]]
        current.update(populate(driver, "after restore", 1, seed=2))
        driver.recall(USER, query="after restore")
    with open_store(url) as driver:
        for memory_id, content in current.items():
            assert_found(driver, memory_id, content)
        for content in lost.values():
            assert_scores_true(driver, content)
        assert_index_in_sync(driver)


def test_rebuild_index_on_demand(db: Path) -> None:
    """rebuild_index() rebuilds from SQLite, reports the counts, saves the file and leaves the
    index in sync."""
    url = url_of(db)
    memories, _doc_text = _store_with_data(url, "own", 12)
    with open_store(url) as driver:
        for memory_id in list(memories)[:2]:
            driver.delete(memory_id)
        chunks = len(driver.get_global_knowledge("own-doc").chunks)
        result = driver.rebuild_index()
        assert result["rebuilt"] is True
        assert result["memories"] == 10
        assert result["knowledge_chunks"] == chunks
        assert result["index_path"] == str(db.with_suffix(".faiss"))
        assert_index_in_sync(driver)
        assert vector_log_rows(db) == 0, "a rebuild saves the file and compacts the log"
        for memory_id, content in list(memories.items())[2:]:
            assert_found(driver, memory_id, content)
        for memory_id, content in list(memories.items())[:2]:
            assert_gone(driver, memory_id, content)


def test_log_compaction_with_a_lagging_second_process(db: Path, tmp_path: Path) -> None:
    """A worker saving the index every 5 changes compacts the vector log to a few rows; this
    process, whose in-memory index is older than the compaction point, still answers exactly
    (it reloads from the file or SQLite instead of replaying a log that is gone)."""
    url = url_of(db)
    rng = random.Random(3)
    with open_store(url) as lagging:
        mine = populate(lagging, "mine", 10)
        lagging.recall(USER, query="mine")  # loaded at the current log position
        with WorkerProcess("serve", url, "5", stderr_path=tmp_path / "serve.err") as worker:
            assert worker.read_line() == '{"ready": true}'
            theirs: dict[str, str] = {}
            for i in range(40):
                content = unique_content("theirs", rng)
                theirs[worker.call("store", user=USER, content=content)] = content
                if i % 5 == 4:
                    worker.call("recall", user=USER, query="theirs")
            removed = {k: theirs.pop(k) for k in list(theirs)[:5]}
            for memory_id in removed:
                assert worker.call("delete", id=memory_id) is True
            rewritten = unique_content("mine rewritten", rng)
            changed_id = next(iter(mine))
            worker.call("update", id=changed_id, content=rewritten)
            worker.call("recall", user=USER, query="theirs")
            # Still running: its saves compacted the log as it went, past the lagging index
            # (each save keeps the entries after the previous file, a bounded number).
            lagging_at = lagging.stats()["index"]["log_position"]
            assert log_floor(db) > lagging_at, "the vector log is not compacted after saves"
            assert vector_log_rows(db) < saved_position(db)
            assert saved_position(db) >= 40
            assert worker.call("close") is True
        rebuilds = lagging.stats()["index"]["rebuilds"]
        mine[changed_id] = rewritten
        for memory_id, content in {**mine, **theirs}.items():
            assert_found(lagging, memory_id, content)
        for memory_id, content in removed.items():
            assert_gone(lagging, memory_id, content)
        assert_index_in_sync(lagging)
        assert lagging.stats()["index"]["rebuilds"] == rebuilds, "it rebuilt instead of loading"


def test_an_older_index_saved_last_does_not_hide_newer_changes(db: Path, tmp_path: Path) -> None:
    """Process A's index is older than a compaction made by worker B, and A saves its snapshot
    last (here because the newer file was removed; in real life a save race does the same).
    The compaction mark must not move back, or the next open trusts A's old file and misses
    B's changes whose log entries are gone. B only rewrites contents, so counts still match."""
    url = url_of(db)
    rng = random.Random(4)
    a = open_store(url)
    try:
        mine = populate(a, "mine", 10)
        a.recall(USER, query="mine")  # A's index: loaded, with unsaved changes
        with WorkerProcess("serve", url, "5", stderr_path=tmp_path / "serve.err") as b:
            assert b.read_line() == '{"ready": true}'
            for memory_id in list(mine):  # B saves every 5 changes, compacting behind it
                mine[memory_id] = unique_content("rewritten by b", rng)
                b.call("update", id=memory_id, content=mine[memory_id])
            b.call("recall", user=USER, query="rewritten")
            assert b.call("close") is True
        assert log_floor(db) > a.stats()["index"]["log_position"]
        db.with_suffix(".faiss").unlink()
    finally:
        a.close()  # A saves its older snapshot
    with open_store(url) as driver:
        for memory_id, content in mine.items():
            assert_found(driver, memory_id, content)


def test_index_file_location(tmp_path: Path) -> None:
    """The index file is FAISS_INDEX_PATH when set (its folder created), else beside the
    database with the .faiss suffix."""
    beside = tmp_path / "a" / "m.db"
    _store_with_data(url_of(beside))
    assert beside.with_suffix(".faiss").is_file()

    elsewhere = tmp_path / "b" / "m.db"
    target = tmp_path / "indexes" / "deep" / "vectors.idx"
    with open_store(url_of(elsewhere), faiss_index_path=target) as driver:
        memories = populate(driver, "own", 5)
        driver.recall(USER, query="own")
        assert driver.index_path == target
    assert target.is_file()
    assert not elsewhere.with_suffix(".faiss").exists()
    with open_store(url_of(elsewhere), faiss_index_path=target) as driver:
        for memory_id, content in memories.items():
            assert_found(driver, memory_id, content)


def test_an_index_file_that_cannot_be_written_does_not_stop_reads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """FAISS_INDEX_PATH under a regular file (its folder cannot be created): stores, recalls,
    stats, rebuild_index and close all work, each failed save is a logged warning, not a raw
    OSError. A failure means a read raised because the derived file could not be saved."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with (
        caplog.at_level(logging.WARNING),
        open_store(
            url_of(tmp_path / "m.db"), faiss_index_path=blocker / "m.faiss", faiss_persist_every=1
        ) as driver,
    ):
        memories = populate(driver, "own", 5)
        for memory_id, content in memories.items():
            assert_found(driver, memory_id, content)
        result = driver.rebuild_index()
        assert result["rebuilt"] is True and result["saved"] is False
        assert_index_in_sync(driver)
    assert any("cannot save the FAISS index" in r.getMessage() for r in caplog.records)


def test_in_memory_database_needs_no_index_file(tmp_path: Path, monkeypatch) -> None:
    """'sqlite://' (in memory) stores and recalls, and writes no file at all."""
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite://", faiss_persist_every=1) as driver:
        assert driver.index_path is None
        memories = populate(driver, "ephemeral", 8)
        for memory_id, content in memories.items():
            assert_found(driver, memory_id, content)
        assert driver.recall(USER, query="ephemeral", use_vector=False)
        assert driver.rebuild_index()["memories"] == 8
        assert_index_in_sync(driver)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- embedder stamp
def test_embedder_stamp_and_reembed(db: Path) -> None:
    """A store refuses another embedder (pointing to 'memory-drivers reembed'); reembed()
    re-embeds every memory and knowledge chunk; then only the new embedder opens it, and its
    vectors are the ones searched."""
    url = url_of(db)
    memories, doc_text = _store_with_data(url, "own", 15)
    old, new = HashingEmbedder(256), HashingEmbedder(96)

    with pytest.raises(EmbedderMismatchError, match="memory-drivers reembed"):
        open_store(url, embedder=new)

    with SQLiteDriver(settings_for(url), embedder=new, allow_embedder_mismatch=True) as driver:
        chunks = len(driver.get_global_knowledge("own-doc").chunks)
        assert driver.reembed(batch_size=4) == {"memories": 15, "knowledge_chunks": chunks}

    with open_store(url, embedder=new) as driver:
        assert driver.health_check()["embedder"] == {"name": new.name, "dimension": "96"}
        for memory_id, content in memories.items():
            assert_found(driver, memory_id, content)
        assert_scores_true(driver, "own knowledge tok")
        hit = driver.recall_global_knowledge(doc_text, top_k=1)[0]
        assert hit.score == pytest.approx(1.0, abs=1e-4)
        assert_index_in_sync(driver)
    with pytest.raises(EmbedderMismatchError):
        open_store(url, embedder=old)

    # An interrupted reembed leaves mixed vectors: a normal open is refused until it is rerun.
    with open_store(url, embedder=new) as driver:
        driver._write_store_info({"reembed_target": "x"})
    with pytest.raises(EmbedderMismatchError, match="memory-drivers reembed"):
        open_store(url, embedder=new)
    with SQLiteDriver(settings_for(url), embedder=new, allow_embedder_mismatch=True) as driver:
        driver.reembed()
    with open_store(url, embedder=new) as driver:
        assert_found(driver, *next(iter(memories.items())))


# ---------------------------------------------------------------------- bad files
def test_bad_database_paths_raise_a_clear_error(tmp_path: Path) -> None:
    """A database path that cannot be created, a directory, or a file that is not SQLite gives
    a MemoryDriverError naming the path, not a raw OSError/sqlite3 traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    not_sqlite = tmp_path / "notes.db"
    not_sqlite.write_bytes(b"this is a text file, not a SQLite database\n" * 200)
    a_directory = tmp_path / "dir.db"
    a_directory.mkdir()
    for path in (blocker / "sub" / "m.db", not_sqlite, a_directory):
        with pytest.raises(MemoryDriverError) as caught:
            open_store(url_of(path))
        assert isinstance(caught.value, BackendUnavailableError), repr(caught.value)
        assert str(path) in str(caught.value)
    assert not_sqlite.read_bytes().startswith(b"this is a text file")
