"""``memory-drivers serve``: AutoMem's REST API on top of any driver.

AutoMem clients (the ``mcp-automem`` MCP server, scripts, the ``automem`` driver of other
processes) talk to it as to AutoMem; the memories live in the driver's store::

    memory-drivers serve --driver sqlite --host 127.0.0.1 --port 8001 --token s3cret

Python::

    from memory_drivers.server import create_app, ServerThread
    app = create_app(driver, api_token="s3cret")        # an ASGI app (Starlette)
    with ServerThread(app) as server:                    # uvicorn on a free loopback port
        print(server.url)

Needs ``pip install "memory-drivers[server]"`` (Starlette and uvicorn). See ``docs/server.md``.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from typing import Any

from ..errors import BackendUnavailableError, MissingDependencyError

try:
    import uvicorn
    from starlette.types import ASGIApp
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise MissingDependencyError(
        f"memory-drivers serve needs Starlette and uvicorn ({exc}). "
        'Install with: pip install "memory-drivers[server]"'
    ) from exc

from . import access_log
from .app import UNSUPPORTED_ROUTES, create_app
from .limits import ServerLimits
from .parsing import ApiError
from .service import MemoryService

__all__ = [
    "UNSUPPORTED_ROUTES",
    "ApiError",
    "MemoryService",
    "ServerLimits",
    "ServerThread",
    "create_app",
    "serve",
    "uvicorn_config",
]

log = logging.getLogger("memory_drivers.server")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def uvicorn_config(app: ASGIApp, host: str, port: int, log_level: str = "info") -> Any:
    """uvicorn's configuration for the server: h11 with the app's limits
    (``app.state.limits``, set by :func:`create_app`; defaults for any other app), no banner,
    and tokens redacted from the access log."""
    state = getattr(app, "state", None)
    limits = getattr(state, "limits", None) or ServerLimits()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        server_header=False,
        access_log=log_level in ("debug", "info"),
        lifespan="off",
        **limits.uvicorn_options(),
    )
    access_log.install()  # after uvicorn.Config has set up logging
    return config


class _Stopped(Exception):
    """Raised by the signal handlers below once uvicorn has shut down."""


def _stopped(signum: int, frame: Any) -> None:
    raise _Stopped


def serve(
    app: ASGIApp, *, host: str = "127.0.0.1", port: int = 8001, log_level: str = "info"
) -> None:
    """Run ``app`` with uvicorn until Ctrl-C or SIGTERM, then return (after a graceful
    shutdown), so the caller can close its driver."""
    server = uvicorn.Server(uvicorn_config(app, host, port, log_level))
    # uvicorn shuts down on these signals, then raises them again: end here instead.
    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _stopped) for sig in _SIGNALS} if main else {}
    try:
        server.run()
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class ServerThread:
    """Runs an app with uvicorn in a background thread of this process, on ``host`` and a
    free port (or ``port``). A context manager; ``url`` is where it listens."""

    def __init__(
        self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on such sockets, and without
        # it every answer waits for a delayed ACK (~40 ms on loopback).
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket.bind((host, port))
        bound_port = self._socket.getsockname()[1]
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{bound_port}"
        self.server = uvicorn.Server(uvicorn_config(app, host, bound_port, log_level))
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def start(self, timeout: float = 10.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise BackendUnavailableError(f"the server at {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
