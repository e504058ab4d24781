"""The issue's speed targets, checked against a run's results (the report's "Targets" table).

Stated for 2 cores with the query vector given, at N = 100,000 (and, for recall, N = 1,000,000):
see issue 16 and docs/benchmarks.md. Each row says what was measured, whether it meets the
target and, when not, how many times short it is.
"""

from __future__ import annotations

from .cells import TIMES, num, ratio
from .results import Result, peers_of, pick, run_of, sizes_of
from .targets import PEERS

__all__ = ["TARGET_N", "TargetRow", "targets", "targets_table", "why_seed"]

#: The N most targets are stated for, and the N of the scale targets.
TARGET_N = 100_000
SCALE_N = 1_000_000

#: (target, measured, met, gap): met is None when not measured; gap is how many times better the
#: figure must get (None when met).
TargetRow = tuple[str, str, bool | None, float | None]

P50 = ("workloads", "vector", "p50_ms")


def _target_n(results: Result) -> int | None:
    sizes = sizes_of(results)
    if not sizes:
        return None
    return TARGET_N if TARGET_N in sizes else max(sizes)


def targets(results: Result) -> list[TargetRow]:
    """Every target the results can be checked against."""
    n = _target_n(results)
    rows: list[TargetRow] = []
    if n is None:
        return rows

    def check(label: str, value: float | None, limit: float, at_most: bool, unit: str) -> None:
        if value is None:
            rows.append((label, "not measured", None, None))
            return
        met = value <= limit if at_most else value >= limit
        gap = None if met or value <= 0 else (value / limit if at_most else limit / value)
        rows.append((label, f"{num(value)} {unit}".strip(), met, gap))

    def run(target: str, at: int = n) -> Result | None:
        return run_of(results, target, at)

    check("sqlite: recall p50 ≤ 0.6 ms", pick(run("sqlite"), *P50), 0.6, True, "ms")
    check(
        "sqlite: recall@10 ≥ 0.95",
        pick(run("sqlite"), "workloads", "vector", "recall_at_k"),
        0.95,
        False,
        "",
    )
    check(
        "sqlite: store_many ≥ 10,000/s", pick(run("sqlite"), "ingest", "per_s"), 10_000, False, "/s"
    )
    check(
        "sqlite: first recall after the load ≤ 50 ms",
        pick(run("sqlite"), "first_recall_ms"),
        50.0,
        True,
        "ms",
    )
    check("pgvector: recall p50 ≤ 5 ms", pick(run("pgvector"), *P50), 5.0, True, "ms")
    check(
        "pgvector: store_many ≥ 5,000/s",
        pick(run("pgvector"), "ingest", "per_s"),
        5_000,
        False,
        "/s",
    )
    check("chroma (embedded): recall p50 ≤ 5 ms", pick(run("chroma"), *P50), 5.0, True, "ms")
    if SCALE_N in sizes_of(results):
        scale = f"at N = {SCALE_N:,}"
        check(
            f"sqlite {scale}: recall p50 ≤ 1.5 ms",
            pick(run("sqlite", SCALE_N), *P50),
            1.5,
            True,
            "ms",
        )
        check(
            f"pgvector {scale}: recall p50 ≤ 5 ms",
            pick(run("pgvector", SCALE_N), *P50),
            5.0,
            True,
            "ms",
        )
    for d, name in ((driver, p) for driver in PEERS for p in peers_of(results, driver)):
        ours, peer = run(d), run(name)
        for what, path, higher in (
            ("recall p50", P50, False),
            ("ingest", ("ingest", "per_s"), True),
        ):
            a, b = pick(ours, *path), pick(peer, *path)
            label = f"{d}: {what} at least as good as {name}"
            if a is None or b is None:
                if ours is not None or peer is not None:
                    rows.append((label, "not measured", None, None))
                continue
            unit = "ms" if not higher else "/s"
            met = a >= b if higher else a <= b
            gap = None if met or min(a, b) <= 0 else (b / a if higher else a / b)
            rows.append((label, f"{num(a)} vs {num(b)} {unit} ({ratio(a, b, higher)})", met, gap))
    default = _default_embedder(results)
    check(
        "default embedder: ≥ 500 sentences/s at batch 32",
        pick(default, "sentences_per_s"),
        500,
        False,
        "/s",
    )
    check("default embedder: ≤ 4 ms for one query", pick(default, "query_p50_ms"), 4.0, True, "ms")
    return rows


def _default_embedder(results: Result) -> Result | None:
    rows = [e for e in results.get("embedders", []) if e.get("ok")]
    for backend in ("onnx", "torch"):  # the library's default order
        for e in rows:
            if e.get("backend") == backend:
                return dict(e)
    return None


def targets_table(results: Result) -> list[str]:
    """The "Targets" section of the page (nothing when the results hold no run)."""
    n = _target_n(results)
    if n is None:
        return []
    where = (
        f"N = {n:,}"
        if n == TARGET_N
        else f"N = {n:,} (**not** the {TARGET_N:,} the targets are stated for)"
    )
    lines = [
        "## Targets",
        "",
        f"The issue's targets (2 cores, {TARGET_N:,} memories unless a row says otherwise, query "
        f"vector given), checked at {where}. Recall latency is the vector workload's p50.",
        "",
        "| target | measured | met? (if not: how many times short) |",
        "|---|---|---|",
    ]
    for label, measured, met, gap in targets(results):
        if met is None:
            state = "—"
        elif met:
            state = "yes"
        else:
            short = f": {num(gap, 3)}{TIMES} short" if gap else ""
            state = f"**no**{short} (see Why)"
        lines.append(f"| {label} | {measured} | {state} |")
    return [*lines, ""]


def why_seed(results: Result) -> str:
    """The placeholder of the hand-written Why block: one line per missed target."""
    missed = [label for label, _, met, _ in targets(results) if met is False]
    lines = [
        "_To be written after the final run: for each target missed above, and each row where "
        "a driver is slower than its peer, why (what the driver does that the peer does not, "
        "or what the peer gives up)._",
        "",
    ]
    lines += [f"- {label}: _why?_" for label in missed]
    return "\n".join(lines)
