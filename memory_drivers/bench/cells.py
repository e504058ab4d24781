"""How the benchmark's report writes a number in a table cell."""

from __future__ import annotations

import math

__all__ = ["TIMES", "integer", "mib", "num", "ratio"]

#: The sign of the ratio columns.
TIMES = "\u00d7"


def num(value: float | None, digits: int = 3) -> str:
    """``value`` with about ``digits`` significant digits (no exponent)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def integer(value: float | None) -> str:
    return "n/a" if value is None else f"{round(value):,}"


def mib(value: float | None) -> str:
    return "n/a" if value is None else num(value / (1024 * 1024))


def ratio(ours: float | None, peer: float | None, higher_is_better: bool) -> str:
    """How many times better ours is (> 1: ours better)."""
    if ours is None or peer is None or ours <= 0 or peer <= 0:
        return "—"
    times = ours / peer if higher_is_better else peer / ours
    return f"{times:.2f}{TIMES}" if times >= 0.1 else f"{num(times, 2)}{TIMES}"
