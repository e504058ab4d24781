"""memories (SQLite): keyword postings written once per batch by the driver, not by a trigger
per row

The insert trigger of migration 0001 added each new memory's user-scoped terms to FTS5 as the
row was inserted. The sqlite driver now does it itself, in the same transaction, with one
``INSERT INTO memories_fts ... SELECT`` over the rows a batch inserted (the trigger's own
expression): for the benchmark's terms, 100k memories in batches of 1,000, rows and postings
took 1.17 s against 2.94-3.10 s with the trigger. Updates and deletes keep their triggers.

The driver's ``store_many`` is the only statement that inserts memories; an older version,
which relies on the trigger, refuses a database at this revision (it is newer than it knows).
The downgrade puts the trigger back.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Migration 0001's trigger, as it was.
_INSERT_TRIGGER = """CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
        INSERT INTO memories_fts(rowid, search_terms)
        VALUES (new.pk, replace(' ' || new.search_terms, ' ', ' ' || hex(new.user_id) || 'x'));
    END"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS memories_fts_insert")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(_INSERT_TRIGGER)
