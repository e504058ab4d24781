"""Where a store is: a driver name or a URL, as ``copy --from/--to`` take them.

=====================================  ==============================================
``sqlite``, ``pgvector``, ``chroma``,   that driver, configured by the settings
``automem`` (any registered name)      (environment, ``.env``)
``sqlite:///path/to/memories.db``      sqlite, ``MEMORY_DB_URL`` set to it
``postgresql://user@host/db``          pgvector, ``DATABASE_URL`` set to it
``http(s)://host:port``                automem (AutoMem or ``memory-drivers serve``)
``chroma+http(s)://host:port``         chroma, ``CHROMA_URL`` (``http(s)://host:port``)
``chroma:///path/to/directory``        chroma, embedded, ``CHROMA_PATH``
=====================================  ==============================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..base import BaseMemoryDriver
from ..config import Settings, get_settings
from ..errors import ConfigurationError
from ..manager import MemoryDriverManager

__all__ = ["location_settings", "open_location"]

_FORMS = (
    "a driver name (sqlite, pgvector, chroma, automem), sqlite:///PATH, postgresql://..., "
    "http(s)://HOST:PORT (AutoMem), chroma+http://HOST:PORT or chroma:///PATH"
)


def location_settings(spec: str, settings: Settings | None = None) -> tuple[str, Settings]:
    """(driver name, settings) for ``spec``: a driver name, or a URL that picks the driver and
    overrides its connection setting."""
    settings = settings or get_settings()
    text = spec.strip()
    lowered = text.lower()
    if not text:
        raise ConfigurationError(f"an empty store location; give {_FORMS}")
    if "://" not in text and not lowered.startswith("chroma:"):
        return lowered, settings  # a driver name; an unknown one fails with "did you mean"
    if lowered.startswith("sqlite:"):
        return "sqlite", settings.replace(memory_db_url=text)
    if lowered.startswith(("postgresql:", "postgresql+", "postgres:")):
        return "pgvector", settings.replace(database_url=text)
    if lowered.startswith(("http://", "https://")):
        return "automem", settings.replace(automem_url=text)
    if lowered.startswith(("chroma+http://", "chroma+https://")):
        return "chroma", settings.replace(chroma_url=text.split("+", 1)[1])
    if lowered.startswith("chroma:"):
        path = text.split(":", 1)[1]
        path = path[2:] if path.startswith("//") else path
        if not path:
            raise ConfigurationError("chroma:///PATH needs the directory of the store")
        return "chroma", settings.replace(chroma_url=None, chroma_path=Path(path))
    raise ConfigurationError(f"cannot tell which store {spec!r} is; give {_FORMS}")


def open_location(spec: str, settings: Settings | None = None, **options: Any) -> BaseMemoryDriver:
    """A new driver for ``spec`` (see the module docstring); the caller closes it."""
    name, changed = location_settings(spec, settings)
    return MemoryDriverManager.create(name, changed, **options)
