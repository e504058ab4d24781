"""What commands print, in one place: text or ``--json``, progress bars, errors and exit codes.

Exit codes: 0 success, 1 failure (not found, backend unavailable, unhealthy store, ...),
2 invalid arguments or configuration (including a store made by another embedder and usage
errors), 130 interrupted.

Errors go to stderr, as ``error: MESSAGE`` or, with ``--json``, as one line of JSON::

    {"error": {"type": "ValidationError", "message": "...", "exit_code": 2}}

``type`` is the exception's class (``UsageError`` for a bad command line, ``CliError`` for a
file the command cannot read or write). Stdout holds only results, so a failed command never
leaves a partial JSON document there that looks like an answer.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from tqdm import tqdm

from ..errors import ConfigurationError, MemoryDriverError, ValidationError
from ..models import Memory

__all__ = [
    "CliError",
    "UsageError",
    "error_code",
    "exit_code",
    "fail",
    "fail_with",
    "memory_line",
    "one_line",
    "plural",
    "print_json",
    "print_mapping",
    "progress_bar",
    "scalar",
    "score_text",
    "wants_json",
]


class CliError(Exception):
    """A failure of the command itself (an unreadable file, ...), with its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CliError):
    """A bad command line (argparse's error), with the usage of the (sub)command."""

    def __init__(self, message: str, *, prog: str, usage: str) -> None:
        super().__init__(message, 2)
        self.prog = prog
        self.usage = usage


# ---------------------------------------------------------------------- JSON
def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def print_json(value: Any) -> None:
    print(json.dumps(_jsonable(value), indent=2, ensure_ascii=False, default=str))


# ---------------------------------------------------------------------- text
def scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def print_mapping(data: Mapping[str, Any], indent: int = 0) -> None:
    """``key: value`` lines, nested mappings indented under their key."""
    pad = " " * indent
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            print(f"{pad}{key}:")
            print_mapping(value, indent + 2)
        elif isinstance(value, Mapping):
            print(f"{pad}{key}: -")
        elif isinstance(value, list | tuple) and any(
            isinstance(v, Mapping | list | tuple) for v in value
        ):
            print(f"{pad}{key}:")
            for item in value:
                if isinstance(item, Mapping):
                    print(f"{pad}  -")
                    print_mapping(item, indent + 4)
                else:
                    print(f"{pad}  - {scalar(item)}")
        elif isinstance(value, list | tuple):
            print(f"{pad}{key}: {', '.join(scalar(v) for v in value) or '-'}")
        else:
            print(f"{pad}{key}: {scalar(value)}")


def one_line(text: str) -> str:
    return " ".join(text.split())


def score_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def plural(count: int, noun: str) -> str:
    """``1 memory``, ``2 memories``, ``0 knowledge chunks``."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"


def memory_line(memory: Memory) -> str:
    tags = ",".join(memory.tags) or "-"
    return f"{memory.id}  {memory.memory_type}  [{tags}]  {one_line(memory.content)}"


# ---------------------------------------------------------------------- progress
def progress_bar(show: bool, total: int | None, desc: str, unit: str = "item") -> tqdm:
    """A progress bar on stderr (``show=False``: one that prints nothing)."""
    return tqdm(
        total=total, desc=desc, unit=unit, file=sys.stderr, disable=not show, dynamic_ncols=True
    )


# ---------------------------------------------------------------------- errors
def error_code(exc: MemoryDriverError) -> int:
    """2 for invalid arguments or configuration, 1 for any other failure."""
    return 2 if isinstance(exc, ValidationError | ConfigurationError) else 1


def fail(message: str, code: int, *, as_json: bool = False, error_type: str = "CliError") -> int:
    """Report an error on stderr (text, or JSON with ``as_json``); returns ``code``."""
    if as_json:
        error = {"type": error_type, "message": message, "exit_code": code}
        print(json.dumps({"error": error}, ensure_ascii=False), file=sys.stderr)
    else:
        print(f"error: {message}", file=sys.stderr)
    return code


def fail_with(exc: MemoryDriverError | CliError, *, as_json: bool = False) -> int:
    """Report ``exc`` and return its exit code. A usage error is shown as argparse shows it
    (the usage, then ``PROG: error: MESSAGE``), unless ``as_json``."""
    code = exc.code if isinstance(exc, CliError) else error_code(exc)
    if isinstance(exc, UsageError) and not as_json:
        print(f"{exc.usage.rstrip()}\n{exc.prog}: error: {exc}", file=sys.stderr)
        return code
    return fail(str(exc), code, as_json=as_json, error_type=type(exc).__name__)


def wants_json(argv: list[str]) -> bool:
    """Whether ``argv`` asks for ``--json`` (before a ``--``), for errors found before (or
    while) it is parsed; argparse also accepts a prefix such as ``--js``."""
    for arg in argv:
        if arg == "--":
            return False
        if arg.startswith("--j") and "--json".startswith(arg):
            return True
    return False


def exit_code(exc: SystemExit) -> int:
    """The exit code of an argparse exit (its message, if any, goes to stderr)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1
