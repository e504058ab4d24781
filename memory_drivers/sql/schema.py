"""The SQL schema shared by the SQL drivers (SQLAlchemy Core).

Only the embedding column's type, the vector index and full-text search differ per backend;
those backend parts are created by the migrations, not declared here. Migrations are the
source of the schema in a database; a test checks that this module and the migrations agree.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine, UserDefinedType

__all__ = [
    "EmbeddingType",
    "UTCDateTime",
    "associations",
    "knowledge_chunks",
    "memories",
    "metadata",
    "only_on",
    "store_info",
]


def only_on(dialect: str, index: Index) -> Index:
    """``index``, created on ``dialect``'s databases only (``info["dialect"]`` tells the
    schema comparison, migrations/env.py's :func:`~memory_drivers.sql.migrations.include_object`,
    to expect it there alone)."""
    index.info["dialect"] = dialect
    return index.ddl_if(dialect=dialect)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes, with microseconds, on every backend.

    SQLite has no time zones: values are stored as naive UTC text, which sorts and compares
    correctly because the format is fixed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class PgVector(UserDefinedType[Any]):
    """pgvector's ``vector``, passed to the database driver as a numpy array.

    The pgvector driver registers pgvector's psycopg adapter on each connection, which sends
    arrays in binary. (pgvector's own SQLAlchemy type formats every vector as text in Python,
    which took longer than the rest of an insert.)
    """

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "vector"


class EmbeddingType(TypeDecorator[np.ndarray]):
    """A float32 vector: raw bytes in SQLite, pgvector's ``vector`` in PostgreSQL."""

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(PgVector())
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        array = np.ascontiguousarray(value, dtype=np.float32)
        return array if dialect.name == "postgresql" else array.tobytes()

    def process_result_value(self, value: Any, dialect: Dialect) -> np.ndarray | None:
        if value is None:
            return None
        if isinstance(value, bytes | memoryview):
            return np.frombuffer(value, dtype=np.float32)
        if hasattr(value, "to_numpy"):  # pgvector.Vector, from the psycopg adapter
            value = value.to_numpy()
        return np.asarray(value, dtype=np.float32)


JSONType = JSON().with_variant(JSONB(), "postgresql")
Key = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

store_info = Table(
    "memory_store_info",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

memories = Table(
    "memories",
    metadata,
    Column("pk", Key, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("user_id", String(255), nullable=False),
    Column("conversation_id", String(255)),
    Column("content", Text, nullable=False),
    Column("memory_type", String(64), nullable=False),
    # A JSON array, in the order given; tag filters are translated per backend.
    Column("tags", JSONType, nullable=False),
    Column("importance", Float, nullable=False),
    Column("metadata", JSONType, nullable=False),
    Column("source", String(255)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("search_terms", Text, nullable=False),
    Column("embedding", EmbeddingType, nullable=False),
    Column("term_count", Integer, nullable=False, server_default="0"),
    # A user's memories by time. SQLite's holds the tags too, so a recall filtered by user,
    # time and tags finds its candidates in the index alone, without reading each row (1M
    # memories, ~1,200 candidates of a user's 10,000: 14.8 -> 1.3 ms). PostgreSQL's does not:
    # a B-tree entry must fit in a third of a page, and tags may be longer (migration 0006).
    only_on("postgresql", Index("ix_memories_user_created", "user_id", "created_at")),
    only_on("sqlite", Index("ix_memories_user_created_tags", "user_id", "created_at", "tags")),
    # iter_memories' order (oldest first, then id): each page is a range of this index.
    Index("ix_memories_created", "created_at", "id"),
    # Conversation order, with each memory's length: keyword search reads a user's scope from
    # this index alone (ranking.pipeline.KeywordEvidence).
    Index(
        "ix_memories_user_conversation",
        "user_id",
        "conversation_id",
        "created_at",
        "id",
        "term_count",
    ),
)

associations = Table(
    "memory_associations",
    metadata,
    Column("source_pk", Key, ForeignKey("memories.pk", ondelete="CASCADE"), primary_key=True),
    Column("target_pk", Key, ForeignKey("memories.pk", ondelete="CASCADE"), primary_key=True),
    Column("relationship_type", String(64), primary_key=True),
    Column("strength", Float, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_memory_associations_target", "target_pk"),
)

knowledge_chunks = Table(
    "knowledge_chunks",
    metadata,
    Column("pk", Key, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("doc_id", String(255), nullable=False),
    Column("chunk_index", Integer, nullable=False),
    Column("category", String(255), nullable=False),
    Column("title", Text),
    Column("content", Text, nullable=False),
    Column("metadata", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("embedding", EmbeddingType, nullable=False),
    Column("search_terms", Text, nullable=False, server_default=""),
    Column("term_count", Integer, nullable=False, server_default="0"),
    UniqueConstraint("doc_id", "chunk_index", name="uq_knowledge_chunks_doc_chunk"),
    Index("ix_knowledge_chunks_category", "category"),
)
