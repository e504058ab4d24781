"""AutoMem's request parameters, parsed as AutoMem parses them: tags, numbers, times, ids,
embeddings, and the tag filters of ``GET /recall`` (turned into driver filters where they can be).

Every refusal is an :class:`ApiError` with AutoMem's status code and message.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from .. import automem_wire as wire
from ..models import Scalar

__all__ = ["ApiError", "TagFilter", "narrow"]


class ApiError(Exception):
    """An AutoMem error answer: ``{"status": "error", "code": status, "message": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------- AutoMem's parsing
def normalize_tags(value: Any) -> list[str]:
    """Tags of a stored memory: a list of strings or one string (AutoMem's ``normalize_tags``)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(tag, str) for tag in value):
        return list(value)
    raise ApiError(400, "'tags' must be a list of strings or a single string")


def normalize_tag_list(raw: Any) -> list[str]:
    """Tags of a filter or an update: a comma-separated string or a list; blanks dropped."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if isinstance(raw, list | tuple):
        return [item.strip() for item in raw if isinstance(item, str) and item.strip()]
    return []


def split_multi(values: Sequence[str]) -> list[str]:
    """Repeated parameters whose values may also be comma-separated (``exclude_tags``)."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def coerce_unit(value: Any, name: str = "importance", default: float = 0.5) -> float:
    """A number from 0 to 1 (AutoMem's ``coerce_importance``; NaN is refused too)."""
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"'{name}' must be a number") from None
    if not math.isfinite(number) or number < 0 or number > 1:
        raise ApiError(400, f"'{name}' must be between 0 and 1")
    return number


class TimeOutOfRange(ValueError):
    """A well-formed time that does not fit in the years 1 to 9999 once in UTC."""


def normalizetimestamp(raw: Any) -> datetime:
    """An ISO 8601 time in UTC (naive means UTC); ``ValueError`` with AutoMem's message, or
    :class:`TimeOutOfRange` (``0001-01-01T00:00:00+01:00`` is in year 0 in UTC)."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("Timestamp must be a non-empty ISO formatted string")
    candidate = raw.strip()
    if candidate.endswith("Z"):
        candidate = candidate[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        raise ValueError("Invalid ISO timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:
        raise TimeOutOfRange(f"{raw.strip()!r} is outside the years 1 to 9999 in UTC") from None


def parse_time_expression(
    expression: str | None, now: datetime | None = None
) -> tuple[datetime | None, datetime | None]:
    """AutoMem's ``time_query`` phrases as a (start, end) window; (None, None) when unknown.

    ``today``, ``yesterday``, ``last 24 hours``, ``last 48 hours``, ``this week``, ``last
    week``, ``this month``, ``last month``, ``last N days``, ``this year``, ``last year``
    (``past`` works for ``last``). Weeks start on Monday; times are UTC. A window reaching
    outside the years 1 to 9999 (``last 999999 days``) is :class:`ApiError` 400.
    """
    if not expression or not expression.strip():
        return None, None
    expr = expression.strip().lower()
    now = now or datetime.now(timezone.utc)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if expr in ("today", "this day"):
        return day, day + timedelta(days=1)
    if expr == "yesterday":
        return day - timedelta(days=1), day
    for hours in (24, 48):
        if expr in (f"last {hours} hours", f"past {hours} hours"):
            return now - timedelta(hours=hours), now
    week = day - timedelta(days=now.weekday())
    if expr == "this week":
        return week, week + timedelta(days=7)
    if expr in ("last week", "past week"):
        return week - timedelta(days=7), week
    month = day.replace(day=1)
    next_month = month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)
    if expr == "this month":
        return month, next_month
    if expr in ("last month", "past month"):
        previous = month.replace(
            year=month.year - (month.month == 1), month=(month.month - 2) % 12 + 1
        )
        return previous, month
    words = expr.split()
    if len(words) == 3 and words[0] in ("last", "past") and words[2] == "days":
        try:
            days = int(words[1])
        except ValueError:
            return None, None
        try:
            return now - timedelta(days=days), now
        except OverflowError:
            raise ApiError(
                400, f"'time_query' {expression.strip()!r} reaches outside the years 1 to 9999"
            ) from None
    year = month.replace(month=1)
    if expr == "this year":
        return year, year.replace(year=year.year + 1) if year.year < 9999 else now
    if expr in ("last year", "past year"):
        return year.replace(year=year.year - 1), year
    return None, None


def parse_bool(raw: Any, default: bool = False) -> bool:
    if raw is None:
        return default
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "off", "n"):
        return False
    return default


def parse_int(raw: Any, default: int, low: int, high: int) -> int:
    try:
        value = int(raw) if raw is not None else default
    except (TypeError, ValueError):
        value = default
    return max(low, min(value, high))


def valid_memory_id(value: str, message: str = "memory_id must be a valid UUID") -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise ApiError(400, message) from None


# ---------------------------------------------------------------------- tag filters
@dataclass
class TagFilter:
    """AutoMem's tag filtering: ``tags`` with ``tag_mode`` any/all and ``tag_match``
    exact/prefix, and ``exclude_tags``; all case-insensitive, as AutoMem does it."""

    tags: list[str] = field(default_factory=list)
    mode: str = "any"
    match: str = "prefix"
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tags = [t.strip().lower() for t in self.tags if t.strip()]
        self.exclude = [t.strip().lower() for t in self.exclude if t.strip()]

    def passes(self, tags: Sequence[str]) -> bool:
        lowered = [t.strip().lower() for t in tags if t.strip()]
        if self.tags:
            pool = set(lowered) if self.match == "exact" else set(wire.tag_prefixes(lowered))
            test = all if self.mode == "all" else any
            if not test(wanted in pool for wanted in self.tags):
                return False
        return not any(tag.startswith(excluded) for excluded in self.exclude for tag in lowered)

    def required(self) -> list[tuple[str, Any]]:
        """Convention tags every match must carry, parsed (only those can narrow the search
        in the driver; everything is checked again by :meth:`passes`)."""
        if not self.tags or (self.mode != "all" and len(self.tags) > 1):
            return []
        return [parsed for parsed in map(wire.parse_tag, self.tags) if parsed is not None]


class NoMatch(Exception):
    """Raised while narrowing a filter when two required tags contradict each other."""


#: Convention tags that :func:`narrow` turns into driver filters completely.
NARROWING = frozenset({"memory", "user", "conv", "type", "tag", "meta"})


def narrow(required: Iterable[tuple[str, Any]], memory_types: Sequence[str]) -> dict[str, Any]:
    """The driver filter (``MemoryFilter`` fields) that required convention tags imply. Kinds
    outside :data:`NARROWING` (an id) narrow nothing; they are checked tag by tag."""
    fields: dict[str, Any] = {}

    def put(name: str, value: Any) -> None:
        if name in fields and fields[name] != value:
            raise NoMatch
        fields[name] = value

    tags: list[str] = []
    metadata: dict[str, Scalar] = {}
    for kind, value in required:
        if kind == "user":
            put("user_id", value)
        elif kind == "conv":
            put("conversation_id", value)
        elif kind == "type":
            if value not in memory_types:
                raise NoMatch
            put("memory_types", (value,))
        elif kind == "tag":
            tags.append(value)
        elif kind == "meta":
            key, scalar = value
            if key in metadata and wire.meta_tag(key, metadata[key]) != wire.meta_tag(key, scalar):
                raise NoMatch
            metadata[key] = scalar
        elif kind in ("knowledge", "doc", "category", "store-info"):
            raise NoMatch  # memories never carry these
    if tags:
        fields["tags"] = tuple(dict.fromkeys(tags))
        fields["tag_mode"] = "all"
    if metadata:
        fields["metadata"] = metadata
    return fields


def reserved_tag(tag: str) -> bool:
    return tag.strip().lower().startswith(wire.RESERVED_PREFIX)


def timestamp(raw: Any, name: str, prefix: str | None = None) -> datetime:
    """The time in the parameter or field ``name``; :class:`ApiError` 400 saying what is wrong
    (after ``prefix``, default ``"Invalid <name>: "``), naming ``name`` when out of range."""
    try:
        return normalizetimestamp(raw)
    except TimeOutOfRange as exc:
        raise ApiError(400, f"'{name}' is out of range: {exc}") from None
    except ValueError as exc:
        raise ApiError(400, f"{f'Invalid {name}: ' if prefix is None else prefix}{exc}") from None


def block_time(block: Mapping[str, Any], key: str) -> datetime | None:
    try:
        return normalizetimestamp(block.get(key))
    except ValueError:
        return None


def from_type(raw: str | None, types: Sequence[str], settings: Any) -> str:
    return wire.from_automem_type(raw, types, settings.memory_default_type)


def coerce_embedding(value: Any, dimension: int) -> list[float] | None:
    """A client's embedding: a list of numbers or a comma-separated string, of the store's
    dimension (AutoMem's ``coerce_embedding``)."""
    if value is None or value == "":
        return None
    if isinstance(value, list):
        parts: list[Any] = value
    elif isinstance(value, str):
        parts = [part.strip() for part in value.split(",") if part.strip()]
    else:
        raise ApiError(400, "Embedding must be a list of floats or a comma-separated string")
    if len(parts) != dimension:
        raise ApiError(400, f"Embedding must contain exactly {dimension} values")
    try:
        numbers = [float(part) for part in parts]
    except (TypeError, ValueError):
        raise ApiError(400, "Embedding must contain numeric values") from None
    if not all(math.isfinite(n) for n in numbers):
        raise ApiError(400, "Embedding must contain numeric values")
    return numbers


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
