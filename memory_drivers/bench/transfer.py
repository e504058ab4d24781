"""``memory-drivers bench copy``: how fast ``copy`` moves memories between stores.

N synthetic memories (100 users, conversations of 20 turns, a tag each, random unit vectors of
384 dimensions as if made by the default model) are put in a sqlite store, which is closed and
opened again (as ``memory-drivers copy`` opens it), then copied with
:func:`memory_drivers.transfer.copy_store` into an empty store of each target driver, with the
vectors reused (both stores have the same embedder). The rate is memories per second of the
whole copy: reading, conflict checks, writing, the target's keyword and context indexing.
"""

from __future__ import annotations

import platform
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from ..config import build_settings
from ..embeddings.hashing import HashingEmbedder
from ..validation import utcnow
from .quality import _open_driver, write_section

__all__ = ["CopyConfig", "copy_section", "run_copy"]

MARK_START = "<!-- copy: written by memory-drivers bench copy -->"
MARK_END = "<!-- /copy -->"
WORDS = "tea jazz hiking puppy Lisbon piano garden coffee novel chess river bicycle".split()


@dataclass
class CopyConfig:
    n: int = 100_000
    targets: tuple[str, ...] = ("pgvector",)
    pg_url: str | None = None
    batch: int = 500
    seed: int = 0


def _fill(source: Any, n: int, seed: int, batch: int) -> None:
    rng = np.random.default_rng(seed)
    start = utcnow() - timedelta(days=365)
    dimension = source.embedder.dimension
    for first in range(0, n, batch):
        count = min(batch, n - first)
        items = []
        for i in range(first, first + count):
            words = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(6))
            items.append(
                {
                    "user_id": f"user-{i % 100}",
                    "conversation_id": f"conv-{i // 2000}-{i % 100}",
                    "content": f"Memory {i}: the user talked about {words}.",
                    "tags": [WORDS[i % len(WORDS)]],
                    "created_at": start + timedelta(seconds=i),
                }
            )
        vectors = rng.standard_normal((count, dimension)).astype(np.float32)
        source.import_memories(items, vectors=vectors, embedder_name=source.embedder.name)


def run_copy(config: CopyConfig) -> dict[str, Any]:
    """Fill a sqlite store, copy it into each target; the rates."""
    # The name stands for the default model: the vectors are reused, nothing is embedded.
    embedder = HashingEmbedder(384)
    base = build_settings(_env_file=None, embedding_provider="hashing")
    runs = []
    with tempfile.TemporaryDirectory(prefix="md-bench-copy-") as work, ExitStack() as stack:
        workdir = Path(work)
        (workdir / "source").mkdir()
        with ExitStack() as filling:
            source = filling.enter_context(
                _open_driver("sqlite", embedder, workdir / "source", None, filling, base)
            )
            began = time.perf_counter()
            _fill(source, config.n, config.seed, config.batch)
            fill_seconds = time.perf_counter() - began
        # Copied from the store opened again, as `memory-drivers copy` opens it: not from the
        # process that filled it (its index and WAL still hot from the writes).
        source = stack.enter_context(
            _open_driver("sqlite", embedder, workdir / "source", None, stack, base)
        )
        for target_name in config.targets:
            (workdir / target_name).mkdir()
            with ExitStack() as inner:
                target = inner.enter_context(
                    _open_driver(
                        target_name, embedder, workdir / target_name, config.pg_url, inner, base
                    )
                )
                began = time.perf_counter()
                from ..transfer import copy_store

                result = copy_store(source, target, batch_size=config.batch)
                seconds = time.perf_counter() - began
                runs.append(
                    {
                        "source": "sqlite",
                        "target": target_name,
                        "memories": result.memories["stored"],
                        "vectors": result.vectors,
                        "seconds": round(seconds, 2),
                        "per_second": round(result.memories["stored"] / seconds),
                        "count_after": target.count(),
                    }
                )
    return {
        "n": config.n,
        "batch": config.batch,
        "fill_seconds": round(fill_seconds, 2),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
        f"Python {platform.python_version()}",
        "runs": runs,
    }


def copy_table(results: dict[str, Any]) -> str:
    lines = ["| Copy | Memories | Vectors | Seconds | Memories/s |", "|---|---|---|---|---|"]
    for run in results["runs"]:
        lines.append(
            f"| {run['source']} → {run['target']} | {run['memories']:,} | {run['vectors']} | "
            f"{run['seconds']} | {run['per_second']:,} |"
        )
    return "\n".join(lines)


def copy_section(results: dict[str, Any], note: str = "") -> str:
    """The Markdown section for docs/benchmarks.md."""
    return "\n".join(
        [
            MARK_START,
            "## Copy between stores",
            "",
            f"`memory-drivers bench copy --n {results['n']}`: {results['n']:,} memories (100 "
            "users, conversations, a tag each, 384-dimensional vectors) in a sqlite store, "
            "copied with `memory-drivers copy` (`copy_store`) into an empty store, vectors "
            f"reused, {results['batch']} memories per transaction; the time of the whole copy "
            "(reading, conflict checks, writing, keyword and conversation-context indexing). "
            "Target: >= 5,000 memories/s sqlite → pgvector. "
            f"Machine: {results['machine']}. {note}".rstrip(),
            "",
            copy_table(results),
            MARK_END,
        ]
    )


def write_copy_section(path: Path, section: str) -> None:
    write_section(path, section, MARK_START, MARK_END)
