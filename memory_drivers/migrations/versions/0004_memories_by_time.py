"""memories: an index in (created_at, id) order, the order iter_memories reads (and exports)

``iter_memories`` reads every memory oldest first in pages (keyset on ``created_at``, then
``id``). With no index in that order each page scanned and sorted every memory after the last
one read, so reading a store cost pages x memories: copying 50,000 memories out of SQLite spent
about 0.1 s per page of 2,000 sorting, 25 pages (at 100,000 the cost per page doubles and the
pages double). With it a page is an index range read.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_memories_created", "memories", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_memories_created", table_name="memories")
