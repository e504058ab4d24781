"""The benchmark harness (``memory-drivers bench``) on a small N.

One run of every target (our drivers, their LangChain peers and mem0 on the same backends,
PostgreSQL from the session's server) checks that the harness works end to end: every target
has numbers, recall@10 is a share, our drivers answer exactly, mem0's answers map back to our
ids, and the report and plot are written. No timing is asserted.
The other tests check the parts that need no server: the dataset, the cache, the replay
embedder, the report's kept block and the command's options.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from memory_drivers.bench.command import parse_sizes
from memory_drivers.bench.dataset import VectorCache, make_items, make_queries
from memory_drivers.bench.embedders import ReplayEmbedder
from memory_drivers.bench.report import (
    TIMES,
    WHY_BEGIN,
    WHY_END,
    _rss_method,
    load_results,
    render_markdown,
    write_report,
)
from memory_drivers.bench.runner import BenchConfig, run_bench
from memory_drivers.bench.targets import DRIVERS, PEER_FAMILIES, PEERS
from memory_drivers.bench.worker import peak_rss_mb, recall_at_k, reset_peak_rss, summarize
from memory_drivers.cli import main

N = 300
QUERIES = 10
TARGETS = [name for driver in DRIVERS for name in (driver, *PEERS[driver])]
MEM0 = set(PEER_FAMILIES["mem0"].values())


@pytest.fixture(scope="module")
def results(postgres: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One small run of every target (PostgreSQL: the session's server)."""
    config = BenchConfig(
        sizes=[N],
        users=10,
        queries=QUERIES,
        peers=["langchain", "mem0"],
        end_to_end=40,
        embedder_sentences=64,
        embedder_queries=5,
        pg_url=postgres.admin_url,
        cache_dir=tmp_path_factory.mktemp("bench-cache"),
        timeout=600,  # per job: a hung worker fails the run instead of hanging the suite
    )
    return run_bench(config, log=lambda message: None)


def _run(results: dict[str, Any], target: str) -> dict[str, Any]:
    [run] = [r for r in results["runs"] if r["target"] == target]
    assert run["ok"], run.get("traceback") or run.get("error")
    return run


# ---------------------------------------------------------------------- the whole harness
@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_every_target_has_numbers(results: dict[str, Any], target: str) -> None:
    run = _run(results, target)
    assert run["n"] == N
    assert run["ingest"]["memories"] == N and run["ingest"]["per_s"] > 0
    workloads = run["workloads"]
    for name in ("vector", "filtered", "get"):
        if workloads[name] is None and target in ("mem0-faiss", "mem0-chroma"):
            continue
        w = workloads[name]
        assert w["count"] == QUERIES and 0 < w["p50_ms"] <= w["p95_ms"], name
    # mem0 cannot say "one of the memory's tags" on FAISS or Chroma (see bench/mem0.py).
    filtered = target not in ("mem0-faiss", "mem0-chroma")
    for name in ("vector", "filtered") if filtered else ("vector",):
        assert 0.0 <= workloads[name]["recall_at_k"] <= 1.0
    if not filtered:
        assert workloads["filtered"] is None
    assert workloads["get"]["found"] == QUERIES
    assert run["disk_bytes"] > 0
    assert run["peak_rss_mb"] >= run["rss_baseline_mb"] > 0
    assert run["rss_from_open"] is True  # Linux: the peak counts from the store's opening
    assert run["first_recall_ms"] > 0
    assert run["end_to_end"]["memories"] == 40 and run["end_to_end"]["per_s"] > 0
    if target == "sqlite":
        # Loaded again with SQLITE_SYNCHRONOUS=NORMAL into a store of its own, then deleted.
        normal = run["ingest_variants"]["normal"]
        assert normal["memories"] == N and normal["per_s"] > 0
    else:
        assert "ingest_variants" not in run
    if target in DRIVERS:
        # Our drivers are exact at this size: the same top 10 as numpy.
        assert workloads["vector"]["recall_at_k"] >= 0.95
        assert workloads["filtered"]["recall_at_k"] >= 0.95
        assert workloads["keyword"]["count"] == QUERIES
        assert workloads["keyword"]["mean_hits"] > 0
    else:
        assert workloads["keyword"] is None  # peers have no keyword search
    if target in MEM0:
        # mem0's ids are its own: its answers were mapped back to ours through the metadata
        # (at this size the user's nearest memories are within what mem0 fetches).
        assert workloads["vector"]["recall_at_k"] >= 0.8
        assert workloads["vector"]["mean_hits"] > 5


@pytest.mark.slow
def test_both_embedder_backends_measured(results: dict[str, Any]) -> None:
    backends = {e["backend"]: e for e in results["embedders"]}
    assert set(backends) == {"onnx", "onnx-int8", "torch"}
    for e in backends.values():
        assert e["ok"], e.get("error")
        assert e["sentences_per_s"] > 0 and e["query_p50_ms"] > 0


@pytest.mark.slow
def test_report_and_plot_are_written(results: dict[str, Any], tmp_path: Path) -> None:
    out, plot = tmp_path / "docs" / "benchmarks.md", tmp_path / "docs" / "recall.png"
    assert write_report(results, out, plot) == [plot, out]
    text = out.read_text()
    assert f"## N = {N:,}" in text
    for target in TARGETS:
        assert target in text
    for section in ("## Machine and versions", "## Targets", "## Why", "](recall.png)"):
        assert section in text
    # Every driver's columns: ours, then each peer with its ratio.
    assert f"| **sqlite** | langchain-faiss | {TIMES} | mem0-faiss | {TIMES} |" in text
    assert "- **mem0** (`Memory` of `mem0ai`" in text
    normal = _run(results, "sqlite")["ingest_variants"]["normal"]["per_s"]
    [row] = [line for line in text.splitlines() if "`SQLITE_SYNCHRONOUS=NORMAL` (sqlite" in line]
    cells = row.split(" | ")
    assert cells[1] == f"{round(normal):,}"  # in sqlite's column, empty in the others
    assert {c.strip(" |") for c in cells[2:]} == {""}
    assert "sqlite: recall p50 at least as good as mem0-faiss" in text
    assert "chromadb" in text and "postgresql" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_plot_goes_beside_the_report_unless_named(
    results: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = tmp_path / "results.json"
    raw.write_text(json.dumps(results))
    out = tmp_path / "elsewhere" / "bench.md"
    assert main(["bench", "--report-only", str(raw), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["bench-recall.png", "bench.md"]
    assert "![" in out.read_text() and "bench-recall.png" in out.read_text()
    quiet = tmp_path / "quiet"
    (quiet / "docs").mkdir(parents=True)
    monkeypatch.chdir(quiet)  # no report, no plot: nothing under docs/
    assert main(["bench", "--report-only", str(raw), "--out", "-"]) == 0
    assert list((quiet / "docs").iterdir()) == []


@pytest.mark.slow
def test_report_only_remakes_the_page_and_keeps_the_why(
    results: dict[str, Any], tmp_path: Path
) -> None:
    raw = tmp_path / "results.json"
    raw.write_text(json.dumps(results))
    out, plot = tmp_path / "bench.md", tmp_path / "bench.png"
    args = ["bench", "--report-only", str(raw), "--out", str(out), "--plot", str(plot)]
    assert main(args) == 0
    page = out.read_text()
    start, end = page.index(WHY_BEGIN) + len(WHY_BEGIN), page.index(WHY_END)
    out.write_text(page[:start] + "\nsqlite is slower because it is durable.\n" + page[end:])
    quality = "<!-- quality: written by memory-drivers bench quality -->\n## Q\n<!-- /quality -->"
    copy = "<!-- copy: written by memory-drivers bench copy -->\n## C\n<!-- /copy -->"
    with out.open("a") as page_file:
        page_file.write(f"\n{quality}\n\n{copy}\n")
    assert main(args) == 0
    again = out.read_text()
    assert "sqlite is slower because it is durable." in again
    assert again.count(quality) == again.count(copy) == 1, "other commands' sections are kept"
    assert again.index(quality) < again.index(copy)
    assert main(args) == 0
    assert out.read_text() == again, "regenerating twice changes nothing"
    assert load_results(raw)["runs"] == results["runs"]


# ---------------------------------------------------------------------- parts
def test_peak_rss_counts_from_its_reset() -> None:
    """What the store's peak RSS rests on: memory touched after the reset raises the peak above
    the baseline by about its size; after a new reset the freed memory counts no more (a store
    under the peak of the benchmark's data loading once read a share of 0)."""
    first = reset_peak_rss()
    assert first is not None and first > 0  # Linux (CI's): the mark can be reset
    block = np.ones(256 * 2**20 // 8)  # 256 MiB, every page written
    assert peak_rss_mb() - first >= 200
    del block
    again = reset_peak_rss()
    assert again is not None and again < first + 64  # the block was given back
    assert peak_rss_mb() - again < 64


def test_report_says_how_peak_rss_was_measured() -> None:
    base = {"ok": True, "target": "sqlite", "kind": "ours", "n": 10}
    assert "from the moment the store was opened" in _rss_method([{**base, "rss_from_open": True}])
    older = _rss_method([base])
    assert "since it started" in older and "from the moment" not in older
    both = _rss_method([{**base, "rss_from_open": True}, base])
    assert "for the runs that record it" in both and "since it started" in both


def test_dataset_is_deterministic_and_prefix_stable() -> None:
    big = make_items(2500, seed=3, users=100)
    assert make_items(1200, seed=3, users=100) == big[:1200]
    # The number of users changes owners, never texts (so cached vectors stay valid).
    assert [i.content for i in make_items(1200, seed=3, users=7)] == [i.content for i in big[:1200]]
    assert make_items(10, seed=4, users=100) != big[:10]
    assert len({i.id for i in big}) == len(big)
    assert {i.user_id for i in big} <= {f"user-{u:04d}" for u in range(100)}
    assert all(1 <= len(i.tags) <= 3 for i in big)
    assert make_queries(5, seed=3, users=10) == make_queries(50, seed=3, users=10)[:5]


def test_vector_cache_embeds_only_what_is_missing(tmp_path: Path) -> None:
    calls: list[int] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return np.array([[len(t), 1.0, 2.0] for t in texts], dtype=np.float32)

    texts = [i.content for i in make_items(30, seed=0, users=1)]
    cache = VectorCache(tmp_path, "some/model", 0, "memories")
    assert cache.ensure(texts[:10], embed) == 10
    assert cache.ensure(texts, embed, chunk=8) == 20
    assert calls == [10, 8, 8, 4]
    vectors = cache.load(texts)
    assert vectors.shape == (30, 3)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    assert cache.ensure(texts[:25], embed) == 0
    # Other texts at the same rows are not taken for cached.
    other = ["something else entirely", *texts[1:]]
    assert cache.cached_rows(other) == 0
    with pytest.raises(LookupError):
        cache.load(other)


def test_real_vectors_embeds_the_first_m_and_reuses_them_beyond(tmp_path: Path) -> None:
    """``--real-vectors M``: only the first M memory texts are embedded; the others get a real
    vector plus noise, unit length, the same for the same text, and different from their
    source (so exact search still has one right answer)."""
    from memory_drivers.bench.dataset import Dataset, reused_vectors

    rng = np.random.default_rng(0)

    def embed(texts: list[str]) -> np.ndarray:
        return rng.standard_normal((len(texts), 16)).astype(np.float32)

    items = make_items(50, seed=0, users=5)
    VectorCache(tmp_path, "m", 0, "memories").ensure([i.content for i in items[:20]], embed)
    VectorCache(tmp_path, "m", 0, "queries").ensure(
        [q.text for q in make_queries(3, seed=0, users=5)], embed
    )
    with pytest.raises(LookupError):  # 50 memories, 20 embedded: not without real_vectors
        Dataset.load(tmp_path, "m", n=50, q=3, seed=0, users=5)
    data = Dataset.load(tmp_path, "m", n=50, q=3, seed=0, users=5, real_vectors=20)
    real = VectorCache(tmp_path, "m", 0, "memories").load([i.content for i in items[:20]])
    assert data.vectors.shape == (50, 16)
    np.testing.assert_array_equal(data.vectors[:20], real)
    np.testing.assert_allclose(np.linalg.norm(data.vectors, axis=1), 1.0, rtol=1e-5)
    # Each reused vector is near one real vector, and equal to none.
    closest = (data.vectors[20:] @ real.T).max(axis=1)
    assert closest.min() > 0.8 and closest.max() < 0.9999
    again = reused_vectors(real, [items[25].content, items[25].content, items[30].content], 0)
    np.testing.assert_array_equal(again[0], again[1])
    assert not np.allclose(again[0], again[2])
    assert BenchConfig(sizes=[10, 1000], real_vectors=100).embedded == 100
    assert BenchConfig(sizes=[10, 1000]).embedded == 1000
    with pytest.raises(ValueError, match="real_vectors must be at least 1"):
        BenchConfig(real_vectors=0)


def test_replay_embedder_returns_the_stored_vectors() -> None:
    memories = np.eye(3, 4, dtype=np.float32)
    queries = np.full((1, 4), 0.5, dtype=np.float32)
    embedder = ReplayEmbedder("m", [(["a", "b", "c"], memories), (["q"], queries)])
    assert (embedder.name, embedder.dimension) == ("m", 4)
    np.testing.assert_array_equal(embedder.embed_documents(["c", "a"]), memories[[2, 0]])
    np.testing.assert_array_equal(embedder.embed_documents(["q", "b"]), [queries[0], memories[1]])
    np.testing.assert_array_equal(embedder.embed_query("q"), queries[0])
    assert embedder.embed_documents([]).shape == (0, 4)
    with pytest.raises(KeyError):
        embedder.embed_query("never seen")


def test_measures() -> None:
    assert recall_at_k(["a", "b", "x"], ["a", "b", "c", "d"]) == 0.5
    assert recall_at_k([], []) is None
    stats = summarize([0.001] * 9 + [0.011])
    assert stats["p50_ms"] == pytest.approx(1.0) and stats["count"] == 10
    assert stats["p95_ms"] > stats["p50_ms"]


def test_sizes_and_options() -> None:
    assert parse_sizes("10000, 100k,1M,2_000") == [10_000, 100_000, 1_000_000, 2_000]
    for bad in ("", "ten", "0", "1.5"):
        with pytest.raises(ValueError):
            parse_sizes(bad)
    with pytest.raises(ValueError, match="unknown driver"):
        BenchConfig(drivers=["mysql"])
    with pytest.raises(ValueError, match="unknown peers 'llama'"):
        BenchConfig(peers=["llama"])
    with pytest.raises(ValueError, match="unknown vectors backend 'onnx-fp16'"):
        BenchConfig(vectors="onnx-fp16")
    assert BenchConfig(drivers=["pgvector"], peers=["mem0", "langchain"]).targets() == [
        "pgvector",
        "langchain-pgvector",
        "mem0-pgvector",
    ]
    assert BenchConfig(drivers=["chroma"], peers=[]).targets() == ["chroma"]
    assert BenchConfig().targets() == [t for t in TARGETS if t not in MEM0]


def test_report_without_peers_has_only_our_columns() -> None:
    run = {"target": "sqlite", "n": 5, "ok": True, "ingest": {"per_s": 10.0}, "workloads": {}}
    page = render_markdown({"runs": [run], "params": {"batch": 1}})
    table = page.split("## N = 5")[1].split("\n\n")[1].splitlines()
    assert table[:2] == ["|  | **sqlite** |", "|---|---|"]
    assert all(row.count("|") == 3 for row in table)  # a label and our cell, no peer columns
    assert "- **mem0**" not in page  # the method says nothing of a peer not measured


def test_bench_command_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--drivers", "mysql", "--out", "-", "--plot", "-"]) == 2
    assert "unknown driver 'mysql'" in capsys.readouterr().err
    assert main(["bench", "--n", "lots"]) == 2
    assert main(["bench", "--peers", "langchain,llama", "--out", "-", "--plot", "-"]) == 2
    assert "unknown peers 'llama'" in capsys.readouterr().err


def test_bench_copy_measures_and_writes_its_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bench copy`` fills a sqlite store, copies it (vectors reused) and writes its section
    into the report in place of an earlier one, leaving the rest of the page alone."""
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\nkept\n", encoding="utf-8")
    for _ in range(2):
        assert main(["bench", "copy", "--n", "300", "--targets", "sqlite", "--out", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\nkept\n") and text.count("## Copy between stores") == 1
    row = next(line for line in text.splitlines() if line.startswith("| sqlite → sqlite"))
    assert "| 300 | reused |" in row
    assert "sqlite → sqlite" in capsys.readouterr().out
    assert main(["bench", "copy", "--n", "lots", "--out", "-"]) == 2


def test_processes_workload_runs_and_writes_its_section(tmp_path: Path) -> None:
    """``bench processes`` at a tiny size: writer and reader processes on one store, every
    process reports, readers recalled, the writers' memories landed, no index was rebuilt, and
    the section goes into the report (replacing an earlier one). A failure usually means a
    worker process died (its error is in ``errors``) or processes rebuild the shared index."""
    from memory_drivers.bench.processes import (
        MARK_END,
        MARK_START,
        ProcessesConfig,
        processes_section,
        run_processes,
    )
    from memory_drivers.bench.quality import write_section

    config = ProcessesConfig(n=300, writers=1, readers=2, seconds=2, batch=20, users=5, rate=50)
    results = run_processes(config, log=lambda line: None)
    assert results["errors"] == []
    assert results["recalls"] > 0
    # The writer keeps to its rate: a batch every 0.4 s, never ahead of it.
    assert 0 < results["writes_per_s"] <= 50 * 1.01 and results["target_writes_per_s"] == 50
    assert results["rebuilds"] == 0
    # Each reader loaded the saved file when it first recalled (the writer, which never
    # searches and wrote less than a save's worth, had no need to).
    assert results["file_loads"] >= 2
    assert results["recall_p50_ms"] <= results["recall_p99_ms"] <= results["recall_max_ms"]
    assert 0 < results["recall_cpu_p50_ms"] <= results["recall_cpu_p99_ms"]
    assert results["replayed_per_reader"] > 0  # the readers followed the writer's log
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n\nkept\n")
    for _ in range(2):
        write_section(report, processes_section([results]), MARK_START, MARK_END)
    text = report.read_text()
    assert text.count(MARK_START) == 1 and "kept" in text and "| 300 | 1 | 2 |" in text


def test_mem0_bulk_load_stores_what_its_adds_store(tmp_path: Path) -> None:
    """Past its timed adds, the mem0 peer stores the rest through the same ``add`` calls with
    the vector store's inserts gathered: every memory is then in the index, found by its own
    vector within its user, readable by id and in mem0's history, like a timed one."""
    from memory_drivers.bench.mem0 import Mem0FaissPeer
    from memory_drivers.bench.targets import TargetConfig
    from memory_drivers.bench.worker import JobSpec, _ingest

    items = make_items(50, seed=1, users=3)
    vectors = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    embedder = ReplayEmbedder("m", [([i.content for i in items], vectors)])
    peer = Mem0FaissPeer(TargetConfig(workdir=tmp_path, embedder=embedder))
    peer.timed_ingest_limit = 20
    peer.open()
    try:
        spec = JobSpec(kind="target", cache_dir=str(tmp_path), model="m", batch=7)
        result = _ingest(spec, peer, items, "mem0")
        assert result["memories"] == 20 and result["per_s"] > 0
        assert result["bulk_load"]["memories"] == 30
        assert peer.memory.vector_store.index.ntotal == 50
        assert "insert" not in vars(peer.memory.vector_store)  # the store's own method is back
        for item in (items[3], items[25], items[49]):  # one timed, two bulk-loaded
            found = peer.memory.search(item.content, filters={"user_id": item.user_id}, top_k=1)
            assert found["results"][0]["metadata"]["item_id"] == item.id
            assert peer.memory.get(peer.ids[item.id])["memory"] == item.content
            assert [h["event"] for h in peer.memory.history(peer.ids[item.id])] == ["ADD"]
    finally:
        peer.close()


def test_merged_results_replace_the_same_target_and_n() -> None:
    """``--merge`` adds a run to earlier results: the same target and N is replaced, the rest is
    kept, and the report says when each part was measured and at what load."""
    from memory_drivers.bench.results import merge_results, parts_of

    def run(target: str, n: int, per_s: float) -> dict[str, Any]:
        return {"target": target, "n": n, "ok": True, "ingest": {"per_s": per_s}}

    old = {
        "started": "2026-12-01T10:00:00+00:00",
        "finished": "2026-12-01T11:00:00+00:00",
        "machine": {"load_average": [0.5, 0.4, 0.3]},
        "runs": [run("sqlite", 10, 1.0), run("sqlite", 100, 2.0), run("pgvector", 10, 3.0)],
        "embedders": [{"backend": "onnx", "ok": True}],
    }
    new = {
        "started": "2026-12-02T10:00:00+00:00",
        "finished": "2026-12-02T12:00:00+00:00",
        "machine": {"load_average": [1.5, 1.0, 0.9]},
        "runs": [run("sqlite", 100, 9.0), run("sqlite", 1000, 4.0)],
        "embedders": [],
    }
    merged = merge_results(old, new)
    got = {(r["target"], r["n"]): r["ingest"]["per_s"] for r in merged["runs"]}
    assert got == {
        ("sqlite", 10): 1.0,
        ("sqlite", 100): 9.0,
        ("pgvector", 10): 3.0,
        ("sqlite", 1000): 4.0,
    }
    assert merged["embedders"] == old["embedders"]
    assert merged["started"] == old["started"] and merged["finished"] == new["finished"]
    parts = parts_of(merged)
    assert [p["runs"] for p in parts] == [
        ["pgvector N=10", "sqlite N=10"],
        ["sqlite N=100", "sqlite N=1000"],
    ]
    page = render_markdown({**merged, "embedders": [], "params": {"batch": 1}})
    assert "measured in 2 invocations" in page
    assert "load average at the start [1.5, 1.0, 0.9]: sqlite N=100, sqlite N=1000" in page
    assert "## N = 1,000" in page
    # Merging again keeps the first part's remaining runs and adds the third.
    again = merge_results(merged, {**new, "runs": [run("pgvector", 10, 5.0)]})
    assert [p["runs"] for p in parts_of(again)] == [
        ["sqlite N=10"],
        ["sqlite N=100", "sqlite N=1000"],
        ["pgvector N=10"],
    ]


def test_bench_merge_needs_a_results_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--merge", "--results", "-", "--out", "-", "--plot", "-"]) == 2
    assert "--merge needs --results" in capsys.readouterr().err


def test_targets_are_the_issues_and_scale_rows_need_a_1m_run() -> None:
    """The Targets table checks the issue's figures at 100k (sqlite recall ≤ 0.6 ms, ingest
    ≥ 10k/s, first recall ≤ 50 ms, ...) and, when the results hold N = 1M, the scale ones."""
    from memory_drivers.bench.goals import targets

    def run(target: str, n: int, p50: float, per_s: float, first: float) -> dict[str, Any]:
        vector = {"p50_ms": p50, "recall_at_k": 1.0}
        return {
            "target": target,
            "n": n,
            "ok": True,
            "ingest": {"per_s": per_s},
            "first_recall_ms": first,
            "workloads": {"vector": vector},
        }

    results = {"runs": [run("sqlite", 100_000, 0.5, 12_000.0, 80.0)]}
    rows = {label: (measured, met, gap) for label, measured, met, gap in targets(results)}
    assert rows["sqlite: recall p50 ≤ 0.6 ms"][1] is True
    assert rows["sqlite: store_many ≥ 10,000/s"][1] is True
    assert rows["sqlite: first recall after the load ≤ 50 ms"][1:] == (False, 1.6)
    assert rows["pgvector: recall p50 ≤ 5 ms"] == ("not measured", None, None)
    assert not any("1,000,000" in label for label in rows)
    results["runs"] += [run("sqlite", 1_000_000, 2.0, 9_000.0, 40.0)]
    rows = {label: (measured, met, gap) for label, measured, met, gap in targets(results)}
    assert rows["sqlite at N = 1,000,000: recall p50 ≤ 1.5 ms"][1] is False
    assert rows["pgvector at N = 1,000,000: recall p50 ≤ 5 ms"][1] is None
    # The 100k rows still read the 100k run.
    assert rows["sqlite: store_many ≥ 10,000/s"][1] is True


def test_growth_table_marks_what_grows_faster_than_linearly(tmp_path: Path) -> None:
    """The "Growth with N" section gives each measure's exponent between consecutive sizes and
    marks one above 1.15 (ingest time here: 10x the memories took 20x as long); one size has no
    such section; the growth plot is drawn beside the recall plot."""
    from memory_drivers.bench.growth import exponent, growth_table

    def run(n: int, p50: float, seconds: float, disk: float) -> dict[str, Any]:
        return {
            "target": "sqlite",
            "n": n,
            "ok": True,
            "workloads": {"vector": {"p50_ms": p50, "p95_ms": p50}},
            "ingest": {"seconds": seconds, "per_s": n / seconds},
            "peak_rss_mb": 100.0 + n / 1000,
            "rss_baseline_mb": 100.0,
            "disk_bytes": disk,
        }

    assert exponent(10, 1.0, 100, 10.0) == pytest.approx(1.0)
    assert exponent(10, 2.0, 1000, 2.0) == pytest.approx(0.0)
    assert exponent(10, None, 100, 1.0) is None
    results = {"runs": [run(1000, 1.0, 1.0, 2**20), run(10_000, 1.0, 20.0, 10 * 2**20)]}
    lines = growth_table(results)
    row = next(line for line in lines if line.startswith("| sqlite | 10,000 |"))
    assert "1.00 (N^0.00)" in row  # recall: the same at both sizes
    assert "20.0 (N^1.30) **(faster than linear)**" in row  # ingest time
    assert "10.0 (N^1.00) |" in row and row.count("faster than linear") == 1
    assert growth_table({"runs": results["runs"][:1]}) == []
    # a load timed over its first memories only (mem0's) has no ingest time to grow
    partial = [{**r, "ingest": {**r["ingest"], "memories": 1000}} for r in results["runs"]]
    row = next(line for line in growth_table({"runs": partial}) if "| 10,000 |" in line)
    assert "20.0" not in row and "faster than linear" not in row
    out, plot = tmp_path / "b.md", tmp_path / "recall.png"
    written = write_report({**results, "params": {"batch": 1}}, out, plot)
    assert tmp_path / "recall-growth.png" in written
    assert "## Growth with N" in out.read_text()
    assert "](recall-growth.png)" in out.read_text()
