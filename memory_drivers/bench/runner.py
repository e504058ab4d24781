"""The benchmark run: vectors prepared once, then one fresh process per (target, N).

:func:`run_bench` returns the raw results (a JSON-able dict) that :mod:`.report` turns into
``docs/benchmarks.md`` and the plot; ``results.json`` keeps them so the report can be made again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .dataset import (
    GENERATOR_VERSION,
    REUSE_NOISE,
    TAGS,
    VectorCache,
    default_cache_dir,
    make_items,
    make_queries,
)
from .machine import machine_info, package_versions
from .targets import DRIVERS, PEER_FAMILIES
from .worker import JobSpec

__all__ = ["BenchConfig", "run_bench"]

Log = Callable[[str], None]

#: Of the targets, those that need a PostgreSQL database.
#: backends of the default model that can make the replayed vectors
VECTOR_BACKENDS = ("auto", "onnx", "onnx-int8", "torch")

POSTGRES_TARGETS = frozenset({"pgvector", "langchain-pgvector", "mem0-pgvector"})


@dataclass
class BenchConfig:
    """Everything a run is told (the defaults are the issue's)."""

    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000])
    drivers: list[str] = field(default_factory=lambda: list(DRIVERS))
    #: families of peers measured beside each driver (:data:`~.targets.PEER_FAMILIES`);
    #: mem0 is opt-in: its FAISS store rewrites its files on every add (hours at 100k)
    peers: list[str] = field(default_factory=lambda: ["langchain"])
    queries: int = 200
    users: int = 100
    seed: int = 0
    batch: int = 1000
    top_k: int = 10
    #: memories loaded with the real model, per target (0: skip)
    end_to_end: int = 2000
    #: the backend of the default model that makes the replayed vectors; ``onnx-int8`` embeds
    #: about 2x faster (worth it at N = 1M), and its vectors are a space of their own (own cache)
    vectors: str = "auto"
    #: embed only the first M memory texts; the others reuse real vectors with noise
    #: (:func:`~.dataset.reused_vectors`); None: embed every one
    real_vectors: int | None = None
    #: measure the ONNX and PyTorch backends of the default model
    embedder_speed: bool = True
    embedder_sentences: int = 2048
    embedder_queries: int = 100
    #: LangChain FAISS's fetch_k (None: top_k x users x 2)
    faiss_fetch_k: int | None = None
    #: an admin URL of a PostgreSQL with pgvector (None: PGVECTOR_TEST_URL, else embedded)
    pg_url: str | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    #: seconds one job may take
    timeout: float = 4 * 3600
    progress: bool = False

    def __post_init__(self) -> None:
        unknown = [d for d in self.drivers if d not in DRIVERS]
        if unknown:
            known = ", ".join(DRIVERS)
            raise ValueError(f"unknown driver {unknown[0]!r}; the benchmark runs {known}")
        wrong = [p for p in self.peers if p not in PEER_FAMILIES]
        if wrong:
            known = ", ".join(PEER_FAMILIES)
            raise ValueError(f"unknown peers {wrong[0]!r}; use {known} (or --no-peers)")
        if not self.sizes or any(n < 1 for n in self.sizes):
            raise ValueError("sizes must be positive numbers of memories")
        if self.queries < 1 or self.users < 1 or self.batch < 1:
            raise ValueError("queries, users and batch must be at least 1")
        self.sizes = sorted(set(self.sizes))
        if self.real_vectors is not None and self.real_vectors < 1:
            raise ValueError("real_vectors must be at least 1 (or None: embed every memory)")
        if self.vectors not in VECTOR_BACKENDS:
            known = ", ".join(VECTOR_BACKENDS)
            raise ValueError(f"unknown vectors backend {self.vectors!r}; use one of {known}")

    @property
    def embedded(self) -> int:
        """How many memory texts are embedded with the model (the rest reuse their vectors)."""
        largest = max(self.sizes)
        return largest if self.real_vectors is None else min(largest, self.real_vectors)

    @property
    def fetch_k(self) -> int:
        return self.faiss_fetch_k or self.top_k * self.users * 2

    def targets(self) -> list[str]:
        """Each driver followed by its peers of the chosen families."""
        names: list[str] = []
        for driver in self.drivers:
            names.append(driver)
            names += [
                family[driver] for name, family in PEER_FAMILIES.items() if name in self.peers
            ]
        return names


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- vectors
def prepare_vectors(config: BenchConfig, log: Log = _stderr) -> tuple[str, int]:
    """Make sure the cache holds real-model vectors for the largest N and the queries; returns
    the model's name (what the replay embedder calls itself) and its dimension."""
    from tqdm import tqdm

    from .embedders import real_embedder

    embedder = real_embedder(config.vectors)  # type: ignore[arg-type]
    model = embedder.name
    wanted = [
        (
            "memories",
            [i.content for i in make_items(config.embedded, seed=config.seed, users=1)],
        ),
        ("queries", [q.text for q in make_queries(config.queries, seed=config.seed, users=1)]),
    ]
    for namespace, texts in wanted:
        cache = VectorCache(config.cache_dir, model, config.seed, namespace)
        missing = len(texts) - cache.cached_rows(texts)
        if missing <= 0:
            continue
        log(
            f"embedding {missing:,} {namespace} texts with {model} "
            f"(once; cached in {cache.directory})"
        )
        with tqdm(
            total=missing,
            desc=f"embedding {namespace}",
            unit="text",
            file=sys.stderr,
            disable=not config.progress,
            dynamic_ncols=True,
        ) as bar:
            cache.ensure(texts, embedder.embed_documents, progress=bar.update)
    return model, embedder.dimension


# ---------------------------------------------------------------------- PostgreSQL
#: shared_buffers of the embedded PostgreSQL the benchmark starts (when no --pg-url is given).
EMBEDDED_SHARED_BUFFERS = "1GB"


class _Postgres:
    """The server jobs get their databases from, started only when a job needs one."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self._server: Any = None

    @property
    def server(self) -> Any:
        if self._server is None:
            from ..sql.throwaway_server import PostgresForTests, start_postgres

            if self.url:
                self._server = PostgresForTests(self.url)
            else:
                server = start_postgres()
                # A server tuned as a deployment would be: the default 128MB of shared buffers
                # holds about 60k memories of 384 dimensions, so at 100k every recall would
                # read from the OS cache (us and the LangChain peer alike).
                server.admin(f"ALTER SYSTEM SET shared_buffers = '{EMBEDDED_SHARED_BUFFERS}'")
                server.stop()
                server.start()
                self._server = server
        return self._server

    def versions(self) -> dict[str, str | None]:
        server = self.server
        version = server.admin("SHOW server_version")
        vector = server.admin(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
        )
        return {
            "postgresql": str(version[0][0]) if version else None,
            "pgvector (extension)": str(vector[0][0]) if vector else None,
            "postgresql_embedded": "yes" if server.server is not None else "no",
            "shared_buffers": str(server.admin("SHOW shared_buffers")[0][0]),
        }


# ---------------------------------------------------------------------- jobs
def _run_process(spec: JobSpec, jobdir: Path, timeout: float) -> dict[str, Any]:
    spec_path = jobdir / "spec.json"
    result_path = jobdir / "result.json"
    spec_path.write_text(spec.to_json())
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "memory_drivers.bench.worker", str(spec_path)]
    command.append(str(result_path))
    try:
        process = subprocess.run(command, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s"}
    if result_path.exists():
        result: dict[str, Any] = json.loads(result_path.read_text())
        return result
    return {"ok": False, "error": f"the worker died (exit code {process.returncode})"}


def _run_job(
    spec: JobSpec, config: BenchConfig, postgres: _Postgres, scratch: Path
) -> dict[str, Any]:
    jobdir = Path(tempfile.mkdtemp(prefix="job-", dir=scratch))
    databases: list[str] = []
    try:
        spec.workdir = str(jobdir)
        if spec.kind == "target" and spec.target in POSTGRES_TARGETS:
            try:
                name, spec.pg_url = postgres.server.create_database()
                databases.append(name)
                if spec.end_to_end:
                    name, spec.e2e_pg_url = postgres.server.create_database()
                    databases.append(name)
            except Exception as exc:
                return {"ok": False, "error": f"no PostgreSQL database: {exc}"}
        return _run_process(spec, jobdir, config.timeout)
    finally:
        for name in databases:
            with contextlib.suppress(Exception):
                postgres.server.drop_database(name)
        shutil.rmtree(jobdir, ignore_errors=True)


def _label(spec: JobSpec) -> str:
    if spec.kind == "embedder":
        return f"embedder speed ({spec.backend})"
    extra = f" + end-to-end {spec.end_to_end:,}" if spec.end_to_end else ""
    return f"{spec.target} N={spec.n:,}{extra}"


def plan_jobs(config: BenchConfig, model: str) -> list[JobSpec]:
    """The jobs of a run, in order: embedder speed, then each N's targets."""
    common: dict[str, Any] = {
        "cache_dir": str(config.cache_dir),
        "model": model,
        "seed": config.seed,
        "users": config.users,
        "progress": config.progress,
        "real_vectors": config.real_vectors,
    }
    jobs: list[JobSpec] = []
    if config.embedder_speed:
        for backend in ("onnx", "onnx-int8", "torch"):
            jobs.append(
                JobSpec(
                    kind="embedder",
                    backend=backend,
                    sentences=config.embedder_sentences,
                    queries=config.embedder_queries,
                    **common,
                )
            )
    smallest = min(config.sizes)
    for n in config.sizes:
        for target in config.targets():
            jobs.append(
                JobSpec(
                    kind="target",
                    target=target,
                    n=n,
                    queries=config.queries,
                    batch=config.batch,
                    top_k=config.top_k,
                    faiss_fetch_k=config.fetch_k,
                    end_to_end=min(config.end_to_end, n) if n == smallest else 0,
                    **common,
                )
            )
    return jobs


def _vectors_text(config: BenchConfig, model: str) -> str:
    real = (
        "every memory and query text"
        if config.embedded >= max(config.sizes)
        else (
            f"every query text and the first {config.embedded:,} memory texts (larger N: each "
            "further memory reuses the real vector of one of those, chosen by its text's hash, "
            f"plus Gaussian noise of {REUSE_NOISE} per dimension, so about 0.9 cosine to it: "
            "real distribution, meaning lost; exact search's speed does not depend on meaning)"
        )
    )
    return (
        f"real {model} embeddings (backend {config.vectors!r}) of {real}, computed once and "
        "cached; replayed by lookup during the runs"
    )


def run_bench(config: BenchConfig, log: Log = _stderr) -> dict[str, Any]:
    """Run every job of ``config``; the raw results."""
    started = datetime.now(timezone.utc)
    machine = machine_info()
    model, dimension = prepare_vectors(config, log)
    postgres = _Postgres(config.pg_url)
    versions: dict[str, str | None] = package_versions()
    if any(t in POSTGRES_TARGETS for t in config.targets()):
        try:
            versions.update(postgres.versions())
        except Exception as exc:
            log(f"no PostgreSQL: {exc}")
    jobs = plan_jobs(config, model)
    runs: list[dict[str, Any]] = []
    embedders: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="md-bench-") as scratch:
        for number, spec in enumerate(jobs, start=1):
            label = _label(spec)
            log(f"[{number}/{len(jobs)}] {label} ...")
            t0 = time.perf_counter()
            result = _run_job(spec, config, postgres, Path(scratch))
            state = "ok" if result.get("ok") else f"FAILED: {result.get('error')}"
            log(f"[{number}/{len(jobs)}] {label}: {state} ({time.perf_counter() - t0:.1f} s)")
            if spec.kind == "embedder":
                embedders.append({"backend": spec.backend, **result})
            else:
                runs.append({"target": spec.target, "n": spec.n, **result})
    params = asdict(config)
    params["cache_dir"] = str(config.cache_dir)
    params["pg_url"] = "(given)" if config.pg_url else None
    params["faiss_fetch_k"] = config.fetch_k
    return {
        "format": 1,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "versions": versions,
        "params": params,
        "dataset": {
            "model": model,
            "dimension": dimension,
            "generator_version": GENERATOR_VERSION,
            "tags": list(TAGS),
            "vectors": (_vectors_text(config, model)),
        },
        "runs": runs,
        "embedders": embedders,
    }
