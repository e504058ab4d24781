"""The ``memory-drivers`` program: its parser, built from the command modules, and :func:`main`.

Each command module (``memories``, ``transfer``, ``knowledge``, ``maintenance``, ``serve``,
``mcp``, ``consolidate``, ``bench``) adds its own subcommands with a ``register(sub)`` function;
:data:`COMMAND_MODULES` lists them in the order ``--help`` shows them. What they print, and how
errors become exit codes, is in :mod:`.output`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import MemoryDriverError
from . import bench, consolidate, knowledge, maintenance, mcp, memories, serve, transfer
from .options import PROG, Parser, TopFormatter
from .output import CliError, exit_code, fail, fail_with, wants_json
from .session import Session

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

#: The command modules, in the order ``memory-drivers --help`` lists their commands.
COMMAND_MODULES = (memories, transfer, knowledge, maintenance, serve, mcp, consolidate, bench)

EPILOG = """\
examples:
  memory-drivers store --user alice --tag food "Alice likes green tea"
  memory-drivers recall --user alice "what does Alice drink?" --top-k 3 --json
  memory-drivers export --output backup.jsonl && memory-drivers import backup.jsonl

The store is configured by the environment or .env (MEMORY_DRIVER, MEMORY_DB_URL,
EMBEDDING_PROVIDER, ...; see .env.example). Exit codes: 0 ok, 1 failure, 2 invalid
arguments or configuration. Errors go to stderr; with --json, as one JSON object:
{"error": {"type": ..., "message": ..., "exit_code": ...}}.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``memory-drivers``."""
    parser = Parser(
        prog=PROG,
        description="Store, recall and maintain the long-term memories of AI agents,\n"
        "on any memory-drivers backend.",
        epilog=EPILOG,
        formatter_class=TopFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument(
        "--driver",
        metavar="NAME",
        help="the driver to use (default: MEMORY_DRIVER, else sqlite; "
        "the drivers command lists them)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False,
        help="print JSON instead of text (also accepted after the command)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress bars on stderr (default: when stderr is a terminal)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log what the driver does (to stderr)"
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``memory-drivers`` with ``argv`` (default: the process's arguments); the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    as_json = wants_json(args_list)
    parser = build_parser()
    try:
        head, rest = maintenance.split_passthrough(parser, args_list)
        args = parser.parse_args(head)
    except CliError as exc:
        return fail_with(exc, as_json=as_json)
    except SystemExit as exc:  # --help, --version
        return exit_code(exc)
    as_json = as_json or bool(args.json)
    if args.verbose:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
        )
    session = Session(args)
    try:
        if args.command == "migrate":
            try:
                return maintenance.run_migrate(rest or [], session)
            except SystemExit as exc:  # migrate --help
                return exit_code(exc)
        return int(args.func(session))
    except (MemoryDriverError, CliError) as exc:
        return fail_with(exc, as_json=as_json)
    except KeyboardInterrupt:
        return fail("interrupted", 130, as_json=as_json, error_type="KeyboardInterrupt")
    except BrokenPipeError:
        # The reader went away (``memory-drivers export | head``): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    finally:
        try:
            session.close()
        except MemoryDriverError as exc:
            fail(
                f"while closing the driver: {exc}",
                1,
                as_json=as_json,
                error_type=type(exc).__name__,
            )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
