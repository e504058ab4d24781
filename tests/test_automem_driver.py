"""The automem driver beyond the conformance suite: retries, timeouts and typed errors against
a real loopback server that fails on purpose, AutoMem's limits, the exactness boundary of
filters applied over AutoMem's recall window, and the tag and block convention.

"A real loopback server that fails": ``memory-drivers serve`` behind :class:`Flaky`, a small
ASGI wrapper that answers the next matching requests with a planned failure (a 503, a lost
answer, a slow answer) and passes everything else to the real server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from automem_support import (  # noqa: F401 - fixtures
    TOKEN,
    LiveServer,
    automem,
    live_server,
    served,
    sqlite_store,
)
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memory_drivers import automem_wire as wire
from memory_drivers.base import KnowledgeSearch, MemorySearch
from memory_drivers.config import Settings, build_settings
from memory_drivers.drivers.automem import AutoMemDriver
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.embeddings import check_vectors
from memory_drivers.errors import (
    BackendUnavailableError,
    ConfigurationError,
    ValidationError,
)
from memory_drivers.models import Memory, MemoryFilter
from memory_drivers.server import ServerThread, create_app
from memory_drivers.testing import assert_same_hits

# ---------------------------------------------------------------------- a server that fails


class Flaky:
    """Wraps the real server. ``plan(method, path, *actions)`` makes the next requests whose
    path starts with ``path`` fail, one action each: ``"503"`` (AutoMem's error body),
    ``"lost"`` (the request is handled, then the answer is replaced by a 500), ``"text-502"``
    (a proxy's HTML page), ``"slow"`` (the answer comes after ``delay`` seconds)."""

    def __init__(self, app: ASGIApp, delay: float = 1.0) -> None:
        self.app = app
        self.delay = delay
        self.plans: list[tuple[str, str, str]] = []
        self.seen: list[str] = []
        self.lock = threading.Lock()

    def plan(self, method: str, path: str, *actions: str) -> None:
        with self.lock:
            self.plans += [(method, path, action) for action in actions]

    def count(self, method: str, path: str) -> int:
        """How many requests for exactly ``method path`` arrived."""
        return self.seen.count(f"{method} {path}")

    def _take(self, scope: Scope) -> str | None:
        with self.lock:
            self.seen.append(f"{scope['method']} {scope['path']}")
            for index, (method, path, action) in enumerate(self.plans):
                if scope["method"] == method and scope["path"].startswith(path):
                    del self.plans[index]
                    return action
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        action = self._take(scope) if scope["type"] == "http" else None
        if action == "503":
            body = {"status": "error", "code": 503, "message": "FalkorDB is unavailable"}
            await JSONResponse(body, 503)(scope, receive, send)
        elif action == "text-502":
            await PlainTextResponse("<html>502 Bad Gateway</html>", 502)(scope, receive, send)
        elif action == "lost":

            async def swallow(message: Message) -> None:
                return None

            await self.app(scope, receive, swallow)
            body = {"status": "error", "code": 500, "message": "Internal server error"}
            await JSONResponse(body, 500)(scope, receive, send)
        else:
            if action == "slow":
                await asyncio.sleep(self.delay)
            await self.app(scope, receive, send)


@pytest.fixture
def flaky(tmp_path: Path) -> Iterator[tuple[Flaky, ServerThread, SQLiteDriver]]:
    """A server (with the token) over a fresh sqlite store, behind :class:`Flaky`."""
    store = sqlite_store(
        tmp_path / "served", build_settings(_env_file=None, embedding_provider="hashing")
    )
    wrapper = Flaky(create_app(store, api_token=TOKEN))
    thread = ServerThread(wrapper)
    try:
        yield wrapper, thread, store
    finally:
        thread.stop()
        store.close()


def client_settings(url: str, **changes: Any) -> Settings:
    values = {
        "automem_url": url,
        "automem_api_token": TOKEN,
        "automem_retry_backoff": 0.05,
        "automem_max_retries": 2,
        "embedding_provider": "hashing",
        **changes,
    }
    return build_settings(_env_file=None, **values)


@pytest.fixture
def client(flaky: tuple[Flaky, ServerThread, SQLiteDriver]) -> Iterator[AutoMemDriver]:
    _, thread, store = flaky
    thread.start()
    driver = AutoMemDriver(client_settings(thread.url), embedder=store.embedder)
    try:
        yield driver
    finally:
        driver.close()


class AutoMemIds:
    """Wraps the real server so that it shows other ids than the driver's, as AutoMem does
    (AutoMem gives every memory its own id): ids in answers (``id``, ``memory_id``,
    ``memory_ids``; blocks and tags untouched) are replaced by stable other UUIDs, and those
    are translated back in request paths and association bodies."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.back: dict[str, str] = {}

    def out(self, real: Any) -> Any:
        if not isinstance(real, str):
            return real
        shown = str(uuid.uuid5(uuid.NAMESPACE_OID, real))
        self.back[shown] = real
        return shown

    def into(self, shown: Any) -> str:
        """The server's id for an id the proxy showed; any other id matches nothing."""
        return self.back.get(shown, str(uuid.uuid4()))

    def translate(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.translate(v) for v in value]
        if not isinstance(value, dict):
            return value
        result = {}
        for key, item in value.items():
            if key == "metadata":
                result[key] = item  # the block keeps the driver's ids
            elif key in ("id", "memory_id"):
                result[key] = self.out(item)
            elif key == "memory_ids":
                result[key] = [self.out(i) for i in item]
            else:
                result[key] = self.translate(item)
        return result

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parts = [self.into(part) if is_uuid(part) else part for part in scope["path"].split("/")]
        scope = {**scope, "path": "/".join(parts)}
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        if body and scope["path"] == "/associate":
            data = json.loads(body)
            for key in ("memory1_id", "memory2_id"):
                data[key] = self.into(data.get(key))
            body = json.dumps(data).encode()

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        started: dict[str, Any] = {}
        answer: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
            else:
                answer.append(message.get("body", b""))

        await self.app(scope, replay, capture)
        content = json.dumps(self.translate(json.loads(b"".join(answer)))).encode()
        headers = [(k, v) for k, v in started["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(content)).encode()))
        await send({**started, "headers": headers})
        await send({"type": "http.response.body", "body": content})


# ---------------------------------------------------------------------- retries and errors
def test_5xx_answers_are_retried_with_backoff(
    flaky: tuple[Flaky, ServerThread, SQLiteDriver], client: AutoMemDriver
) -> None:
    wrapper, _, _ = flaky
    client.store("u1", "kept despite two failures")
    wrapper.plan("GET", "/recall", "503", "text-502")
    started = time.monotonic()
    hits = client.recall("u1")
    assert [h.memory.content for h in hits] == ["kept despite two failures"]
    assert wrapper.count("GET", "/recall") == 3
    assert time.monotonic() - started >= 0.05 + 0.1  # backoff 0.05, then doubled


def test_persistent_5xx_is_a_typed_error_naming_url_and_message(
    flaky: tuple[Flaky, ServerThread, SQLiteDriver], client: AutoMemDriver
) -> None:
    wrapper, thread, _ = flaky
    wrapper.plan("GET", "/recall", "503", "503", "503")
    with pytest.raises(BackendUnavailableError) as caught:
        client.recall("u1")
    message = str(caught.value)
    assert thread.url in message and "/recall" in message
    assert "FalkorDB is unavailable" in message and "tried 3 times" in message
    assert isinstance(caught.value, ConnectionError)
    assert wrapper.count("GET", "/recall") == 3


def test_a_write_whose_answer_was_lost_is_not_stored_twice(
    flaky: tuple[Flaky, ServerThread, SQLiteDriver], client: AutoMemDriver
) -> None:
    """AutoMem gives every POSTed memory a new id, so blindly retrying a write whose answer was
    lost would store it twice. Before a retry, the driver looks its ids up and sends only what
    did not arrive."""
    wrapper, _, store = flaky
    wrapper.plan("POST", "/memory", "lost")
    one = client.store("u1", "stored once")
    assert wrapper.count("POST", "/memory") == 1
    wrapper.plan("POST", "/memory/batch", "lost")
    batch = client.store_many([{"user_id": "u1", "content": f"batch {i}"} for i in range(3)])
    assert wrapper.count("POST", "/memory/batch") == 1
    assert store.count() == 4
    assert {m.id for m in store.iter_memories()} == {one.id, *(m.id for m in batch)}
    wrapper.plan("POST", "/memory", "503")  # failed before storing: sent again
    client.store("u1", "sent twice, stored once")
    assert wrapper.count("POST", "/memory") == 3 and store.count() == 5


def test_slow_answers_time_out_and_are_retried(
    flaky: tuple[Flaky, ServerThread, SQLiteDriver],
) -> None:
    wrapper, thread, _ = flaky
    wrapper.delay = 2.0
    thread.start()
    driver = AutoMemDriver(client_settings(thread.url, automem_timeout=0.5, automem_max_retries=1))
    try:
        wrapper.plan("GET", "/recall", "slow")
        assert driver.recall("u1") == []  # the retry is answered in time
        wrapper.plan("GET", "/recall", "slow", "slow")
        started = time.monotonic()
        with pytest.raises(
            BackendUnavailableError, match=r"did not answer GET /recall within 0\.5s"
        ):
            driver.recall("u1")
        assert time.monotonic() - started < 1.9  # two timeouts and a pause, not the delay
    finally:
        driver.close()


def test_unreachable_url_names_it() -> None:
    with socket_port() as port:  # bound, not listening: connections are refused
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError) as caught:
            AutoMemDriver(client_settings(url, automem_max_retries=1))
    assert f"cannot reach AutoMem at {url}" in str(caught.value)
    assert "AUTOMEM_URL" in str(caught.value) and "tried 2 times" in str(caught.value)
    assert time.monotonic() - started < 5


def test_a_service_that_comes_up_late_is_waited_for(
    flaky: tuple[Flaky, ServerThread, SQLiteDriver],
) -> None:
    """Connection errors are retried: a driver opened while the service is still starting
    connects once it listens."""
    _, thread, _ = flaky
    timer = threading.Timer(0.25, thread.start)
    timer.start()
    try:
        driver = AutoMemDriver(client_settings(thread.url, automem_max_retries=5))
    finally:
        timer.join()
    with driver:
        assert driver.health_check()["status"] == "ok"


def test_client_errors_are_not_retried(
    flaky: tuple[Flaky, ServerThread, SQLiteDriver], client: AutoMemDriver
) -> None:
    wrapper, thread, _ = flaky
    before = len(wrapper.seen)
    with pytest.raises(ConfigurationError, match="AUTOMEM_API_TOKEN") as caught:
        AutoMemDriver(client_settings(thread.url, automem_api_token="wrong"))
    assert "401: Unauthorized" in str(caught.value) and thread.url in str(caught.value)
    assert len(wrapper.seen) == before + 1
    with pytest.raises(ConfigurationError, match="AUTOMEM_URL"):
        AutoMemDriver(client_settings("ftp://example.org"))


def test_the_driver_never_assumes_automem_keeps_its_ids(tmp_path: Path) -> None:
    """Against AutoMem, a memory's AutoMem id is not the driver's id. Through
    :class:`AutoMemIds` every operation still works and answers in the driver's ids."""
    store = sqlite_store(
        tmp_path / "served", build_settings(_env_file=None, embedding_provider="hashing")
    )
    proxy = AutoMemIds(create_app(store, api_token=TOKEN))
    with ServerThread(proxy) as thread, AutoMemDriver(client_settings(thread.url)) as driver:
        a = driver.store("u1", "moved to Lisbon", tags=["home"])
        b, c = driver.store_many(
            [
                {"user_id": "u1", "content": "learning Portuguese"},
                {"user_id": "u1", "content": "Paris"},
            ]
        )
        assert proxy.back and a.id not in proxy.back and driver.get(a.id) == a
        assert driver.update(a.id, importance=0.9).importance == 0.9
        link = driver.associate(a.id, b.id, "LEADS_TO", 0.8)
        driver.associate(c.id, a.id, "OCCURRED_BEFORE", 0.3)
        assert driver.associate(a.id, b.id, "LEADS_TO", 0.6).created_at == link.created_at
        related = [(r.memory.id, r.direction, r.strength) for r in driver.related(a.id)]
        assert related == [(b.id, "outgoing", 0.6), (c.id, "incoming", 0.3)]
        assert [h.memory.id for h in driver.recall("u1", query="moved to Lisbon", top_k=1)] == [
            a.id
        ]
        assert [h.memory.id for h in driver.recall("u1", query="paris", use_vector=False)] == [c.id]
        doc = driver.store_global_knowledge(
            "refunds take thirty days", category="policy", doc_id="D"
        )
        assert driver.get_global_knowledge("D") == doc
        assert driver.recall_global_knowledge("refunds")[0].chunk.doc_id == "D"
        assert driver.delete(c.id) and not driver.delete(c.id)
        assert [r.memory.id for r in driver.related(a.id)] == [b.id]
        assert driver.cleanup("u1", min_importance=1.0, dry_run=False).count == 2
        assert driver.count() == 0 and driver.delete_global_knowledge("D")
    store.close()


# ---------------------------------------------------------------------- AutoMem's limits
def test_content_over_automem_limit_is_refused_before_sending(
    flaky: tuple[Flaky, ServerThread, SQLiteDriver], client: AutoMemDriver
) -> None:
    """AutoMem refuses content over 2000 characters (MEMORY_CONTENT_HARD_LIMIT, after
    stripping): the driver refuses it first, with a message saying what to do, and writes
    nothing. 2000 characters plus surrounding whitespace fit, and read back exactly."""
    wrapper, _, store = flaky
    kept = client.store("u1", "k" * 1500)
    with pytest.raises(ValidationError, match="at most 2000") as caught:
        client.store("u1", "x" * 2001)
    assert "global knowledge" in str(caught.value)
    with pytest.raises(ValidationError, match=r"item #1: content is 2001"):
        client.store_many(
            [{"user_id": "u1", "content": "ok"}, {"user_id": "u1", "content": "y" * 2001}]
        )
    with pytest.raises(ValidationError, match="at most 2000"):
        client.update(kept.id, content="z" * 2001)
    assert wrapper.count("POST", "/memory") == 1 and store.count() == 1
    padded = client.store("u1", "  " + "p" * 2000 + "\n")
    assert client.get(padded.id) == padded and padded.content.startswith("  p")
    assert store.get(padded.id) == padded


def test_reserved_tags_and_metadata_key_are_refused(client: AutoMemDriver) -> None:
    with pytest.raises(ValidationError, match="mdrv:"):
        client.store("u1", "x", tags=["MDRV:user:bob"])
    with pytest.raises(ValidationError, match="memory_drivers"):
        client.store("u1", "x", metadata={"memory_drivers": 1})
    with pytest.raises(ValidationError, match="memory_drivers"):
        client.store_global_knowledge("doc", category="c", metadata={"memory_drivers": 1})
    assert client.count() == 0


def test_reembed_is_refused_without_marking_the_store(client: AutoMemDriver) -> None:
    """AutoMem cannot replace stored vectors; the driver cannot re-embed, and says what to do."""
    with pytest.raises(ConfigurationError, match="reembed"):
        client.reembed()
    assert client._read_store_info().get("reembed_target") is None


# ---------------------------------------------------------------------- exactness boundary
def seed(driver: AutoMemDriver) -> list[Memory]:
    """250 memories of u1 (more than AutoMem's recall window of 100 and than one by-tag page
    of 200): 220 'noise' close to the query, 30 'keep' far from it; and a few of u2."""
    items: list[dict[str, Any]] = [
        {
            "user_id": "u1",
            "content": f"apple banana cherry {i}",
            "tags": ["noise"],
            "importance": 0.3,
            "created_at": f"2026-01-01T00:00:{i % 60:02d}.{i:06d}Z",
        }
        for i in range(220)
    ]
    items += [
        {
            "user_id": "u1",
            "content": f"zebra quantum violin {i}",
            "tags": ["keep"],
            "memory_type": "fact",
            "importance": 0.9,
            "metadata": {"k": i % 3},
        }
        for i in range(30)
    ]
    items += [{"user_id": "u2", "content": f"apple banana {i}"} for i in range(5)]
    return driver.store_many(items)


@pytest.mark.slow
def test_filters_beyond_the_recall_window(
    automem: AutoMemDriver,  # noqa: F811
    served: SQLiteDriver,  # noqa: F811
) -> None:
    """The exactness boundary (docs/drivers/automem.md), against the sqlite store behind the
    server as the reference:

    - filters that are tags (user, conversation, one type, tags with ``tag_mode="all"`` or a
      single tag, scalar metadata) narrow AutoMem's own search: exact however many match;
    - recall without a query, keyword recall, count and listing read every candidate when
      AutoMem's window of 100 is full: exact;
    - vector recall with a filter AutoMem cannot express (here ``exclude_tags``) is applied to
      AutoMem's best 100 only: when more than 100 candidates rank above the ones that pass,
      fewer (or other) memories come back than from an embedded driver.
    """
    seed(automem)
    assert automem.count("u1") == 250 and automem.count() == 255
    assert len(list(automem.iter_memories("u1"))) == 250

    def same(kwargs: dict[str, Any], top_k: int = 5) -> None:
        everything = served.recall("u1", top_k=1000, **kwargs)
        got = automem.recall("u1", top_k=top_k, **kwargs)
        assert_same_hits(got, everything, top_k, context=str(kwargs))

    query = "apple banana cherry"
    same({"query": query, "tags": ["keep"]})  # a tag: AutoMem filters, exact
    same({"query": query, "metadata": {"k": 1}})
    same({"query": query, "memory_types": ["fact"]})
    same({"query": "zebra apple", "use_vector": False, "exclude_tags": ["noise"]}, 40)
    same({"exclude_tags": ["noise"]}, 10)  # newest first: exact past the window
    same({"min_importance": 0.5}, 250)
    same({}, 7)
    boundary = automem.recall("u1", query=query, exclude_tags=["noise"], top_k=5)
    reference = served.recall("u1", query=query, exclude_tags=["noise"], top_k=5)
    assert len(reference) == 5 and len(boundary) < 5, "the window held only noise"
    cleaned = automem.cleanup("u1", min_importance=0.5, dry_run=True)
    assert cleaned.count == 220


def test_a_vector_without_its_text_is_sent_as_an_embedding(
    automem: AutoMemDriver,  # noqa: F811
) -> None:
    """Vector recall sends AutoMem the query's vector with its text. A search given only a
    vector (as ``memory-drivers serve --driver automem`` does for a client's ``embedding``)
    sends the vector alone, and finds the same."""
    memory = automem.store("u1", "green tea in the morning")
    automem.store_global_knowledge("green tea in the morning", category="c", doc_id="D")
    vector = check_vectors(
        automem.embedder.embed_query("green tea in the morning"), 1, automem.embedder
    )[0]
    search = MemorySearch(MemoryFilter(user_id="u1"), 1, "vector", vector=vector)
    [hit] = automem._search_memories(search)
    assert hit.memory == memory and hit.score == pytest.approx(1.0, abs=1e-5)
    [chunk] = automem._search_knowledge(
        KnowledgeSearch("vector", 1, None, "green tea in the morning", vector)
    )
    assert chunk.chunk.doc_id == "D" and chunk.score == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------------- the convention
@pytest.mark.parametrize(
    "text",
    ["alice", "Alice", "^a", "%41", "a:b/c", "ünï ✓ 🎉", "with space", "x" * 300, "MiXeD-_.09"],
)
def test_tag_values_are_lower_case_and_one_to_one(text: str) -> None:
    encoded = wire.encode(text)
    assert encoded == encoded.lower() and ":" not in encoded and "/" not in encoded
    assert "," not in encoded and wire.decode(encoded) == text


def test_encoding_separates_what_automem_would_merge() -> None:
    """AutoMem lower-cases tags and splits them at ':' and '/'; encoded values keep 'Alice'
    and 'alice', or 'a:b' and 'a/b', apart."""
    values = ["Alice", "alice", "^alice", "a:b", "a/b", "a%3ab", "a b"]
    assert len({wire.encode(v) for v in values}) == len(values)
    for bad in ("^A", "%3A", "%zz", "a b", "%", "^"):
        with pytest.raises(ValueError):
            wire.decode(bad)


def test_metadata_tags_follow_json_equality() -> None:
    """1 and 1.0 share a tag; 1, true and "1" do not; null has its own; nested values and
    long values get none (those filters are applied by the driver)."""
    tag = wire.meta_tag
    assert tag("n", 1) == tag("n", 1.0) == "mdrv:meta:n=n.1"
    assert len({tag("n", 1), tag("n", True), tag("n", "1"), tag("n", None)}) == 4
    assert tag("n", 0.5) != tag("n", 0.25)
    assert tag("n", {"a": 1}) is None and tag("n", [1]) is None and tag("n", "x" * 300) is None
    assert wire.parse_tag(tag("Key with = sign", "Value") or "") == (
        "meta",
        ("Key with = sign", "Value"),
    )
    assert wire.parse_tag(tag("n", 2.5) or "") == ("meta", ("n", 2.5))
    assert wire.parse_tag("mdrv:user:^alice") == ("user", "Alice")
    assert wire.parse_tag("mdrv:id:" + "A" * 8) is None
    assert wire.parse_tag("user:alice") is None


def test_tag_prefixes_are_automems() -> None:
    assert wire.tag_prefixes(["Project:Alpha/Beta", "solo", "a::b"]) == [
        "project",
        "project:alpha",
        "project:alpha:beta",
        "solo",
        "a",
        "a:b",
    ]


def test_memory_types_map_onto_automems() -> None:
    types = ("episodic", "semantic", "procedural", "reflection", "fact", "context", "preference")
    assert [wire.to_automem_type(t) for t in types] == [
        "Context",
        "Context",
        "Habit",
        "Insight",
        "Context",
        "Context",
        "Preference",
    ]
    assert wire.from_automem_type("Habit", types, "semantic") == "procedural"
    assert wire.from_automem_type("Decision", (*types, "decision"), "semantic") == "decision"
    assert wire.from_automem_type("Banana", types, "semantic") == "semantic"
    assert wire.from_automem_type(None, types, "fact") == "fact"


def test_block_round_trips_a_memory_exactly() -> None:
    memory = Memory(
        id=str(uuid.uuid4()),
        user_id="Alice",
        conversation_id="c 1",
        content="  spaced content  ",
        memory_type="fact",
        tags=["B", "a"],
        importance=0.25,
        metadata={"n": 1.5, "nested": {"x": [1, None]}},
        source="import",
        created_at=wire_time("2026-01-01T00:00:00.000001+00:00"),
        updated_at=wire_time("2026-01-02T00:00:00+00:00"),
    )
    payload = wire.memory_payload(memory)
    assert payload["content"] == "spaced content" and payload["type"] == "Context"
    assert payload["tags"][:2] == ["B", "a"] and wire.tag_tag("B") in payload["tags"]
    block = wire.read_block({"metadata": json.dumps(payload["metadata"])})
    assert block is not None and wire.memory_from_block(block) == memory


def test_automem_additions_to_metadata_survive_updates() -> None:
    """Against a real AutoMem, metadata keys AutoMem adds (enrichment, summaries) are kept
    when the driver rewrites a memory's metadata; the memory's own keys are replaced."""
    item = {
        "metadata": {"mine": 1, "enrichment": {"x": 1}, wire.BLOCK_KEY: {"metadata": {"mine": 1}}}
    }
    assert AutoMemDriver._automem_extras(item, item["metadata"][wire.BLOCK_KEY]) == {
        "enrichment": {"x": 1}
    }


# ---------------------------------------------------------------------- small helpers
def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def wire_time(text: str) -> Any:
    from memory_drivers.validation import timestamp

    return timestamp(text, "t")


class socket_port:
    """A loopback port that is bound but not listening (connections are refused)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()


def test_health_and_stats_report_the_service(
    automem: AutoMemDriver,  # noqa: F811
    live_server: LiveServer,  # noqa: F811
) -> None:
    automem.store("u1", "a")
    automem.store("u2", "b")
    automem.store_global_knowledge("doc", category="c")
    report = automem.health_check()
    assert report["status"] == "ok" and report["url"] == live_server.url
    assert report["served_by"] == "memory-drivers serve (sqlite)"
    assert automem.stats()["memories"] == 2 and automem.stats()["users"] == 2
    assert automem.stats()["knowledge_chunks"] == 1


# ---------------------------------------------------------------------- AutoMem's own behaviour
class Observed:
    """Wraps the real server: records each request (method, path, query string, JSON body) and
    can change answers: ``health`` entries replace the server's in ``/health``, ``as_automem``
    drops its ``memory_drivers`` entry, so that the driver takes the server for AutoMem (whose
    batch endpoint ignores ``embedding``), and ``merged`` is added to the ``deduped_from`` of
    every ``/recall`` result."""

    def __init__(
        self,
        app: ASGIApp,
        health: dict[str, Any] | None = None,
        as_automem: bool = False,
        merged: list[str] | None = None,
    ) -> None:
        self.app = app
        self.health = health or {}
        self.as_automem = as_automem
        self.merged = merged or []
        self.requests: list[tuple[str, str, str, Any]] = []

    def bodies(self, method: str, path: str) -> list[Any]:
        return [body for m, p, _, body in self.requests if (m, p) == (method, path)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        query = scope["query_string"].decode()
        self.requests.append(
            (scope["method"], scope["path"], query, json.loads(body) if body else None)
        )

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        if scope["path"] not in ("/health", "/recall"):
            await self.app(scope, replay, send)
            return
        answer: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.body":
                answer.append(message.get("body", b""))

        await self.app(scope, replay, capture)
        report = json.loads(b"".join(answer))
        if scope["path"] == "/recall":
            for result in report.get("results", []):
                result["deduped_from"] = [result["id"], *self.merged]
        else:
            report.update(self.health)
            if self.as_automem:
                report.pop("memory_drivers", None)
        await JSONResponse(report)(scope, receive, send)


@pytest.fixture
def observed(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Observed, str]]:
    """A server over a fresh sqlite store behind :class:`Observed` (its arguments from
    ``@pytest.mark.parametrize("observed", [kwargs], indirect=True)``), and its URL."""
    store = sqlite_store(
        tmp_path / "served", build_settings(_env_file=None, embedding_provider="hashing")
    )
    wrapper = Observed(create_app(store, api_token=TOKEN), **getattr(request, "param", {}))
    thread = ServerThread(wrapper)
    thread.start()
    try:
        yield wrapper, thread.url
    finally:
        thread.stop()
        store.close()


@pytest.mark.parametrize("observed", [{"as_automem": True}], indirect=True)
def test_writes_and_queries_carry_the_drivers_vectors(observed: tuple[Observed, str]) -> None:
    """AutoMem embeds a memory stored without ``embedding`` in a background queue, so for
    about 2 s after ``store`` returned, recall by meaning missed it (and its model is not the
    driver's). Every write now sends the driver's vector, one ``POST /memory`` each (AutoMem's
    batch endpoint ignores ``embedding``), and recall sends the query's vector with its text."""
    wrapper, url = observed
    driver = AutoMemDriver(client_settings(url))
    try:
        texts = ["green tea in the morning", "a dog named Rex", "jazz piano"]
        driver.store_many([{"user_id": "u1", "content": t} for t in texts])
        driver.store_global_knowledge("the refund window is 30 days", category="c")
        driver.recall("u1", query="green tea", search="vector")
    finally:
        driver.close()
    assert not wrapper.bodies("POST", "/memory/batch")
    posted = wrapper.bodies("POST", "/memory")
    stored = {wire.read_block(p)["content"]: p["embedding"] for p in posted if wire.read_block(p)}
    wanted = driver.embedder.embed_documents([*texts, "the refund window is 30 days"])
    for text, vector in zip([*texts, "the refund window is 30 days"], wanted, strict=True):
        assert stored[text] == pytest.approx([float(x) for x in vector], abs=1e-6)
    [query] = [
        q for m, p, q, _ in wrapper.requests if (m, p) == ("GET", "/recall") and "query" in q
    ]
    params = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
    assert params["query"] == "green+tea" and len(params["embedding"].split("%2C")) == 256


def test_memory_drivers_serve_gets_batches(observed: tuple[Observed, str]) -> None:
    """``memory-drivers serve`` stores a batch in one transaction and embeds with the driver's
    model (the stamp makes sure), so it keeps getting batches."""
    wrapper, url = observed
    with AutoMemDriver(client_settings(url)) as driver:
        driver.store_many([{"user_id": "u1", "content": f"memory {i}"} for i in range(3)])
    [batch] = wrapper.bodies("POST", "/memory/batch")
    assert len(batch["memories"]) == 3 and all("embedding" in m for m in batch["memories"])


@pytest.mark.parametrize(
    "observed", [{"health": {"vector_dimensions": {"collection": 1024}}}], indirect=True
)
def test_a_service_with_another_vector_size_is_refused(observed: tuple[Observed, str]) -> None:
    """A write is refused with what to change, instead of AutoMem's 400 for every vector."""
    wrapper, url = observed
    with AutoMemDriver(client_settings(url)) as driver:
        with pytest.raises(ConfigurationError, match="VECTOR_SIZE=256"):
            driver.store("u1", "never sent")
        with pytest.raises(ConfigurationError, match="1024-dimensional"):
            driver.store_many([{"user_id": "u1", "content": "nor this"}] * 2)
    assert not wrapper.bodies("POST", "/memory") and not wrapper.bodies("POST", "/memory/batch")


def test_copies_that_automem_merges_are_all_found(
    automem: AutoMemDriver,  # noqa: F811
    live_server: LiveServer,  # noqa: F811
) -> None:
    """AutoMem merges recall results with the same content (case and punctuation aside) into
    one that lists every merged id in ``deduped_from``, with ``dedup_removed: 0``; the server
    does the same. Recall without a query, by keyword and by vector, and cleanup, still see
    every copy."""
    texts = ["same words", "same words", "Same words!", "other words"]
    stored = automem.store_many([{"user_id": "u1", "content": t} for t in texts])
    raw = httpx.get(
        f"{live_server.url}/recall",
        params={"tags": wire.user_tag("u1"), "limit": 10},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ).json()
    assert len(raw["results"]) == 2 and raw["dedup_removed"] == 0  # the server merged them
    merged = next(r for r in raw["results"] if r.get("deduped_from"))
    assert len(merged["deduped_from"]) == 3
    copies = {m.id for m in stored[:3]}
    for search in ("keyword", "vector", "hybrid"):
        hits = automem.recall("u1", query="same words", top_k=10, search=search)
        assert copies <= {h.memory.id for h in hits}, search
    assert {h.memory.id for h in automem.recall("u1", top_k=10)} == {m.id for m in stored}
    result = automem.cleanup("u1", min_importance=0.6, dry_run=False)
    assert result.count == 4 and automem.count("u1") == 0


def test_a_degraded_automem_is_reported_degraded(tmp_path: Path) -> None:
    """AutoMem says ``degraded`` when Qdrant or FalkorDB is down, or while it holds fewer
    vectors than memories; the health check says so too, with AutoMem's reason."""
    store = sqlite_store(tmp_path, build_settings(_env_file=None, embedding_provider="hashing"))
    drift = {"status": "degraded", "sync_status": "drift_detected", "vector_count": 3}
    wrapper = Observed(create_app(store, api_token=TOKEN), health=drift)
    try:
        with ServerThread(wrapper) as thread, AutoMemDriver(client_settings(thread.url)) as driver:
            driver.store("u1", "one")
            wrapper.health = {**drift, "memory_count": 5}
            report = driver.health_check()
            assert report["status"] == "degraded" and report["automem_status"] == "degraded"
            assert "3 vectors for 5 memories" in report["reason"]
            wrapper.health = {"status": "degraded", "qdrant": "disconnected"}
            assert driver.health_check()["reason"] == "qdrant is disconnected"
            wrapper.health = {}
            assert driver.health_check()["status"] == "ok"
    finally:
        store.close()


@pytest.mark.parametrize("observed", [{"merged": ["same words", str(uuid.uuid4())]}], indirect=True)
def test_merged_results_named_by_fingerprint_or_gone_are_passed_over(
    observed: tuple[Observed, str],
) -> None:
    """AutoMem names a merged result by its content fingerprint when it has no id, and a merged
    memory may be deleted before the driver reads it: neither breaks recall."""
    wrapper, url = observed
    with AutoMemDriver(client_settings(url)) as driver:
        memory = driver.store("u1", "same words")
        assert [h.memory for h in driver.recall("u1", query="same words")] == [memory]
    read = [p for m, p, _, _ in wrapper.requests if m == "GET" and p.startswith("/memory/")]
    assert f"/memory/{wrapper.merged[1]}" in read and "/memory/same words" not in read


def test_a_failed_write_of_several_deletes_what_it_stored_and_nothing_else(
    tmp_path: Path,
) -> None:
    """To AutoMem, several memories are several ``POST /memory`` (4 at a time); when some fail
    for good, the ones that arrived are deleted again, and only those: another writer's
    memories stay."""
    store = sqlite_store(tmp_path, build_settings(_env_file=None, embedding_provider="hashing"))
    wrapper = Flaky(Observed(create_app(store, api_token=TOKEN), as_automem=True))
    try:
        with ServerThread(wrapper) as thread, AutoMemDriver(client_settings(thread.url)) as driver:
            other = driver.store("u1", "another writer's memory")
            wrapper.plan("POST", "/memory", *["503"] * 15)  # 6 + 6 + 3 of the 3 attempts
            with pytest.raises(BackendUnavailableError, match="tried 3 times"):
                driver.store_many([{"user_id": "u1", "content": f"m{i}"} for i in range(6)])
            assert wrapper.count("POST", "/memory") == 1 + 15 + 3
            assert [m.id for m in driver.iter_memories("u1")] == [other.id]
    finally:
        store.close()
