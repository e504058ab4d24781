"""``memory-drivers serve`` at its edge: hostile and careless clients, over real HTTP.

Slow clients (half-open connections, a head or a body that never ends), bodies over the size
limit (declared or chunked), text that UTF-8 cannot encode, times outside what a datetime
holds, and the token in the access log. Each server here runs with short limits
(:data:`LIMITS`) in front of a fresh SQLite store, so every test takes a few seconds at most.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from automem_support import TOKEN, sqlite_store

from memory_drivers.config import build_settings
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.server import ServerLimits, ServerThread, create_app, uvicorn_config
from memory_drivers.server.access_log import REDACTED, redact_query
from memory_drivers.server.responses import ServerJSONResponse

LIMITS = ServerLimits(
    max_body_bytes=2000,
    max_head_bytes=8192,
    head_timeout=0.5,
    body_timeout=0.5,
    keep_alive_timeout=1,
    max_connections=50,
)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: A knowledge chunk's block as the automem driver sends it (the convention's version 1).
CHUNK_BLOCK = {
    "v": 1,
    "kind": "knowledge",
    "id": "3f2b8c1e-4d5a-4b6c-9d7e-8f9a0b1c2d3e",
    "doc_id": "doc",
    "chunk_index": 0,
    "category": "general",
    "content": "new",
}


class Edge:
    def __init__(self, thread: ServerThread, store: SQLiteDriver) -> None:
        self.thread = thread
        self.store = store
        self.url = thread.url
        host, port = thread.url.removeprefix("http://").rsplit(":", 1)
        self.address = (host, int(port))

    def connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Edge]:
    """A server with :data:`LIMITS` and the token, over a fresh SQLite store."""
    store = sqlite_store(tmp_path, build_settings(_env_file=None, embedding_provider="hashing"))
    app = create_app(store, api_token=TOKEN, limits=LIMITS)
    try:
        with ServerThread(app) as thread:
            yield Edge(thread, store)
    finally:
        store.close()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response (status, lower-cased headers, body) read from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a whole response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True  # reset
    return True


def head(method: str, path: str, *lines: str) -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: test", *lines, "", ""]).encode()


# ---------------------------------------------------------------------- slow clients
def test_half_open_connections_do_not_starve_a_normal_client(edge: Edge) -> None:
    """200 clients that send part of a request head and stop (four times the connection
    limit) are closed after MEMORY_SERVER_HEAD_TIMEOUT, and a normal client is served within
    seconds. Failing means the head timeout no longer applies (uvicorn keeps such connections
    forever) or the connection limit does not let go of closed connections."""
    stalled = []
    try:
        for _ in range(200):
            sock = edge.connect()
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: ")
            stalled.append(sock)
        started = time.monotonic()
        statuses = []
        while time.monotonic() - started < 5:
            response = httpx.get(f"{edge.url}/health", timeout=5)
            statuses.append(response.status_code)
            if response.status_code == 200:
                break
            time.sleep(0.05)
        assert statuses[-1] == 200, statuses
        assert set(statuses) <= {200, 503}  # 503: over the limit, answered at once
        assert time.monotonic() - started < 3
        assert all(closed_by_server(sock, 2) for sock in stalled)
    finally:
        for sock in stalled:
            sock.close()


def test_a_kept_alive_connection_gets_the_same_head_timeout(edge: Edge) -> None:
    """After a first request is answered, a second head that stops halfway is cut off too
    (uvicorn's own keep-alive timer stops at the first byte of the next request)."""
    with edge.connect() as sock:
        sock.sendall(head("GET", "/health"))
        status, headers, _ = read_response(sock)
        assert status == 200 and headers.get("connection") != "close"
        sock.sendall(b"GET /health HTTP/1.1\r\nHo")
        started = time.monotonic()
        assert closed_by_server(sock, 3)
        assert time.monotonic() - started < 2


def test_a_body_that_stops_arriving_is_408(edge: Edge) -> None:
    """A body that does not arrive within MEMORY_SERVER_BODY_TIMEOUT is refused with 408 in
    AutoMem's error shape, and the connection is closed; nothing is stored."""
    with edge.connect() as sock:
        sock.sendall(head("POST", "/memory", f"X-API-Key: {TOKEN}", "Content-Length: 100"))
        sock.sendall(b'{"content": ')
        started = time.monotonic()
        status, headers, body = read_response(sock)
        assert status == 408, body
        assert time.monotonic() - started < 3
        assert json.loads(body)["code"] == 408
        assert "MEMORY_SERVER_BODY_TIMEOUT" in json.loads(body)["message"]
        assert headers["connection"] == "close"
        assert closed_by_server(sock, 2)
    assert edge.store.count() == 0


def test_a_head_over_the_limit_is_400(edge: Edge) -> None:
    """A request head over MEMORY_SERVER_MAX_HEAD_BYTES is refused by h11 (400) and the
    connection closed, without waiting for the rest of it."""
    with edge.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 10_000)
        status, headers, _ = read_response(sock)
        assert status == 400
        assert headers["connection"] == "close"


def test_limits_come_from_the_settings_and_reach_uvicorn(tmp_path: Path) -> None:
    """Each MEMORY_SERVER_* limit reaches the server: the app's body limit, and uvicorn's
    own settings for the rest."""
    settings = build_settings(
        _env_file=None,
        embedding_provider="hashing",
        memory_server_max_body_bytes=1234,
        memory_server_max_head_bytes=4096,
        memory_server_head_timeout=2.5,
        memory_server_body_timeout=3.5,
        memory_server_keep_alive_timeout=7,
        memory_server_max_connections=9,
    )
    limits = ServerLimits.from_settings(settings)
    assert limits == ServerLimits(1234, 4096, 2.5, 3.5, 7, 9)
    assert ServerLimits() == ServerLimits.from_settings(build_settings(_env_file=None))
    store = sqlite_store(tmp_path, settings)
    try:
        app = create_app(store)  # the driver's settings by default
        assert app.state.limits == limits
        config = uvicorn_config(app, "127.0.0.1", 0, "warning")
        assert config.h11_max_incomplete_event_size == 4096
        assert config.limit_concurrency == 9
        assert config.timeout_keep_alive == 7
        assert config.http.head_timeout == 2.5
    finally:
        store.close()


# ---------------------------------------------------------------------- body size
def test_a_huge_content_length_is_413_before_the_body_is_read(edge: Edge) -> None:
    """A declared 300 MB body is refused at once from its Content-Length: the server answers
    after one byte of it, in AutoMem's error shape, and closes the connection."""
    with edge.connect() as sock:
        sock.sendall(
            head(
                "POST",
                "/memory",
                f"Authorization: Bearer {TOKEN}",
                "Content-Type: application/json",
                "Content-Length: 300000000",
            )
        )
        sock.sendall(b"{")
        status, headers, body = read_response(sock)
        assert status == 413
        message = json.loads(body)
        assert message["status"] == "error" and message["code"] == 413
        assert "2000 bytes (MEMORY_SERVER_MAX_BODY_BYTES)" in message["message"]
        assert headers["connection"] == "close"
        assert closed_by_server(sock, 2)
    assert edge.store.count() == 0


def test_a_chunked_body_over_the_limit_is_413(edge: Edge) -> None:
    """A body without Content-Length (chunked) is counted as it arrives and refused once it
    passes the limit, without waiting for its end; nothing is stored."""
    item = json.dumps({"content": "x" * 900})
    with edge.connect() as sock:
        sock.sendall(head("POST", "/memory", f"X-API-Key: {TOKEN}", "Transfer-Encoding: chunked"))
        for _ in range(3):  # 2700 bytes, and no final chunk
            sock.sendall(f"{len(item):x}\r\n{item}\r\n".encode())
        status, headers, body = read_response(sock)
        assert status == 413, body
        assert json.loads(body)["code"] == 413
        assert headers["connection"] == "close"
    assert edge.store.count() == 0


def test_bodies_within_the_limit_are_served_chunked_or_not(edge: Edge) -> None:
    """The limits refuse only what is over them: a body just under the limit, sent with
    Content-Length or chunked, is stored, and the connection stays open."""
    near_limit = {"content": "y" * 1900}
    response = httpx.post(f"{edge.url}/memory", json=near_limit, headers=AUTH)
    assert response.status_code == 201, response.text
    payload = json.dumps({"content": "chunked memory"}).encode()
    with edge.connect() as sock:
        sock.sendall(head("POST", "/memory", f"X-API-Key: {TOKEN}", "Transfer-Encoding: chunked"))
        sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload))
        status, headers, body = read_response(sock)
        assert status == 201, body
        assert headers.get("connection") != "close"
        sock.sendall(head("GET", "/health"))
        assert read_response(sock)[0] == 200
    assert edge.store.count() == 2


def test_a_refused_request_with_an_unread_body_closes_the_connection(edge: Edge) -> None:
    """A request answered without its body being read (here a 401) closes the connection, so
    a client cannot keep it busy by trickling a body nobody reads."""
    with edge.connect() as sock:
        sock.sendall(head("POST", "/memory", "Content-Length: 50") + b"{")
        status, headers, _ = read_response(sock)
        assert status == 401
        assert headers["connection"] == "close"
        assert closed_by_server(sock, 2)


# ---------------------------------------------------------------------- unservable text
def test_a_lone_surrogate_is_refused_and_never_stored(edge: Edge) -> None:
    """A JSON string that decodes to a lone surrogate ("\\ud800", which UTF-8 cannot encode)
    is a 400 naming where it is, on every route with a body, and nothing is stored: before,
    the tag was stored on SQLite and every recall that reached it answered 500."""
    kept = httpx.post(f"{edge.url}/memory", json={"content": "kept", "tags": ["a"]}, headers=AUTH)
    memory_id = kept.json()["memory_id"]
    before = edge.store.get(memory_id)
    raw_bodies = [
        ("POST", "/memory", rb'{"content": "x", "tags": ["\ud800"]}', "tags[0]"),
        ("POST", "/memory", rb'{"content": "x\udfff y"}', "content"),
        ("POST", "/memory", rb'{"content": "x", "metadata": {"k\ud800": 1}}', "metadata.k"),
        ("POST", "/memory", b'{"content": "x", "tags": ["\xed\xa0\x80"]}', "tags[0]"),
        ("POST", "/memory/batch", rb'{"memories": [{"content": "x", "tags": ["\ud800"]}]}', ""),
        ("PATCH", f"/memory/{memory_id}", rb'{"tags": ["ok", "\udc00"]}', "tags[1]"),
        ("PATCH", f"/memory/{memory_id}", rb'{"content": "\ud800"}', "content"),
    ]
    for method, path, raw, where in raw_bodies:
        response = httpx.request(method, f"{edge.url}{path}", content=raw, headers=AUTH)
        assert response.status_code == 400, (path, raw, response.text)
        message = response.json()["message"]
        assert "lone UTF-16 surrogate" in message and where in message, message
    assert edge.store.count() == 1
    assert edge.store.get(memory_id) == before
    recalled = httpx.get(f"{edge.url}/recall", params={"query": "kept"}, headers=AUTH)
    assert recalled.status_code == 200
    assert [r["id"] for r in recalled.json()["results"]] == [memory_id]


def test_answers_encode_text_with_surrogates_as_replacement_characters() -> None:
    """Whatever text reaches an answer, it encodes: a surrogate becomes U+FFFD."""
    body = ServerJSONResponse({"tag": "a\ud800b", "ok": "é"}).body
    assert json.loads(body) == {"tag": "a\ufffdb", "ok": "é"}


def test_text_the_store_already_holds_that_utf8_cannot_encode_is_served(edge: Edge) -> None:
    """A memory whose tag and content hold a lone surrogate (written into the store by other
    means) is shown with U+FFFD in its place: recall, by-tag and GET answer 200, not 500."""
    memory = edge.store.store("automem", "fine text", tags=["good"])
    changes = {"tags": ["good", "bad\ud800"], "metadata": {"note": "x\udfff"}}
    assert edge.store._update_memory(memory.id, None, changes, None, None) is not None
    for path, params in (
        ("/recall", {}),
        ("/recall", {"query": "fine text"}),
        ("/memory/by-tag", {"tags": "good"}),
        (f"/memory/{memory.id}", {}),
    ):
        response = httpx.get(f"{edge.url}{path}", params=params, headers=AUTH)
        assert response.status_code == 200, (path, response.text)
        assert "bad\ufffd" in response.json().__repr__()
        assert "x\ufffd" in response.text


# ---------------------------------------------------------------------- times
@pytest.mark.parametrize(
    ("method", "path", "params", "body", "field"),
    [
        ("GET", "/recall", {"start": "0001-01-01T00:00:00+01:00"}, None, "'start'"),
        ("GET", "/recall", {"end": "9999-12-31T23:59:59-01:00"}, None, "'end'"),
        ("GET", "/recall", {"time_query": "last 999999999 days"}, None, "'time_query'"),
        ("GET", "/recall", {"time_query": "last 99999999999 days"}, None, "'time_query'"),
        ("POST", "/memory", {}, {"timestamp": "0001-01-01T00:00:00+01:00"}, "'timestamp'"),
        ("POST", "/memory", {}, {"updated_at": "9999-12-31T23:30:00-01:00"}, "'updated_at'"),
        ("POST", "/memory", {}, {"t_valid": "0001-01-01T00:00:00+00:01"}, "'t_valid'"),
        ("POST", "/memory/batch", {}, {"timestamp": "0001-01-01T00:00:00+05:00"}, "'timestamp'"),
        (
            "POST",
            "/memory",
            {},
            {
                "metadata": {
                    "memory_drivers": {**CHUNK_BLOCK, "created_at": "0001-01-01T00:00+01:00"}
                }
            },
            "'metadata.memory_drivers.created_at'",
        ),
        ("PATCH", "/memory/{id}", {}, {"timestamp": "0001-01-01T00:00:00+01:00"}, "'timestamp'"),
        ("PATCH", "/memory/{id}", {}, {"updated_at": "9999-12-31T23:59:59-12:00"}, "'updated_at'"),
    ],
)
def test_times_outside_a_datetime_are_400_naming_the_field(
    edge: Edge, method: str, path: str, params: dict[str, str], body: Any, field: str
) -> None:
    """A well-formed time that falls outside the years 1 to 9999 in UTC (a time zone pushes
    it over) is a 400 naming the parameter or field, never a 500."""
    memory = edge.store.store("automem", "an existing memory")
    if body is not None:
        body = {"content": "new", **body} if method == "POST" else body
        if path == "/memory/batch":
            body = {"memories": [body]}
    response = httpx.request(
        method,
        f"{edge.url}{path.format(id=memory.id)}",
        params=params,
        json=body,
        headers=AUTH,
    )
    assert response.status_code == 400, response.text
    message = response.json()["message"]
    assert field in message and "years 1 to 9999" in message, message
    assert edge.store.count() == 1
    assert edge.store.get(memory.id) == memory


def test_the_extreme_times_themselves_work(edge: Edge) -> None:
    """The first and last representable times are accepted: stored, and usable as a window
    (an ``end`` at the very last microsecond bounds nothing rather than overflowing)."""
    first = "0001-01-01T00:00:00Z"
    last = "9999-12-31T23:59:59.999999Z"
    for moment in (first, last):
        response = httpx.post(
            f"{edge.url}/memory", json={"content": moment, "timestamp": moment}, headers=AUTH
        )
        assert response.status_code == 201, response.text
    window = httpx.get(f"{edge.url}/recall", params={"start": first, "end": last}, headers=AUTH)
    assert window.status_code == 200, window.text
    assert sorted(r["memory"]["content"] for r in window.json()["results"]) == [first, last]


# ---------------------------------------------------------------------- the token in logs
def test_redact_query_replaces_every_token_parameter() -> None:
    assert redact_query("/recall?api_key=s3cret&query=x") == f"/recall?api_key={REDACTED}&query=x"
    assert (
        redact_query("/recall?query=x&api%5Fkey=s3cret") == f"/recall?query=x&api%5Fkey={REDACTED}"
    )
    assert (
        redact_query("/recall?API_KEY=a&api_key=b")
        == f"/recall?API_KEY={REDACTED}&api_key={REDACTED}"
    )
    assert redact_query("/recall?query=api_key") == "/recall?query=api_key"
    assert redact_query("/health") == "/health"


def test_the_access_log_never_shows_a_query_token(tmp_path: Path) -> None:
    """With the access log on (``-v``), a request that sends the token as ``?api_key=`` is
    logged with ``[redacted]`` in its place, under every spelling the server accepts."""
    store = sqlite_store(tmp_path, build_settings(_env_file=None, embedding_provider="hashing"))
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    collect = Collect()
    try:
        with ServerThread(create_app(store, api_token=TOKEN), log_level="info") as thread:
            logging.getLogger("uvicorn.access").addHandler(collect)
            for query in (f"api_key={TOKEN}", f"limit=2&api%5Fkey={TOKEN}"):
                assert httpx.get(f"{thread.url}/recall?{query}").status_code == 200
    finally:
        logging.getLogger("uvicorn.access").removeHandler(collect)
        store.close()
    requests = [line for line in seen if "/recall" in line]
    assert len(requests) == 2, seen
    assert all(TOKEN not in line and REDACTED in line for line in requests), requests
