"""Stream consolidation: every N events of a Redis stream become one summary memory.

::

    from memory_drivers import get_memory_driver
    from memory_drivers.redis import StreamConsolidator
    StreamConsolidator(get_memory_driver(), stream="agent:events").run()
    # or: memory-drivers consolidate --stream agent:events

Each summary is a memory of ``CONSOLIDATION_USER_ID`` (default: the stream's name) whose
metadata records ``consolidator="redis-stream"``, ``stream``, ``first_event_id``,
``last_event_id``, ``event_count`` and ``summarizer``; its ``created_at`` is the time of its
last event (taken from the event id).

Exactly once, across crashes (docs/redis.md has the argument):

- **The store is the checkpoint.** The last summarised event id is the largest
  ``last_event_id`` among the stream's summaries in the memory store; it is read on start.
- **Windows are a function of the stream and the checkpoint.** The next window is always the
  ``batch_size`` events right after the checkpoint (``XRANGE (checkpoint + COUNT N``), so a
  restart recomputes exactly the window that was being worked on.
- **Summaries have deterministic ids** (UUID5 of user, stream, first and last event id), so a
  window written twice (a crash after the store acknowledged it, or two consolidators at once)
  is a ``ConflictError``, taken as "already written".
- **The consumer group is the waiting room.** New events are taken with ``XREADGROUP`` (which
  is also how the consolidator waits for them) and stay pending until their summary is stored,
  then ``XACK``; so ``XPENDING`` lists exactly the events not summarised yet. On start, pending
  events at or before the checkpoint (a crash between storing and ``XACK``) are acknowledged
  without being summarised again.

A window that is not full yet waits for more events. Events removed from the stream (``XTRIM``,
``MAXLEN``) before they were summarised are not summarised.

:class:`~.aio.AsyncStreamConsolidator` runs this code from asyncio: every Redis command goes
through ``self._clients`` (:class:`.client.Clients`), the summariser through
:func:`memory_drivers.bridge.blocking` and pauses through :func:`_wait`, so in a native call
it awaits Redis on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .. import bridge
from .. import validation as check
from ..base import BaseMemoryDriver
from ..config import Settings
from ..errors import ConfigurationError, ConflictError, MemoryDriverError, ValidationError
from ..models import Memory
from .client import Clients, connect, redacted, redis_errors, unavailable
from .summarizers import StreamEvent, Summarizer, get_summarizer

__all__ = [
    "MARKER",
    "ConsolidationResult",
    "StreamConsolidator",
    "parse_event_id",
    "summary_id",
]

log = logging.getLogger(__name__)

#: ``metadata["consolidator"]`` of every summary this module writes.
MARKER = "redis-stream"

#: UUID5 namespace of summary ids.
SUMMARY_NAMESPACE = uuid.UUID("6f1b7c2e-4a8d-5e3f-9b0a-2c4d6e8f0a1b")

#: Test hook: ``POINT`` or ``POINT:N`` pauses the process (until it is killed) the N-th time it
#: reaches ``POINT`` (``before-store``, ``after-store``, ``after-ack``), after printing
#: ``consolidate: paused at POINT <first>..<last>`` to stderr.
PAUSE_VARIABLE = "MEMORY_DRIVERS_CONSOLIDATE_PAUSE"

#: Test hook: seconds to sleep at each of those points, so that a kill at a random moment
#: lands anywhere in a window's processing.
SLOW_VARIABLE = "MEMORY_DRIVERS_CONSOLIDATE_SLOW"


def parse_event_id(event_id: str) -> tuple[int, int]:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``, the order Redis gives stream ids."""
    ms, _, seq = event_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        raise ValidationError(f"{event_id!r} is not a Redis stream id (<ms>-<seq>)") from None


def summary_id(user_id: str, stream: str, first_event_id: str, last_event_id: str) -> str:
    """The memory id of the summary of one window: the same window always gets the same id."""
    name = "\n".join((user_id, stream, first_event_id, last_event_id))
    return str(uuid.uuid5(SUMMARY_NAMESPACE, name))


@dataclass(frozen=True)
class ConsolidationResult:
    """One window summarised: the summary memory, and whether this call wrote it."""

    memory: Memory
    first_event_id: str
    last_event_id: str
    event_count: int
    written: bool


class StreamConsolidator:
    """Summarises a Redis stream into ``driver``, ``batch_size`` events per summary memory.

    ``redis`` is a client or a URL (default ``REDIS_URL``). ``group``, ``consumer``,
    ``batch_size``, ``user_id`` and ``summarizer`` default to the ``CONSOLIDATION_*`` and
    ``SUMMARIZER*`` settings. ``block`` is how long one wait for new events lasts (seconds),
    which bounds how quickly :meth:`run` notices a stop request. ``on_summary`` is called with
    each :class:`ConsolidationResult`. Run one consolidator per stream (several at once never
    duplicate or lose events, but do the same work twice).
    """

    def __init__(
        self,
        driver: BaseMemoryDriver,
        redis: Any = None,
        *,
        stream: str,
        settings: Settings | None = None,
        group: str | None = None,
        consumer: str | None = None,
        batch_size: int | None = None,
        user_id: str | None = None,
        summarizer: Summarizer | None = None,
        memory_type: str = "episodic",
        importance: float = 0.5,
        block: float = 1.0,
        on_summary: Callable[[ConsolidationResult], None] | None = None,
    ) -> None:
        s = settings or driver.settings
        self.driver = driver
        self.settings = s
        self.stream = check.identifier(stream, "stream")
        self.group = check.identifier(group or s.consolidation_group, "group")
        self.consumer = check.identifier(consumer or s.consolidation_consumer, "consumer")
        self.batch_size = check.top_k(
            batch_size if batch_size is not None else s.consolidation_batch_size, "batch_size"
        )
        self.user_id = check.identifier(user_id or s.consolidation_user_id or stream, "user_id")
        self.memory_type = check.memory_type(memory_type, s.memory_types)
        self.importance = check.importance(importance)
        if isinstance(block, bool) or not isinstance(block, int | float) or block <= 0:
            raise ValidationError(f"block must be a number of seconds > 0, got {block!r}")
        self.block = float(block)
        self._owns_summarizer = summarizer is None
        self.summarizer = summarizer or get_summarizer(s)
        self.on_summary = on_summary
        self._errors = redis_errors()
        connect_async = None
        if redis is None or isinstance(redis, str):
            self.url = redacted(redis or s.redis_url)
            # A blocking read lasts up to ``block``: the socket must wait longer than that.
            connect_async = functools.partial(
                connect,
                redis or s.redis_url,
                timeout=s.redis_timeout + self.block,
                connect_timeout=s.redis_timeout,
            )
            self._client = connect_async()
            connect_async = functools.partial(connect_async, asynchronous=True)
            self._owns_client = True
        else:
            self.url = "<client>"
            self._client = redis
            self._owns_client = False
        #: every Redis command goes through it (sync, or awaited in a native async call)
        self._clients = Clients(self._client, connect_async)
        self._checkpoint: str | None = None
        self._ready = False
        self._pauses: dict[str, int] = {}

    # ------------------------------------------------------------------ the checkpoint
    def _metadata_filter(self) -> dict[str, Any]:
        return {"consolidator": MARKER, "stream": self.stream}

    def load_checkpoint(self) -> str | None:
        """The last event id summarised into the store (None: nothing yet), read from the
        store: the largest ``last_event_id`` among this stream's summaries."""
        where = self._metadata_filter()
        newest = self.driver.recall(self.user_id, top_k=1, metadata=where)
        if not newest:
            return None
        # Summaries' created_at is their last event's time, so the newest is among those
        # created at the newest time (several windows can end in the same millisecond).
        since = newest[0].memory.created_at
        top_k = 100
        while True:
            hits = self.driver.recall(self.user_id, top_k=top_k, since=since, metadata=where)
            if len(hits) < top_k:
                break
            top_k *= 10
        ids = [str(h.memory.metadata.get("last_event_id")) for h in hits]
        return max(ids, key=parse_event_id)

    @property
    def checkpoint(self) -> str | None:
        """The last event id summarised (as of the last :meth:`setup` or window)."""
        return self._checkpoint

    # ------------------------------------------------------------------ Redis
    def _redis(self, doing: str, call: Callable[[Any], Any]) -> Any:
        """``call(client)``'s answer, or the typed error saying Redis failed while ``doing``."""
        try:
            return self._clients(lambda r: call(r.client))
        except self._errors as exc:
            raise unavailable(self.url, exc, doing) from exc

    def _ack(self, ids: Sequence[str]) -> None:
        if ids:
            self._redis("acknowledging", lambda r: r.xack(self.stream, self.group, *ids))

    def _done(self, event_id: str) -> bool:
        return self._checkpoint is not None and parse_event_id(event_id) <= parse_event_id(
            self._checkpoint
        )

    def setup(self) -> None:
        """Create the consumer group if needed, read the checkpoint from the store, and
        acknowledge pending events it already covers. :meth:`step` and :meth:`run` call it."""
        try:
            self._clients(
                lambda r: r.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            )
        except self._errors as exc:
            if "BUSYGROUP" not in str(exc):
                raise unavailable(self.url, exc, "creating the consumer group") from exc
        self._checkpoint = self.load_checkpoint()
        if self._checkpoint is not None:
            while True:
                pending = self._redis(
                    "reading pending events",
                    lambda r: r.xpending_range(
                        self.stream, self.group, min="-", max=self._checkpoint, count=1000
                    ),
                )
                if not pending:
                    break
                self._ack([p["message_id"] for p in pending])
                log.info("acknowledged %d events summarised before a restart", len(pending))
        self._ready = True

    def _window(self) -> list[StreamEvent]:
        start = f"({self._checkpoint}" if self._checkpoint is not None else "-"
        entries = self._redis(
            "reading the stream",
            lambda r: r.xrange(self.stream, min=start, max="+", count=self.batch_size),
        )
        return [StreamEvent(event_id, dict(fields)) for event_id, fields in entries]

    def deliver(self, block: float | None = None) -> int:
        """Take the events not yet delivered to the group (``XREADGROUP >``), waiting up to
        ``block`` seconds for some when there are none (None: do not wait); returns how many
        came. They stay pending until their window's summary is stored; those the checkpoint
        already covers are acknowledged at once."""
        block_ms = None if block is None else max(1, int(block * 1000))
        reply = self._redis(
            "reading the stream",
            lambda r: r.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=1000, block=block_ms
            ),
        )
        ids = [event_id for _, entries in reply or [] for event_id, _ in entries]
        self._ack([i for i in ids if self._done(i)])
        return len(ids)

    # ------------------------------------------------------------------ windows
    def _pause(self, point: str, events: Sequence[StreamEvent]) -> None:
        slow = os.environ.get(SLOW_VARIABLE)
        if slow:
            bridge.sleep(float(slow))
        wanted = os.environ.get(PAUSE_VARIABLE, "")
        if not wanted:
            return
        name, _, nth = wanted.partition(":")
        if name != point:
            return
        self._pauses[point] = self._pauses.get(point, 0) + 1
        if self._pauses[point] != int(nth or 1):
            return
        print(
            f"consolidate: paused at {point} {events[0].id}..{events[-1].id}",
            file=sys.stderr,
            flush=True,
        )
        while True:  # until killed
            bridge.sleep(3600)

    def step(self) -> ConsolidationResult | None:
        """Summarise the next window if ``batch_size`` events after the checkpoint are in the
        stream; None otherwise. Never blocks waiting for events."""
        if not self._ready:
            self.setup()
        while self.deliver() == 1000:
            pass
        events = self._window()
        if len(events) < self.batch_size:
            return None
        first, last = events[0].id, events[-1].id
        mid = summary_id(self.user_id, self.stream, first, last)
        text = bridge.blocking(self.summarizer.summarize, self.stream, events)
        limit = self.settings.memory_max_content_length
        if len(text) > limit:
            text = text[: limit - 3].rstrip() + "..."
        ms, _ = parse_event_id(last)
        when = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
        item = {
            "id": mid,
            "user_id": self.user_id,
            "content": text,
            "memory_type": self.memory_type,
            "importance": self.importance,
            "tags": ["consolidation"],
            "source": "redis-stream",
            "metadata": {
                **self._metadata_filter(),
                "first_event_id": first,
                "last_event_id": last,
                "event_count": len(events),
                "summarizer": self.summarizer.name,
            },
            "created_at": when,
            "updated_at": when,
        }
        self._pause("before-store", events)
        try:
            [memory] = self.driver.store_many([item])
            written = True
        except ConflictError:
            existing = self.driver.get(mid)
            if existing is None:
                raise
            memory, written = existing, False
            log.info("the summary of %s..%s was written already", first, last)
        self._checkpoint = last
        self._pause("after-store", events)
        self._ack([e.id for e in events])
        self._pause("after-ack", events)
        result = ConsolidationResult(memory, first, last, len(events), written)
        if self.on_summary is not None:
            self.on_summary(result)
        return result

    def run(
        self, stop: threading.Event | asyncio.Event | None = None, *, once: bool = False
    ) -> int:
        """Summarise windows until ``stop`` is set (``once=True``: until no full window is
        left). Returns how many summaries this call wrote.

        Failures (Redis, the store, the summariser) are logged and retried with backoff, up to
        30 seconds apart; with ``once=True`` they are raised, and a ``ConfigurationError``
        (a bad key, model or URL) always is.
        """
        stop = stop or threading.Event()
        written = 0
        delay = 1.0
        while not stop.is_set():
            try:
                result = self.step()
                if result is not None:
                    written += int(result.written)
                    delay = 1.0
                    continue
                if once:
                    break
                self.deliver(self.block)
            except ConfigurationError:
                raise  # a wrong key, model or URL does not fix itself
            except MemoryDriverError as exc:
                if once:
                    raise
                log.error("consolidating %s failed: %s; retrying in %.0fs", self.stream, exc, delay)
                self._ready = False  # re-read the checkpoint: the store is the truth
                _wait(stop, delay)
                delay = min(delay * 2, 30.0)
        return written

    def close(self) -> None:
        """Close what this object made (the Redis client, the summariser); the driver is the
        caller's."""
        self._clients.close(sync=self._owns_client)
        close = getattr(self.summarizer, "close", None)
        if self._owns_summarizer and callable(close):
            close()


def _wait(stop: threading.Event | asyncio.Event, seconds: float) -> None:
    """Wait until ``stop`` is set or ``seconds`` passed; in a native call (an asyncio event),
    without stopping the event loop."""
    if isinstance(stop, asyncio.Event):
        with contextlib.suppress(TimeoutError):
            bridge.wait_for(asyncio.wait_for(stop.wait(), seconds))
    else:
        stop.wait(seconds)
