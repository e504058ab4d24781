"""What the benchmark measures: our drivers and their peers, behind one interface.

A :class:`Target` is opened on an empty store of its own (a temporary directory, or a new
PostgreSQL database), loaded batch by batch, queried, closed, and then asked its size on disk.
Workloads a store cannot express return ``None`` and are reported as n/a.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..base import BaseMemoryDriver
from ..config import Settings, build_settings
from ..embeddings import Embedder
from .dataset import Item, Query

__all__ = [
    "DRIVERS",
    "PEERS",
    "PEER_FAMILIES",
    "DriverTarget",
    "Target",
    "TargetConfig",
    "directory_bytes",
]

#: Our drivers, in report order.
DRIVERS = ("sqlite", "pgvector", "chroma")
#: What a user would pick instead of each driver, by family (``--peers``): the LangChain vector
#: store on the same backend (:mod:`.peers`), and mem0 on it (:mod:`.mem0`).
PEER_FAMILIES: dict[str, dict[str, str]] = {
    "langchain": {
        "sqlite": "langchain-faiss",
        "pgvector": "langchain-pgvector",
        "chroma": "langchain-chroma",
    },
    "mem0": {"sqlite": "mem0-faiss", "pgvector": "mem0-pgvector", "chroma": "mem0-chroma"},
}
#: Each driver's peers, in report order.
PEERS: dict[str, tuple[str, ...]] = {
    d: tuple(family[d] for family in PEER_FAMILIES.values()) for d in DRIVERS
}


@dataclass
class TargetConfig:
    """Where a target stores, and the knobs the workloads share."""

    workdir: Path
    embedder: Embedder
    pg_url: str | None = None
    top_k: int = 10
    #: LangChain FAISS filters after the search: how many neighbours it fetches first.
    faiss_fetch_k: int = 2000


class Target(ABC):
    """One store under test."""

    #: the name in the report ("sqlite", "langchain-faiss", ...)
    name: ClassVar[str]
    #: "ours" or "peer"
    kind: ClassVar[str]

    def __init__(self, config: TargetConfig) -> None:
        self.config = config
        #: facts about how this target was set up, shown in the report
        self.notes: list[str] = []

    @abstractmethod
    def open(self) -> None:
        """Create the (empty) store."""

    @abstractmethod
    def ingest(self, items: Sequence[Item]) -> None:
        """Store one batch, through the store's normal bulk path (which embeds the texts)."""

    #: Ingest is timed over this many memories (None: all); the rest go through
    #: :meth:`bulk_load`, for a peer whose own path would take hours at large N.
    timed_ingest_limit: int | None = None

    def bulk_load(self, items: Sequence[Item]) -> None:
        """Store one batch after the timed ones (only when :attr:`timed_ingest_limit` is set):
        the same records, by a faster path the target's notes describe."""
        raise NotImplementedError(f"{self.name} has no bulk load")

    def finish_ingest(self) -> None:  # noqa: B027 - optional step, nothing by default
        """Whatever a user does once after a bulk load, timed with it (default: nothing)."""

    def after_ingest(self) -> None:  # noqa: B027 - optional step, nothing by default
        """Untimed housekeeping before the queries (default: nothing)."""

    def ingest_variants(self) -> dict[str, Target]:
        """Other set-ups of this target whose ingest is measured beside its own (each into a
        store of its own, after the workloads), by a short name (default: none)."""
        return {}

    @abstractmethod
    def recall_vector(self, query: Query) -> list[str]:
        """Ids of the top-k memories of the query's user for its text (embedded by lookup)."""

    def recall_filtered(self, query: Query) -> list[str] | None:
        """As :meth:`recall_vector`, among those with the query's tag created since its since."""
        return None

    def recall_keyword(self, query: Query) -> list[str] | None:
        """Ids of the top-k memories of the query's user for its keywords."""
        return None

    def recall_hybrid(self, query: Query) -> list[str] | None:
        """Ids of the top-k memories of the query's user by keywords and meaning together."""
        return None

    def get(self, memory_id: str) -> bool | None:
        """Read one memory by id; whether it was found (None: the store cannot)."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Close the store (and flush whatever it keeps in memory)."""

    @abstractmethod
    def disk_bytes(self) -> int | None:
        """The store's size on disk, after :meth:`close`."""


def directory_bytes(path: Path) -> int:
    """The total size of the files under ``path``."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                total += os.stat(os.path.join(root, name)).st_size
    return total


def database_bytes(url: str) -> int:
    """``pg_database_size`` of the database at ``url`` (a SQLAlchemy or libpq URL)."""
    import psycopg

    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        row = connection.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


def analyze(url: str) -> None:
    """``ANALYZE`` the database (fresh planner statistics after a bulk load)."""
    import psycopg

    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        connection.execute("ANALYZE")


def libpq_url(url: str) -> str:
    """``url`` without a SQLAlchemy driver suffix (``postgresql+psycopg://`` -> ``postgresql://``)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def sqlalchemy_psycopg_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


# ---------------------------------------------------------------------- our drivers
class DriverTarget(Target):
    """One of our drivers, built directly (no registry, no cache) with the given embedder."""

    kind = "ours"

    def __init__(self, config: TargetConfig) -> None:
        super().__init__(config)
        self.driver: BaseMemoryDriver | None = None
        self._empty_bytes = 0

    def settings(self) -> Settings:
        return build_settings(_env_file=None, memory_auto_migrate=True)

    @abstractmethod
    def _make_driver(self, settings: Settings) -> BaseMemoryDriver: ...

    def open(self) -> None:
        self.driver = self._make_driver(self.settings())
        self.driver.count()  # open the store: schema, collections, stamp

    @property
    def _driver(self) -> BaseMemoryDriver:
        assert self.driver is not None, "open() first"
        return self.driver

    def ingest(self, items: Sequence[Item]) -> None:
        self._driver.store_many([item.as_input() for item in items])

    def recall_vector(self, query: Query) -> list[str]:
        hits = self._driver.recall(
            query.user_id, query=query.text, top_k=self.config.top_k, search="vector"
        )
        return [h.memory.id for h in hits]

    def recall_filtered(self, query: Query) -> list[str]:
        hits = self._driver.recall(
            query.user_id,
            query=query.text,
            top_k=self.config.top_k,
            tags=[query.tag],
            since=query.since,
            search="vector",
        )
        return [h.memory.id for h in hits]

    def recall_keyword(self, query: Query) -> list[str]:
        hits = self._driver.recall(
            query.user_id, query=query.keyword, top_k=self.config.top_k, search="keyword"
        )
        return [h.memory.id for h in hits]

    def recall_hybrid(self, query: Query) -> list[str]:
        hits = self._driver.recall(
            query.user_id, query=query.text, top_k=self.config.top_k, search="hybrid"
        )
        return [h.memory.id for h in hits]

    def get(self, memory_id: str) -> bool:
        return self._driver.get(memory_id) is not None

    def close(self) -> None:
        if self.driver is not None:
            self.driver.close()


class SQLiteTarget(DriverTarget):
    name = "sqlite"
    #: ``SQLITE_SYNCHRONOUS`` (None: the setting's default, FULL)
    synchronous: ClassVar[str | None] = None

    @property
    def directory(self) -> Path:
        suffix = "" if self.synchronous is None else f"-{self.synchronous.lower()}"
        return self.config.workdir / f"sqlite{suffix}"

    def settings(self) -> Settings:
        settings = (
            super().settings().replace(memory_db_url=f"sqlite:///{self.directory}/memories.db")
        )
        if self.synchronous is not None:
            settings = settings.replace(sqlite_synchronous=self.synchronous)
        return settings

    def ingest_variants(self) -> dict[str, Target]:
        # The ingest target is with FULL (a commit is on disk when store_many
        # returns); NORMAL (durable at the next checkpoint, never corrupt) is reported beside it.
        return {} if self.synchronous is not None else {"normal": SQLiteNormalTarget(self.config)}

    def _make_driver(self, settings: Settings) -> BaseMemoryDriver:
        from ..drivers.sqlite import SQLiteDriver

        self.notes.append(
            f"SQLITE_SYNCHRONOUS={settings.sqlite_synchronous}, "
            f"FAISS_PERSIST_EVERY={settings.faiss_persist_every}; each store_many brings the "
            "FAISS index along as it commits (and saves its file now and then), so that work is "
            "in the ingest figures, not in the first recall after the load"
        )
        return SQLiteDriver(settings, embedder=self.config.embedder)

    def disk_bytes(self) -> int:
        return directory_bytes(self.directory)


class SQLiteNormalTarget(SQLiteTarget):
    """The sqlite driver with ``SQLITE_SYNCHRONOUS=NORMAL`` (its ingest only, beside FULL's)."""

    name = "sqlite-normal"
    synchronous = "NORMAL"


class PgVectorTarget(DriverTarget):
    name = "pgvector"

    def settings(self) -> Settings:
        if not self.config.pg_url:
            raise RuntimeError("the pgvector target needs a PostgreSQL database URL")
        return super().settings().replace(database_url=self.config.pg_url)

    def _make_driver(self, settings: Settings) -> BaseMemoryDriver:
        from ..drivers.pgvector import PgVectorDriver

        assert self.config.pg_url
        self._empty_bytes = database_bytes(self.config.pg_url)
        self.notes.append(_settings_note(settings, "pgvector_"))
        return PgVectorDriver(settings, embedder=self.config.embedder)

    def after_ingest(self) -> None:
        assert self.config.pg_url
        analyze(self.config.pg_url)

    def disk_bytes(self) -> int:
        assert self.config.pg_url
        return database_bytes(self.config.pg_url) - self._empty_bytes


class ChromaTarget(DriverTarget):
    name = "chroma"

    @property
    def directory(self) -> Path:
        return self.config.workdir / "chroma"

    def settings(self) -> Settings:
        return super().settings().replace(chroma_path=self.directory, chroma_url=None)

    def _make_driver(self, settings: Settings) -> BaseMemoryDriver:
        from ..drivers.chroma import ChromaDriver

        self.notes.append(f"embedded (PersistentClient), {_settings_note(settings, 'chroma_e')}")
        return ChromaDriver(settings, embedder=self.config.embedder)

    def disk_bytes(self) -> int:
        return directory_bytes(self.directory)


#: Settings that do not change what is measured (connections, retries), left out of the notes.
_NOT_NOTED = frozenset({"pgvector_connect_timeout", "pgvector_retry_seconds"})


def _settings_note(settings: Settings, prefix: str) -> str:
    """``NAME=value`` for every setting whose field starts with ``prefix`` (the driver's knobs,
    whichever this version has)."""
    return ", ".join(
        f"{name.upper()}={getattr(settings, name)}"
        for name in sorted(Settings.model_fields)
        if name.startswith(prefix) and name not in _NOT_NOTED
    )
