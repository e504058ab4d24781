"""A real Chroma server (``chroma run``) on a free loopback port, for the chroma tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

STARTUP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chroma_command() -> str | None:
    """The ``chroma`` command of this environment, or None if chromadb is not installed."""
    beside = Path(sys.executable).with_name("chroma")
    if beside.exists():
        return str(beside)
    return shutil.which("chroma")


class ChromaServer:
    """``chroma run --host 127.0.0.1 --port PORT --path PATH``, started and stopped by tests."""

    def __init__(self, path: Path, port: int | None = None) -> None:
        self.path = path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = path.parent / f"chroma-{self.port}.log"

    def start(self) -> None:
        command = chroma_command()
        if command is None:
            raise RuntimeError("the chroma command is not installed (pip install chromadb)")
        self.path.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    command,
                    "run",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--path",
                    str(self.path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"chroma run exited with {self.process.returncode}: "
                    + self.log.read_text(errors="replace")[-2000:]
                )
            try:
                if httpx.get(f"{self.url}/api/v2/heartbeat", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"chroma run did not answer on {self.url} within {STARTUP_TIMEOUT}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def start_chroma(directory: Path, port: int | None = None) -> ChromaServer:
    """A started ``chroma run`` storing in ``directory``. Without the chroma command, or when it
    cannot start: a skip on a laptop, a failure in CI (conftest.require_server)."""
    from conftest import require_server

    if chroma_command() is None:
        require_server("the chroma command (pip install chromadb) is not installed")
    server = ChromaServer(directory, port)
    try:
        server.start()
    except RuntimeError as exc:
        require_server(f"cannot start a Chroma server: {exc}")
    return server


@contextlib.contextmanager
def running_chroma(directory: Path) -> Iterator[ChromaServer]:
    """:func:`start_chroma`, stopped afterwards."""
    server = start_chroma(directory)
    try:
        yield server
    finally:
        server.stop()
