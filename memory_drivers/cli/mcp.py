"""``mcp``: the memory tools over the Model Context Protocol (:mod:`memory_drivers.mcp`)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import Any

from .options import command
from .output import CliError
from .serve import LOOPBACK_HOSTS, secret_text
from .session import Session

__all__ = ["register"]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _until_stopped(run: Callable[[], None]) -> None:
    """Run the HTTP server until Ctrl-C or SIGTERM. uvicorn shuts down gracefully on either,
    then raises the signal again: here it becomes a KeyboardInterrupt that ends the run, so
    the command returns 0 and the session closes the store."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        run()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_mcp(s: Session) -> int:
    from ..mcp import create_server

    settings = s.settings
    args = s.args
    if args.user_id and args.multi_user:
        raise CliError("give --user-id or --multi-user, not both", 2)
    user_id = args.user_id or (None if args.multi_user else settings.mcp_user_id)
    if user_id is None and not args.multi_user:
        raise CliError(
            "memory-drivers mcp needs the user whose memories it serves: --user-id USER (or "
            "MCP_USER_ID), or --multi-user to let the client pass user_id to every tool",
            2,
        )
    http = args.transport == "http"
    host = args.host or settings.mcp_host
    port = args.port if args.port is not None else settings.mcp_port
    token = args.token or secret_text(settings.mcp_api_token)
    if http and not token and host not in LOOPBACK_HOSTS and not args.insecure:
        raise CliError(
            f"refusing to serve MCP on {host} without a token: anyone who can reach it could "
            "read and change every memory. Set --token (or MCP_API_TOKEN), or pass --insecure",
            2,
        )
    shown = f"[{host}]" if ":" in host else host
    server = create_server(
        s.driver,
        user_id=user_id,
        multi_user=args.multi_user,
        api_token=token if http else None,
        url=f"http://{shown}:{port}",
        log_level="INFO" if args.verbose else "WARNING",
    )
    scope = "the client passes user_id" if args.multi_user else f"user {user_id!r}"
    if http:
        print(
            f"memory-drivers mcp: the {s.driver.name} store over streamable HTTP on "
            f"http://{shown}:{port}/mcp ({scope}; "
            f"{'bearer token required' if token else 'no token'}); Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
        _until_stopped(lambda: server.run("streamable-http", host=host, port=port))
    else:
        print(
            f"memory-drivers mcp: the {s.driver.name} store over stdio ({scope})",
            file=sys.stderr,
            flush=True,
        )
        server.run("stdio")
    return 0


def register(sub: Any) -> None:
    """Add ``mcp`` to ``sub``."""
    p = command(
        sub,
        "mcp",
        cmd_mcp,
        "serve the memory tools over the Model Context Protocol",
        "Serve memory tools (store_memory, recall_memories, get_memory, update_memory, "
        "delete_memory, associate_memories, related_memories, search_knowledge, "
        "store_knowledge, health) to MCP clients such as desktop assistants, over stdio (the "
        "default) or streamable HTTP (--transport http, at /mcp). The user is fixed per server "
        "(--user-id or MCP_USER_ID) unless --multi-user lets the client pass user_id. Over "
        "HTTP it listens on 127.0.0.1 unless told otherwise; the bearer token comes from "
        "--token, else MCP_API_TOKEN. See docs/mcp.md.",
    )
    p.add_argument(
        "--driver",
        default=argparse.SUPPRESS,
        metavar="NAME",
        help="the driver whose store is served (default: MEMORY_DRIVER)",
    )
    p.add_argument(
        "--transport",
        choices=("stdio", "http"),
        default="stdio",
        help="stdio (default: the client starts this command) or streamable HTTP",
    )
    p.add_argument("--user-id", metavar="USER", help="the user every tool acts for")
    p.add_argument(
        "--multi-user",
        action="store_true",
        help="let the client pass user_id to every memory tool (no per-user access control)",
    )
    p.add_argument(
        "--host", metavar="HOST", help="HTTP: address to listen on (default: MCP_HOST, 127.0.0.1)"
    )
    p.add_argument("--port", type=int, metavar="PORT", help="HTTP: port (default: MCP_PORT, 8002)")
    p.add_argument("--token", metavar="TOKEN", help="HTTP: the bearer token clients must send")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="HTTP: allow listening on a non-loopback address without a token",
    )
