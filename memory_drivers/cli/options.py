"""The parser pieces every command module uses: the program's name, the parser class, the help
layout, ``--json`` after the command, and :func:`command`, which adds one subcommand."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NoReturn

from .output import UsageError
from .session import Session

__all__ = ["PROG", "Formatter", "Parser", "TopFormatter", "add_json", "command"]

PROG = "memory-drivers"


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors raise :class:`~.output.UsageError` instead of
    printing and exiting, so that ``main`` reports them like any other error (JSON with
    ``--json``). Subcommand parsers are of the same class (argparse's default)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, prog=self.prog, usage=self.format_usage())


class Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


class TopFormatter(argparse.RawDescriptionHelpFormatter, Formatter):
    """Keeps the epilog's layout (the examples)."""


def add_json(parser: argparse.ArgumentParser) -> None:
    # Also accepted after the command; SUPPRESS keeps the global value when absent.
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text"
    )


def command(
    sub: Any, name: str, func: Callable[[Session], int], summary: str, description: str = ""
) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` to ``sub``, run by ``func``."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=description or summary, formatter_class=Formatter
    )
    add_json(parser)
    parser.set_defaults(func=func)
    return parser
