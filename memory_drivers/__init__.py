"""memory-drivers: one long-term memory API for AI agents over interchangeable backends.

::

    from memory_drivers import get_memory_driver
    driver = get_memory_driver()            # the driver named by MEMORY_DRIVER (default "sqlite")
    m = driver.store(user_id="u1", content="The user's favorite color is blue")
    hits = driver.recall(user_id="u1", query="What color does the user like?")

    from memory_drivers import aget_memory_driver      # the same API as coroutines
    driver = await aget_memory_driver()
    hits = await driver.recall(user_id="u1", query="What color does the user like?")

This module exports public names only and never imports a driver module.
"""

from __future__ import annotations

from .aio import AsyncMemoryDriver, aget_memory_driver, aset_memory_driver
from .base import BaseMemoryDriver
from .config import Settings, get_settings
from .errors import (
    BackendUnavailableError,
    ConfigurationError,
    ConflictError,
    DriverClosedError,
    DriverNotFoundError,
    EmbedderMismatchError,
    EmbeddingError,
    MemoryDriverError,
    MissingDependencyError,
    NotFoundError,
    SchemaError,
    ValidationError,
)
from .manager import MemoryDriverManager, get_memory_driver, register_driver, set_memory_driver
from .models import (
    Association,
    CleanupResult,
    Explanation,
    KnowledgeChunk,
    KnowledgeDocument,
    KnowledgeHit,
    KnowledgeSummary,
    Memory,
    MemoryFilter,
    MemoryInput,
    RecallHit,
    RelatedMemory,
    UserSummary,
)

__version__ = "0.1.0"

__all__ = [
    "Association",
    "AsyncMemoryDriver",
    "BackendUnavailableError",
    "BaseMemoryDriver",
    "CleanupResult",
    "ConfigurationError",
    "ConflictError",
    "DriverClosedError",
    "DriverNotFoundError",
    "EmbedderMismatchError",
    "EmbeddingError",
    "Explanation",
    "KnowledgeChunk",
    "KnowledgeDocument",
    "KnowledgeHit",
    "KnowledgeSummary",
    "Memory",
    "MemoryDriverError",
    "MemoryDriverManager",
    "MemoryFilter",
    "MemoryInput",
    "MissingDependencyError",
    "NotFoundError",
    "RecallHit",
    "RelatedMemory",
    "SchemaError",
    "Settings",
    "UserSummary",
    "ValidationError",
    "aget_memory_driver",
    "aset_memory_driver",
    "get_memory_driver",
    "get_settings",
    "register_driver",
    "set_memory_driver",
]
