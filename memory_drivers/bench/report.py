"""``docs/benchmarks.md`` and its plot, made from the raw results of a run (``results.json``).

The results are read through :mod:`.results`; the plot is drawn by :mod:`.plot`.

The page is generated whole, except the block between :data:`WHY_BEGIN` and :data:`WHY_END`:
the explanations of missed targets are written by hand there, and kept when the page is made
again from new results.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cells import TIMES, integer, mib, num, ratio
from .goals import targets_table, why_seed
from .growth import growth_table, render_growth_plot
from .plot import render_plot
from .results import (
    Result,
    drivers_of,
    load_results,
    ok,
    parts_of,
    peers_of,
    pick,
    run_of,
    sizes_of,
)

__all__ = [
    "TIMES",
    "WHY_BEGIN",
    "WHY_END",
    "load_results",
    "render_markdown",
    "render_plot",
    "write_report",
]

WHY_BEGIN = "<!-- why:begin (kept when the page is regenerated) -->"
WHY_END = "<!-- why:end -->"


def _missing(run: Result | None) -> str:
    """The cell of a run that failed, or was not run."""
    return "failed" if run else "—"


def _recall(run: Result | None, workload: str) -> str:
    if not ok(run):
        return _missing(run)
    return num(pick(run, "workloads", workload, "recall_at_k"), 3)


def _pair(run: Result | None, workload: str) -> str:
    w = pick(run, "workloads", workload)
    if not ok(run):
        return _missing(run)
    if w is None:
        return "n/a"
    return f"{num(w['p50_ms'])} / {num(w['p95_ms'])}"


# ---------------------------------------------------------------------- the tables
Show = Callable[[Result | None], str]
Value = Callable[[Result | None], float | None]
#: (label, the cell of a run, the number the ratio compares or None, higher is better)
Row = tuple[str, Show, Value | None, bool]

ROWS: list[Row] = [
    (
        "ingest, memories/s (`store_many` / `add_texts` / mem0: `add` each; replayed vectors)",
        lambda r: integer(pick(r, "ingest", "per_s")) if ok(r) else _missing(r),
        lambda r: pick(r, "ingest", "per_s"),
        True,
    ),
    (
        "ingest with `SQLITE_SYNCHRONOUS=NORMAL` (sqlite; the row above: FULL), memories/s",
        lambda r: (
            integer(pick(r, "ingest_variants", "normal", "per_s"))
            if ok(r) and pick(r, "ingest_variants", "normal")
            else ""
        ),
        None,
        True,
    ),
    (
        "recall, vector: p50 / p95 ms",
        lambda r: _pair(r, "vector"),
        lambda r: pick(r, "workloads", "vector", "p50_ms"),
        False,
    ),
    (
        "recall@10, vector",
        lambda r: _recall(r, "vector"),
        None,
        True,
    ),
    (
        "recall, vector + tag + since: p50 / p95 ms",
        lambda r: _pair(r, "filtered"),
        lambda r: pick(r, "workloads", "filtered", "p50_ms"),
        False,
    ),
    (
        "recall@10, vector + tag + since",
        lambda r: _recall(r, "filtered"),
        None,
        True,
    ),
    (
        "recall, keyword: p50 / p95 ms",
        lambda r: _pair(r, "keyword"),
        lambda r: pick(r, "workloads", "keyword", "p50_ms"),
        False,
    ),
    (
        "recall, hybrid (keywords and meaning): p50 / p95 ms",
        lambda r: _pair(r, "hybrid"),
        lambda r: pick(r, "workloads", "hybrid", "p50_ms"),
        False,
    ),
    (
        "get by id: p50 / p95 ms",
        lambda r: _pair(r, "get"),
        lambda r: pick(r, "workloads", "get", "p50_ms"),
        False,
    ),
    (
        "first recall after the load, ms",
        lambda r: num(pick(r, "first_recall_ms")) if ok(r) else _missing(r),
        lambda r: pick(r, "first_recall_ms"),
        False,
    ),
    (
        "peak RSS of the process, MiB (in brackets: when the store opened)",
        lambda r: (
            f"{integer(pick(r, 'peak_rss_mb'))} ({integer(pick(r, 'rss_baseline_mb'))})"
            if ok(r)
            else _missing(r)
        ),
        lambda r: pick(r, "peak_rss_mb"),
        False,
    ),
    (
        "size on disk, MiB",
        lambda r: mib(pick(r, "disk_bytes")) if ok(r) else _missing(r),
        lambda r: pick(r, "disk_bytes"),
        False,
    ),
]


def _header(results: Result, drivers: list[str]) -> list[str]:
    cells = [""]
    for d in drivers:
        cells.append(f"**{d}**")
        for peer in peers_of(results, d):
            cells += [peer, TIMES]
    return ["| " + " | ".join(cells) + " |", "|" + "---|" * len(cells)]


def _table(results: Result, n: int, drivers: list[str]) -> list[str]:
    lines = _header(results, drivers)
    for label, show, value, higher in ROWS:
        cells = [label]
        for d in drivers:
            ours = run_of(results, d, n)
            cells.append(show(ours))
            for name in peers_of(results, d):
                peer = run_of(results, name, n)
                cells.append(show(peer))
                compare = value is not None and ok(ours) and ok(peer)
                cells.append(ratio(value(ours), value(peer), higher) if value and compare else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _mem0_method(results: Result) -> list[str]:
    """The method's bullet on mem0, when the results hold a mem0 run."""
    runs = [r for r in results.get("runs", []) if str(r.get("target", "")).startswith("mem0-")]
    if not runs:
        return []
    bulk = [r for r in runs if pick(r, "ingest", "bulk_load")]
    timed = []
    if bulk:
        first = min(int(pick(r, "ingest", "memories")) for r in bulk)
        timed = [
            f"- **mem0's ingest** is timed over its first {first:,} adds: one-by-one adds take "
            "hours at 100k (its FAISS store rewrites its whole index file on every add). The "
            "rest of the N are the same `add(infer=False)` calls, so the same records and "
            "history rows, with the vector store's inserts gathered into one `insert` per "
            "batch (not timed as ingest)."
        ]
    return [
        "- **mem0** (`Memory` of `mem0ai`, open source) is run as a user runs it: one "
        "`add(..., infer=False)` per memory (no LLM; user and metadata are per call), "
        "`search(query, filters=..., top_k=10)` with its default `threshold=0.1`, and `get` "
        "by its own id; its SQLite history database is part of it. It gets the same vectors "
        "through an embedder adapter, so storage is measured, not the model. Its search is not "
        "exact search: it over-fetches max(4 k, 60) neighbours and re-ranks them (threshold; "
        "on pgvector it mixes in full-text scores; entity boosts need spaCy, which is not "
        "installed), its pgvector store searches an HNSW index and filters after it, and its "
        "FAISS store filters the 120 nearest neighbours of the whole index, so recall@10 "
        "shows what that costs. Filters a store cannot express through mem0 are n/a (see the "
        "set-up notes).",
        *timed,
    ]


def _failures(results: Result) -> list[str]:
    lines = []
    for run in results.get("runs", []):
        if not run.get("ok"):
            error = _one_line(run.get("error"))
            lines.append(f"- {run.get('target')} at N={run.get('n'):,}: `{error}`")
    for e in results.get("embedders", []):
        if not e.get("ok"):
            lines.append(f"- embedder speed ({e.get('backend')}): `{_one_line(e.get('error'))}`")
    return lines


def _load_lines(results: Result) -> list[str]:
    """When the runs were made and at what load (each invocation, when merged)."""
    parts = parts_of(results)
    if len(parts) == 1:
        return [f"- load average when the run started: {parts[0].get('load_average')}"]
    lines = [f"- measured in {len(parts)} invocations (`memory-drivers bench --merge`):"]
    for part in parts:
        lines.append(
            f"  - {part.get('started')} to {part.get('finished')}, load average at the start "
            f"{part.get('load_average')}: {', '.join(part.get('runs', []))}"
        )
    return lines


def _one_line(text: Any) -> str:
    return " ".join(str(text).split()).replace("`", "'")


def _notes(results: Result) -> list[str]:
    seen: dict[str, list[str]] = {}
    for run in results.get("runs", []):
        if run.get("ok") and run.get("notes"):
            seen.setdefault(run["target"], run["notes"])
    return [f"- **{t}**: {'; '.join(notes)}" for t, notes in seen.items()]


def _end_to_end(results: Result, drivers: list[str]) -> list[str]:
    runs = [r for r in results.get("runs", []) if pick(r, "end_to_end")]
    if not runs:
        return []
    first = runs[0]["end_to_end"]
    lines = [
        "## Ingest end to end, with the real model",
        "",
        f"{first['memories']:,} memories into an empty store, embedded by the default model "
        f"({first.get('embedder')}), in batches of {first['batch']:,}; the model is loaded "
        "before the clock starts. The peers get the same model through an adapter (LangChain "
        "`Embeddings`, mem0 `EmbeddingBase`).",
        "",
    ]
    lines += _header(results, drivers)
    cells = ["memories/s"]

    def per_s(target: str) -> float | None:
        run = next((r for r in runs if r["target"] == target), None)
        value: float | None = pick(run, "end_to_end", "per_s")
        return value

    for d in drivers:
        a = per_s(d)
        cells.append(integer(a) if a else "—")
        for peer in peers_of(results, d):
            b = per_s(peer)
            cells += [integer(b) if b else "—", ratio(a, b, True)]
    lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _rss_method(runs: list[Result]) -> str:
    """How the runs' peak RSS was measured: from the store's opening (the high-water mark
    reset then; worker.reset_peak_rss), or, in results made before that, from the process's
    start."""
    reset = [bool(r.get("rss_from_open")) for r in runs if ok(r)]
    since_open = (
        "the high-water mark of resident memory (`VmHWM`) of the process that ran the target "
        "(one process per target and N) from the moment the store was opened: the data and "
        "vectors are loaded first, freed memory is returned to the OS (`malloc_trim`) and the "
        "mark is reset (`/proc/self/clear_refs`); in brackets, the resident memory then. Their "
        "difference is the store's share"
    )
    since_start = (
        "the high-water mark of resident memory (`VmHWM`) of the process that ran the target "
        "(one process per target and N) since it started; in brackets, the same just before "
        "the store was opened, with the data and vectors loaded (a store that stays under the "
        "peak of loading the data shows no share of its own)"
    )
    if all(reset):
        text = since_open
    elif not any(reset):
        text = since_start
    else:
        text = (
            f"for the runs that record it (`rss_from_open`), {since_open}; for the others, "
            f"{since_start}"
        )
    return (
        f"- **Peak RSS**: {text}. PostgreSQL's own memory is in its server processes and not "
        "counted."
    )


def _embedders(results: Result) -> list[str]:
    rows = [e for e in results.get("embedders", []) if e.get("ok")]
    if not rows:
        return []
    lines = [
        "## Embedding model: ONNX, int8 ONNX and PyTorch backends",
        "",
        "The default model (all-MiniLM-L6-v2) as the library builds it for each "
        "`EMBEDDING_BACKEND`: sentences per second embedding "
        f"{rows[0]['sentences']:,} memory texts at batch 32 (median of "
        f"{rows[0].get('rounds', 1)} rounds), and the latency of embedding "
        f"one query ({rows[0]['queries']} queries, one at a time). The default backend is "
        "ONNX when onnxruntime is installed; `onnx-int8` is the same export with int8 weights "
        "(an option: its vectors differ slightly, so it is a vector space of its own; its "
        "retrieval quality is in the quality section). Throughput depends on the sentences' "
        "length: tokens/sentence is their mean length in the model's tokens.",
        "",
        "| backend | class | sentences/s at batch 32 | tokens/sentence | one query p50 / p95 ms "
        "| load s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in rows:
        lines.append(
            f"| {e['backend']} | {e['class']} | {integer(e['sentences_per_s'])} | "
            f"{num(e.get('tokens_per_sentence'))} | "
            f"{num(e['query_p50_ms'])} / {num(e['query_p95_ms'])} | {num(e['load_s'])} | "
            f"{integer(e.get('peak_rss_mb'))} |"
        )
    return [*lines, ""]


# ---------------------------------------------------------------------- the page
def render_markdown(
    results: Result,
    plot_name: str | None = None,
    why: str | None = None,
    growth_plot_name: str | None = None,
) -> str:
    """The whole page. ``why``: the hand-written block to keep (else a placeholder)."""
    machine = results.get("machine", {})
    params = results.get("params", {})
    dataset = results.get("dataset", {})
    sizes = sizes_of(results)
    drivers = drivers_of(results)
    versions = results.get("versions", {})
    out: list[str] = [
        "# Benchmarks",
        "",
        "Generated by `memory-drivers bench` "
        f"(started {results.get('started', '?')}, finished {results.get('finished', '?')}). "
        "Regenerate this page from the raw results with "
        "`memory-drivers bench --report-only <results.json>`; run it again with "
        "`memory-drivers bench` (see the README's Benchmarks section).",
        "",
        "Every figure of a driver stands beside its peers, what a user would pick instead on "
        "the same backend (the LangChain vector store and, when measured, mem0), measured in "
        "the same run on the same data; "
        f"**{TIMES}** is how many times better the driver is (above 1: the driver is faster, or "
        "smaller). Latencies are medians (p50) and 95th percentiles over every query.",
        "",
        "## Machine and versions",
        "",
        f"- CPU: {machine.get('cpu', '?')}, {machine.get('cores', '?')} usable cores; "
        f"memory {num(machine.get('memory_gib'))} GiB",
        f"- OS: {machine.get('os', '?')}; Python {machine.get('python', '?')}",
        *_load_lines(results),
        "",
        "| component | version |",
        "|---|---|",
    ]
    out += [f"| {name} | {v or 'not installed'} |" for name, v in versions.items()]
    out += [
        "",
        "## Data and method",
        "",
        f"- **Memories**: N = {', '.join(f'{n:,}' for n in sizes)}; synthetic first-person "
        f"notes from a fixed vocabulary (seed {params.get('seed')}), spread over "
        f"{params.get('users')} users, 1 to 3 of {len(dataset.get('tags', []))} tags each, "
        "`created_at` over one year, importance in [0, 1].",
        f"- **Vectors**: {dataset.get('dimension')} dimensions, {dataset.get('vectors')}. The "
        "replay embedder returns a text's vector by dictionary lookup (its name is the real "
        "model's), so ingest measures storage, and recall is measured with the query vector "
        "given.",
        f"- **Ingest**: every memory through the store's bulk call (`store_many`; LangChain: "
        f"`add_texts` with ids and metadata), {params.get('batch'):,} per call, into an empty "
        "store, timed from the first call to the last (LangChain FAISS: plus `save_local`; "
        "mem0 has no bulk call: one `add` per memory). sqlite's ingest is measured with "
        "`SQLITE_SYNCHRONOUS=FULL` (each commit on disk before `store_many` returns) and, "
        "after the workloads, again into a new store with `NORMAL` (durable at the next "
        "checkpoint; a crash loses at most the last commits, never corrupts).",
        f"- **Recall**: {params.get('queries')} queries, each for a random user, top "
        f"{params.get('top_k')} within that user's memories: *vector* (the question's vector), "
        "*vector + tag + since* (also one tag, created at or after a date: about an eighth of "
        'the user\'s memories pass), *keyword* (`search="keyword"`: BM25) and *hybrid* '
        '(`search="hybrid"`, the default: BM25 and cosine fused); LangChain stores and mem0 '
        "have neither mode: n/a). A few unmeasured queries run first; the first recall after "
        "the load is shown on its own (it includes whatever a store left for later during the "
        "load).",
        "- **recall@10**: the share of the exact top 10 (numpy, over that user's vectors, with "
        "the same filter) that the store returned, averaged over the queries.",
        f"- **get**: {params.get('queries')} reads of random ids (LangChain: `get_by_ids`).",
        _rss_method(results.get("runs", [])),
        "- **Size on disk**: the store's files after it was closed (SQLite: database, WAL and "
        "FAISS file; Chroma and FAISS: their directory); PostgreSQL: the growth of "
        "`pg_database_size`. PostgreSQL databases are `ANALYZE`d after the load (not timed).",
        f"- **LangChain FAISS** filters after its search, over the `fetch_k = "
        f"{params.get('faiss_fetch_k')}` nearest neighbours of the whole index "
        f"(top k {TIMES} users {TIMES} 2): what a user of its `filter=` gets; recall@10 "
        "shows what it misses.",
        *_mem0_method(results),
        "",
    ]
    notes = _notes(results)
    if notes:
        out += ["Set-up of each target:", "", *notes, ""]
    for n in sizes:
        out += [f"## N = {n:,}", "", *_table(results, n, drivers), ""]
    failures = _failures(results)
    if failures:
        out += ["Failed jobs:", "", *failures, ""]
    if plot_name:
        out += [
            "## Recall latency against N",
            "",
            f"![recall p50 against N per target]({plot_name})",
            "",
        ]
    growth = growth_table(results)
    out += growth
    if growth and growth_plot_name:
        out += [f"![how each target grows with N]({growth_plot_name})", ""]
    out += _end_to_end(results, drivers)
    out += _embedders(results)
    out += targets_table(results)
    out += [
        "## Why",
        "",
        WHY_BEGIN,
        why if why is not None else why_seed(results),
        WHY_END,
        "",
    ]
    return "\n".join(out)


def kept_why(path: Path) -> str | None:
    """The hand-written block of an existing page, if it has one."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    match = re.search(re.escape(WHY_BEGIN) + r"\n(.*?)\n?" + re.escape(WHY_END), text, re.S)
    return match.group(1) if match else None


#: A section another command writes into the page (``bench quality``, ``bench copy``, ...):
#: ``<!-- name: written by ... -->`` up to ``<!-- /name -->``.
_SECTION = re.compile(r"<!-- (\w+): written by [^\n]*?-->.*?<!-- /\1 -->", re.S)


def kept_sections(path: Path) -> list[str]:
    """The sections other commands wrote into an existing page, in their order."""
    try:
        text = Path(path).read_text()
    except OSError:
        return []
    return [match.group(0) for match in _SECTION.finditer(text)]


def write_report(results: Result, out: Path | None, plot: Path | None) -> list[Path]:
    """Write the page (keeping its hand-written block and the sections other commands wrote
    into it) and the plot; the paths written."""
    written: list[Path] = []
    plot_name = growth_name = None
    if plot is not None:
        render_plot(results, plot)
        written.append(plot)
        plot_name = _relative(plot, out.parent if out is not None else plot.parent)
        if len(sizes_of(results)) >= 2:
            growth_plot = plot.with_name(f"{plot.stem}-growth{plot.suffix}")
            render_growth_plot(results, growth_plot)
            written.append(growth_plot)
            growth_name = _relative(growth_plot, out.parent if out is not None else plot.parent)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        text = render_markdown(results, plot_name, kept_why(out), growth_name)
        sections = kept_sections(out)
        out.write_text(text + "".join(f"\n{section}\n" for section in sections))
        written.append(out)
    return written


def _relative(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(Path(path).resolve(), Path(start).resolve())
    except ValueError:  # another drive (Windows)
        return str(Path(path).resolve())
