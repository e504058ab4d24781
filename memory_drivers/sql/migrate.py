"""``python migrate.py`` and ``memory-drivers migrate``: create, inspect, roll back or recreate
the schema of the configured SQL driver's database (or of ``--url``).

Exit codes: 0 done, 1 the database failed, 2 invalid arguments or configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from ..config import Settings, get_settings
from ..errors import (
    BackendUnavailableError,
    ConfigurationError,
    MemoryDriverError,
    SchemaError,
    ValidationError,
)
from . import migrations
from .engines import (
    create_sqlite_engine,
    describe,
    engine_for,
    faiss_index_path,
    prepare_database,
    write_connection,
)

__all__ = ["MigrationTarget", "main", "migration_target"]


@dataclass
class MigrationTarget:
    """The database ``migrate.py`` works on, and files derived from it."""

    engine: Engine
    label: str
    derived_files: tuple[Path, ...] = ()
    attributes: dict[str, Any] | None = None
    #: Runs first in the migration's transaction (PostgreSQL: lock, enable pgvector).
    prepare: Callable[[Connection, str], None] | None = None

    def run(self, action: str, *, steps: int = 1, confirmed: bool = False) -> int:
        try:
            return self._run(action, steps=steps, confirmed=confirmed)
        except DBAPIError as exc:
            raise BackendUnavailableError(f"database {self.label}: {exc.orig}") from exc
        finally:
            self.engine.dispose()

    def _run(self, action: str, *, steps: int, confirmed: bool) -> int:
        attributes = self.attributes or {}
        with write_connection(self.engine) as connection:
            if self.prepare is not None and action != "status":
                self.prepare(connection, self.label)
            current = migrations.current_revision(connection)
            if current is not None and current not in migrations.known_revisions():
                raise SchemaError(
                    f"{self.label} is at schema revision {current}, which this version of "
                    "memory-drivers does not know; it was made by a newer version. "
                    "Upgrade memory-drivers."
                )
            pending = migrations.pending_revisions(connection)
            if action == "status":
                print(f"database: {self.label}")
                print(f"current:  {current or '(empty: no schema yet)'}")
                print(f"head:     {migrations.head_revision()}")
                for revision, doc in pending:
                    print(f"pending:  {revision}  {doc}")
                if not pending:
                    print("up to date")
                return 0
            if action == "upgrade":
                migrations.upgrade(connection, **attributes)
                for revision, doc in pending:
                    print(f"applied {revision}  {doc}")
                print(f"{self.label} is up to date ({migrations.head_revision()})")
                return 0
            if action == "rollback":
                if steps < 1:
                    raise ValidationError("--steps must be at least 1")
                if current is None:
                    print(f"{self.label} has no schema; nothing to roll back")
                    return 0
                migrations.downgrade(connection, f"-{steps}", **attributes)
                now = migrations.current_revision(connection)
                print(f"rolled back {current} -> {now or '(empty)'}")
                return 0
            if action == "fresh":
                if not confirmed and not _confirm(self.label):
                    print("aborted; nothing was changed")
                    return 1
                migrations.downgrade(connection, "base", **attributes)
                migrations.upgrade(connection, **attributes)
                for path in self.derived_files:
                    path.unlink(missing_ok=True)
                print(
                    f"{self.label}: dropped everything and recreated the schema "
                    f"({migrations.head_revision()})"
                )
                return 0
        raise ConfigurationError(f"unknown migrate action {action!r}")


def _confirm(label: str) -> bool:
    if not sys.stdin.isatty():
        raise ConfigurationError(
            f"'fresh' deletes every memory in {label}; run it again with --yes to confirm"
        )
    answer = input(f"Delete every memory in {label} and recreate the schema? [y/N] ")
    return answer.strip().lower() in {"y", "yes"}


def migration_target(settings: Settings, url: str | None = None) -> MigrationTarget:
    """The database of the configured SQL driver (or of ``url``): DATABASE_URL for pgvector,
    MEMORY_DB_URL otherwise."""
    if url is None:
        wants_postgres = settings.memory_driver.strip().lower() in {"pgvector", "postgres"}
        url = settings.database_url if wants_postgres else settings.memory_db_url
        if not url:
            raise ConfigurationError(
                "MEMORY_DRIVER is pgvector but DATABASE_URL is not set; set it or pass --url"
            )
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError as exc:
        raise ConfigurationError(f"{url!r} is not a database URL: {exc}") from None
    if backend in {"postgresql", "postgres"}:
        from ..embeddings import get_embedder

        engine = engine_for(settings, url)
        return MigrationTarget(
            engine,
            label=describe(engine.url),
            attributes={"embedding_dimension": get_embedder(settings).dimension},
            prepare=prepare_database,
        )
    if backend == "sqlite":
        settings = settings.replace(memory_db_url=url)
        index = faiss_index_path(settings)
        try:
            engine = create_sqlite_engine(settings)
        except OSError as exc:
            raise BackendUnavailableError(
                f"SQLite database {url}: cannot create its folder ({exc})"
            ) from exc
        return MigrationTarget(
            engine,
            label=url,
            derived_files=(index,) if index is not None else (),
        )
    raise ConfigurationError(
        f"migrate.py handles sqlite:/// and postgresql:// URLs; {url!r} uses {backend!r}"
    )


def main(argv: Sequence[str] | None = None, *, prog: str = "migrate.py") -> int:
    """Command line: ``migrate.py [upgrade|fresh|status|rollback] [--url URL]``.

    Exit codes: 0 done, 1 the database failed, 2 invalid arguments or configuration."""
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
