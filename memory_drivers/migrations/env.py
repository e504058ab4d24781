"""Alembic environment for memory-drivers.

Run migrations through ``memory-drivers migrate`` (or ``python migrate.py`` in a checkout),
which hands this file a connection inside a write transaction. Plain ``alembic`` commands fall
back to ``MEMORY_DB_URL``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from memory_drivers.sql.migrations import VERSION_TABLE, include_object
from memory_drivers.sql.schema import metadata

config = context.config


def run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        include_object=include_object(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
elif connection is not None:
    run(connection)
else:
    from memory_drivers.config import get_settings

    engine = create_engine(get_settings().memory_db_url)
    with engine.begin() as conn:
        run(conn)
