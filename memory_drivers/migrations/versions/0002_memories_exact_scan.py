"""memories: no HNSW index by default (recall scans the user's memories exactly); vectors inline

Every memory recall is scoped to one user, whose memories an exact scan scores in about a
millisecond per thousand; keeping an HNSW graph over every user's vectors cost about ten
times the rest of an insert (memories/s at 100k: ~500 with it, ~6,000 without). Deployments
where one user holds tens of thousands of memories turn it back on with
PGVECTOR_MEMORY_HNSW=true (the driver creates it). Knowledge chunks, searched across every
user, keep theirs.

Vectors are kept in the row (storage MAIN) rather than pgvector's default EXTERNAL: a memory's
other columns put most rows over PostgreSQL's 2 kB TOAST threshold, and the 1.5 kB vector was
then moved out of line, so an exact scan read two pages per memory instead of one (at 100k
memories: 3.3 -> 2.3 ms per scan of 1,000). MAIN still moves a vector out of line when a row
cannot fit otherwise (large dimensions). It applies to rows written from now on. Nothing on
SQLite.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MEMORY_HNSW = "ix_memories_embedding_hnsw"


TABLES = ("memories", "knowledge_chunks")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {MEMORY_HNSW}")
        for table in TABLES:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN embedding SET STORAGE MAIN")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:  # pgvector's default (SET STORAGE DEFAULT needs PostgreSQL 16)
            op.execute(f"ALTER TABLE {table} ALTER COLUMN embedding SET STORAGE EXTERNAL")
        op.execute(
            f"CREATE INDEX IF NOT EXISTS {MEMORY_HNSW} ON memories "
            "USING hnsw (embedding vector_cosine_ops)"
        )
