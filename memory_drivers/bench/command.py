"""``memory-drivers bench``: run the benchmark (or only remake its report) from parsed options."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .dataset import default_cache_dir
from .report import load_results, write_report
from .results import merge_results
from .runner import BenchConfig, run_bench

__all__ = ["parse_sizes", "run"]

_SUFFIXES = {"k": 1_000, "m": 1_000_000}


def parse_sizes(text: str) -> list[int]:
    """``"10000,100k,1M"`` -> ``[10000, 100000, 1000000]``."""
    sizes = []
    for part in text.split(","):
        part = part.strip().lower().replace("_", "")
        if not part:
            continue
        factor = _SUFFIXES.get(part[-1], 1)
        number = part[:-1] if part[-1] in _SUFFIXES else part
        try:
            value = float(number) * factor
        except ValueError:
            raise ValueError(f"not a number of memories: {part!r}") from None
        if value < 1 or value != int(value):
            raise ValueError(f"not a number of memories: {part!r}")
        sizes.append(int(value))
    if not sizes:
        raise ValueError("give at least one N, e.g. --n 10000,100000")
    return sizes


def _names(text: str) -> list[str]:
    return [part.strip().lower() for part in text.split(",") if part.strip()]


def config_from_args(args: argparse.Namespace, progress: bool) -> BenchConfig:
    return BenchConfig(
        sizes=parse_sizes(args.n),
        drivers=_names(args.drivers),
        peers=_names(args.peers),
        queries=args.queries,
        users=args.users,
        seed=args.seed,
        batch=args.batch,
        end_to_end=args.end_to_end,
        vectors=args.vectors,
        real_vectors=parse_sizes(args.real_vectors)[0] if args.real_vectors else None,
        embedder_speed=args.embedder_speed,
        faiss_fetch_k=args.faiss_fetch_k,
        pg_url=args.pg_url,
        cache_dir=Path(args.cache_dir) if args.cache_dir else default_cache_dir(),
        timeout=args.timeout,
        progress=progress,
    )


def _optional_path(value: str | None) -> Path | None:
    return None if value in (None, "", "-") else Path(value)


def _plot_beside(out: Path | None) -> Path | None:
    """The recall plot's default file: ``<report>-recall.png`` beside the report (so a run
    reported elsewhere never rewrites the page's own plot); none without a report."""
    return None if out is None else out.with_name(f"{out.stem}-recall.png")


def run(args: argparse.Namespace, *, json_output: bool = False, progress: bool = False) -> int:
    """Run what ``args`` ask; the exit code (1 when a job of the run failed: the report is
    written anyway)."""
    out = _optional_path(args.out)
    plot = _optional_path(args.plot) if args.plot is not None else _plot_beside(out)
    if args.report_only:
        results = load_results(Path(args.report_only))
        results_path: Path | None = Path(args.report_only)
    else:
        try:
            config = config_from_args(args, progress)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        results_path = _optional_path(args.results)
        if args.merge and results_path is None:
            print("error: --merge needs --results (the file to add this run to)", file=sys.stderr)
            return 2
        earlier = None
        if args.merge and results_path is not None and results_path.exists():
            try:
                earlier = load_results(results_path)
            except (ValueError, json.JSONDecodeError) as exc:
                print(f"error: cannot merge into {results_path}: {exc}", file=sys.stderr)
                return 2
        results = run_bench(config)
        if earlier is not None:
            results = merge_results(earlier, results)
        if results_path is not None:
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    written = write_report(results, out, plot)
    failed = [r for r in [*results["runs"], *results.get("embedders", [])] if not r.get("ok")]
    summary: dict[str, Any] = {
        "results": str(results_path) if results_path else None,
        "written": [str(p) for p in written],
        "failed_jobs": len(failed),
    }
    if json_output:
        print(json.dumps(summary, indent=2))
    else:
        for path in written:
            print(f"wrote {path}")
        if results_path is not None and not args.report_only:
            print(f"wrote {results_path}")
        if failed:
            print(f"{len(failed)} job(s) failed; see the report", file=sys.stderr)
    return 1 if failed and not args.report_only else 0
