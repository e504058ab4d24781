"""Keyword search of knowledge; memories of a conversation indexed in order

Knowledge chunks get keyword terms (``search_terms``, filled in from their content) and a
keyword index of their own (SQLite: FTS5 ``knowledge_fts``; PostgreSQL: a generated
``tsvector`` with a GIN index), so ``recall_global_knowledge`` has keyword and hybrid search.

Memories and chunks get ``term_count``, the length BM25 needs, and the conversation index of
memories becomes (user, conversation, created_at, id, term_count): a memory is indexed for
keyword search with the memories before it in its conversation, which the drivers read in that
order on every write (memory_drivers.ranking.context), and keyword search reads a user's scope
from this index alone. Memories are re-indexed with their context when a store is opened (the
``context_window`` store info says with which window they were indexed).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from memory_drivers.text import document_terms, term_count

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SQLITE_UP = [
    """CREATE VIRTUAL TABLE knowledge_fts USING fts5(
        search_terms, content='', tokenize='unicode61 remove_diacritics 0')""",
    """CREATE TRIGGER knowledge_fts_insert AFTER INSERT ON knowledge_chunks BEGIN
        INSERT INTO knowledge_fts(rowid, search_terms) VALUES (new.pk, new.search_terms);
    END""",
    """CREATE TRIGGER knowledge_fts_delete AFTER DELETE ON knowledge_chunks BEGIN
        INSERT INTO knowledge_fts(knowledge_fts, rowid, search_terms)
        VALUES ('delete', old.pk, old.search_terms);
    END""",
    """CREATE TRIGGER knowledge_fts_update AFTER UPDATE OF search_terms ON knowledge_chunks BEGIN
        INSERT INTO knowledge_fts(knowledge_fts, rowid, search_terms)
        VALUES ('delete', old.pk, old.search_terms);
        INSERT INTO knowledge_fts(rowid, search_terms) VALUES (new.pk, new.search_terms);
    END""",
    "INSERT INTO knowledge_fts(rowid, search_terms) SELECT pk, search_terms FROM knowledge_chunks",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS knowledge_fts_insert",
    "DROP TRIGGER IF EXISTS knowledge_fts_delete",
    "DROP TRIGGER IF EXISTS knowledge_fts_update",
    "DROP TABLE IF EXISTS knowledge_fts",
]
POSTGRES_UP = [
    """ALTER TABLE knowledge_chunks ADD COLUMN search_tsv tsvector
        GENERATED ALWAYS AS (to_tsvector('simple', search_terms)) STORED""",
    "CREATE INDEX ix_knowledge_chunks_search_tsv ON knowledge_chunks USING gin (search_tsv)",
]
POSTGRES_DOWN = [
    "DROP INDEX IF EXISTS ix_knowledge_chunks_search_tsv",
    "ALTER TABLE knowledge_chunks DROP COLUMN IF EXISTS search_tsv",
]


def _fill(table: str, source: str, compute: Any) -> None:
    """Set search_terms and term_count of every row of ``table`` from column ``source``."""
    rows_table = sa.table(
        table,
        sa.column("pk", sa.Integer),
        sa.column(source, sa.Text),
        sa.column("search_terms", sa.Text),
        sa.column("term_count", sa.Integer),
    )
    bind = op.get_bind()
    rows = bind.execute(sa.select(rows_table.c.pk, rows_table.c[source])).all()
    values = []
    for pk, text in rows:
        terms = compute(text)
        values.append({"b_pk": pk, "b_terms": terms, "b_count": term_count(terms)})
    if values:
        bind.execute(
            sa.update(rows_table)
            .where(rows_table.c.pk == sa.bindparam("b_pk"))
            .values(search_terms=sa.bindparam("b_terms"), term_count=sa.bindparam("b_count")),
            values,
        )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.drop_index("ix_memories_user_conversation", table_name="memories")
    for table in ("memories", "knowledge_chunks"):
        op.add_column(
            table, sa.Column("term_count", sa.Integer, nullable=False, server_default="0")
        )
    op.add_column(
        "knowledge_chunks",
        sa.Column("search_terms", sa.Text, nullable=False, server_default=""),
    )
    _fill("memories", "search_terms", lambda terms: terms)
    _fill("knowledge_chunks", "content", document_terms)
    op.create_index(
        "ix_memories_user_conversation",
        "memories",
        ["user_id", "conversation_id", "created_at", "id", "term_count"],
    )
    for statement in {"sqlite": SQLITE_UP, "postgresql": POSTGRES_UP}.get(dialect, []):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": SQLITE_DOWN, "postgresql": POSTGRES_DOWN}.get(dialect, []):
        op.execute(statement)
    op.drop_index("ix_memories_user_conversation", table_name="memories")
    # Memories go back to their own terms: the older code knows no conversation context.
    _fill("memories", "content", document_terms)
    with op.batch_alter_table("knowledge_chunks") as batch:
        batch.drop_column("search_terms")
        batch.drop_column("term_count")
    with op.batch_alter_table("memories") as batch:
        batch.drop_column("term_count")
    op.create_index("ix_memories_user_conversation", "memories", ["user_id", "conversation_id"])
    op.execute("DELETE FROM memory_store_info WHERE key = 'context_window'")
