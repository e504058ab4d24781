"""``serve``: AutoMem's REST API on top of the driver (:mod:`memory_drivers.server`), with the
memory browser (:mod:`memory_drivers.ui`) when ``--ui``; ``ui``: the memory browser alone."""

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
    return _run(s, api=True, ui=bool(s.args.ui))


def cmd_ui(s: Session) -> int:
    return _run(s, api=False, ui=True)


def _run(s: Session, *, api: bool, ui: bool) -> int:
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
    with_metrics = s.args.metrics or settings.memory_metrics == "prometheus"
    driver = s.driver
    app = create_app(
        driver,
        api_token=token,
        default_user=settings.memory_server_default_user,
        limits=ServerLimits.from_settings(settings),
        ui=ui,
        api=api,
        metrics_route=with_metrics,
        metrics_open=settings.memory_server_metrics_open,
    )
    shown = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    what = [
        *(["AutoMem's API"] if api else []),
        *([f"the memory browser at {shown}/ui/"] if ui else []),
        *([f"metrics at {shown}/metrics"] if with_metrics else []),
    ]
    listed = f"{', '.join(what[:-1])} and {what[-1]}" if len(what) > 1 else what[0]
    print(
        f"memory-drivers {'serve' if api else 'ui'}: {listed} for the {driver.name} "
        f"store on {shown} ({'token required' if token else 'no token'}); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    serve(app, host=host, port=port, log_level="info" if s.args.verbose else "warning")
    return 0


def register(sub: Any) -> None:
    """Add ``serve`` and ``ui`` to ``sub``."""
    p = command(
        sub,
        "serve",
        cmd_serve,
        "serve AutoMem's REST API on top of the driver",
        "Serve AutoMem's REST API (POST /memory, GET /recall, ...) on top of the driver, so "
        "AutoMem clients (the MCP server, scripts, the automem driver of other processes) use "
        "its store. Listens on 127.0.0.1 unless told otherwise. The token comes from --token, "
        "else MEMORY_SERVER_API_TOKEN, else AUTOMEM_API_TOKEN; without one, only loopback "
        "addresses are allowed (or --insecure). With --ui, also the memory browser at /ui/. See "
        "docs/server.md.",
    )
    _options(p)
    p.add_argument(
        "--ui",
        action="store_true",
        help="also serve the memory browser, a web page at /ui/ (docs/ui.md)",
    )
    p = command(
        sub,
        "ui",
        cmd_ui,
        "serve the memory browser, a web page to look into the store",
        "Serve the memory browser at http://HOST:PORT/ui/: users, search with every filter and "
        "why each memory matched, a memory's page (edit, delete, associations), knowledge, "
        "health. Like `serve --ui` without AutoMem's API. The page asks for the token (from "
        "--token, else MEMORY_SERVER_API_TOKEN, else AUTOMEM_API_TOKEN) in a login form; "
        "without one, only loopback addresses are allowed (or --insecure). See docs/ui.md.",
    )
    _options(p)


def _options(p: Any) -> None:
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
        "--metrics",
        action="store_true",
        help="answer GET /metrics with Prometheus metrics (also MEMORY_METRICS=prometheus); it "
        "needs the token unless MEMORY_SERVER_METRICS_OPEN=true and the scraper is on this "
        "machine. See docs/metrics.md",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening on a non-loopback address without a token",
    )
