"""Moving data: export memories as JSON Lines, and import them again."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice
from typing import IO, Any

from ..errors import MemoryDriverError, ValidationError
from .options import command
from .output import CliError, plural, print_json
from .session import Session

__all__ = ["IMPORT_BATCH", "register"]

#: How many memories ``import`` stores per ``store_many`` call (each batch is all or nothing).
IMPORT_BATCH = 500


def cmd_export(s: Session) -> int:
    a = s.args
    memories = s.driver.iter_memories(a.user)
    if a.output in (None, "-"):
        for memory in memories:
            sys.stdout.write(memory.model_dump_json() + "\n")
        sys.stdout.flush()
        return 0
    total = s.driver.count(a.user)
    try:
        handle = open(a.output, "w", encoding="utf-8", newline="\n")  # noqa: SIM115
    except OSError as exc:
        raise CliError(f"cannot write {a.output!r}: {exc.strerror or exc}") from exc
    n = 0
    with handle, s.progress(total, "exporting", "memory") as bar:
        for memory in memories:
            handle.write(memory.model_dump_json() + "\n")
            n += 1
            bar.update(1)
    if s.json:
        print_json({"exported": n, "output": a.output})
    else:
        print(f"exported {plural(n, 'memory')} to {a.output}")
    return 0


@contextmanager
def _open_lines(path: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdin
        return
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise CliError(f"cannot read {path!r}: {exc.strerror or exc}") from exc
    with handle:
        yield handle


def _count_lines(path: str) -> int | None:
    if path == "-":
        return None
    try:
        with open(path, "rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError:
        return None


def _parse_lines(handle: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank JSON line."""
    try:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(item, dict):
                raise ValidationError(
                    f"line {number}: expected a JSON object (one memory), got {type(item).__name__}"
                )
            yield number, item
    except UnicodeDecodeError as exc:
        raise CliError(f"the input is not UTF-8 text ({exc.reason})") from exc


def cmd_import(s: Session) -> int:
    a = s.args
    imported = 0
    with (
        _open_lines(a.file) as handle,
        s.progress(_count_lines(a.file), "importing", "memory") as bar,
    ):
        rows = _parse_lines(handle)
        while batch := list(islice(rows, IMPORT_BATCH)):
            try:
                stored = s.driver.store_many([item for _, item in batch])
            except MemoryDriverError as exc:
                earlier = (
                    f" ({plural(imported, 'memory')} from earlier lines were imported)"
                    if imported
                    else ""
                )
                raise type(exc)(f"lines {batch[0][0]}-{batch[-1][0]}: {exc}{earlier}") from exc
            imported += len(stored)
            bar.update(len(stored))
    if s.json:
        print_json({"imported": imported})
    else:
        print(f"imported {plural(imported, 'memory')}")
    return 0


def register(sub: Any) -> None:
    """Add ``export`` and ``import`` to ``sub``."""
    p = command(
        sub,
        "export",
        cmd_export,
        "write memories as JSON Lines (one per line)",
        "Write every memory (or one user's), oldest first, as JSON Lines: one memory "
        "per line, ids and times included, ready for: memory-drivers import.",
    )
    p.add_argument("--user", metavar="U", help="only this user's memories")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE (default: stdout)")

    p = command(
        sub,
        "import",
        cmd_import,
        "store memories from JSON Lines (as export writes)",
        "Store the memories of a JSON Lines file (as written by export), keeping their "
        f"ids and times, {IMPORT_BATCH} per transaction. An id that already exists "
        "stops the import (earlier batches stay stored).",
    )
    p.add_argument("file", metavar="FILE", help='a .jsonl file ("-" reads stdin)')
