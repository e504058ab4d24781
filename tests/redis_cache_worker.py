"""A second process for the cache tests: a cached driver that answers JSON commands.

    python tests/redis_cache_worker.py DRIVER SETTINGS_JSON REDIS_URL NAMESPACE

Opens ``CachedMemoryDriver(<DRIVER with these settings>, REDIS_URL, namespace=NAMESPACE)`` with
the hashing embedder, prints ``ready``, then reads one JSON command per line on stdin,
``{"method": "recall", "args": [...], "kwargs": {...}}``, calls that method and prints one JSON
line: ``{"result": ...}`` or ``{"error": "<type>: <message>"}``. ``{"method": "counters"}``
answers the cache's hit/miss counters. The test side is :class:`CacheWorker`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

ROOT = Path(__file__).resolve().parent.parent


def serve(driver_name: str, settings_json: str, redis_url: str, namespace: str) -> None:
    from memory_drivers.config import build_settings
    from memory_drivers.manager import MemoryDriverManager
    from memory_drivers.redis import CachedMemoryDriver

    settings = build_settings(
        _env_file=None, embedding_provider="hashing", **json.loads(settings_json)
    )
    inner = MemoryDriverManager.create(driver_name, settings)
    driver = CachedMemoryDriver(inner, redis_url, namespace=namespace)
    dump = TypeAdapter(Any)
    print("ready", flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        method = command["method"]
        try:
            if method == "counters":
                result: Any = dict(driver.counters)
            else:
                result = getattr(driver, method)(
                    *command.get("args", []), **command.get("kwargs", {})
                )
            reply = {"result": json.loads(dump.dump_json(result))}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)
    driver.close()


class CacheWorker:
    """Runs this script and calls methods of its driver."""

    def __init__(
        self, driver: str, settings: dict[str, Any], redis_url: str, namespace: str
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, driver, json.dumps(settings), redis_url, namespace],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.strip() == "ready", f"the worker did not start: {line!r}"

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        command = {"method": method, "args": list(args), "kwargs": kwargs}
        self.process.stdin.write(json.dumps(command, default=str) + "\n")
        self.process.stdin.flush()
        reply = json.loads(self.process.stdout.readline())
        if "error" in reply:
            raise RuntimeError(f"the worker's {method} failed: {reply['error']}")
        return reply["result"]

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


if __name__ == "__main__":
    serve(*sys.argv[1:5])
