"""Looking after a store: health, stats, rebuild-index, reembed, migrate and drivers.

``migrate`` hands its arguments, untouched, to its own parser
(:func:`memory_drivers.sql.migrate.build_parser`; ``python migrate.py`` in a checkout uses the
same one), and takes the driver from ``--driver`` like every other command.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from ..base import BaseMemoryDriver
from ..errors import ConfigurationError, MemoryDriverError
from ..manager import MemoryDriverManager
from .options import PROG, Parser, command
from .output import plural, print_json, print_mapping
from .session import Session

__all__ = ["register", "run_migrate", "split_passthrough"]


def cmd_health(s: Session) -> int:
    report = s.driver.health_check()
    if s.json:
        print_json(report)
    else:
        print_mapping(report)
    return 0 if report.get("status") == "ok" else 1


def cmd_stats(s: Session) -> int:
    stats = s.driver.stats()
    if s.json:
        print_json(stats)
    else:
        print_mapping(stats)
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
        print_json(result)
    else:
        print_mapping(result)
    return 0


def cmd_reembed(s: Session) -> int:
    driver = s.open_for_reembed()
    total = driver.count() + _knowledge_chunks(driver)
    with s.progress(total, f"re-embedding with {driver.embedder.name}", "item") as bar:
        result = driver.reembed(batch_size=s.args.batch_size, progress=bar.update)
    if s.json:
        print_json({**result, "embedder": driver.embedder.name})
    else:
        print(
            f"re-embedded {plural(result.get('memories', 0), 'memory')} and "
            f"{plural(result.get('knowledge_chunks', 0), 'knowledge chunk')} with "
            f"{driver.embedder.name}"
        )
    return 0


def cmd_drivers(s: Session) -> int:
    names = MemoryDriverManager.available()
    if s.json:
        print_json(names)
        return 0
    try:
        default = s.driver_name.strip().lower()
    except ConfigurationError:
        default = None
    for name in names:
        print(f"{name}{'  (selected)' if name == default else ''}")
    return 0


def run_migrate(argv: Sequence[str], s: Session) -> int:
    """``memory-drivers migrate ...`` on the database of the session's driver; usage errors
    and failures raise (``main`` reports them)."""
    from ..sql import migrate

    args = migrate.build_parser(f"{PROG} migrate", Parser).parse_args(list(argv))
    settings = s.settings
    if s.args.driver:
        settings = settings.replace(memory_driver=s.args.driver)
    return migrate.run(args, settings)


def split_passthrough(
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


def register(sub: Any) -> None:
    """Add the maintenance commands to ``sub``."""
    command(sub, "health", cmd_health, "check the store (exit 1 unless its status is ok)")
    command(sub, "stats", cmd_stats, "show counts and sizes")
    command(
        sub,
        "rebuild-index",
        cmd_rebuild_index,
        "rebuild derived search indexes (FAISS for sqlite) from the database",
    )
    p = command(
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
    command(sub, "drivers", cmd_drivers, "list the available drivers")
