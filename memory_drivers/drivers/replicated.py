"""The ``replicated`` driver: a primary store, and replicas that keep serving reads when it is down.

Environment::

    MEMORY_DRIVER=replicated
    REPLICATED_PRIMARY=postgresql://app@db.internal:5432/agents   # or a driver name: pgvector
    REPLICATED_REPLICAS=sqlite:///storage/replica.db              # comma-separated
    REPLICATED_OUTBOX_PATH=storage/replicated-outbox.db
    REPLICATED_RETRY_INTERVAL=5.0

Python::

    from memory_drivers.drivers.replicated import ReplicatedDriver
    driver = ReplicatedDriver(primary=PgVectorDriver(...), replicas=[SQLiteDriver(...)])

A store is a driver name (configured by the other variables) or a URL, as ``memory-drivers
copy`` takes it (:mod:`memory_drivers.transfer.locations`). Every replica must use the
primary's embedder.

Writes go to the primary and are acknowledged when it has them; then the write (the primitive
and its validated arguments, vectors included) is appended to a durable outbox, a local SQLite
file, and a background thread delivers the outbox to each replica in order. A replica that is
down keeps its place and catches up, in order, when it returns. Reads go to the primary; when it
is unavailable (``BackendUnavailableError``) they go to the freshest replica that answers, with
a warning in the log, ``fallback_reads`` counted and ``health_check()`` saying ``degraded``.
For ``REPLICATED_RETRY_INTERVAL`` seconds after a failure the primary is not tried again, so
reads do not wait for its timeouts. :meth:`ReplicatedDriver.reconcile` compares a replica with
the primary and repairs the difference (``memory-drivers reconcile``).

A write acknowledged by the primary whose process dies before the outbox entry is written is
not replicated until ``reconcile`` runs; that window is one local SQLite commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..base import BaseMemoryDriver, KnowledgeRecord, KnowledgeSearch, MemoryRecord, MemorySearch
from ..config import Settings
from ..embeddings import Embedder
from ..errors import BackendUnavailableError, ConfigurationError, ConflictError, MemoryDriverError
from ..models import (
    Association,
    KnowledgeChunk,
    KnowledgeHit,
    Memory,
    RecallHit,
    RelatedMemory,
    UserSummary,
)
from ..replication.outbox import Outbox, decode

__all__ = ["ReplicatedDriver"]

log = logging.getLogger(__name__)

R = TypeVar("R")

#: Outbox entries delivered to a replica per read of the outbox.
DELIVERY_BATCH = 100


class ReplicatedDriver(BaseMemoryDriver):
    """A primary and its replicas behind one driver (see the module docstring)."""

    name = "replicated"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        embedder: Embedder | None = None,
        primary: BaseMemoryDriver | None = None,
        replicas: Sequence[BaseMemoryDriver] | None = None,
        replica_names: Sequence[str] | None = None,
        outbox_path: Path | None = None,
        start_delivery: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(settings, embedder=embedder)
        s = self.settings
        opened: list[BaseMemoryDriver] = []
        try:
            if primary is None:
                primary = self._open(s.replicated_primary, "REPLICATED_PRIMARY", embedder, options)
                opened.append(primary)
            if replicas is None:
                if not s.replicated_replicas:
                    raise ConfigurationError(
                        "the replicated driver needs REPLICATED_REPLICAS: one or more stores "
                        "(driver names or URLs, comma-separated), e.g. sqlite:///replica.db"
                    )
                replicas = []
                for spec in s.replicated_replicas:
                    replicas.append(self._open(spec, "REPLICATED_REPLICAS", embedder, options))
                    opened.append(replicas[-1])
        except BaseException:
            for driver in opened:
                driver.close()
            raise
        assert primary is not None
        try:
            self._set_up(primary, list(replicas), replica_names, outbox_path)
        except BaseException:
            for driver in opened:  # what this constructor opened; a caller's stay open
                driver.close()
            raise
        self.fallback_reads = 0
        self._primary_down_until = 0.0
        self._primary_error: str | None = None
        self._replica_errors: dict[str, str] = {}
        self._delivery_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start_delivery:
            self._thread = threading.Thread(
                target=self._deliver_forever, name="memory-drivers-replication", daemon=True
            )
            self._thread.start()

    def _set_up(
        self,
        primary: BaseMemoryDriver,
        replicas: list[BaseMemoryDriver],
        replica_names: Sequence[str] | None,
        outbox_path: Path | None,
    ) -> None:
        s = self.settings
        self.primary = primary
        self.replicas = replicas
        if not self.replicas:
            raise ConfigurationError("the replicated driver needs at least one replica")
        self._embedder = primary.embedder
        for replica in self.replicas:
            if replica.embedder.name != primary.embedder.name:
                raise ConfigurationError(
                    f"replica {replica.name!r} embeds with {replica.embedder.name!r}, the primary "
                    f"with {primary.embedder.name!r}; every replica needs the primary's embedder"
                )
        names = list(replica_names or [_label(spec) for spec in s.replicated_replicas])
        self.replica_names = [
            names[i] if i < len(names) else f"replica-{i}" for i in range(len(self.replicas))
        ]
        self.outbox = Outbox(outbox_path or s.replicated_outbox_path, self.replica_names)

    def _open(
        self, spec: str | None, setting: str, embedder: Embedder | None, options: dict[str, Any]
    ) -> BaseMemoryDriver:
        from ..manager import MemoryDriverManager
        from ..transfer.locations import location_settings

        if not spec:
            raise ConfigurationError(
                f"the replicated driver needs {setting}: a driver name or a URL, e.g. "
                "postgresql://user@host/db or sqlite:///replica.db"
            )
        name, settings = location_settings(spec, self.settings)
        if name == "replicated":
            raise ConfigurationError(f"{setting} cannot be the replicated driver itself")
        if embedder is not None:
            options = {**options, "embedder": embedder}
        return MemoryDriverManager.create(name, settings, **options)

    # ------------------------------------------------------------------ delivery
    def _deliver_forever(self) -> None:
        while not self._stop.is_set():
            try:
                behind = self.sync_replicas()
            except Exception:  # the thread must live on; the error is in the log
                log.exception("replication: delivery failed")
                behind = {"?": 1}
            wait = self.settings.replicated_retry_interval if any(behind.values()) else 60.0
            self._wake.wait(wait)
            self._wake.clear()

    def sync_replicas(self) -> dict[str, int]:
        """Deliver the outbox to every replica now; the entries each still lacks (0: up to
        date). A replica that is down keeps its place and is tried again later."""
        with self._delivery_lock:
            return {
                name: self._deliver(name, replica)
                for name, replica in zip(self.replica_names, self.replicas, strict=True)
            }

    def _deliver(self, name: str, replica: BaseMemoryDriver) -> int:
        while entries := self.outbox.pending(name, DELIVERY_BATCH):
            for seq, op, payload in entries:
                try:
                    _apply(replica, op, decode(op, payload))
                except BackendUnavailableError as exc:
                    if self._replica_errors.get(name) != str(exc):
                        log.warning("replication: replica %s is unavailable: %s", name, exc)
                    self._replica_errors[name] = str(exc)
                    return self.outbox.lag(name)
                except MemoryDriverError as exc:  # would fail again: skipped, for reconcile
                    log.error(
                        "replication: replica %s refused %s (entry %d), skipped; run "
                        "memory-drivers reconcile: %s",
                        name,
                        op,
                        seq,
                        exc,
                    )
                self.outbox.advance(name, seq)
            self._replica_errors.pop(name, None)
        return 0

    def _written(self, op: str, **args: Any) -> None:
        self.outbox.append(op, args)
        self._wake.set()

    # ------------------------------------------------------------------ reads
    def _read(self, call: Callable[[BaseMemoryDriver], R]) -> R:
        """``call`` on the primary, or on the freshest replica that answers when it is down."""
        if time.monotonic() >= self._primary_down_until:
            try:
                result = call(self.primary)
                self._primary_error = None
                return result
            except BackendUnavailableError as exc:
                self._primary_down(exc)
        for name, replica in self._by_freshness():
            try:
                result = call(replica)
            except BackendUnavailableError:
                continue
            self.fallback_reads += 1
            log.warning(
                "replication: the primary is unavailable; read from replica %s (%d writes behind)",
                name,
                self.outbox.lag(name),
            )
            return result
        raise BackendUnavailableError(
            f"the primary and every replica are unavailable (primary: {self._primary_error})"
        )

    def _primary_down(self, exc: BackendUnavailableError) -> None:
        if self._primary_error is None:
            log.warning("replication: the primary is unavailable: %s", exc)
        self._primary_error = str(exc)
        self._primary_down_until = time.monotonic() + self.settings.replicated_retry_interval

    def _by_freshness(self) -> list[tuple[str, BaseMemoryDriver]]:
        pairs = list(zip(self.replica_names, self.replicas, strict=True))
        return sorted(pairs, key=lambda pair: self.outbox.lag(pair[0]))

    def _write(self, call: Callable[[BaseMemoryDriver], R]) -> R:
        """``call`` on the primary; a primary found down refuses at once (nothing is
        acknowledged that it does not have)."""
        if time.monotonic() < self._primary_down_until:
            raise BackendUnavailableError(
                f"the primary is unavailable ({self._primary_error}); the write was not made. "
                "Reads are served by the replicas meanwhile."
            )
        try:
            result = call(self.primary)
        except BackendUnavailableError as exc:
            self._primary_down(exc)
            raise
        self._primary_error = None
        return result

    # ------------------------------------------------------------------ primitives: writes
    def _write_store_info(self, values: Mapping[str, str]) -> None:
        self._write(lambda d: d._write_store_info(values))
        self._written("write_store_info", values=dict(values))

    def _insert_memories(self, records: Sequence[MemoryRecord]) -> None:
        self._write(lambda d: d._insert_memories(records))
        self._written("insert_memories", records=records)

    def _update_memory(
        self,
        memory_id: str,
        user_id: str | None,
        changes: Mapping[str, Any],
        vector: np.ndarray | None,
        terms: str | None,
    ) -> Memory | None:
        updated = self._write(
            lambda d: d._update_memory(memory_id, user_id, changes, vector, terms)
        )
        if updated is not None:
            self._written(
                "update_memory",
                memory_id=memory_id,
                changes=dict(changes),
                vector=vector,
                terms=terms,
            )
        return updated

    def _delete_memories(self, ids: Sequence[str], user_id: str | None) -> list[str]:
        deleted = self._write(lambda d: d._delete_memories(ids, user_id))
        if deleted:
            self._written("delete_memories", ids=list(deleted))
        return deleted

    def _replace_knowledge(self, doc_id: str, records: Sequence[KnowledgeRecord]) -> None:
        self._write(lambda d: d._replace_knowledge(doc_id, records))
        self._written("replace_knowledge", doc_id=doc_id, records=records)

    def _delete_knowledge(self, doc_id: str) -> bool:
        deleted = self._write(lambda d: d._delete_knowledge(doc_id))
        if deleted:
            self._written("delete_knowledge", doc_id=doc_id)
        return deleted

    def _upsert_association(self, association: Association) -> Association:
        stored = self._write(lambda d: d._upsert_association(association))
        self._written("upsert_association", association=stored)
        return stored

    def _set_vectors(
        self, kind: Literal["memories", "knowledge_chunks"], ids: Sequence[str], vectors: np.ndarray
    ) -> None:
        self._write(lambda d: d._set_vectors(kind, ids, vectors))
        self._written("set_vectors", kind=kind, ids=list(ids), vectors=vectors)

    def _before_reembed(self) -> None:
        self._write(lambda d: d._before_reembed())
        self._written("before_reembed")

    def _after_reembed(self) -> None:
        self._write(lambda d: d._after_reembed())
        self._written("after_reembed")

    # ------------------------------------------------------------------ primitives: reads
    @property
    def vectors_readable(self) -> bool:  # type: ignore[override]
        return self.primary.vectors_readable

    def _read_store_info(self) -> dict[str, str]:
        return self._read(lambda d: d._read_store_info())

    def _get_memories(self, ids: Sequence[str], user_id: str | None) -> dict[str, Memory]:
        return self._read(lambda d: d._get_memories(ids, user_id))

    def _search_memories(self, search: MemorySearch) -> list[RecallHit]:
        return self._read(lambda d: d._search_memories(search))

    def _count_memories(self, user_id: str | None) -> int:
        return self._read(lambda d: d._count_memories(user_id))

    def _iter_memories(self, user_id: str | None, batch_size: int) -> Iterator[Memory]:
        return self._read(lambda d: _started(d._iter_memories(user_id, batch_size)))

    def _get_knowledge(self, doc_id: str) -> list[KnowledgeChunk]:
        return self._read(lambda d: d._get_knowledge(doc_id))

    def _search_knowledge(self, search: KnowledgeSearch) -> list[KnowledgeHit]:
        return self._read(lambda d: d._search_knowledge(search))

    def _iter_knowledge(self, batch_size: int) -> Iterator[KnowledgeChunk]:
        return self._read(lambda d: _started(d._iter_knowledge(batch_size)))

    def _related(self, memory_id: str, relationship_type: str | None) -> list[RelatedMemory]:
        return self._read(lambda d: d._related(memory_id, relationship_type))

    def _user_summaries(self) -> list[UserSummary]:
        return self._read(lambda d: d._user_summaries())

    def _read_vectors(
        self, kind: Literal["memories", "knowledge_chunks"], ids: Sequence[str]
    ) -> dict[str, np.ndarray]:
        return self._read(lambda d: d._read_vectors(kind, ids))

    def _iter_associations(self, batch_size: int) -> Iterator[Association]:
        return self._read(lambda d: _started(d._iter_associations(batch_size)))

    # ------------------------------------------------------------------ operations
    def health_check(self) -> dict[str, Any]:
        """The primary's health and each replica's, with how many writes it lacks. ``status``
        is ``ok``, ``degraded`` (the primary or a replica is down, reads are still served) or
        ``error`` (nothing answers)."""
        if self._closed:
            return {"status": "error", "driver": self.name, "error": "the driver is closed"}
        primary = self.primary.health_check()
        replicas = {}
        for name, replica in zip(self.replica_names, self.replicas, strict=True):
            replicas[name] = {**replica.health_check(), "behind": self.outbox.lag(name)}
        up = [r for r in replicas.values() if r["status"] == "ok"]
        if primary["status"] == "ok" and len(up) == len(replicas):
            status = "ok"
        elif primary["status"] == "ok" or up:
            status = "degraded"
        else:
            status = "error"
        return {
            "status": status,
            "driver": self.name,
            "primary": primary,
            "replicas": replicas,
            "fallback_reads": self.fallback_reads,
            "outbox": str(self.outbox.path),
        }

    def _health(self) -> dict[str, Any]:
        return self.health_check()

    def _stats(self) -> dict[str, Any]:
        return self._read(lambda d: d._stats())

    def rebuild_index(self, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Rebuild the primary's derived indexes (each replica rebuilds its own on request)."""
        self._check_open()
        return self.primary.rebuild_index(progress)

    def reconcile(self, *, dry_run: bool = False) -> dict[str, Any]:
        """Deliver the outbox, then compare each replica with the primary (memories by id and
        ``updated_at``, associations, knowledge documents) and, unless ``dry_run``, make the
        replica equal to the primary. Returns what differed, per replica."""
        self._check_open()
        from ..replication.reconcile import reconcile

        behind = self.sync_replicas()
        report = {}
        for name, replica in zip(self.replica_names, self.replicas, strict=True):
            if behind[name]:
                report[name] = {"error": f"unavailable, {behind[name]} writes behind"}
                continue
            report[name] = reconcile(self.primary, replica, dry_run=dry_run)
        return report

    def _close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            if self._thread is not None and any(self.outbox.lag(n) for n in self.replica_names):
                # A short-lived process (a CLI command) delivers its writes before it ends; a
                # replica that is down gets them from the next process, or from reconcile.
                try:
                    self.sync_replicas()
                except MemoryDriverError as exc:
                    log.warning("replication: delivery on close failed: %s", exc)
            with self._delivery_lock:
                self.outbox.close()
        finally:
            for driver in (self.primary, *self.replicas):
                driver.close()


def _label(spec: str) -> str:
    """A replica's name in logs, reports and the outbox: its setting, any password hidden."""
    parts = urlsplit(spec.strip())
    if not parts.password:
        return spec.strip()
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _started(iterator: Iterator[R]) -> Iterator[R]:
    """``iterator`` with its first item read now, so a backend that is down fails here (where
    the read can still go elsewhere) rather than later in the caller's loop."""
    try:
        first = next(iterator)
    except StopIteration:
        return iter(())

    def rest() -> Iterator[R]:
        yield first
        yield from iterator

    return rest()


def _apply(replica: BaseMemoryDriver, op: str, args: dict[str, Any]) -> None:
    """One outbox entry on a replica, idempotently (an entry may be delivered twice when the
    process stopped between applying it and moving the cursor)."""
    if op == "insert_memories":
        records = args["records"]
        try:
            replica._insert_memories(records)
        except ConflictError:
            have = replica._get_memories([r.memory.id for r in records], None)
            missing = [r for r in records if r.memory.id not in have]
            if missing:
                replica._insert_memories(missing)
    elif op == "update_memory":
        replica._update_memory(
            args["memory_id"], None, args["changes"], args["vector"], args["terms"]
        )
    elif op == "delete_memories":
        replica._delete_memories(args["ids"], None)
    elif op == "replace_knowledge":
        replica._replace_knowledge(args["doc_id"], args["records"])
    elif op == "delete_knowledge":
        replica._delete_knowledge(args["doc_id"])
    elif op == "upsert_association":
        replica._upsert_association(args["association"])
    elif op == "set_vectors":
        replica._set_vectors(args["kind"], args["ids"], args["vectors"])
    elif op == "write_store_info":
        replica._write_store_info(args["values"])
    elif op == "before_reembed":
        replica._before_reembed()
    elif op == "after_reembed":
        replica._after_reembed()
    else:
        raise ConfigurationError(f"unknown outbox entry {op!r} (written by a newer version?)")
