"""The raw results of a benchmark run (``results.json``), and how the report and the plot read
them: one run per target and N."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .targets import PEERS

__all__ = ["Result", "drivers_of", "load_results", "ok", "peers_of", "pick", "run_of", "sizes_of"]

Result = dict[str, Any]


def load_results(path: Path) -> Result:
    results: Result = json.loads(Path(path).read_text())
    if not isinstance(results, dict) or "runs" not in results:
        raise ValueError(f"{path} does not hold the results of memory-drivers bench")
    return results


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
