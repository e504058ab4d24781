"""Moving data: ``export``, ``import`` and ``copy`` (memory_drivers.transfer does the work)."""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..base import ON_CONFLICT
from ..errors import ConfigurationError
from ..transfer import (
    copy_store,
    export_records,
    import_records,
    open_location,
    read_records,
)
from ..transfer.core import TransferResult
from ..transfer.format import End, Header, open_input, open_output, record_line
from .options import command
from .output import CliError, plural, print_json
from .session import Session

__all__ = ["register"]


@contextmanager
def _file_errors(path: str | None, verb: str) -> Iterator[None]:
    """An export file that cannot be opened, said as the other commands say it."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise
        raise CliError(f"cannot {verb} {path!r}: {exc.strerror or exc}") from exc


def _filters(a: argparse.Namespace) -> dict[str, Any]:
    return {
        "user_id": a.user,
        "since": a.since,
        "until": a.until,
        "include_knowledge": a.knowledge,
    }


def cmd_export(s: Session) -> int:
    a = s.args
    to_stdout = a.output in (None, "-")
    counts: dict[str, int] = {}
    with s.progress(None, "exporting", "memory") as bar:
        records = export_records(s.driver, progress=bar.update, **_filters(a))
        header = next(records)
        if isinstance(header, Header) and header.memory_count is not None:
            bar.total = header.memory_count
            bar.refresh()
        with _file_errors(a.output, "write"), open_output(a.output, a.gzip or None) as handle:
            for record in itertools.chain([header], records):
                handle.write(record_line(record))
                if isinstance(record, End):
                    counts = record.counts
    if to_stdout:
        return 0
    if s.json:
        print_json({"exported": counts, "output": a.output})
    else:
        print(f"exported {_summary(counts)} to {a.output}")
    return 0


def _summary(counts: dict[str, int]) -> str:
    parts = [plural(counts.get("memories", 0), "memory")]
    if counts.get("associations"):
        parts.append(plural(counts["associations"], "association"))
    if counts.get("knowledge_documents"):
        parts.append(plural(counts["knowledge_documents"], "knowledge document"))
    return ", ".join(parts)


def _report(s: Session, result: TransferResult, verb: str) -> None:
    if s.json:
        print_json(result.as_dict())
        return
    m, k = result.memories, result.knowledge_documents
    line = f"{verb} {plural(m['stored'], 'memory')}"
    extras = [
        f"{n} {what}" for what, n in (("replaced", m["replaced"]), ("skipped", m["skipped"])) if n
    ]
    if extras:
        line += f" ({', '.join(extras)})"
    if result.associations:
        line += f", {plural(result.associations, 'association')}"
    if any(k.values()):
        line += f", {plural(k['stored'] + k['replaced'], 'knowledge document')}"
        if k["skipped"]:
            line += f" ({k['skipped']} skipped)"
    if result.vectors != "none":
        line += f"; vectors {result.vectors}"
    print(line)


def cmd_import(s: Session) -> int:
    a = s.args
    with (
        _file_errors(a.file, "read"),
        open_input(a.file) as lines,
        s.progress(None, "importing", "memory") as bar,
    ):
        records = read_records(lines)
        header = next(records)
        if isinstance(header, Header) and header.memory_count is not None:
            bar.total = header.memory_count
            bar.refresh()
        result = import_records(
            s.driver,
            itertools.chain([header], records),
            on_conflict=a.on_conflict,
            progress=bar.update,
        )
    _report(s, result, "imported")
    return 0


def cmd_copy(s: Session) -> int:
    a = s.args
    source = open_location(a.source, s.settings)
    try:
        target = open_location(a.target, s.settings)
        try:
            total = source.count(a.user) if a.since is None and a.until is None else None
            with s.progress(total, "copying", "memory") as bar:
                result = copy_store(
                    source,
                    target,
                    on_conflict=a.on_conflict,
                    progress=bar.update,
                    **_filters(a),
                )
        finally:
            target.close()
    finally:
        source.close()
    _report(s, result, "copied")
    return 0


def cmd_reconcile(s: Session) -> int:
    driver: Any = s.driver
    reconcile = getattr(driver, "reconcile", None) or getattr(
        getattr(driver, "inner", None), "reconcile", None
    )
    if reconcile is None:
        raise ConfigurationError(
            f"reconcile compares a replicated driver's replicas with its primary; the "
            f"{driver.name} driver has none. Use MEMORY_DRIVER=replicated (docs/portability.md)"
        )
    report = reconcile(dry_run=s.args.dry_run)
    if s.json:
        print_json(report)
        return 0
    verb = "would repair" if s.args.dry_run else "repaired"
    for name, result in report.items():
        if "error" in result:
            print(f"{name}: {result['error']}")
            continue
        parts = [
            f"{n} {kind} {what.replace('_', ' ')}"
            for what in ("memories", "associations", "knowledge_documents")
            for kind, n in result[what].items()
            if n
        ]
        print(f"{name}: {verb} " + (", ".join(parts) if parts else "nothing (in step)"))
    return 0


def _add_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", metavar="U", help="only this user's memories (and their links)")
    p.add_argument("--since", metavar="TIME", help="only memories created at or after TIME")
    p.add_argument("--until", metavar="TIME", help="only memories created before TIME")
    p.add_argument(
        "--knowledge",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="include global knowledge (default: yes, unless --user/--since/--until is given)",
    )


def _add_on_conflict(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--on-conflict",
        choices=ON_CONFLICT,
        default="skip",
        help="an id the store already has: skip it (default; importing again changes "
        "nothing and finishes an interrupted import), replace it, or fail before writing",
    )


def register(sub: Any) -> None:
    """Add ``export``, ``import`` and ``copy`` to ``sub``."""
    p = command(
        sub,
        "export",
        cmd_export,
        "write the store (or part of it) as a versioned JSON Lines export",
        "Write memories (oldest first, with their vectors and the embedder that made them), "
        "associations, knowledge documents and the store's info as JSON Lines "
        "(docs/portability.md), ready for: memory-drivers import. FILE.gz is gzipped.",
    )
    _add_filters(p)
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE (default: stdout)")
    p.add_argument("--gzip", action="store_true", help="gzip the output (automatic for *.gz)")

    p = command(
        sub,
        "import",
        cmd_import,
        "store the records of an export (idempotent, resumable)",
        "Store the records of an export (plain or gzipped; also the header-less files of "
        "earlier versions) keeping ids and times, 500 memories per transaction. Vectors are "
        "reused when the store's embedder made them, otherwise embedded again.",
    )
    p.add_argument("file", metavar="FILE", help='an export file ("-" reads stdin)')
    _add_on_conflict(p)

    p = command(
        sub,
        "copy",
        cmd_copy,
        "copy every record from one store to another",
        "Copy memories, associations and knowledge from one store to another, streaming, "
        "as export + import would. A store is a driver name (configured by the environment) "
        "or a URL: sqlite:///PATH, postgresql://..., http://HOST:PORT (AutoMem), "
        "chroma+http://HOST:PORT, chroma:///PATH.",
    )
    p.add_argument("--from", dest="source", required=True, metavar="STORE", help="copy from")
    p.add_argument("--to", dest="target", required=True, metavar="STORE", help="copy to")
    _add_filters(p)
    _add_on_conflict(p)

    p = command(
        sub,
        "reconcile",
        cmd_reconcile,
        "compare the replicated driver's replicas with its primary and repair them",
        "Deliver the outbox, then compare each replica with the primary (memories by id and "
        "updated_at, associations, knowledge documents) and make it equal to the primary, "
        "reporting what differed. Needs MEMORY_DRIVER=replicated.",
    )
    p.add_argument("--dry-run", action="store_true", help="only report what differs")
