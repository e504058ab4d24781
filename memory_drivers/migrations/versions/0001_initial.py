"""initial schema: memories, associations, knowledge chunks

On SQLite also: FTS5 over the memories' keyword terms, and the vector log that the FAISS index
follows. Triggers write both in the same transaction as the row they mirror, so neither can
drift from the table whatever code path (or crash) a write goes through.

On PostgreSQL also: the pgvector extension, ``vector(dimension)`` columns with HNSW indexes
(cosine), and a generated ``tsvector`` over the keyword terms with a GIN index. The dimension
comes from the configured embedder (``embedding_dimension`` in the Alembic attributes).

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from alembic import context, op

from memory_drivers.sql.schema import EmbeddingType, JSONType, Key, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Keyword recall is always within one user's memories, so FTS5 indexes each term prefixed with
# the user: "<hex of user_id>x<term>". A common word then has one short posting list per user
# instead of one spanning every memory of every user (100x less to read at 100 users).
_SCOPED = "replace(' ' || {row}.search_terms, ' ', ' ' || hex({row}.user_id) || 'x')"

SQLITE_OBJECTS = [
    # Keyword search: a contentless FTS5 table over the user-scoped keyword terms.
    """CREATE VIRTUAL TABLE memories_fts USING fts5(
        search_terms, content='', tokenize='unicode61 remove_diacritics 0')""",
    f"""CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN
        INSERT INTO memories_fts(rowid, search_terms) VALUES (new.pk, {_SCOPED.format(row="new")});
    END""",
    f"""CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN
        INSERT INTO memories_fts(memories_fts, rowid, search_terms)
        VALUES ('delete', old.pk, {_SCOPED.format(row="old")});
    END""",
    f"""CREATE TRIGGER memories_fts_update AFTER UPDATE OF search_terms, user_id ON memories BEGIN
        INSERT INTO memories_fts(memories_fts, rowid, search_terms)
        VALUES ('delete', old.pk, {_SCOPED.format(row="old")});
        INSERT INTO memories_fts(rowid, search_terms) VALUES (new.pk, {_SCOPED.format(row="new")});
    END""",
    # The vector log: every change of a vector, in commit order, for the FAISS index to replay.
    """CREATE TABLE vector_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        vector_pk INTEGER NOT NULL,
        op TEXT NOT NULL
    )""",
]
for _table in ("memories", "knowledge_chunks"):
    SQLITE_OBJECTS += [
        f"""CREATE TRIGGER {_table}_log_insert AFTER INSERT ON {_table} BEGIN
            INSERT INTO vector_log(kind, vector_pk, op) VALUES ('{_table}', new.pk, 'add');
        END""",
        f"""CREATE TRIGGER {_table}_log_update AFTER UPDATE OF embedding ON {_table} BEGIN
            INSERT INTO vector_log(kind, vector_pk, op) VALUES ('{_table}', new.pk, 'add');
        END""",
        f"""CREATE TRIGGER {_table}_log_delete AFTER DELETE ON {_table} BEGIN
            INSERT INTO vector_log(kind, vector_pk, op) VALUES ('{_table}', old.pk, 'remove');
        END""",
    ]


POSTGRES_OBJECTS = [
    # Keyword search over the same terms as SQLite's FTS5 ('simple': no further stemming).
    """ALTER TABLE memories ADD COLUMN search_tsv tsvector
        GENERATED ALWAYS AS (to_tsvector('simple', search_terms)) STORED""",
    "CREATE INDEX ix_memories_search_tsv ON memories USING gin (search_tsv)",
    # Approximate nearest neighbours for large unfiltered searches (the driver scans exactly
    # when the filtered candidate set is small).
    "CREATE INDEX ix_memories_embedding_hnsw ON memories USING hnsw (embedding vector_cosine_ops)",
    """CREATE INDEX ix_knowledge_chunks_embedding_hnsw ON knowledge_chunks
        USING hnsw (embedding vector_cosine_ops)""",
    "CREATE INDEX ix_memories_metadata ON memories USING gin (metadata jsonb_path_ops)",
    "CREATE INDEX ix_memories_tags ON memories USING gin (tags)",
]


def _embedding_type() -> Any:
    if op.get_bind().dialect.name != "postgresql":
        return EmbeddingType
    dimension = context.config.attributes.get("embedding_dimension")
    if not dimension:
        raise RuntimeError(
            "creating the PostgreSQL schema needs the embedding dimension; run it through "
            "memory-drivers migrate (which reads it from the configured embedder)"
        )
    from pgvector.sqlalchemy import VECTOR

    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return VECTOR(int(dimension))


def upgrade() -> None:
    embedding = _embedding_type()
    store_info = op.create_table(
        "memory_store_info",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    # A new identity for every schema created: derived files (the FAISS index) record it, so a
    # file left over from a dropped store is never mistaken for the new one's.
    op.bulk_insert(store_info, [{"key": "store_id", "value": str(uuid.uuid4())}])
    op.create_table(
        "memories",
        sa.Column("pk", Key, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("conversation_id", sa.String(255)),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("memory_type", sa.String(64), nullable=False),
        sa.Column("tags", JSONType, nullable=False),
        sa.Column("importance", sa.Float, nullable=False),
        sa.Column("metadata", JSONType, nullable=False),
        sa.Column("source", sa.String(255)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("search_terms", sa.Text, nullable=False),
        sa.Column("embedding", embedding, nullable=False),
    )
    op.create_index("ix_memories_user_created", "memories", ["user_id", "created_at"])
    op.create_index("ix_memories_user_conversation", "memories", ["user_id", "conversation_id"])
    op.create_table(
        "memory_associations",
        sa.Column(
            "source_pk", Key, sa.ForeignKey("memories.pk", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "target_pk", Key, sa.ForeignKey("memories.pk", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("relationship_type", sa.String(64), primary_key=True),
        sa.Column("strength", sa.Float, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_memory_associations_target", "memory_associations", ["target_pk"])
    op.create_table(
        "knowledge_chunks",
        sa.Column("pk", Key, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("doc_id", sa.String(255), nullable=False),
        sa.Column("chunk_index", sa.Integer, nullable=False),
        sa.Column("category", sa.String(255), nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("metadata", JSONType, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("embedding", embedding, nullable=False),
        sa.UniqueConstraint("doc_id", "chunk_index", name="uq_knowledge_chunks_doc_chunk"),
    )
    op.create_index("ix_knowledge_chunks_category", "knowledge_chunks", ["category"])
    dialect = op.get_bind().dialect.name
    for statement in {"sqlite": SQLITE_OBJECTS, "postgresql": POSTGRES_OBJECTS}.get(dialect, []):
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS vector_log")
        op.execute("DROP TABLE IF EXISTS memories_fts")
    op.drop_table("knowledge_chunks")
    op.drop_table("memory_associations")
    op.drop_table("memories")
    op.drop_table("memory_store_info")
