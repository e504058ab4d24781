"""Alembic, driven from code: upgrade, rollback, fresh and status for the SQL drivers.

The scripts are in ``memory_drivers/migrations/``. Drivers call :func:`upgrade` with a connection
inside their own write transaction, so two processes opening a new store at once cannot both
create it; ``memory-drivers migrate`` (:mod:`.migrate`) drives the same functions from the
command line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

__all__ = [
    "VERSION_TABLE",
    "applied_revisions",
    "current_revision",
    "downgrade",
    "head_revision",
    "include_object",
    "known_revisions",
    "pending_revisions",
    "upgrade",
]

#: Our own version table, so an application's Alembic history in the same database is untouched.
VERSION_TABLE = "memory_drivers_alembic_version"


def script_location() -> str:
    """Where the migration scripts are: ``memory_drivers/migrations/`` (found by path, not
    imported: ``env.py`` imports this module)."""
    return str(Path(__file__).resolve().parent.parent / "migrations")


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


def applied_revisions(connection: Connection) -> list[str]:
    """The revisions applied to the database, oldest first (empty for an empty database)."""
    current = current_revision(connection)
    if current is None:
        return []
    scripts = list(_scripts().iterate_revisions(current, "base"))
    return [s.revision for s in reversed(scripts)]


def pending_revisions(connection: Connection) -> list[tuple[str, str]]:
    """(revision, description) of each migration not yet applied, oldest first."""
    current = current_revision(connection)
    scripts = list(_scripts().iterate_revisions(head_revision(), current))
    return [(s.revision, (s.doc or "").strip()) for s in reversed(scripts)]


def include_object(dialect: str) -> Callable[..., bool]:
    """Alembic's ``include_object`` for comparing a ``dialect`` database with the shared
    metadata: backend-specific tables (FTS tables, the vector log), which the metadata does not
    declare, are left out, and so are the metadata's indexes made for another dialect
    (:func:`~memory_drivers.sql.schema.only_on`)."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if type_ == "table" and reflected and compare_to is None:
            return False
        made_for = getattr(obj, "info", {}).get("dialect") if type_ == "index" else None
        return made_for is None or made_for == dialect

    return include


def upgrade(connection: Connection, target: str = "head", **attributes: Any) -> None:
    """Apply migrations up to ``target`` on ``connection`` (inside the caller's transaction)."""
    command.upgrade(make_config(connection, **attributes), target)


def downgrade(connection: Connection, target: str = "-1", **attributes: Any) -> None:
    """Roll back to ``target`` (default: the last step)."""
    command.downgrade(make_config(connection, **attributes), target)
