"""The exception hierarchy.

Every error raised by memory-drivers derives from :class:`MemoryDriverError`, and each class
also inherits the builtin that callers already catch (``ValueError``, ``LookupError``,
``ImportError``, ``ConnectionError``), so existing ``except`` clauses keep working.
Messages say what was wrong and what to do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "BackendUnavailableError",
    "ConfigurationError",
    "ConflictError",
    "DriverClosedError",
    "DriverNotFoundError",
    "EmbedderMismatchError",
    "EmbeddingError",
    "MemoryDriverError",
    "MissingDependencyError",
    "NotFoundError",
    "SchemaError",
    "StorageFullError",
    "ValidationError",
]


class MemoryDriverError(Exception):
    """Root of every error raised by memory-drivers."""


class ConfigurationError(MemoryDriverError, ValueError):
    """The configuration (environment, ``.env`` or arguments) is wrong or incomplete."""


class DriverNotFoundError(ConfigurationError, LookupError):
    """No driver is registered under the requested name."""


class EmbedderMismatchError(ConfigurationError):
    """The store's vectors were made by another embedder (or dimension) than the configured one."""


class SchemaError(ConfigurationError):
    """The database schema is missing, behind, or cannot be created."""


class MissingDependencyError(MemoryDriverError, ImportError):
    """A driver or embedder needs packages that are not installed."""


class ValidationError(MemoryDriverError, ValueError):
    """An argument is invalid. Nothing was written."""


class EmbeddingError(MemoryDriverError, ValueError):
    """The embedder failed or returned unusable vectors. Nothing was written."""


class NotFoundError(MemoryDriverError, LookupError):
    """The memory does not exist, or belongs to another user."""


class ConflictError(MemoryDriverError, ValueError):
    """The write conflicts with what is stored (for example a memory id that already exists)."""


class BackendUnavailableError(MemoryDriverError, ConnectionError):
    """The storage backend cannot be reached. The message names the host, URL or path."""


class StorageFullError(MemoryDriverError, OSError):
    """The disk (or quota) holding the store is full. Nothing of the write was stored; reads
    keep working. Free space and retry: the store recovers by itself."""


class DriverClosedError(MemoryDriverError, RuntimeError):
    """The driver was closed; open a new one (``get_memory_driver()`` does that for you)."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""
