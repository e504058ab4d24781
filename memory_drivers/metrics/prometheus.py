"""The Prometheus side of :mod:`memory_drivers.metrics`: the metrics, and the collector of the
stored counts. Imported only when metrics are turned on (it imports ``prometheus_client``)."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from ..errors import ConfigurationError

__all__ = ["INDEX_EVENTS", "STORED_KINDS", "Recorder"]

log = logging.getLogger("memory_drivers.metrics")

#: The counts of ``stats()`` exported as ``memory_drivers_stored{kind=...}``.
STORED_KINDS = ("memories", "users", "associations", "knowledge_documents", "knowledge_chunks")
#: The counters of ``stats()["index"]`` exported as ``memory_drivers_index_events_total``.
INDEX_EVENTS = ("rebuilds", "file_loads", "replayed", "saves")

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_TEXTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Recorder:
    """The metrics of memory-drivers in one registry (prometheus_client's default one unless
    given). ``drivers`` lists the open drivers; ``unmeasured`` is a context in which their
    operations are not counted (a scrape's ``stats()`` calls)."""

    def __init__(
        self,
        registry: CollectorRegistry | None,
        drivers: Callable[[], list[Any]],
        unmeasured: Callable[[], AbstractContextManager[None]],
    ) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self._lock = threading.Lock()
        #: prometheus_client's HTTP server and its thread, once :meth:`listen` started it
        self._server: tuple[Any, threading.Thread] | None = None
        self._address: tuple[str, int] = ("", 0)
        r = self.registry
        self._operations = Counter(
            "memory_drivers_operations",
            "Calls of a driver operation (failed ones included).",
            ["operation", "driver"],
            registry=r,
        )
        self._errors = Counter(
            "memory_drivers_operation_errors",
            "Driver operations that raised, by the exception's class.",
            ["operation", "driver", "error"],
            registry=r,
        )
        self._seconds = Histogram(
            "memory_drivers_operation_duration_seconds",
            "Time a driver operation took (failed ones included).",
            ["operation", "driver"],
            buckets=_SECONDS,
            registry=r,
        )
        self._texts = Histogram(
            "memory_drivers_embedding_batch_size",
            "Texts per call of the embedder (kind: documents or query).",
            ["embedder", "kind"],
            buckets=_TEXTS,
            registry=r,
        )
        self._embedding_seconds = Histogram(
            "memory_drivers_embedding_duration_seconds",
            "Time one call of the embedder took.",
            ["embedder", "kind"],
            buckets=_SECONDS,
            registry=r,
        )
        self._cache = Counter(
            "memory_drivers_cache_events",
            "Events of the Redis cache: hits, misses, bypassed, errors, invalidations, "
            "failed_invalidations.",
            ["driver", "event"],
            registry=r,
        )
        self._stats_errors = Counter(
            "memory_drivers_stats_errors",
            "Scrapes in which a driver's stats() failed (its gauges are then left out).",
            ["driver"],
            registry=None,
        )
        self._stores = StoreCollector(drivers, unmeasured, self._stats_errors)
        # Registered after the collector that counts them, so a scrape shows its own failures.
        r.register(self._stores)
        r.register(self._stats_errors)
        self._collectors: list[Any] = [
            self._operations,
            self._errors,
            self._seconds,
            self._texts,
            self._embedding_seconds,
            self._cache,
            self._stats_errors,
            self._stores,
        ]

    def listen(self, host: str, port: int) -> tuple[str, int]:
        with self._lock:
            if self._server is not None:
                address = self._server[0].server_address[:2]
                if (host, port) in ((self._address[0], self._address[1]), (host, address[1])):
                    return str(address[0]), int(address[1])
                raise ConfigurationError(
                    f"the metrics are already served at {address[0]}:{address[1]}; one server "
                    "per process (unset MEMORY_METRICS_PORT or use the same port)"
                )
            try:
                server, thread = start_http_server(port, addr=host, registry=self.registry)
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot serve the metrics on {host}:{port} ({exc.strerror or exc}); set "
                    "MEMORY_METRICS_PORT to a free port, or unset it"
                ) from exc
            self._server = (server, thread)
            self._address = (host, port)
            bound = server.server_address
            log.info("metrics served at http://%s:%s/metrics", bound[0], bound[1])
            return str(bound[0]), int(bound[1])

    def operation(self, operation: str, driver: str, seconds: float, error: str | None) -> None:
        self._operations.labels(operation, driver).inc()
        self._seconds.labels(operation, driver).observe(seconds)
        if error is not None:
            self._errors.labels(operation, driver, error).inc()

    def embedding(self, embedder: str, kind: str, texts: int, seconds: float) -> None:
        self._texts.labels(embedder, kind).observe(texts)
        self._embedding_seconds.labels(embedder, kind).observe(seconds)

    def cache_event(self, driver: str, event: str, n: int) -> None:
        self._cache.labels(driver, event).inc(n)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def unregister(self) -> None:
        for collector in self._collectors:
            self.registry.unregister(collector)
        with self._lock:
            served, self._server = self._server, None
        if served is not None:
            server, thread = served
            server.shutdown()
            server.server_close()
            thread.join(5)


class StoreCollector(Collector):
    """Gauges read from each open driver's ``stats()`` when scraped: the stored counts, the
    memories by type, and the vector index's state where a driver reports one (sqlite).

    ``stats()`` is read at most once per ``MEMORY_METRICS_STATS_INTERVAL`` seconds per driver
    (it counts rows, which is not free on a large store); scrapes in between reuse it.
    """

    def __init__(
        self,
        drivers: Callable[[], list[Any]],
        unmeasured: Callable[[], AbstractContextManager[None]],
        errors: Counter,
    ) -> None:
        self._drivers = drivers
        self._unmeasured = unmeasured
        self._errors = errors
        self._last: weakref.WeakKeyDictionary[Any, tuple[float, dict[str, Any]]] = (
            weakref.WeakKeyDictionary()
        )

    def _stats(self, driver: Any) -> dict[str, Any] | None:
        now = time.monotonic()
        last = self._last.get(driver)
        if last is not None and now - last[0] < driver.settings.memory_metrics_stats_interval:
            return last[1]
        try:
            with self._unmeasured():
                stats = driver.stats()
        except Exception as exc:  # a scrape reports what it can
            log.warning("metrics: stats() of the %s driver failed: %s", driver.name, exc)
            self._errors.labels(driver.name).inc()
            return None
        self._last[driver] = (now, stats)
        return stats

    def collect(self) -> Iterator[Metric]:
        labels = ["driver", "store"]
        stored = GaugeMetricFamily(
            "memory_drivers_stored", "Items in the store, by kind.", labels=[*labels, "kind"]
        )
        by_type = GaugeMetricFamily(
            "memory_drivers_memories_by_type",
            "Memories in the store, by memory type.",
            labels=[*labels, "memory_type"],
        )
        loaded = GaugeMetricFamily(
            "memory_drivers_index_loaded",
            "1 when this process has loaded the store's vector index (sqlite: FAISS).",
            labels=labels,
        )
        in_sync = GaugeMetricFamily(
            "memory_drivers_index_in_sync",
            "1 when the loaded vector index holds every change written to the store.",
            labels=labels,
        )
        pending = GaugeMetricFamily(
            "memory_drivers_index_pending_changes",
            "Vector changes written to the store that the loaded index has not applied yet.",
            labels=labels,
        )
        unsaved = GaugeMetricFamily(
            "memory_drivers_index_unsaved_changes",
            "Vector changes applied to the index since its file was last saved.",
            labels=labels,
        )
        vectors = GaugeMetricFamily(
            "memory_drivers_index_vectors",
            "Vectors in the loaded index, by kind.",
            labels=[*labels, "kind"],
        )
        events = CounterMetricFamily(
            "memory_drivers_index_events",
            "What this process's vector index did: rebuilds (from the store), file_loads, "
            "replayed (log entries), saves.",
            labels=[*labels, "event"],
        )
        seen: set[tuple[str, str]] = set()
        for driver in self._drivers():
            stats = self._stats(driver)
            if stats is None:
                continue
            where = stats.get("database") or stats.get("url") or stats.get("path") or ""
            key = (str(driver.name), str(where))
            if key in seen:  # two drivers open on one store: report it once
                continue
            seen.add(key)
            for kind in STORED_KINDS:
                if isinstance(stats.get(kind), int):
                    stored.add_metric([*key, kind], stats[kind])
            for memory_type, count in (stats.get("memory_types") or {}).items():
                by_type.add_metric([*key, memory_type], count)
            index = stats.get("index")
            if isinstance(index, dict):
                loaded.add_metric(list(key), float(bool(index.get("loaded"))))
                in_sync.add_metric(list(key), float(bool(index.get("in_sync"))))
                if index.get("pending") is not None:
                    pending.add_metric(list(key), index["pending"])
                if index.get("unsaved") is not None:
                    unsaved.add_metric(list(key), index["unsaved"])
                for kind, count in (index.get("vectors") or {}).items():
                    vectors.add_metric([*key, kind], count)
                for event in INDEX_EVENTS:
                    if isinstance(index.get(event), int):
                        events.add_metric([*key, event], index[event])
        yield from (stored, by_type, loaded, in_sync, pending, unsaved, vectors, events)

    def describe(self) -> Iterator[Metric]:
        return iter(())
