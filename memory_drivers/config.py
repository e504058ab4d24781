"""Configuration, read from the environment and ``.env`` (pydantic-settings).

Every variable is documented, with its default, in ``.env.example``; a test keeps the two in step.

Python::

    from memory_drivers.config import Settings
    settings = Settings(memory_db_url="sqlite:///data/agent.db")   # arguments beat the environment
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import ConfigurationError
from .text import QUESTION_WORDS

__all__ = ["DEFAULT_MEMORY_TYPES", "Settings", "get_settings"]

#: The memory types every store accepts; ``MEMORY_EXTRA_TYPES`` adds more.
DEFAULT_MEMORY_TYPES: tuple[str, ...] = (
    "episodic",
    "semantic",
    "procedural",
    "reflection",
    "fact",
    "context",
    "preference",
)

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """All settings of memory-drivers. Field ``foo_bar`` is read from the variable ``FOO_BAR``."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,
        frozen=True,
    )

    # --- driver selection -------------------------------------------------------------
    memory_driver: str = "sqlite"
    async_max_threads: int = Field(16, ge=1)
    async_native: bool = True

    # --- sqlite driver ----------------------------------------------------------------
    memory_db_url: str = "sqlite:///storage/memories.db"
    faiss_index_path: Path | None = None
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    sqlite_busy_timeout: float = Field(30.0, gt=0)
    faiss_persist_every: int = Field(1000, ge=1)
    memory_auto_migrate: bool | None = None

    # --- pgvector driver --------------------------------------------------------------
    database_url: str | None = None
    pgvector_pool_size: int = Field(5, ge=1)
    pgvector_connect_timeout: float = Field(5.0, gt=0)
    pgvector_retry_seconds: float = Field(10.0, ge=0)
    pgvector_memory_hnsw: bool = False
    pgvector_exact_scan_limit: int = Field(20_000, ge=0)
    pgvector_ef_search: int = Field(100, ge=1)
    pgvector_vector_cache_mb: int = Field(256, ge=0)
    pgvector_vector_cache_after: int = Field(0, ge=0)

    # --- automem driver (an AutoMem service, or `memory-drivers serve`) ------------------
    automem_url: str = "http://127.0.0.1:8001"
    automem_api_token: SecretStr | None = None
    automem_timeout: float = Field(30.0, gt=0)
    automem_max_retries: int = Field(3, ge=0)
    automem_retry_backoff: float = Field(0.5, ge=0)

    # --- memory-drivers serve (AutoMem's REST API on top of any driver) -------------------
    memory_server_host: str = "127.0.0.1"
    memory_server_port: int = Field(8001, ge=0, le=65535)
    memory_server_api_token: SecretStr | None = None
    memory_server_default_user: str = "automem"
    memory_server_max_body_bytes: int = Field(32 * 1024 * 1024, ge=1)
    memory_server_max_head_bytes: int = Field(1024 * 1024, ge=1024)
    memory_server_head_timeout: float = Field(10.0, gt=0)
    memory_server_body_timeout: float = Field(60.0, gt=0)
    memory_server_keep_alive_timeout: int = Field(5, ge=1)
    memory_server_max_connections: int = Field(100, ge=1)

    memory_server_metrics_open: bool = False

    # --- metrics (memory_drivers.metrics, docs/metrics.md) ------------------------------
    memory_metrics: Literal["none", "prometheus"] = "none"
    memory_metrics_stats_interval: float = Field(30.0, ge=0)
    memory_metrics_port: int | None = Field(None, ge=0, le=65535)
    memory_metrics_host: str = "127.0.0.1"

    # --- memory-drivers mcp (the memory tools over the Model Context Protocol) -----------
    mcp_user_id: str | None = None
    mcp_host: str = "127.0.0.1"
    mcp_port: int = Field(8002, ge=0, le=65535)
    mcp_api_token: SecretStr | None = None

    # --- replicated driver (a primary and replicas; docs/portability.md) -----------------
    replicated_primary: str | None = None
    replicated_replicas: CommaList = Field(default_factory=list)
    replicated_outbox_path: Path = Path("storage/replicated-outbox.db")
    replicated_retry_interval: float = Field(5.0, gt=0)

    # --- chroma driver ----------------------------------------------------------------
    chroma_path: Path = Path("storage/chromadb")
    chroma_url: str | None = None
    chroma_collection: str = "memories"
    chroma_knowledge_collection: str = "global_knowledge"
    chroma_timeout: float = Field(30.0, gt=0)
    chroma_retries: int = Field(3, ge=0)
    chroma_exact_search_limit: int = Field(20_000, ge=0)
    chroma_vector_cache_mb: int = Field(256, ge=0)

    # --- embeddings -------------------------------------------------------------------
    embedding_provider: Literal["sentence-transformers", "openai", "hashing"] = (
        "sentence-transformers"
    )
    embedding_model: str = "all-MiniLM-L6-v2"
    embedding_backend: Literal["auto", "onnx", "onnx-int8", "torch"] = "auto"
    embedding_cache_dir: Path | None = None
    embedding_api_url: str = "https://api.openai.com/v1"
    embedding_api_key: SecretStr | None = None
    embedding_dimension: int | None = Field(None, ge=1)
    embedding_batch_size: int = Field(32, ge=1)
    embedding_timeout: float = Field(30.0, gt=0)
    use_gpu: bool = False

    # --- semantics shared by every driver ---------------------------------------------
    memory_max_content_length: int = Field(10_000, ge=1)
    memory_default_type: str = "semantic"
    memory_extra_types: CommaList = Field(default_factory=list)
    knowledge_max_content_length: int = Field(2_000_000, ge=1)
    knowledge_chunk_tokens: int = Field(512, ge=8)
    knowledge_chunk_overlap: int = Field(50, ge=0)

    # --- limits, the same on every driver (docs/semantics.md, "Limits") ------------------
    # The upper bounds are what every backend honours: Chroma fails on a record with more than
    # 5,461 array items or keys (see also validation.MAX_METADATA_KEYS), and
    # SQLite (also inside Chroma) a condition more than 1,000 deep or a query of more than 500
    # SELECTs.
    memory_max_tags: int = Field(100, ge=1, le=1000)
    memory_max_tag_length: int = Field(255, ge=1, le=1000)
    memory_max_metadata_bytes: int = Field(16_384, ge=2, le=1024 * 1024)
    memory_max_metadata_depth: int = Field(10, ge=1, le=100)
    recall_max_tags: int = Field(100, ge=1, le=200)
    recall_max_exclude_tags: int = Field(100, ge=1, le=200)
    recall_max_metadata_keys: int = Field(50, ge=1, le=200)
    keyword_max_query_terms: int = Field(100, ge=1, le=300)
    recall_max_top_k: int = Field(10_000, ge=10, le=1_000_000)

    # --- recall ranking (docs/semantics.md, "Search modes and scores") --------------------
    recall_search: Literal["hybrid", "vector", "keyword"] = "hybrid"
    keyword_bm25_k1: float = Field(0.3, ge=0, le=10)
    keyword_bm25_b: float = Field(0.75, ge=0, le=1)
    keyword_query_stopwords: CommaList = Field(default_factory=lambda: sorted(QUESTION_WORDS))
    hybrid_vector_weight: float = Field(0.5, ge=0, le=1)
    context_window: int = Field(2, ge=0, le=20)
    context_neighbor_share: float = Field(0.5, ge=0, le=10)
    time_preference_weight: float = Field(0.1, ge=0, le=10)
    recency_half_life_days: float | None = Field(None, gt=0)
    reranker: Literal["none", "cross-encoder"] = "none"
    reranker_model: str | None = None
    rerank_depth: int = Field(30, ge=1, le=1000)

    # --- Redis: working memory, cache, stream consolidation ---------------------------
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = Field("memory-drivers", min_length=1)
    redis_timeout: float = Field(5.0, gt=0)
    memory_cache: Literal["none", "redis"] = "none"
    memory_cache_ttl: int = Field(3600, ge=1)
    memory_cache_timeout: float = Field(0.25, gt=0)
    memory_cache_retry_interval: float = Field(2.0, ge=0)
    memory_cache_sync_interval: float = Field(5.0, ge=0)
    session_ttl: float = Field(86400.0, gt=0)
    session_history_limit: int = Field(100, ge=1)
    consolidation_batch_size: int = Field(20, ge=1)
    consolidation_group: str = Field("memory-drivers", min_length=1)
    consolidation_consumer: str = Field("consolidator", min_length=1)
    consolidation_user_id: str | None = None
    summarizer: Literal["extractive", "openai"] = "extractive"
    summarizer_max_sentences: int = Field(5, ge=1)
    summarizer_api_url: str = "https://api.openai.com/v1"
    summarizer_api_key: SecretStr | None = None
    summarizer_model: str = "gpt-4o-mini"
    summarizer_timeout: float = Field(60.0, gt=0)

    @field_validator("sqlite_synchronous", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("memory_cache", "memory_metrics", mode="before")
    @classmethod
    def _off_choice(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            return "none" if value in ("", "off", "false", "0") else value
        return "none" if value is None else value

    @field_validator("summarizer", mode="before")
    @classmethod
    def _summarizer_choice(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator(
        "memory_extra_types", "keyword_query_stopwords", "replicated_replicas", mode="before"
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("keyword_query_stopwords")
    @classmethod
    def _lower_words(cls, value: list[str]) -> list[str]:
        return [word.lower() for word in value]

    @field_validator("recall_search", "reranker", mode="before")
    @classmethod
    def _lower_choice(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @pydantic.model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.knowledge_chunk_overlap >= self.knowledge_chunk_tokens:
            raise ValueError(
                "KNOWLEDGE_CHUNK_OVERLAP must be smaller than KNOWLEDGE_CHUNK_TOKENS "
                f"(got {self.knowledge_chunk_overlap} >= {self.knowledge_chunk_tokens})"
            )
        if self.memory_default_type not in self.memory_types:
            raise ValueError(
                f"MEMORY_DEFAULT_TYPE {self.memory_default_type!r} is not a known memory type; "
                f"known: {', '.join(self.memory_types)} (add it with MEMORY_EXTRA_TYPES)"
            )
        return self

    @property
    def memory_types(self) -> tuple[str, ...]:
        """The accepted memory types: the default set plus ``MEMORY_EXTRA_TYPES``."""
        extra = tuple(t for t in self.memory_extra_types if t not in DEFAULT_MEMORY_TYPES)
        return DEFAULT_MEMORY_TYPES + extra

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied and validated."""
        return build_settings(**{**self.model_dump(), **changes})


def build_settings(**values: Any) -> Settings:
    """Build :class:`Settings`, turning pydantic's errors into a :class:`ConfigurationError`."""
    try:
        return Settings(**values)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper() or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(
            f"invalid configuration: {problems}. Fix the environment or .env "
            "(see .env.example for every variable and its default)."
        ) from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. ``get_settings.cache_clear()`` re-reads them."""
    return build_settings()
