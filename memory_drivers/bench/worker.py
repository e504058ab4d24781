"""One benchmark job, run in a fresh process: ``python -m memory_drivers.bench.worker SPEC RESULT``.

A fresh process per (target, N) makes the peak resident memory that target's alone, and a crash
cost only that job. ``SPEC`` and ``RESULT`` are JSON files; the result always says ``ok``, and on
failure carries the error instead of figures.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import json
import resource
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .targets import Target, TargetConfig

__all__ = ["JobSpec", "main", "run_job", "summarize"]


@dataclass
class JobSpec:
    """What one job does; every field is JSON."""

    kind: str  # "target" or "embedder"
    cache_dir: str
    model: str
    seed: int = 0
    users: int = 100
    n: int = 0
    queries: int = 200
    target: str = ""
    batch: int = 1000
    top_k: int = 10
    faiss_fetch_k: int = 2000
    workdir: str = ""
    pg_url: str | None = None
    end_to_end: int = 0
    e2e_pg_url: str | None = None
    progress: bool = False
    backend: str = "auto"
    sentences: int = 2048
    real_vectors: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        return cls(**json.loads(text))


def peak_rss_mb() -> float:
    """This process's peak resident set size since it started or :func:`reset_peak_rss` last
    reset it, in MiB.

    On Linux this is ``VmHWM`` of ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` keeps the
    high-water mark of the parent across fork and exec, so it would report the runner's size
    (which loaded the model) for a small job.
    """
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / (1024.0 * 1024.0)


def _status_mb(field: str) -> float | None:
    """A size field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MiB; None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak_rss() -> float | None:
    """Give freed memory back to the OS and start the peak RSS again from the current RSS; the
    RSS now, in MiB, or None where the peak cannot be reset (then :func:`peak_rss_mb` keeps
    counting from the process's start).

    The benchmark builds its data before a store opens, and that building peaks higher than
    what it keeps (1M memories: 6.2 GB while the vectors are assembled, about half after). A
    store's share measured against that earlier peak read 0 for a store that stayed under it.
    Linux resets the high-water mark on writing 5 to ``/proc/self/clear_refs`` (Linux 4.0+,
    ``proc(5)``); glibc's ``malloc_trim`` first returns the heap's free pages, so memory the
    building freed but still held is not reused by the store unseen."""
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(libc_name).malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return None
    return _status_mb("VmRSS")


def summarize(seconds: Sequence[float]) -> dict[str, float | int]:
    """p50, p95 and mean latency in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "count": int(ms.size),
    }


def recall_at_k(got: Sequence[str], exact: Sequence[str]) -> float | None:
    """Share of the exact top-k found in ``got`` (None when nothing matches at all)."""
    if not exact:
        return None
    return len(set(got) & set(exact)) / len(exact)


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


# ---------------------------------------------------------------------- target jobs
def _bar(spec: JobSpec, total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="memory",
        file=sys.stderr,
        disable=not spec.progress,
        dynamic_ncols=True,
        leave=False,
    )


def _ingest(spec: JobSpec, target: Any, items: Sequence[Any], desc: str) -> dict[str, Any]:
    """Load ``items`` in batches (plus the target's end-of-load step), timed."""
    limit = target.timed_ingest_limit
    timed = items if limit is None else items[:limit]
    rest = items[len(timed) :]
    gc.collect()
    started = time.perf_counter()
    with _bar(spec, len(items), desc) as bar:
        for start in range(0, len(timed), spec.batch):
            batch = timed[start : start + spec.batch]
            target.ingest(batch)
            bar.update(len(batch))
        if not rest:
            target.finish_ingest()
        seconds = time.perf_counter() - started
        result: dict[str, Any] = {
            "memories": len(timed),
            "seconds": seconds,
            "per_s": len(timed) / seconds if seconds > 0 else None,
            "batch": spec.batch,
        }
        if rest:  # loaded the target's faster way, timed apart (see Target.bulk_load)
            started = time.perf_counter()
            for start in range(0, len(rest), spec.batch):
                batch = rest[start : start + spec.batch]
                target.bulk_load(batch)
                bar.update(len(batch))
            target.finish_ingest()
            result["bulk_load"] = {"memories": len(rest), "seconds": time.perf_counter() - started}
    return result


def _variant_ingest(spec: JobSpec, target: Any, items: Sequence[Any]) -> dict[str, Any]:
    """``target``'s ingest of ``items`` into a store of its own, deleted afterwards."""
    target.open()
    try:
        return _ingest(spec, target, items, f"{target.name} N={spec.n:,}")
    finally:
        target.close()
        shutil.rmtree(target.directory, ignore_errors=True)


def _workload(
    queries: Sequence[Any],
    call: Callable[[Any], list[str] | bool | None],
    exact: Sequence[Sequence[str]] | None = None,
    warmup: int = 5,
) -> dict[str, Any] | None:
    """Run ``call`` for every query (after a few unmeasured ones); latency and recall@k."""
    if not queries or call(queries[0]) is None:
        return None  # the store cannot do this
    for query in queries[1:warmup]:
        call(query)
    gc.collect()
    latencies: list[float] = []
    answers: list[Any] = []
    for query in queries:
        start = time.perf_counter()
        answer = call(query)
        latencies.append(time.perf_counter() - start)
        answers.append(answer)
    result: dict[str, Any] = summarize(latencies)
    if exact is not None:
        scores = [recall_at_k(a, e) for a, e in zip(answers, exact, strict=True)]
        valid = [s for s in scores if s is not None]
        result["recall_at_k"] = float(np.mean(valid)) if valid else None
        result["recall_queries"] = len(valid)
        result["mean_hits"] = float(np.mean([len(a) for a in answers]))
    else:
        result["mean_hits"] = (
            float(np.mean([len(a) for a in answers]))
            if answers and isinstance(answers[0], list)
            else None
        )
    if answers and isinstance(answers[0], bool):
        result["found"] = int(sum(answers))
    return result


def run_target_job(spec: JobSpec) -> dict[str, Any]:
    from .dataset import Dataset
    from .embedders import ReplayEmbedder
    from .targets import TargetConfig

    data = Dataset.load(
        Path(spec.cache_dir),
        spec.model,
        n=spec.n,
        q=spec.queries,
        seed=spec.seed,
        users=spec.users,
        real_vectors=spec.real_vectors,
    )
    embedder = ReplayEmbedder(
        spec.model,
        [
            ([i.content for i in data.items], data.vectors),
            ([q.text for q in data.queries], data.query_vectors),
        ],
    )
    exact_vector = [data.exact_top_k(q, spec.top_k) for q in data.queries]
    exact_filtered = [data.exact_top_k(q, spec.top_k, filtered=True) for q in data.queries]
    rng = np.random.default_rng([spec.seed, 4])
    get_ids = [data.items[int(i)].id for i in rng.integers(len(data.items), size=spec.queries)]

    workdir = Path(spec.workdir)
    config = TargetConfig(
        workdir=workdir / "main",
        embedder=embedder,
        pg_url=spec.pg_url,
        top_k=spec.top_k,
        faiss_fetch_k=spec.faiss_fetch_k,
    )
    target = make_target(spec.target, config)
    result: dict[str, Any] = {"target": target.name, "kind": target.kind, "n": spec.n}
    # Build the lazy structures the workloads use before the baseline, so it holds them; the
    # peak is then counted from here, so peak - baseline is the store's share alone.
    _ = data.user_rows
    baseline = reset_peak_rss()
    result["rss_baseline_mb"] = peak_rss_mb() if baseline is None else baseline
    result["rss_from_open"] = baseline is not None

    target.open()
    try:
        result["ingest"] = _ingest(spec, target, data.items, f"{target.name} N={spec.n:,}")
        target.after_ingest()
        seconds, _ = _timed(lambda: target.recall_vector(data.queries[0]))
        result["first_recall_ms"] = seconds * 1000.0
        result["workloads"] = {
            "vector": _workload(data.queries, target.recall_vector, exact_vector),
            "filtered": _workload(data.queries, target.recall_filtered, exact_filtered),
            "keyword": _workload(data.queries, target.recall_keyword),
            "hybrid": _workload(data.queries, target.recall_hybrid),
            "get": _workload([_IdQuery(i) for i in get_ids], lambda q: target.get(q.memory_id)),
        }
    finally:
        target.close()
    result["disk_bytes"] = target.disk_bytes()
    result["peak_rss_mb"] = peak_rss_mb()
    # After the peak is read: a variant's store is not this target's.
    variants = target.ingest_variants()
    if variants:
        result["ingest_variants"] = {
            name: _variant_ingest(spec, variant, data.items) for name, variant in variants.items()
        }
    result["notes"] = target.notes
    if spec.end_to_end:
        result["end_to_end"] = _end_to_end(spec, data.items[: spec.end_to_end])
    return result


@dataclass(frozen=True)
class _IdQuery:
    memory_id: str


def _end_to_end(spec: JobSpec, items: Sequence[Any]) -> dict[str, Any]:
    """Load ``items`` into a new store of the same target with the real default model."""
    from .embedders import real_embedder
    from .targets import TargetConfig

    embedder = real_embedder("auto")
    embedder.embed_documents([i.content for i in items[:32]])  # load the model: not timed
    config = TargetConfig(
        workdir=Path(spec.workdir) / "e2e",
        embedder=embedder,
        pg_url=spec.e2e_pg_url,
        top_k=spec.top_k,
        faiss_fetch_k=spec.faiss_fetch_k,
    )
    target = make_target(spec.target, config)
    target.open()
    try:
        result = _ingest(spec, target, items, f"{target.name} end to end")
    finally:
        target.close()
    result["embedder"] = f"{type(embedder).__name__} ({embedder.name})"
    return result


# ---------------------------------------------------------------------- embedder jobs
def run_embedder_job(spec: JobSpec) -> dict[str, Any]:
    from .dataset import make_items, make_queries
    from .embedders import measure_embedder

    sentences = [i.content for i in make_items(spec.sentences, seed=spec.seed, users=1)]
    queries = [q.text for q in make_queries(spec.queries, seed=spec.seed, users=1)]
    result = measure_embedder(spec.backend, sentences, queries, batch_size=32)  # type: ignore[arg-type]
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def run_job(spec: JobSpec) -> dict[str, Any]:
    """Run the job; never raises: failures are reported in the result."""
    started = time.perf_counter()
    try:
        if spec.kind == "target":
            result = run_target_job(spec)
        elif spec.kind == "embedder":
            result = run_embedder_job(spec)
        else:
            raise ValueError(f"unknown job kind {spec.kind!r}")
        result["ok"] = True
    except Exception as exc:
        result = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}"[:2000],
            "traceback": traceback.format_exc()[-6000:],
        }
    result["job_seconds"] = time.perf_counter() - started
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m memory_drivers.bench.worker SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec = JobSpec.from_json(Path(args[0]).read_text())
    result = run_job(spec)
    Path(args[1]).write_text(json.dumps(result, indent=2, default=str))
    return 0 if result.get("ok") else 1


def make_target(name: str, config: TargetConfig) -> Target:
    """The target called ``name`` (one of ours or a peer)."""
    from . import mem0, peers
    from .targets import ChromaTarget, PgVectorTarget, SQLiteTarget

    classes: dict[str, type[Target]] = {
        "sqlite": SQLiteTarget,
        "pgvector": PgVectorTarget,
        "chroma": ChromaTarget,
        "langchain-faiss": peers.FaissPeer,
        "langchain-pgvector": peers.PGVectorPeer,
        "langchain-chroma": peers.ChromaPeer,
        "mem0-faiss": mem0.Mem0FaissPeer,
        "mem0-pgvector": mem0.Mem0PgVectorPeer,
        "mem0-chroma": mem0.Mem0ChromaPeer,
    }
    try:
        cls = classes[name]
    except KeyError:
        known = ", ".join(classes)
        raise ValueError(f"unknown benchmark target {name!r}; known: {known}") from None
    return cls(config)


if __name__ == "__main__":
    sys.exit(main())
