"""The plot of ``docs/benchmarks.md``: recall latency against N, ours against the peers."""

from __future__ import annotations

from pathlib import Path

from .results import Result, drivers_of, pick, run_of, sizes_of
from .targets import PEERS

__all__ = ["render_plot"]


def render_plot(results: Result, path: Path) -> None:
    """Recall p50 against N, one line per target, one panel per workload (log scales)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

    sizes = sizes_of(results)
    workloads = [("vector", "vector"), ("filtered", "vector + tag + since"), ("keyword", "keyword")]
    fig, axes = plt.subplots(1, len(workloads), figsize=(15, 4.8), sharey=True)
    colors = dict(zip(PEERS, ("tab:blue", "tab:orange", "tab:green"), strict=True))
    for ax, (workload, title) in zip(axes, workloads, strict=True):
        for driver in drivers_of(results):
            styles = (("-", "o"), ("--", "s"), (":", "^"))  # ours, then each family of peers
            for target, (style, marker) in zip((driver, *PEERS[driver]), styles, strict=True):
                points = _series(results, target, workload)
                if points:
                    xs, ys = zip(*points, strict=True)
                    ax.plot(xs, ys, style, marker=marker, color=colors[driver], label=target)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        if len(sizes) == 1:
            ax.set_xlim(sizes[0] / 2, sizes[0] * 2)
        ax.set_title(f"recall: {title}")
        ax.set_xlabel("N (memories)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("p50 latency, ms (log)")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=6, frameon=False)
    fig.suptitle(
        "memory-drivers (solid), their LangChain peers (dashed) and mem0 (dotted): recall p50, "
        "top 10"
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _series(results: Result, target: str, workload: str) -> list[tuple[int, float]]:
    points = []
    for n in sizes_of(results):
        value = pick(run_of(results, target, n), "workloads", workload, "p50_ms")
        if value:
            points.append((n, float(value)))
    return points
