"""A second process for the SQLite durability and migration tests, and the test side of it.

    python tests/sqlite_worker.py churn  URL SEED PERSIST_EVERY
    python tests/sqlite_worker.py store  URL USER COUNT PREFIX PERSIST_EVERY
    python tests/sqlite_worker.py serve  URL PERSIST_EVERY
    python tests/sqlite_worker.py opener
    python tests/sqlite_worker.py mix    URL ROLE SEED ROUNDS PERSIST_EVERY

Every mode opens a ``SQLiteDriver`` on ``URL`` with the fast hashing embedder and prints one line
per acknowledged operation, flushed at once, so the test knows exactly what was acknowledged
before it kills the process:

- ``churn`` stores (single and batched), deletes and recalls in a loop until killed, printing
  ``stored <id> <content>`` after each returned store and ``deleting <id>`` / ``deleted <id>``
  around each delete. A guard ends it after ``CHURN_LIMIT_SECONDS`` in case nobody kills it.
- ``store`` prints ``ready``, waits for a line on stdin, then stores ``COUNT`` memories one by
  one (recalling now and then, so index saves and log compaction happen too) and prints ``done``.
- ``serve`` answers JSON commands, one per line on stdin, with one JSON line on stdout.
- ``mix`` prints ``ready``, waits for a line on stdin, then as ROLE ``writer`` stores ROUNDS
  batches of 20 memories, or as ``reader`` recalls ROUNDS times (vector and hybrid), and prints
  ``done`` and the driver's ``stats()["index"]`` as JSON on one line.
- ``opener`` prints ``ready``, then for each URL read from stdin opens a driver on it (which
  creates the schema of a new database), stores one memory, closes it and prints
  ``opened <id>``, or ``error <type>: <message>`` when the open fails.

The test side is here too: :class:`WorkerProcess` runs this script, :func:`connect` opens a
store with plain ``sqlite3``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memory_drivers.config import build_settings
from memory_drivers.drivers.sqlite import SQLiteDriver
from memory_drivers.embeddings.hashing import HashingEmbedder

CHURN_LIMIT_SECONDS = 60.0
ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def connect(db: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to inspect a store without the code under test; committed
    and closed afterwards."""
    connection = sqlite3.connect(db)
    try:
        with connection:
            yield connection
    finally:
        connection.close()


class WorkerProcess:
    """This script in a subprocess, seen from the test: lines read with timeouts, killed for sure.

    Use it as a context manager so the process is killed (and reaped) even when a test fails.
    """

    def __init__(self, *args: str, stderr_path: Path) -> None:
        self._stderr_path = stderr_path
        self._stderr = open(stderr_path, "w")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
            cwd=ROOT,
        )
        self.pid = self.process.pid
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.endswith("\n"):  # a line cut by a kill was never acknowledged
                self._lines.put(line[:-1])
        self._lines.put(None)

    def stderr(self) -> str:
        self._stderr.flush()
        return self._stderr_path.read_text(errors="replace")

    def read_line(self, timeout: float = 30.0) -> str:
        """The next line; fails the test (with the worker's stderr) on timeout or exit."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"worker {self.pid} said nothing for {timeout} s; stderr:\n{self.stderr()}"
            ) from None
        if line is None:
            self._lines.put(None)
            raise AssertionError(
                f"worker {self.pid} exited ({self.process.wait()}); stderr:\n{self.stderr()}"
            )
        return line

    def rest(self, timeout: float = 10.0) -> list[str]:
        """Every line still unread, up to the end of the (dead or ending) process's output."""
        lines = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"worker {self.pid} output did not end") from None
            if line is None:
                self._lines.put(None)
                return lines
            lines.append(line)

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def call(self, op: str, **arguments: Any) -> Any:
        """One command of ``serve`` mode; returns its result."""
        self.send(json.dumps({"op": op, **arguments}))
        return json.loads(self.read_line())["result"]

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL (no cleanup of any kind runs in the worker) and reap it."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def close(self) -> None:
        try:
            self.kill()
        finally:
            self._reader.join(timeout=5)  # the process is dead: its stdout ends
            for stream in (self.process.stdin, self.process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            self._stderr.close()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_driver(url: str, persist_every: int) -> SQLiteDriver:
    settings = build_settings(_env_file=None, memory_db_url=url, faiss_persist_every=persist_every)
    return SQLiteDriver(settings, embedder=HashingEmbedder(256))


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def churn(url: str, seed: str, persist_every: int) -> None:
    rng = random.Random(seed)
    driver = open_driver(url, persist_every)
    say("ready")
    live: list[str] = []
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < CHURN_LIMIT_SECONDS:
        n += 1
        action = rng.random()
        if action < 0.45:
            content = f"churn {seed} single {n} tok{rng.getrandbits(48):012x}"
            memory = driver.store("crash-user", content, tags=["churn"])
            live.append(memory.id)
            say(f"stored {memory.id} {content}")
        elif action < 0.8:
            items = [
                {
                    "user_id": "crash-user",
                    "content": f"churn {seed} batch {n}.{i} tok{rng.getrandbits(48):012x}",
                }
                for i in range(3)
            ]
            for memory in driver.store_many(items):
                live.append(memory.id)
                say(f"stored {memory.id} {memory.content}")
        elif live:
            victim = live.pop(rng.randrange(len(live)))
            say(f"deleting {victim}")
            if driver.delete(victim):
                say(f"deleted {victim}")
        # A vector recall replays the log into the index, which is then saved every
        # persist_every changes (and the log compacted), so kills also land during saves.
        driver.recall("crash-user", query=f"churn {seed} tok{n}", top_k=3, search="vector")
    driver.close()


def store(url: str, user: str, count: int, prefix: str, persist_every: int) -> None:
    driver = open_driver(url, persist_every)
    say("ready")
    sys.stdin.readline()
    for i in range(count):
        memory = driver.store(user, f"{prefix} number {i} word{prefix}{i}")
        say(f"stored {memory.id}")
        if i % 10 == 0:
            driver.recall(user, query=f"{prefix} number {i}", top_k=2, search="vector")
    driver.close()
    say("done")


def serve(url: str, persist_every: int) -> None:
    driver = open_driver(url, persist_every)
    say(json.dumps({"ready": True}))
    for line in sys.stdin:
        command: dict[str, Any] = json.loads(line)
        op = command.pop("op")
        result: Any
        if op == "store":
            result = driver.store(command["user"], command["content"]).id
        elif op == "store_knowledge":
            result = driver.store_global_knowledge(
                command["content"], command["category"], doc_id=command["doc_id"]
            ).doc_id
        elif op == "delete":
            result = driver.delete(command["id"])
        elif op == "update":
            result = driver.update(command["id"], content=command["content"]).id
        elif op == "recall":
            hits = driver.recall(
                command["user"],
                query=command["query"],
                top_k=command.get("top_k", 5),
                use_vector=command.get("use_vector", True),
            )
            result = [[hit.memory.id, hit.score] for hit in hits]
        elif op == "recall_knowledge":
            knowledge = driver.recall_global_knowledge(command["query"], top_k=3, search="vector")
            result = [[hit.chunk.doc_id, hit.score] for hit in knowledge]
        elif op == "get":
            memory = driver.get(command["id"])
            result = None if memory is None else memory.content
        elif op == "count":
            result = driver.count()
        elif op == "close":
            driver.close()
            say(json.dumps({"result": True}))
            return
        else:
            raise SystemExit(f"unknown op {op!r}")
        say(json.dumps({"result": result}))
    driver.close()


def mix(url: str, role: str, seed: str, rounds: int, persist_every: int) -> None:
    rng = random.Random(seed)
    driver = open_driver(url, persist_every)
    say("ready")
    sys.stdin.readline()
    for n in range(rounds):
        if role == "writer":
            driver.store_many(
                {"user_id": f"user{rng.randrange(8)}", "content": f"mix {seed} {n}.{i} word{i}"}
                for i in range(20)
            )
        else:
            user = f"user{rng.randrange(8)}"
            driver.recall(user, query=f"mix {n} word{n % 20}", top_k=5, search="vector")
            driver.recall(user, query=f"mix word{n % 20}", top_k=5)
    say("done")
    say(json.dumps(driver.stats()["index"]))
    driver.close()


def opener() -> None:
    say("ready")
    for line in sys.stdin:
        try:
            with open_driver(line.strip(), 1000) as driver:
                memory_id = driver.store("opener", f"opened by {os.getpid()}").id
        except Exception as exc:
            say(f"error {type(exc).__name__}: {exc}".replace("\n", " "))
        else:
            say(f"opened {memory_id}")


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "opener":
        opener()
        return
    url, *rest = args
    if mode == "churn":
        churn(url, rest[0], int(rest[1]))
    elif mode == "store":
        store(url, rest[0], int(rest[1]), rest[2], int(rest[3]))
    elif mode == "serve":
        serve(url, int(rest[0]))
    elif mode == "mix":
        mix(url, rest[0], rest[1], int(rest[2]), int(rest[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
