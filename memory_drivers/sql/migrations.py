"""Alembic, driven from code: upgrade, rollback, fresh and status for the SQL drivers.

``python migrate.py`` (and ``memory-drivers migrate``) call :func:`main`. Drivers call
:func:`upgrade` with a connection inside their own write transaction, so two processes opening a
new store at once cannot both create it.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

__all__ = [
    "VERSION_TABLE",
    "current_revision",
    "downgrade",
    "head_revision",
    "known_revisions",
    "main",
    "pending_revisions",
    "upgrade",
]

#: Our own version table, so an application's Alembic history in the same database is untouched.
VERSION_TABLE = "memory_drivers_alembic_version"


def script_location() -> str:
    """Where the migration scripts are (top-level ``migrations/``, shipped in the package)."""
    import memory_drivers.migrations as scripts

    return str(Path(scripts.__file__).parent)


def make_config(connection: Connection | None = None, **attributes: Any) -> Config:
    config = Config()
    config.set_main_option("script_location", script_location())
    config.attributes["connection"] = connection
    config.attributes.update(attributes)
    return config


@functools.lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(make_config())


def head_revision() -> str:
    head = _scripts().get_current_head()
    assert head is not None, "the migrations folder has no revisions"
    return head


def known_revisions() -> set[str]:
    """Every revision the migration scripts define."""
    return {script.revision for script in _scripts().walk_revisions()}


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None for an empty database."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def pending_revisions(connection: Connection) -> list[tuple[str, str]]:
    """(revision, description) of each migration not yet applied, oldest first."""
    current = current_revision(connection)
    scripts = list(_scripts().iterate_revisions(head_revision(), current))
    return [(s.revision, (s.doc or "").strip()) for s in reversed(scripts)]


def upgrade(connection: Connection, target: str = "head", **attributes: Any) -> None:
    """Apply migrations up to ``target`` on ``connection`` (inside the caller's transaction)."""
    command.upgrade(make_config(connection, **attributes), target)


def downgrade(connection: Connection, target: str = "-1", **attributes: Any) -> None:
    """Roll back to ``target`` (default: the last step)."""
    command.downgrade(make_config(connection, **attributes), target)


def main(argv: Sequence[str] | None = None, *, prog: str = "migrate.py") -> int:
    """Command line: ``migrate.py [upgrade|fresh|status|rollback] [--url URL]``.

    Exit codes: 0 done, 1 the database failed, 2 invalid arguments or configuration."""
    from ..config import get_settings
    from ..errors import ConfigurationError, MemoryDriverError, ValidationError
    from .engines import migration_target

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Create or update the memory-drivers schema (SQLite or PostgreSQL).",
    )
    parser.add_argument(
        "action",
        nargs="?",
        default="upgrade",
        choices=["upgrade", "fresh", "status", "rollback"],
        help="upgrade (default): apply pending migrations; fresh: drop everything and "
        "recreate; status: show applied and pending; rollback: undo the last step(s)",
    )
    parser.add_argument("--url", help="database URL (default: the configured driver's database)")
    parser.add_argument("--steps", type=int, default=1, help="rollback: how many steps")
    parser.add_argument("--yes", "-y", action="store_true", help="fresh: do not ask")
    args = parser.parse_args(argv)
    try:
        target = migration_target(get_settings(), args.url)
        return target.run(args.action, steps=args.steps, confirmed=args.yes)
    except MemoryDriverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigurationError | ValidationError) else 1
