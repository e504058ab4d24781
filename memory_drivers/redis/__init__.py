"""Redis for memory-drivers: working memory, a cache in front of any driver, consolidation.

- :class:`SessionMemory`: sessions with a TTL, capped conversation history, active sessions;
  :class:`AsyncSessionMemory`: the same as coroutines (on ``redis.asyncio``).
- :class:`CachedMemoryDriver`: a write-through cache in front of any driver
  (``MEMORY_CACHE=redis`` makes ``get_memory_driver()`` return one).
- :class:`StreamConsolidator`: every N events of a Redis stream become one summary memory
  (``memory-drivers consolidate --stream NAME``); :class:`AsyncStreamConsolidator`: as
  coroutines.

Needs redis-py: ``pip install "memory-drivers[redis]"``. It is imported when one of these is
created, never by importing this package. See docs/redis.md.
"""

from __future__ import annotations

from .aio import AsyncSessionMemory, AsyncStreamConsolidator
from .cache import CachedMemoryDriver
from .client import connect
from .consolidation import ConsolidationResult, StreamConsolidator
from .sessions import Message, Session, SessionMemory
from .summarizers import (
    ExtractiveSummarizer,
    OpenAIChatSummarizer,
    StreamEvent,
    Summarizer,
    get_summarizer,
)

__all__ = [
    "AsyncSessionMemory",
    "AsyncStreamConsolidator",
    "CachedMemoryDriver",
    "ConsolidationResult",
    "ExtractiveSummarizer",
    "Message",
    "OpenAIChatSummarizer",
    "Session",
    "SessionMemory",
    "StreamConsolidator",
    "StreamEvent",
    "Summarizer",
    "connect",
    "get_summarizer",
]
