"""Stream consolidation against the real Redis and real sqlite stores: windows, checkpoints,
exactly-once across real SIGKILLs of ``memory-drivers consolidate`` (at chosen points and at
random moments), clean shutdown, the command line, and both summarisers (the chat one against
an OpenAI-compatible server on loopback).

Every stream lives under the test's own key prefix on the shared Redis server.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from automem_support import live_server  # noqa: F401 - a fixture
from redis_support import (  # noqa: F401 - fixtures
    BACKENDS,
    REDIS_URL,
    Backend,
    chroma_service,
    free_port,
    namespace,
    open_backend,
    redis_client,
)

from memory_drivers import BackendUnavailableError, ConfigurationError, Settings, get_settings
from memory_drivers.base import BaseMemoryDriver
from memory_drivers.cli import main
from memory_drivers.config import build_settings
from memory_drivers.embeddings.hashing import HashingEmbedder
from memory_drivers.manager import MemoryDriverManager
from memory_drivers.models import Memory
from memory_drivers.redis import (
    ExtractiveSummarizer,
    OpenAIChatSummarizer,
    StreamConsolidator,
    StreamEvent,
)
from memory_drivers.redis.consolidation import MARKER, parse_event_id, summary_id

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------- helpers
@pytest.fixture
def stream(namespace: str) -> str:  # noqa: F811
    return f"{namespace}:events"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/store/memories.db"


@pytest.fixture
def settings(db_url: str) -> Settings:
    return build_settings(_env_file=None, memory_db_url=db_url, embedding_provider="hashing")


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The driver the summaries go to: sqlite (the store ``db_url`` names, which the command
    line tests use too), unless a test asks for every driver (indirect)."""
    with open_backend(request.param, request, tmp_path) as opened:
        yield opened


@pytest.fixture
def open_driver(backend: Backend, settings: Settings) -> Iterator[Callable[[], BaseMemoryDriver]]:
    """Open the test's store (again), as a new process would."""
    opened: list[BaseMemoryDriver] = []

    def open_one() -> BaseMemoryDriver:
        driver = backend.factory(embedder=HashingEmbedder(256), settings=settings)
        opened.append(driver)
        return driver

    yield open_one
    for driver in opened:
        driver.close()


def add_events(client: Any, stream: str, n: int, start: int = 0) -> list[str]:
    return [
        client.xadd(
            stream, {"role": "user", "content": f"Event {i}: the user mentions topic {i % 7}."}
        )
        for i in range(start, start + n)
    ]


def summaries(driver: BaseMemoryDriver, user: str) -> list[Memory]:
    """Every summary memory of ``user``, in event order."""
    found = [m for m in driver.iter_memories(user) if m.metadata.get("consolidator") == MARKER]
    return sorted(found, key=lambda m: parse_event_id(m.metadata["first_event_id"]))


def assert_exactly_once(found: list[Memory], events: list[str], batch: int) -> None:
    """The summaries cover the first full windows of ``events``, each once, none skipped."""
    windows = [(m.metadata["first_event_id"], m.metadata["last_event_id"]) for m in found]
    expected = [
        (events[i], events[i + batch - 1]) for i in range(0, len(events) - batch + 1, batch)
    ]
    assert windows == expected[: len(windows)], "a window was summarised twice, or one skipped"
    assert all(m.metadata["event_count"] == batch for m in found)
    assert len({m.id for m in found}) == len(found)


def pending(client: Any, stream: str, group: str = "memory-drivers") -> list[str]:
    return [p["message_id"] for p in client.xpending_range(stream, group, "-", "+", 10_000)]


def process_env(db_url: str, **extra: str) -> dict[str, str]:
    """The environment of a consolidator process: no memory-drivers variables but ours."""
    fields = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in fields}
    env.update(
        MEMORY_DB_URL=db_url,
        EMBEDDING_PROVIDER="hashing",
        REDIS_URL=REDIS_URL,
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


class Consolidator:
    """``python -m memory_drivers consolidate ...`` as a real process."""

    def __init__(self, db_url: str, cwd: Path, *args: str, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "memory_drivers", "consolidate", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=process_env(db_url, **env),
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.process.stdout, self.stdout),
                (self.process.stderr, self.stderr),
            )
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def _wait(self, done: Callable[[], str | None], what: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = done()
            if found is not None:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(
            f"no {what}; stdout: {''.join(self.stdout)} stderr: {''.join(self.stderr)}"
        )

    def wait_for_stderr(self, text: str, timeout: float = 60) -> str:
        return self._wait(
            lambda: next((line for line in list(self.stderr) if text in line), None),
            f"{text!r} on stderr",
            timeout,
        )

    def wait_for_summaries(self, n: int, timeout: float = 60) -> list[str]:
        """Wait until the process printed ``n`` summary lines; returns them."""
        self._wait(lambda: "ok" if len(self.stdout) >= n else None, f"{n} summaries", timeout)
        return self.stdout[:n]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(10)
        return code, "".join(self.stdout)


# ---------------------------------------------------------------------------------- windows
@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_every_batch_of_events_becomes_one_summary(
    open_driver: Callable[[], BaseMemoryDriver],
    redis_client: Any,  # noqa: F811
    stream: str,
) -> None:
    driver = open_driver()
    events = add_events(redis_client, stream, 23)
    c = StreamConsolidator(driver, REDIS_URL, stream=stream, batch_size=10, user_id="agent")
    assert c.run(once=True) == 2
    found = summaries(driver, "agent")
    assert_exactly_once(found, events, 10)
    first = found[0]
    assert first.id == summary_id("agent", stream, events[0], events[9])
    assert first.metadata == {
        "consolidator": MARKER,
        "stream": stream,
        "first_event_id": events[0],
        "last_event_id": events[9],
        "event_count": 10,
        "summarizer": "extractive",
    }
    assert first.content.startswith(f"Summary of 10 events from stream {stream} ({events[0]} to")
    assert (first.memory_type, first.tags, first.source) == (
        "episodic",
        ["consolidation"],
        "redis-stream",
    )
    ms = parse_event_id(events[9])[0]
    assert first.created_at == datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    assert c.checkpoint == events[19]
    assert pending(redis_client, stream) == events[20:], "delivered, not summarised yet"

    more = add_events(redis_client, stream, 7, start=23)
    assert c.run(once=True) == 1
    assert_exactly_once(summaries(driver, "agent"), events + more, 10)
    assert pending(redis_client, stream) == []
    c.close()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_restart_resumes_from_the_store(
    open_driver: Callable[[], BaseMemoryDriver],
    redis_client: Any,  # noqa: F811
    stream: str,
) -> None:
    """A new consolidator (new process, new driver) finds the checkpoint in the store, even
    when the consumer group was deleted in between."""
    events = add_events(redis_client, stream, 20)
    first = StreamConsolidator(open_driver(), REDIS_URL, stream=stream, batch_size=5)
    assert first.run(once=True) == 4
    first.close()
    events += add_events(redis_client, stream, 5, start=20)
    redis_client.xgroup_destroy(stream, "memory-drivers")
    second = StreamConsolidator(open_driver(), REDIS_URL, stream=stream, batch_size=5)
    assert second.load_checkpoint() == events[19]
    assert second.run(once=True) == 1
    assert_exactly_once(summaries(open_driver(), stream), events, 5)
    assert pending(redis_client, stream) == []
    second.close()


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_windows_ending_in_the_same_millisecond(
    open_driver: Callable[[], BaseMemoryDriver],
    redis_client: Any,  # noqa: F811
    stream: str,
) -> None:
    """Summaries whose last events share a millisecond have equal created_at; the checkpoint
    is still the largest event id."""
    events = [
        redis_client.xadd(stream, {"content": f"e{i}"}, id=f"5000-{i + 1}") for i in range(40)
    ]
    c = StreamConsolidator(open_driver(), REDIS_URL, stream=stream, batch_size=5)
    assert c.run(once=True) == 8
    events += [
        redis_client.xadd(stream, {"content": "late"}, id=f"5000-{i}") for i in range(41, 46)
    ]
    again = StreamConsolidator(open_driver(), REDIS_URL, stream=stream, batch_size=5)
    assert again.load_checkpoint() == "5000-40"
    assert again.run(once=True) == 1
    assert_exactly_once(summaries(open_driver(), stream), events, 5)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_two_consolidators_at_once_never_duplicate(
    open_driver: Callable[[], BaseMemoryDriver],
    redis_client: Any,  # noqa: F811
    stream: str,
) -> None:
    """Two consolidators of one stream, each with its own store connection, while events
    arrive: every window is stored once (the second writer gets a ConflictError and moves
    on), none is skipped."""
    stop = threading.Event()
    results: list[Any] = []
    workers = [
        StreamConsolidator(
            open_driver(),
            REDIS_URL,
            stream=stream,
            batch_size=4,
            consumer=f"c{n}",
            block=0.05,
            on_summary=results.append,
        )
        for n in range(2)
    ]
    threads = [threading.Thread(target=w.run, args=(stop,)) for w in workers]
    for thread in threads:
        thread.start()
    events: list[str] = []
    for n in range(15):
        events += add_events(redis_client, stream, 4, start=4 * n)
        time.sleep(0.01)
    deadline = time.monotonic() + 20
    while len({r.memory.id for r in results}) < 15 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert_exactly_once(summaries(open_driver(), stream), events, 4)
    assert len(summaries(open_driver(), stream)) == 15
    assert sum(r.written for r in results) == 15
    assert pending(redis_client, stream) == []
    for w in workers:
        w.close()


def test_a_failing_summariser_writes_and_acknowledges_nothing(
    open_driver: Callable[[], BaseMemoryDriver],
    redis_client: Any,  # noqa: F811
    stream: str,
) -> None:
    """When the summariser fails, nothing is stored or acknowledged; the window is retried
    (run() backs off and tries again) and then summarised once."""

    class Flaky(ExtractiveSummarizer):
        failures = 1

        def summarize(self, stream: str, events: Any) -> str:
            if self.failures:
                self.failures -= 1
                raise BackendUnavailableError("the model server is down")
            return super().summarize(stream, events)

    driver = open_driver()
    events = add_events(redis_client, stream, 6)
    once = StreamConsolidator(driver, REDIS_URL, stream=stream, batch_size=6, summarizer=Flaky())
    with pytest.raises(BackendUnavailableError):
        once.run(once=True)
    assert summaries(driver, stream) == []
    assert pending(redis_client, stream) == events
    stop = threading.Event()
    looping = StreamConsolidator(
        driver,
        REDIS_URL,
        stream=stream,
        batch_size=6,
        summarizer=Flaky(),
        block=0.05,
        on_summary=lambda result: stop.set(),
    )
    thread = threading.Thread(target=looping.run, args=(stop,))
    thread.start()
    thread.join(15)
    assert not thread.is_alive()
    assert_exactly_once(summaries(driver, stream), events, 6)
    assert len(summaries(driver, stream)) == 1 and pending(redis_client, stream) == []


# ---------------------------------------------------------------------------------- crashes
@pytest.mark.parametrize(
    ("point", "stored", "unacked"),
    [("before-store", 1, True), ("after-store", 2, True), ("after-ack", 2, False)],
)
def test_killed_at_each_point_of_a_window(
    db_url: str,
    tmp_path: Path,
    open_driver: Callable[[], BaseMemoryDriver],
    redis_client: Any,  # noqa: F811
    stream: str,
    point: str,
    stored: int,
    unacked: bool,
) -> None:
    """SIGKILL while the second window is (about to be) stored, between storing it and
    XACK, or just after: the restarted consolidator summarises each event exactly once."""
    events = add_events(redis_client, stream, 20)
    first = Consolidator(
        db_url,
        tmp_path,
        "--stream",
        stream,
        "--batch",
        "5",
        MEMORY_DRIVERS_CONSOLIDATE_PAUSE=f"{point}:2",
    )
    marker = first.wait_for_stderr(f"paused at {point}")
    assert f"{events[5]}..{events[9]}" in marker
    first.kill()
    found = summaries(open_driver(), stream)
    assert len(found) == stored
    assert (events[5] in pending(redis_client, stream)) is unacked

    code, out = Consolidator(
        db_url, tmp_path, "--stream", stream, "--batch", "5", "--once"
    ).finish()
    assert code == 0, out
    found = summaries(open_driver(), stream)
    assert len(found) == 4
    assert_exactly_once(found, events, 5)
    assert pending(redis_client, stream) == []
    assert len(out.splitlines()) == 4 - stored


def test_killed_at_random_moments(
    db_url: str,
    tmp_path: Path,
    open_driver: Callable[[], BaseMemoryDriver],
    redis_client: Any,  # noqa: F811
    stream: str,
) -> None:
    """Events keep arriving while consolidator processes are SIGKILLed at random moments and
    restarted; in the end every full window is summarised exactly once."""
    rng = random.Random(11)
    events: list[str] = []
    producing = threading.Event()

    def produce() -> None:
        while not producing.is_set() and len(events) < 3000:
            events.extend(add_events(redis_client, stream, 3, start=len(events)))
            time.sleep(0.03)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        for _ in range(5):
            run = Consolidator(
                db_url,
                tmp_path,
                "--stream",
                stream,
                "--batch",
                "7",
                "--block",
                "0.1",
                MEMORY_DRIVERS_CONSOLIDATE_SLOW="0.03",
            )
            run.wait_for_summaries(1)  # working (its start-up time depends on the machine)
            time.sleep(rng.uniform(0.0, 0.8))
            run.kill()
    finally:
        producing.set()
        producer.join(30)
    assert len(summaries(open_driver(), stream)) >= 5, "each killed run stored something"
    code, out = Consolidator(
        db_url, tmp_path, "--stream", stream, "--batch", "7", "--once"
    ).finish()
    assert code == 0, out
    found = summaries(open_driver(), stream)
    assert len(found) == len(events) // 7
    assert_exactly_once(found, events, 7)
    assert set(pending(redis_client, stream)) <= set(events[len(found) * 7 :])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_cleanly(
    db_url: str,
    tmp_path: Path,
    open_driver: Callable[[], BaseMemoryDriver],
    redis_client: Any,  # noqa: F811
    stream: str,
    signum: int,
) -> None:
    events = add_events(redis_client, stream, 10)
    run = Consolidator(db_url, tmp_path, "--stream", stream, "--batch", "5", "--block", "0.2")
    lines = run.wait_for_summaries(2)
    assert all(f"5 events  {e}" in line for e, line in zip(events[::5], lines, strict=True))
    run.process.send_signal(signum)
    code, out = run.finish(timeout=10)
    assert code == 0 and out == "".join(lines), "nothing more after the signal"
    assert "Traceback" not in "".join(run.stderr)
    assert_exactly_once(summaries(open_driver(), stream), events, 5)


# ---------------------------------------------------------------------------------- the CLI
@pytest.fixture
def cli_env(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> Iterator[Callable[..., tuple[int, str, str]]]:
    monkeypatch.setenv("MEMORY_DB_URL", db_url)
    monkeypatch.setenv("EMBEDDING_PROVIDER", "hashing")
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    MemoryDriverManager.reset_cache()

    def run(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
        get_settings.cache_clear()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    MemoryDriverManager.reset_cache()


def test_cli_prints_json_lines_and_reports_errors(
    cli_env: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    redis_client: Any,  # noqa: F811
    stream: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = add_events(redis_client, stream, 9)
    code, out, err = cli_env(
        "consolidate",
        "--stream",
        stream,
        "--batch",
        "4",
        "--once",
        "--json",
        "--user",
        "bot",
        capsys=capsys,
    )
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(r["first_event_id"], r["last_event_id"]) for r in lines] == [
        (events[0], events[3]),
        (events[4], events[7]),
    ]
    assert all(r["user_id"] == "bot" and r["event_count"] == 4 and r["written"] for r in lines)

    code, out, err = cli_env(
        "consolidate", "--stream", stream, "--batch", "0", "--once", capsys=capsys
    )
    assert code == 2 and "batch_size" in err
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("REDIS_TIMEOUT", "0.5")
    code, out, err = cli_env("consolidate", "--stream", stream, "--once", capsys=capsys)
    assert code == 1 and "error: Redis at redis://127.0.0.1:" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------- summarisers
def _events(texts: list[str], **fields: str) -> list[StreamEvent]:
    return [StreamEvent(f"{i + 1}-0", {**fields, "content": t}) for i, t in enumerate(texts)]


def test_extractive_summary_is_deterministic_and_covers_the_topics() -> None:
    texts = [
        "I want to fly to Lisbon in May. Window seat please.",
        "Lisbon flights in May are cheaper on Tuesdays.",
        "My budget for the Lisbon trip is 900 euros.",
        "I want to fly to Lisbon in May. Window seat please.",  # repeated: counted once
        "ok",
        "The cat knocked over a plant.",
    ]
    summarizer = ExtractiveSummarizer(max_sentences=3)
    text = summarizer.summarize("s", _events(texts, role="user"))
    assert text == summarizer.summarize("s", _events(texts, role="user"))
    lines = text.splitlines()
    assert lines[0] == "Summary of 6 events from stream s (1-0 to 6-0)."
    assert len(lines) == 4 and all(line.startswith("- user: ") for line in lines[1:])
    assert "- user: I want to fly to Lisbon in May." in lines, "the most repeated content"
    assert "- user: ok" not in lines, "a one-word sentence says nothing"
    assert len(set(lines)) == len(lines), "no sentence twice"
    positions = [" ".join(texts).find(line.removeprefix("- user: ")) for line in lines[1:]]
    assert positions == sorted(positions), "kept in the events' order"
    everything = ExtractiveSummarizer(max_sentences=10).summarize("s", _events(texts))
    assert len(everything.splitlines()) == 1 + 5, "every distinct sentence but 'ok'"
    only_ok = ExtractiveSummarizer().summarize("s", _events(["ok", "ok", "thanks"]))
    assert only_ok.splitlines()[1:] == ["- ok", "- thanks"]


def test_extractive_summary_of_events_without_text() -> None:
    events = [StreamEvent("1-0", {"kind": "click", "target": "buy-button"}), StreamEvent("2-0", {})]
    text = ExtractiveSummarizer().summarize("clicks", events)
    assert "- kind=click; target=buy-button" in text
    long = ExtractiveSummarizer(max_sentence_chars=50).summarize("s", _events(["word " * 100]))
    assert long.splitlines()[1].endswith("...") and len(long.splitlines()[1]) <= 52


class ChatServer:
    """An OpenAI-compatible ``POST /v1/chat/completions`` server on loopback. ``replies`` is a
    list of (status, body) answered in turn (the last one repeats)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.replies: list[tuple[int, Any]] = [(200, None)]
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                server.requests.append(
                    {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
                )
                status, reply = server.replies[min(len(server.requests), len(server.replies)) - 1]
                if reply is None:
                    count = body["messages"][1]["content"].count("\n[")
                    reply = {
                        "choices": [
                            {
                                "message": {
                                    "role": "assistant",
                                    "content": f"  {count} events about tea.  ",
                                }
                            }
                        ]
                    }
                data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer()
    yield server
    server.close()


def test_chat_summariser_request_and_answer(chat: ChatServer) -> None:
    summarizer = OpenAIChatSummarizer("tiny-model", api_url=chat.url + "/", api_key="sk-test")
    events = _events(["tea at nine", "green tea"], role="user")
    text = summarizer.summarize("agent", events)
    assert text == "Summary of 2 events from stream agent (1-0 to 2-0).\n2 events about tea."
    [request] = chat.requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == "tiny-model" and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "[1-0] user: tea at nine" in body["messages"][1]["content"]
    assert summarizer.name == "openai:tiny-model"
    summarizer.close()


def test_chat_summariser_retries_then_reports(chat: ChatServer) -> None:
    summarizer = OpenAIChatSummarizer("m", api_url=chat.url, retries=2, backoff=0.01)
    events = _events(["tea"])
    chat.replies = [(503, {"error": {"message": "overloaded"}}), (200, None)]
    assert summarizer.summarize("s", events).endswith("1 events about tea.")
    assert len(chat.requests) == 2
    chat.requests.clear()
    chat.replies = [(401, {"error": {"message": "invalid api key"}})]
    with pytest.raises(ConfigurationError, match="401: invalid api key"):
        summarizer.summarize("s", events)
    assert len(chat.requests) == 1, "a 4xx answer is not retried"
    chat.replies = [(200, "not json")]
    with pytest.raises(BackendUnavailableError, match="not an OpenAI-style"):
        summarizer.summarize("s", events)
    chat.replies = [(200, {"choices": [{"message": {"content": "  "}}]})]
    with pytest.raises(BackendUnavailableError, match="empty"):
        summarizer.summarize("s", events)
    chat.requests.clear()
    chat.replies = [(500, {"error": "boom"})]
    with pytest.raises(BackendUnavailableError, match="500"):
        summarizer.summarize("s", events)
    assert len(chat.requests) == 3
    dead = OpenAIChatSummarizer("m", api_url=f"http://127.0.0.1:{free_port()}/v1", retries=0)
    with pytest.raises(BackendUnavailableError, match="cannot reach the summariser"):
        dead.summarize("s", events)


def test_consolidate_with_the_chat_summariser(
    cli_env: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    chat: ChatServer,
    monkeypatch: pytest.MonkeyPatch,
    open_driver: Callable[[], BaseMemoryDriver],
    redis_client: Any,  # noqa: F811
    stream: str,
) -> None:
    monkeypatch.setenv("SUMMARIZER", "openai")
    monkeypatch.setenv("SUMMARIZER_API_URL", chat.url)
    monkeypatch.setenv("SUMMARIZER_MODEL", "local-llm")
    monkeypatch.setenv("SUMMARIZER_API_KEY", "sk-local")
    events = add_events(redis_client, stream, 6)
    code, _, err = cli_env(
        "consolidate", "--stream", stream, "--batch", "3", "--once", capsys=capsys
    )
    assert code == 0, err
    found = summaries(open_driver(), stream)
    assert_exactly_once(found, events, 3)
    assert [m.content.splitlines()[1] for m in found] == ["3 events about tea."] * 2
    assert {m.metadata["summarizer"] for m in found} == {"openai:local-llm"}
    assert all(r["auth"] == "Bearer sk-local" for r in chat.requests)


def test_consolidate_through_the_cache(
    cli_env: Callable[..., tuple[int, str, str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    open_driver: Callable[[], BaseMemoryDriver],
    redis_client: Any,  # noqa: F811
    namespace: str,  # noqa: F811
    stream: str,
) -> None:
    """With MEMORY_CACHE=redis the consolidator reads its checkpoint and writes its summaries
    through the cache; a cached recall sees each new summary at once."""
    monkeypatch.setenv("MEMORY_CACHE", "redis")
    monkeypatch.setenv("REDIS_PREFIX", namespace)
    events = add_events(redis_client, stream, 4)
    for _ in range(2):
        code, _, err = cli_env(
            "consolidate", "--stream", stream, "--batch", "2", "--once", capsys=capsys
        )
        assert code == 0, err
        code, out, err = cli_env("recall", "--user", stream, "--json", capsys=capsys)
        assert code == 0, err
        assert len(json.loads(out)) == len(events) // 2
        events += add_events(redis_client, stream, 2, start=len(events))
    assert list(redis_client.scan_iter(match=f"{namespace}:cache:sqlite:*"))
    assert_exactly_once(summaries(open_driver(), stream), events, 2)
