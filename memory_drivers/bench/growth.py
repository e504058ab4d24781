"""How each target grows with N: the "Growth with N" table of ``docs/benchmarks.md`` and its plot.

For every pair of consecutive sizes the table gives, per measure, its growth exponent: the
``e`` in ``measure ~ N^e``, ``log(m2 / m1) / log(N2 / N1)``. The users stay the same while N
grows, so each user holds N / users memories: a recall that reads one user's memories once
grows with exponent 1 at most (0 when it does not depend on the store's size), and ingest time,
store memory and size on disk grow with 1. An exponent clearly above 1 (more than
:data:`SUPERLINEAR`) is marked: it grows faster than linearly, a defect to fix or explain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from .cells import num
from .results import Result, drivers_of, ok, peers_of, pick, run_of, sizes_of

__all__ = ["MEASURES", "SUPERLINEAR", "exponent", "growth_table", "render_growth_plot"]

#: An exponent above this is marked as growing faster than linearly (timing noise on a
#: loaded 2-core machine is easily 10-20% between runs).
SUPERLINEAR = 1.15


def _store_rss(run: Result | None) -> float | None:
    """Peak RSS of the store's process minus what it held when the store was opened (the data
    and vectors of the benchmark itself), in MiB. Results without ``rss_from_open`` counted
    the peak from the process's start, so a store under the peak of loading the data read 0."""
    peak, base = pick(run, "peak_rss_mb"), pick(run, "rss_baseline_mb")
    if peak is None or base is None:
        return None
    return max(float(peak) - float(base), 0.0)


def _ingest_seconds(run: Result | None) -> float | None:
    """The time to load all N; none when only part of the load was timed (mem0: its first
    adds, the rest by a faster path), whose growth would say nothing."""
    value = pick(run, "ingest", "seconds")
    timed, n = pick(run, "ingest", "memories"), pick(run, "n")
    if value is None or (timed is not None and n is not None and int(timed) < int(n)):
        return None
    return float(value)


#: (label, the value of a run, unit shown in the plot); every measure is "lower is better".
MEASURES: list[tuple[str, Callable[[Result | None], float | None], str]] = [
    ("vector recall p50", lambda r: pick(r, "workloads", "vector", "p50_ms"), "ms"),
    ("keyword recall p50", lambda r: pick(r, "workloads", "keyword", "p50_ms"), "ms"),
    ("ingest time", _ingest_seconds, "s"),
    ("store's peak RSS", _store_rss, "MiB"),
    (
        "size on disk",
        lambda r: None if pick(r, "disk_bytes") is None else pick(r, "disk_bytes") / 2**20,
        "MiB",
    ),
]


def exponent(n1: int, v1: float | None, n2: int, v2: float | None) -> float | None:
    """``e`` in ``v ~ N^e`` between two sizes (None when a value is missing or not positive)."""
    if v1 is None or v2 is None or v1 <= 0 or v2 <= 0 or n1 == n2:
        return None
    return math.log(v2 / v1) / math.log(n2 / n1)


def _cell(value: float | None, e: float | None) -> str:
    if value is None:
        return "—"
    shown = num(value)
    if e is None:
        return shown
    mark = " **(faster than linear)**" if e > SUPERLINEAR else ""
    return f"{shown} (N^{e:.2f}){mark}"


def _targets(results: Result) -> list[str]:
    names: list[str] = []
    for driver in drivers_of(results):
        names += [driver, *peers_of(results, driver)]
    return names


def growth_table(results: Result) -> list[str]:
    """The section's lines: one row per target and size (from the second size on, each cell
    also shows the exponent from the size before); empty when the results hold one size."""
    sizes = sizes_of(results)
    if len(sizes) < 2:
        return []
    lines = [
        "## Growth with N",
        "",
        "Each measure at each N, and in brackets its growth exponent from the N before (`e` in "
        "measure ~ N^e). The 100 users stay, so a user's memories grow with N: a recall that "
        "reads one user's candidates once grows with an exponent of 1 at most, ingest time, the "
        "store's memory (peak RSS minus the process's before the store was opened) and size on "
        f"disk with 1 (ingest time only where all N were timed: not mem0's). Above {SUPERLINEAR} "
        "is marked as faster than linear (and explained in Why).",
        "",
        "| target | N | " + " | ".join(label for label, _, _ in MEASURES) + " |",
        "|---|---:|" + "---:|" * len(MEASURES),
    ]
    for target in _targets(results):
        before: tuple[int, Result | None] | None = None
        for n in sizes:
            run = run_of(results, target, n)
            if not ok(run):
                continue
            cells = []
            for _, value, _ in MEASURES:
                v = value(run)
                e = exponent(before[0], value(before[1]), n, v) if before else None
                cells.append(_cell(v, e))
            lines.append(f"| {target} | {n:,} | " + " | ".join(cells) + " |")
            before = (n, run)
    return [*lines, ""]


def render_growth_plot(results: Result, path: Path) -> None:
    """One panel per measure, one line per target, against N (log scales)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    sizes = sizes_of(results)
    colors = {target: f"C{i % 10}" for i, target in enumerate(_targets(results))}
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(4 * len(MEASURES), 4.4))
    for ax, (label, value, unit) in zip(axes, MEASURES, strict=True):
        for target in _targets(results):
            points = [(n, value(run_of(results, target, n))) for n in sizes]
            shown = [(n, v) for n, v in points if v is not None and v > 0]
            if shown:
                xs, ys = zip(*shown, strict=True)
                style = "-" if target in drivers_of(results) else "--"
                ax.plot(xs, ys, style, marker="o", color=colors[target], label=target)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_title(f"{label} ({unit})")
        ax.set_xlabel("N (memories)")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=8, frameon=False)
    fig.suptitle("How each target grows with N (log scales; a straight line of slope 1 is linear)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
