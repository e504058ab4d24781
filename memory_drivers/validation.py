"""Argument checks shared by every driver.

Each check returns the normalized value or raises :class:`~memory_drivers.errors.ValidationError`
with a message that names the argument, says what was wrong and what is accepted. The base driver
runs them before anything is written, so a bad argument never leaves half a write behind.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, Literal, overload

from .errors import ValidationError, did_you_mean
from .models import RELATIONSHIP_TYPES, Scalar

MAX_ID_LENGTH = 255


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@overload
def identifier(value: Any, name: str, *, optional: Literal[False] = False) -> str: ...
@overload
def identifier(value: Any, name: str, *, optional: bool) -> str | None: ...
def identifier(value: Any, name: str, *, optional: bool = False) -> str | None:
    """A user id, conversation id, category, doc id, source: a non-empty string of <= 255 chars."""
    if value is None:
        if optional:
            return None
        raise ValidationError(f"{name} is required (a non-empty string)")
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, got {type(value).__name__} {_show(value)}")
    if not value.strip():
        raise ValidationError(f"{name} must not be empty or whitespace")
    if value != value.strip():
        raise ValidationError(f"{name} must not start or end with whitespace, got {_show(value)}")
    if len(value) > MAX_ID_LENGTH:
        raise ValidationError(f"{name} is {len(value)} characters long; the maximum is 255")
    return value


MEMORY_LENGTH_ADVICE = "Split it, or store it as global knowledge, which is chunked."


def content(
    value: Any,
    max_length: int,
    name: str = "content",
    *,
    setting: str = "MEMORY_MAX_CONTENT_LENGTH",
    advice: str = MEMORY_LENGTH_ADVICE,
) -> str:
    """Memory or document text: a string with something besides whitespace, within the maximum.

    ``setting`` is the variable that sets ``max_length`` and ``advice`` what to do instead; both
    go into the over-length message (the defaults are a memory's).
    """
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, got {type(value).__name__} {_show(value)}")
    if not value.strip():
        raise ValidationError(f"{name} must not be empty or whitespace")
    if len(value) > max_length:
        raise ValidationError(
            f"{name} is {len(value)} characters long; the maximum is {max_length} "
            f"({setting}). {advice}"
        )
    return value


def memory_id(value: Any, name: str = "memory_id") -> str:
    """A memory id: a UUID, returned in canonical lower-case form."""
    if not isinstance(value, str):
        raise ValidationError(
            f"{name} must be a UUID string, got {type(value).__name__} {_show(value)}"
        )
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValidationError(
            f"{name} {_show(value)} is not a valid memory id (ids are UUIDs such as "
            "'3f2b8c1e-4d5a-4b6c-9d7e-8f9a0b1c2d3e')"
        ) from None


def tags(value: Any, name: str = "tags") -> list[str]:
    """A list of distinct non-empty tags, in the order given. ``None`` is an empty list."""
    if value is None:
        return []
    if isinstance(value, str):
        raise ValidationError(
            f"{name} must be a list of strings, not a single string; did you mean [{value!r}]?"
        )
    if not isinstance(value, list | tuple | set | frozenset):
        raise ValidationError(
            f"{name} must be a list of strings, got {type(value).__name__} {_show(value)}"
        )
    seen: dict[str, None] = {}
    for tag in value:
        seen[identifier(tag, f"each of {name}") or ""] = None
    return list(seen)


def importance(value: Any, name: str = "importance") -> float:
    """A number from 0 to 1."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(
            f"{name} must be a number from 0 to 1, got {type(value).__name__} {_show(value)}"
        )
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValidationError(f"{name} must be from 0 to 1, got {value!r}")
    return float(value)


def memory_type(value: Any, allowed: Iterable[str], name: str = "memory_type") -> str:
    """One of the configured memory types."""
    if isinstance(value, str) and value in allowed:
        return value
    known = sorted(allowed)
    hint = did_you_mean(value, known) if isinstance(value, str) else ""
    raise ValidationError(
        f"{name} {_show(value)} is not a known memory type.{hint} Known: "
        f"{', '.join(known)}. Applications add types with MEMORY_EXTRA_TYPES."
    )


def json_value(value: Any, path: str) -> Any:
    """A JSON-compatible copy of ``value``: dicts with string keys, lists, finite numbers."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{path} is {value!r}; JSON has no NaN or infinity")
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(
                    f"{path} has the key {_show(key)} of type {type(key).__name__}; "
                    "JSON object keys must be strings"
                )
            out[key] = json_value(item, f"{path}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [json_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise ValidationError(
        f"{path} holds a {type(value).__name__} ({_show(value)}), which is not JSON; "
        "use strings, numbers, booleans, null, lists and objects"
    )


def metadata(value: Any, name: str = "metadata") -> dict[str, Any]:
    """A JSON object. ``None`` is an empty object."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(
            f"{name} must be a dict (a JSON object), got {type(value).__name__} {_show(value)}"
        )
    result: dict[str, Any] = json_value(value, name)
    return result


def metadata_filter(value: Any) -> dict[str, Scalar] | None:
    """Recall's ``metadata`` filter: keys mapped to scalar JSON values to compare for equality."""
    if value is None:
        return None
    checked = metadata(value, "metadata filter")
    for key, item in checked.items():
        if isinstance(item, dict | list):
            raise ValidationError(
                f"metadata filter {key!r} is a {type(item).__name__}; the filter compares "
                "scalar values (string, number, boolean, null) for equality"
            )
    return checked or None


def top_k(value: Any, name: str = "top_k") -> int:
    """A whole number >= 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(
            f"{name} must be a whole number >= 1, got {type(value).__name__} {_show(value)}"
        )
    if value < 1:
        raise ValidationError(f"{name} must be >= 1, got {value}")
    return value


def timestamp(value: Any, name: str) -> datetime:
    """A datetime (or ISO 8601 string), returned in UTC. A naive datetime is taken as UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValidationError(
                f"{name} {_show(value)} is not an ISO 8601 time such as '2026-01-31T12:00:00Z'"
            ) from None
    if not isinstance(value, datetime):
        raise ValidationError(
            f"{name} must be a datetime or an ISO 8601 string, got {type(value).__name__}"
        )
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def strength(value: Any) -> float:
    """An association strength, from 0 to 1."""
    return importance(value, "strength")


def relationship_type(value: Any) -> str:
    """One of :data:`~memory_drivers.models.RELATIONSHIP_TYPES` (case-insensitive)."""
    normalized = value.strip().upper() if isinstance(value, str) else value
    if normalized not in RELATIONSHIP_TYPES:
        hint = did_you_mean(normalized, RELATIONSHIP_TYPES) if isinstance(value, str) else ""
        raise ValidationError(
            f"relationship_type {_show(value)} is not supported.{hint} Supported: "
            f"{', '.join(RELATIONSHIP_TYPES)}"
        )
    return str(normalized)


def string_list(value: Any, name: str, check: Any) -> tuple[str, ...] | None:
    """A filter list (tags, memory types). ``None`` or an empty list means no filter."""
    if value is None:
        return None
    if isinstance(value, str):
        raise ValidationError(
            f"{name} must be a list of strings, not a single string; did you mean [{value!r}]?"
        )
    if not isinstance(value, list | tuple | set | frozenset):
        raise ValidationError(f"{name} must be a list of strings, got {type(value).__name__}")
    items = tuple(dict.fromkeys(check(item) for item in value))
    return items or None


def utcnow() -> datetime:
    """The current time in UTC."""
    return datetime.now(timezone.utc)
