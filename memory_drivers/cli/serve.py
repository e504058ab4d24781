"""``serve``: AutoMem's REST API on top of the driver (:mod:`memory_drivers.server`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .options import command
from .output import CliError
from .session import Session

__all__ = ["LOOPBACK_HOSTS", "register", "secret_text"]

#: Hosts ``serve`` listens on without a token (only this machine can reach them).
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def secret_text(value: Any) -> str | None:
    """The text of a secret setting (``SecretStr``), None when unset or empty."""
    return value.get_secret_value() or None if value is not None else None


def cmd_serve(s: Session) -> int:
    from ..server import ServerLimits, create_app, serve

    settings = s.settings
    host = s.args.host or settings.memory_server_host
    port = s.args.port if s.args.port is not None else settings.memory_server_port
    token = (
        s.args.token
        or secret_text(settings.memory_server_api_token)
        or secret_text(settings.automem_api_token)
    )
    if not token and host not in LOOPBACK_HOSTS and not s.args.insecure:
        raise CliError(
            f"refusing to serve on {host} without a token: anyone who can reach it could read "
            "and change every memory. Set --token (or MEMORY_SERVER_API_TOKEN or "
            "AUTOMEM_API_TOKEN), or pass --insecure",
            2,
        )
    driver = s.driver
    app = create_app(
        driver,
        api_token=token,
        default_user=settings.memory_server_default_user,
        limits=ServerLimits.from_settings(settings),
    )
    shown = f"[{host}]" if ":" in host else host
    print(
        f"memory-drivers serve: AutoMem's API for the {driver.name} store on "
        f"http://{shown}:{port} ({'token required' if token else 'no token'}); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    serve(app, host=host, port=port, log_level="info" if s.args.verbose else "warning")
    return 0


def register(sub: Any) -> None:
    """Add ``serve`` to ``sub``."""
    p = command(
        sub,
        "serve",
        cmd_serve,
        "serve AutoMem's REST API on top of the driver",
        "Serve AutoMem's REST API (POST /memory, GET /recall, ...) on top of the driver, so "
        "AutoMem clients (the MCP server, scripts, the automem driver of other processes) use "
        "its store. Listens on 127.0.0.1 unless told otherwise. The token comes from --token, "
        "else MEMORY_SERVER_API_TOKEN, else AUTOMEM_API_TOKEN; without one, only loopback "
        "addresses are allowed (or --insecure). See docs/server.md.",
    )
    p.add_argument(
        "--driver",
        default=argparse.SUPPRESS,
        metavar="NAME",
        help="the driver whose store is served (default: MEMORY_DRIVER)",
    )
    p.add_argument(
        "--host",
        metavar="HOST",
        help="address to listen on (default: MEMORY_SERVER_HOST, 127.0.0.1)",
    )
    p.add_argument(
        "--port", type=int, metavar="PORT", help="port (default: MEMORY_SERVER_PORT, 8001)"
    )
    p.add_argument("--token", metavar="TOKEN", help="the token clients must send")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening on a non-loopback address without a token",
    )
