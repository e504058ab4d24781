"""``memory-drivers bench processes``: writer and reader processes sharing one sqlite store.

N memories are loaded into a new store by one process, which then closes it (saving the index
file). Then W writer and R reader processes open the store at once and run for S seconds:
writers store new memories in batches of B at a steady rate (``rate`` memories a second each,
a batch every B / rate seconds; 0: as fast as they can), readers recall continuously (vector
search within one user's memories, the query's vector known). Each process reports its index
counters (``stats()["index"]``: full rebuilds, file loads, log entries replayed, saves), writers
the rate they achieved and their store_many latencies, readers their recall latencies, both as
wall time and as the CPU time of the recalling thread: wall far above CPU is time spent waiting
(for a core, a lock, the disk), not work. The load average is taken at the start and the end.
The targets (issue 12): no full rebuild after the first open, recall p99 at most 50 ms with 4
writers and 4 readers on 100k memories.

Vectors come from the hashing embedder (384 dimensions), computed once here and replayed: this
workload is about how processes share a store, not about retrieval quality, and so needs no
model.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import build_settings
from ..embeddings.hashing import HashingEmbedder
from .dataset import make_items, make_queries
from .embedders import ReplayEmbedder
from .machine import machine_info

__all__ = ["ProcessesConfig", "processes_section", "processes_table", "run_processes"]

MARK_START = "<!-- processes: written by memory-drivers bench processes -->"
MARK_END = "<!-- /processes -->"
DIMENSION = 384


@dataclass
class ProcessesConfig:
    """What one run does (the defaults are the issue's)."""

    n: int = 100_000
    writers: int = 4
    readers: int = 4
    seconds: float = 30.0
    batch: int = 100
    #: memories a second each writer stores (a batch every batch / rate s); 0: no pause
    rate: float = 100.0
    users: int = 100
    seed: int = 0
    synchronous: str = "FULL"
    progress: bool = False

    def __post_init__(self) -> None:
        if self.n < 1 or self.writers < 0 or self.readers < 1 or self.batch < 1:
            raise ValueError("n, readers and batch must be at least 1, writers at least 0")
        if self.seconds <= 0:
            raise ValueError("seconds must be positive")
        if self.rate < 0:
            raise ValueError("rate must be 0 (no pause) or positive")

    #: distinct texts each writer cycles through (each store gets a new id)
    texts_per_writer: int = 5000


def _embedder(texts: list[str], vectors: np.ndarray) -> ReplayEmbedder:
    return ReplayEmbedder(HashingEmbedder(DIMENSION).name, [(texts, vectors)])


def _open(url: str, synchronous: str, embedder: ReplayEmbedder) -> Any:
    from ..drivers.sqlite import SQLiteDriver

    settings = build_settings(_env_file=None, memory_db_url=url, sqlite_synchronous=synchronous)
    return SQLiteDriver(settings, embedder=embedder)


def _worker(
    role: str,
    url: str,
    synchronous: str,
    work: list[Any],
    vectors: np.ndarray,
    seconds: float,
    batch: int,
    rate: float,
    start: Any,
    results: Any,
) -> None:
    """One process: open the store, wait for the others, then write or read for ``seconds``."""
    try:
        texts = [w["content"] for w in work] if role == "writer" else [w[1] for w in work]
        opened = time.perf_counter()
        driver = _open(url, synchronous, _embedder(texts, vectors))
        report: dict[str, Any] = {"role": role, "open_s": time.perf_counter() - opened}
        if role == "reader":  # the first recall loads the index (from its file)
            began = time.perf_counter()
            driver.recall(work[0][0], query=work[0][1], top_k=10, search="vector")
            report["first_recall_ms"] = (time.perf_counter() - began) * 1000
        before = driver.stats()["index"]
        start.wait()
        latencies: list[float] = []
        cpu: list[float] = []
        done = 0
        began_at = time.monotonic()
        deadline = began_at + seconds
        due = began_at  # writers: when the next batch is due
        while time.monotonic() < deadline:
            if role == "writer":
                if rate:
                    now = time.monotonic()
                    if due > now:
                        time.sleep(min(due, deadline) - now)
                        if time.monotonic() >= deadline:
                            break
                    # Behind (a slow write): the next batch is due one interval from now, no
                    # burst to catch up; the rate achieved says so.
                    due = max(due, now) + batch / rate
                first = done % len(work)
                began, thread = time.perf_counter(), time.thread_time()
                driver.store_many(work[first : first + batch])
                done += len(work[first : first + batch])
            else:
                user, text = work[done % len(work)]
                began, thread = time.perf_counter(), time.thread_time()
                driver.recall(user, query=text, top_k=10, search="vector")
                done += 1
            latencies.append(time.perf_counter() - began)
            cpu.append(time.thread_time() - thread)
        report["elapsed_s"] = time.monotonic() - began_at
        report["operations"] = done
        report["latencies_ms"] = [s * 1000 for s in latencies]
        report["cpu_ms"] = [s * 1000 for s in cpu]
        report["index"] = driver.stats()["index"]
        report["replayed"] = report["index"].get("replayed", 0) - before.get("replayed", 0)
        driver.close()
        results.put(report)
    except BaseException as exc:  # reported, so the run says which process failed and why
        results.put({"role": role, "error": f"{type(exc).__name__}: {exc}"})


def run_processes(config: ProcessesConfig, log: Any = print) -> dict[str, Any]:
    """Run the workload; the raw results (JSON-able)."""
    from tqdm import tqdm

    extra = config.writers * config.texts_per_writer
    items = make_items(config.n + extra, seed=config.seed, users=config.users)
    queries = make_queries(500, seed=config.seed, users=config.users)
    hashing = HashingEmbedder(DIMENSION)
    log(f"hashing {len(items):,} memories and {len(queries)} queries")
    vectors = hashing.embed_documents([i.content for i in items])
    query_vectors = hashing.embed_documents([q.text for q in queries])
    directory = Path(tempfile.mkdtemp(prefix="md-bench-processes-"))
    url = f"sqlite:///{directory}/memories.db"
    try:
        loaded = items[: config.n]
        texts = [i.content for i in loaded]
        driver = _open(url, config.synchronous, _embedder(texts, vectors[: config.n]))
        began = time.perf_counter()
        with tqdm(total=len(loaded), desc="loading", disable=not config.progress) as bar:
            for start in range(0, len(loaded), 1000):
                driver.store_many([i.as_input() for i in loaded[start : start + 1000]])
                bar.update(min(1000, len(loaded) - start))
        load_s = time.perf_counter() - began
        driver.close()

        context = multiprocessing.get_context("spawn")
        start_event = context.Barrier(config.writers + config.readers)
        results = context.Queue()
        processes = []
        jobs: list[tuple[str, list[Any], np.ndarray]] = []
        for w in range(config.writers):
            first = config.n + w * config.texts_per_writer
            mine = items[first : first + config.texts_per_writer]
            # No ids: each store of a text is a new memory.
            work: list[Any] = [{**i.as_input(), "id": None} for i in mine]
            jobs.append(("writer", work, vectors[first : first + len(mine)]))
        for r in range(config.readers):
            order = np.roll(np.arange(len(queries)), -r * len(queries) // config.readers)
            asked = [(queries[q].user_id, queries[q].text) for q in order]
            jobs.append(("reader", asked, query_vectors[order]))
        for role, work, rows in jobs:
            args = (
                role,
                url,
                config.synchronous,
                work,
                rows,
                config.seconds,
                config.batch,
                config.rate,
            )
            processes.append(context.Process(target=_worker, args=(*args, start_event, results)))
        log(
            f"running {config.writers} writers and {config.readers} readers for "
            f"{config.seconds:g} s on {config.n:,} memories"
        )
        load_before = _load_average()
        for process in processes:
            process.start()
        reports = []
        for _ in processes:
            try:
                reports.append(results.get(timeout=config.seconds + 600))
            except queue.Empty:
                reports.append({"role": "?", "error": "no report within the time allowed"})
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
        load_after = _load_average()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return _summary(config, load_s, reports, (load_before, load_after))


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _summary(
    config: ProcessesConfig,
    load_s: float,
    reports: list[dict[str, Any]],
    load: tuple[list[float] | None, list[float] | None] = (None, None),
) -> dict:
    readers = [r for r in reports if r.get("role") == "reader" and "error" not in r]
    writers = [r for r in reports if r.get("role") == "writer" and "error" not in r]

    def joined(reports: list[dict[str, Any]], key: str) -> np.ndarray:
        return np.asarray([ms for r in reports for ms in r.get(key, [])], dtype=np.float64)

    latencies = joined(readers, "latencies_ms")
    cpu = joined(readers, "cpu_ms")
    stores = joined(writers, "latencies_ms")

    def total(reports: list[dict[str, Any]], counter: str) -> int:
        return int(sum(r["index"].get(counter, 0) for r in reports))

    summary: dict[str, Any] = {
        "config": asdict(config),
        "machine": machine_info(),
        "load_s": load_s,
        "errors": [r["error"] for r in reports if "error" in r],
        "rebuilds": total(readers + writers, "rebuilds"),
        "file_loads": total(readers + writers, "file_loads"),
        "saves": total(writers + readers, "saves"),
        "writes_per_s": sum(r["operations"] / r["elapsed_s"] for r in writers if r["elapsed_s"]),
        "target_writes_per_s": config.rate * config.writers if config.rate else None,
        "recalls": int(latencies.size),
        "first_recall_ms": max((r["first_recall_ms"] for r in readers), default=None),
        "replayed_per_reader": (
            sum(r.get("replayed", 0) for r in readers) / len(readers) if readers else None
        ),
        "load_average_start": load[0],
        "load_average_end": load[1],
    }
    if latencies.size:
        for p in (50, 95, 99):
            summary[f"recall_p{p}_ms"] = float(np.percentile(latencies, p))
        summary["recall_max_ms"] = float(latencies.max())
    if cpu.size:
        for p in (50, 99):
            summary[f"recall_cpu_p{p}_ms"] = float(np.percentile(cpu, p))
    if stores.size:
        for p in (50, 99):
            summary[f"store_p{p}_ms"] = float(np.percentile(stores, p))
    return summary


def processes_table(results: dict[str, Any]) -> str:
    """The results as a Markdown table of one row."""
    c = results["config"]
    head = [
        "N",
        "writers",
        "readers",
        "s",
        "SQLITE_SYNCHRONOUS",
        "writes/s (target)",
        "store p99 ms",
        "recalls",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "CPU p50/p99 ms",
        "rebuilds",
        "file loads",
        "saves",
        "first recall ms",
        "load average",
    ]
    first = results.get("first_recall_ms")
    target = results.get("target_writes_per_s")
    nan = float("nan")

    def load(key: str) -> str:
        value = results.get(key)
        return "?" if not value else f"{value[0]:.1f}"

    cells = [
        f"{c['n']:,}",
        str(c["writers"]),
        str(c["readers"]),
        f"{c['seconds']:g}",
        c["synchronous"],
        f"{results['writes_per_s']:,.0f} ({f'{target:,.0f}' if target else 'no pause'})",
        f"{results.get('store_p99_ms', nan):.0f}",
        f"{results['recalls']:,}",
        *(
            f"{results.get(k, nan):.2f}"
            for k in ("recall_p50_ms", "recall_p95_ms", "recall_p99_ms", "recall_max_ms")
        ),
        f"{results.get('recall_cpu_p50_ms', nan):.2f}/{results.get('recall_cpu_p99_ms', nan):.2f}",
        str(results["rebuilds"]),
        str(results["file_loads"]),
        str(results["saves"]),
        f"{first:.0f}" if first is not None else "",
        f"{load('load_average_start')} → {load('load_average_end')}",
    ]
    return "\n".join(
        ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), "| " + " | ".join(cells) + " |"]
    )


def processes_section(runs: list[dict[str, Any]]) -> str:
    """The Markdown section for docs/benchmarks.md."""
    tables = [processes_table(r).splitlines() for r in runs]
    lines = tables[0][:2] + [t[2] for t in tables]
    machine = runs[0]["machine"]
    return "\n".join(
        [
            MARK_START,
            "## Many processes (sqlite)",
            "",
            "`memory-drivers bench processes`: N memories loaded and the store closed, then writer "
            "processes (batches of store_many at a steady rate: writes/s is what they achieved, "
            "the target in brackets) and reader processes (vector recall within one user's "
            "memories, query vector known, one after another without pause) on the same files "
            "at once. Latency (wall) over every reader's recalls, and the CPU time of the "
            "recalling thread (wall far above CPU: time spent waiting for a core, a lock or the "
            "disk, not work); rebuilds, file loads and saves summed over the processes (a "
            "reader loads the index file at its first recall, the slowest of which is in its "
            "own column; a writer that does not search only when a save is due, or on close). "
            "Vectors: the hashing embedder's, replayed "
            f"(the workload measures sharing, not quality). Machine: {machine.get('cpu', '?')}, "
            f"{machine.get('cores', '?')} cores, shared with other work: the load average "
            "(1 minute) at the start and the end is in the last column.",
            "",
            *lines,
            MARK_END,
        ]
    )
