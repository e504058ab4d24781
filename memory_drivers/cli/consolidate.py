"""``consolidate``: summarise a Redis stream into memories (:mod:`memory_drivers.redis`)."""

from __future__ import annotations

import json
from typing import Any

from .options import command
from .session import Session

__all__ = ["register"]


def cmd_consolidate(s: Session) -> int:
    """Summarise a Redis stream into memories until SIGTERM/SIGINT (or, with --once, until no
    full window is left). Each summary is printed as it is written."""
    import signal
    import threading

    from ..redis.consolidation import ConsolidationResult, StreamConsolidator

    a = s.args
    settings = s.settings
    if a.summarizer:
        settings = settings.replace(summarizer=a.summarizer)
    stop = threading.Event()

    def report(result: ConsolidationResult) -> None:
        if s.json:
            print(
                json.dumps(
                    {
                        "memory_id": result.memory.id,
                        "user_id": result.memory.user_id,
                        "first_event_id": result.first_event_id,
                        "last_event_id": result.last_event_id,
                        "event_count": result.event_count,
                        "written": result.written,
                    }
                ),
                flush=True,
            )
        else:
            state = "" if result.written else " (written before)"
            print(
                f"{result.memory.id}  {result.event_count} events  "
                f"{result.first_event_id}..{result.last_event_id}{state}",
                flush=True,
            )

    consolidator = StreamConsolidator(
        s.driver,
        stream=a.stream,
        settings=settings,
        group=a.group,
        consumer=a.consumer,
        batch_size=a.batch,
        user_id=a.user,
        block=a.block,
        on_summary=report,
    )

    def request_stop(signum: int, frame: Any) -> None:
        if stop.is_set():  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        stop.set()

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            handlers[signum] = signal.signal(signum, request_stop)
    try:
        consolidator.run(stop, once=a.once)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        consolidator.close()
    return 0


def register(sub: Any) -> None:
    """Add ``consolidate`` to ``sub``."""
    p = command(
        sub,
        "consolidate",
        cmd_consolidate,
        "summarise a Redis stream into memories, N events per summary",
        "Read the events of a Redis stream (with a consumer group) and store one summary "
        "memory per --batch events, recording the stream and the first and last event ids. "
        "The last summarised event is kept in the memory store, so a restart resumes exactly "
        "there. Runs until SIGTERM or Ctrl-C (--once: until no full batch is left). Needs "
        'REDIS_URL and pip install "memory-drivers[redis]"; see docs/redis.md.',
    )
    p.add_argument("--stream", required=True, metavar="NAME", help="the stream's key")
    p.add_argument("--group", metavar="G", help="consumer group (default CONSOLIDATION_GROUP)")
    p.add_argument("--consumer", metavar="C", help="consumer name (default CONSOLIDATION_CONSUMER)")
    p.add_argument(
        "--batch", type=int, metavar="N", help="events per summary (CONSOLIDATION_BATCH_SIZE)"
    )
    p.add_argument(
        "--user",
        metavar="U",
        help="the user the summaries belong to (CONSOLIDATION_USER_ID, else the stream name)",
    )
    p.add_argument(
        "--summarizer",
        choices=["extractive", "openai"],
        help="how to summarise (default SUMMARIZER)",
    )
    p.add_argument(
        "--block",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="longest wait for new events before checking for a stop (default 1)",
    )
    p.add_argument(
        "--once", action="store_true", help="summarise the full batches there are, then exit"
    )
