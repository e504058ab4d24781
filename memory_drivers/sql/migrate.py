"""``memory-drivers migrate``: create, inspect, roll back or recreate the schema of the
configured SQL driver's database (or of ``--url``). ``python migrate.py`` in a checkout is the
same command.

The database is the sqlite driver's ``MEMORY_DB_URL``, or the pgvector driver's
``DATABASE_URL``; the other drivers (chroma, automem) keep no SQL schema, so for them
``migrate`` refuses unless ``--url`` names a database.

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

__all__ = ["MigrationTarget", "build_parser", "main", "migration_target", "run"]

#: The registry names whose database ``migrate`` finds by itself, and the setting naming it.
SQLITE_DRIVERS = frozenset({"sqlite"})
POSTGRES_DRIVERS = frozenset({"pgvector", "postgres"})


@dataclass
class MigrationTarget:
    """The database ``migrate`` works on, and files derived from it."""

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
                applied = migrations.applied_revisions(connection)
                if steps > len(applied):
                    raise ValidationError(
                        f"--steps {steps} is more than the {len(applied)} migration"
                        f"{'s' if len(applied) != 1 else ''} applied to {self.label} "
                        f"({', '.join(applied)}); --steps {len(applied)} rolls back to an "
                        "empty database"
                    )
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
    MEMORY_DB_URL for sqlite. Any other driver keeps no SQL schema: ConfigurationError, without
    touching a database (an unknown name: DriverNotFoundError)."""
    if url is None:
        driver = settings.memory_driver.strip().lower()
        if driver in POSTGRES_DRIVERS:
            url = settings.database_url
            if not url:
                raise ConfigurationError(
                    f"MEMORY_DRIVER is {driver} but DATABASE_URL is not set; set it or pass --url"
                )
        elif driver in SQLITE_DRIVERS:
            url = settings.memory_db_url
        else:
            from ..manager import MemoryDriverManager

            MemoryDriverManager._resolve(driver)  # an unknown name: "Did you mean ...?"
            raise ConfigurationError(
                f"the {driver!r} driver keeps no SQL schema, so there is nothing to migrate "
                "(migrate works on the databases of the sqlite and pgvector drivers); "
                "pass --url to migrate a SQL database anyway"
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
        f"migrate handles sqlite:/// and postgresql:// URLs; {url!r} uses {backend!r}"
    )


def build_parser(
    prog: str = "memory-drivers migrate",
    parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    """The parser of ``migrate [upgrade|fresh|status|rollback] [--url URL] [--steps N] [--yes]``
    (``parser_class``: the CLI's, which reports usage errors its own way)."""
    parser = parser_class(
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
    return parser


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the parsed ``args`` on the configured database; the exit code. Failures raise
    :class:`~memory_drivers.errors.MemoryDriverError` (the caller reports them)."""
    target = migration_target(settings, args.url)
    return target.run(args.action, steps=args.steps, confirmed=args.yes)


def main(argv: Sequence[str] | None = None, *, prog: str = "memory-drivers migrate") -> int:
    """A standalone run (``python migrate.py`` in a checkout): parse ``argv``, run, and report
    a failure as ``error: ...``.

    Exit codes: 0 done, 1 the database failed, 2 invalid arguments or configuration."""
    args = build_parser(prog).parse_args(argv)
    try:
        return run(args, get_settings())
    except MemoryDriverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigurationError | ValidationError) else 1
