"""The raw results of a benchmark run (``results.json``), and how the report and the plot read
them: one run per target and N."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .targets import PEERS

__all__ = [
    "Result",
    "drivers_of",
    "load_results",
    "merge_results",
    "ok",
    "parts_of",
    "peers_of",
    "pick",
    "run_of",
    "sizes_of",
]

Result = dict[str, Any]


def load_results(path: Path) -> Result:
    results: Result = json.loads(Path(path).read_text())
    if not isinstance(results, dict) or "runs" not in results:
        raise ValueError(f"{path} does not hold the results of memory-drivers bench")
    return results


def parts_of(results: Result) -> list[Result]:
    """The invocations the results come from: when, at what load, which targets and sizes."""
    parts = results.get("parts")
    if parts:
        return list(parts)
    runs = results.get("runs", [])
    return [
        {
            "started": results.get("started"),
            "finished": results.get("finished"),
            "load_average": results.get("machine", {}).get("load_average"),
            "runs": sorted({f"{r.get('target')} N={r.get('n')}" for r in runs}),
        }
    ]


def merge_results(old: Result, new: Result) -> Result:
    """``new``'s runs added to ``old``'s: a run of the same target and N, or the embedder speed of
    the same backend, is replaced by the new one. Machine, versions and parameters are the new
    run's; ``parts`` keeps when each invocation ran and at what load."""
    fresh = {(r.get("target"), r.get("n")) for r in new.get("runs", [])}
    backends = {e.get("backend") for e in new.get("embedders", [])}
    merged = dict(new)
    merged["runs"] = [
        r for r in old.get("runs", []) if (r.get("target"), r.get("n")) not in fresh
    ] + list(new.get("runs", []))
    merged["embedders"] = [
        e for e in old.get("embedders", []) if e.get("backend") not in backends
    ] + list(new.get("embedders", []))
    merged["started"] = min(str(old.get("started", "")), str(new.get("started", ""))) or None
    merged["finished"] = new.get("finished")
    replaced = {f"{t} N={n}" for t, n in fresh}
    kept = []
    for part in parts_of(old):
        runs = [r for r in part.get("runs", []) if r not in replaced]
        if runs:
            kept.append({**part, "runs": runs})
    merged["parts"] = kept + parts_of(new)
    return merged


# ---------------------------------------------------------------------- lookups
def run_of(results: Result, target: str, n: int) -> Result | None:
    for run in results.get("runs", []):
        if run.get("target") == target and run.get("n") == n:
            return dict(run)
    return None


def ok(run: Result | None) -> bool:
    return bool(run and run.get("ok"))


def pick(run: Result | None, *path: str) -> Any:
    value: Any = run if ok(run) else None
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def sizes_of(results: Result) -> list[int]:
    return sorted({int(r["n"]) for r in results.get("runs", []) if "n" in r})


def drivers_of(results: Result) -> list[str]:
    present = {r.get("target") for r in results.get("runs", [])}
    return [d for d in PEERS if d in present or present.intersection(PEERS[d])]


def peers_of(results: Result, driver: str) -> list[str]:
    """The peers of ``driver`` the results hold runs of, in report order."""
    present = {r.get("target") for r in results.get("runs", [])}
    return [p for p in PEERS[driver] if p in present]
