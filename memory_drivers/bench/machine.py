"""What the benchmark ran on: the machine and the versions of everything measured."""

from __future__ import annotations

import os
import platform
import sqlite3
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "machine_info", "package_versions"]

#: Packages whose versions the report lists (absent ones are shown as such).
PACKAGES = (
    "memory-drivers",
    "numpy",
    "faiss-cpu",
    "SQLAlchemy",
    "psycopg",
    "pgvector",
    "chromadb",
    "onnxruntime",
    "torch",
    "sentence-transformers",
    "langchain-core",
    "langchain-community",
    "langchain-postgres",
    "langchain-chroma",
)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / (1024 * 1024)
    return None


def usable_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count()


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, OS and the load when the run started."""
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "memory_gib": memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average": load,
    }


def package_versions() -> dict[str, str | None]:
    """Installed version of each of :data:`PACKAGES`, plus the SQLite library's."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["sqlite (library)"] = sqlite3.sqlite_version
    return versions
