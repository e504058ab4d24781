"""AutoMem's REST semantics on top of a memory-drivers driver, without HTTP.

:class:`MemoryService` takes what AutoMem's endpoints take (a parsed JSON body, query
parameters) and returns what they return (a JSON-ready dict and a status code), or raises
:class:`ApiError` with AutoMem's status code and message. ``app.py`` wraps it in HTTP.

How AutoMem's memories map onto the driver's (see ``docs/server.md``):

- a memory written by the ``automem`` driver carries the memory-drivers block
  (:mod:`memory_drivers.automem_wire`): its id, user, conversation, type and source come from
  the block, so the store behind the server holds it exactly as the driver would;
- a memory from any other AutoMem client belongs to ``MEMORY_SERVER_DEFAULT_USER``, gets a new
  id (AutoMem never takes the client's), and its AutoMem ``type`` is mapped onto the store's
  memory types;
- convention tags (``mdrv:...``) are never stored: they are derived from each memory when it is
  shown, and filters on them become the driver's own filters (user, conversation, type, tags,
  metadata), applied before ``limit`` is cut.

Ranking: vector recall ranks by the cosine similarity of the store's embedder; without a query,
memories come by importance (``sort=score``) or by time. AutoMem's blend (keyword, recency,
relation and entity boosts), deduplication, current-state filtering and enrichment are not
reproduced; their parameters are accepted and ignored.

Layout: :mod:`.parsing` (AutoMem's parameters), :mod:`.core` (the driver and rendering), and one
module per group of routes, combined here: :mod:`.memories`, :mod:`.recall`,
:mod:`.associations`; ``GET /health`` is below.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from .. import automem_wire as wire
from ..errors import (
    BackendUnavailableError,
    ConflictError,
    DriverClosedError,
    NotFoundError,
    StorageFullError,
    ValidationError,
)
from .associations import AssociationRoutes
from .memories import MemoryRoutes
from .parsing import ApiError
from .recall import RecallRoutes

__all__ = ["DRIVER_ERRORS", "ApiError", "MemoryService"]

log = logging.getLogger(__name__)


class MemoryService(MemoryRoutes, RecallRoutes, AssociationRoutes):
    """AutoMem's endpoints over ``driver``. Thread-safe as far as the driver is."""

    # ------------------------------------------------------------------ health
    def health(self) -> dict[str, Any]:
        """``GET /health`` (never needs the token): AutoMem's shape, plus what serves it."""
        report = self.driver.health_check()
        healthy = report.get("status") == "ok"
        count: int | None = None
        if healthy:
            try:
                count = self.driver.count()
            except Exception as exc:  # a health check reports, it does not fail
                log.warning("counting memories for /health failed: %s", exc)
                healthy = False
        dimension = self.driver.embedder.dimension if healthy else None
        return {
            "status": "healthy" if healthy else "degraded",
            "falkordb": "not used",
            "qdrant": "not used",
            "memory_count": count,
            "vector_count": count,
            "sync_status": "synced" if healthy else "unknown",
            "vector_dimensions": {
                "configured": dimension,
                "effective": dimension,
                "collection": dimension,
                "mismatch": False,
            },
            "enrichment": {
                "status": "disabled",
                "queue_depth": 0,
                "pending": 0,
                "inflight": 0,
                "processed": 0,
                "failed": 0,
            },
            "timestamp": wire.iso(datetime.now(timezone.utc)),
            "graph": None,
            "memory_drivers": {
                "server": "memory-drivers",
                "convention": wire.VERSION,
                "driver": self.driver.name,
                "embedder": self.driver.embedder.name if healthy else None,
                "status": report.get("status"),
                **({"error": report["error"]} if "error" in report else {}),
            },
        }


# Errors of the driver behind the server, as AutoMem status codes.
DRIVER_ERRORS: tuple[tuple[type[Exception], int], ...] = (
    (ValidationError, 400),
    (NotFoundError, 404),
    (ConflictError, 409),
    (StorageFullError, 507),
    (BackendUnavailableError, 503),
    (DriverClosedError, 503),
)
