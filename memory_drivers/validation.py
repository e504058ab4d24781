"""Argument checks shared by every driver.

Each check returns the normalized value or raises :class:`~memory_drivers.errors.ValidationError`
with a message that names the argument, says what was wrong and what is accepted. The base driver
runs them before anything is written, so a bad argument never leaves half a write behind.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, overload

from .errors import ValidationError, did_you_mean
from .models import RELATIONSHIP_TYPES, Scalar

if TYPE_CHECKING:
    from .config import Settings

MAX_ID_LENGTH = 255

#: Keys of a metadata object (top level): Chroma 1.5.9 accepts a record of more than 5,461
#: scalar keys, then fails every later write of the store ("Error in compaction"), and the
#: chroma driver gives each scalar metadata value a key of its own.
MAX_METADATA_KEYS = 5_000

#: Integers every backend stores and compares exactly: the signed 64-bit range.
MIN_INTEGER = -(2**63)
MAX_INTEGER = 2**63 - 1


@dataclass(frozen=True)
class Limits:
    """The size limits of docs/semantics.md ("Limits"), the same on every driver.

    The defaults are the settings' defaults; :meth:`from_settings` reads a driver's.
    """

    max_tags: int = 100
    max_tag_length: int = 255
    max_metadata_bytes: int = 16_384
    max_metadata_depth: int = 10
    max_filter_tags: int = 100
    max_exclude_tags: int = 100
    max_filter_metadata_keys: int = 50
    max_query_terms: int = 100
    max_top_k: int = 10_000

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_tags=settings.memory_max_tags,
            max_tag_length=settings.memory_max_tag_length,
            max_metadata_bytes=settings.memory_max_metadata_bytes,
            max_metadata_depth=settings.memory_max_metadata_depth,
            max_filter_tags=settings.recall_max_tags,
            max_exclude_tags=settings.recall_max_exclude_tags,
            max_filter_metadata_keys=settings.recall_max_metadata_keys,
            max_query_terms=settings.keyword_max_query_terms,
            max_top_k=settings.recall_max_top_k,
        )


DEFAULT_LIMITS = Limits()

# NUL (PostgreSQL cannot store it in text) and lone UTF-16 surrogates (not Unicode text: UTF-8
# cannot encode them, so SQLite, PostgreSQL and JSON answers cannot either).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def plain_text(value: str, name: str) -> str:
    """``value`` when every backend can store it: no NUL character, no lone surrogate."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return value
    if found.group() == "\x00":
        raise ValidationError(
            f"{name} holds a NUL character (\\x00) at index {found.start()}, which not every "
            "backend can store (PostgreSQL cannot); remove it"
        )
    raise ValidationError(
        f"{name} holds a UTF-16 surrogate ({found.group()!r}) at index {found.start()}, "
        "which is not valid Unicode text and cannot be encoded as UTF-8; decode the text "
        "properly (for example bytes.decode('utf-8', errors='replace'))"
    )


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clean(value: Any, max_length: int) -> bool:
    """Whether ``value`` passes :func:`identifier` as it is (the common case, in one test;
    each part answers as a check of :func:`identifier` would): a plain string, not too long,
    starting and ending with something besides whitespace (so not empty: ``str.strip``
    strips what ``str.isspace`` calls whitespace), storable."""
    return (
        type(value) is str
        and 0 < len(value) <= max_length
        and not value[0].isspace()
        and not value[-1].isspace()
        and _UNSTORABLE.search(value) is None
    )


@overload
def identifier(
    value: Any,
    name: str,
    *,
    optional: Literal[False] = False,
    max_length: int = ...,
    setting: str | None = ...,
) -> str: ...
@overload
def identifier(
    value: Any, name: str, *, optional: bool, max_length: int = ..., setting: str | None = ...
) -> str | None: ...
def identifier(
    value: Any,
    name: str,
    *,
    optional: bool = False,
    max_length: int = MAX_ID_LENGTH,
    setting: str | None = None,
) -> str | None:
    """A user id, conversation id, category, doc id, source: a non-empty string of <= 255 chars.

    ``max_length`` and ``setting`` (the variable that sets it, for the message) change the
    maximum; tags use ``MEMORY_MAX_TAG_LENGTH``.
    """
    if _clean(value, max_length):
        return value  # type: ignore[no-any-return]  # _clean: a str
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
    if len(value) > max_length:
        where = f" ({setting})" if setting else ""
        raise ValidationError(
            f"{name} is {len(value)} characters long; the maximum is {max_length}{where}"
        )
    return plain_text(value, name)


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
    return plain_text(value, name)


#: A UUID in the canonical form (lower-case hex, hyphens 8-4-4-4-12), as ``str(uuid.UUID(...))``
#: writes every UUID: such an id is its own canonical form.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def memory_id(value: Any, name: str = "memory_id") -> str:
    """A memory id: a UUID, returned in canonical lower-case form."""
    if type(value) is str and _CANONICAL_UUID.fullmatch(value) is not None:
        return value  # already what str(uuid.UUID(value)) gives
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


def tag(value: Any, name: str, limits: Limits = DEFAULT_LIMITS) -> str:
    """One tag: a non-empty string of at most ``MEMORY_MAX_TAG_LENGTH`` characters."""
    return str(
        identifier(value, name, max_length=limits.max_tag_length, setting="MEMORY_MAX_TAG_LENGTH")
    )


def tags(value: Any, name: str = "tags", limits: Limits = DEFAULT_LIMITS) -> list[str]:
    """A list of distinct non-empty tags, in the order given, at most ``MEMORY_MAX_TAGS``.
    ``None`` is an empty list."""
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
    longest = limits.max_tag_length
    for item in value:
        seen[item if _clean(item, longest) else tag(item, f"each of {name}", limits)] = None
    if len(seen) > limits.max_tags:
        raise ValidationError(
            f"{name} has {len(seen)} distinct tags; the maximum is {limits.max_tags} "
            "(MEMORY_MAX_TAGS). Put the rest in metadata, or raise MEMORY_MAX_TAGS"
        )
    return list(seen)


def importance(value: Any, name: str = "importance") -> float:
    """A number from 0 to 1."""
    if type(value) is float and 0.0 <= value <= 1.0:  # the common case (NaN fails the range)
        return value
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


def json_value(value: Any, path: str, max_depth: int | None = None, _depth: int = 0) -> Any:
    """A JSON-compatible copy of ``value``: dicts with string keys, lists, finite numbers,
    integers in the signed 64-bit range, text without NUL or lone surrogates; objects and
    arrays nested at most ``max_depth`` deep (``MEMORY_MAX_METADATA_DEPTH``)."""
    return _json_value(value, (path,), max_depth, _depth)


#: Where a value sits, for messages: the name, then ("key", k) or ("index", i) steps; made
#: into text (:func:`_where`) only for an error, as most values are valid.
_Where = tuple[Any, ...]


def _where(at: _Where) -> str:
    parts = [at[0]]
    for kind, step in at[1:]:
        parts.append(f"[{step!r}]" if kind == "key" else f"[{step}]")
    return "".join(parts)


def _plain_scalar(value: Any) -> bool:
    """Whether :func:`_json_value` returns ``value`` itself, found without a call of it per
    item: a valid str, int, float or bool of its exact type, or None."""
    kind = type(value)
    if kind is str:
        return _UNSTORABLE.search(value) is None
    if kind is int:
        return bool(MIN_INTEGER <= value <= MAX_INTEGER)
    if kind is float:
        return math.isfinite(value)
    return value is None or kind is bool


def _json_value(value: Any, at: _Where, max_depth: int | None, depth: int) -> Any:
    kind = type(value)
    # The common exact types first (each answers as the general checks below would).
    if kind is str and _UNSTORABLE.search(value) is None:
        return value
    if kind is int and MIN_INTEGER <= value <= MAX_INTEGER:
        return value
    if kind is float and math.isfinite(value):
        return value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return plain_text(value, _where(at))
    if isinstance(value, int):
        if not MIN_INTEGER <= value <= MAX_INTEGER:
            raise ValidationError(
                f"{_where(at)} is {_show(value)}, outside the signed 64-bit range (-2**63 to "
                "2**63 - 1) that every backend stores exactly; store it as a string"
            )
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{_where(at)} is {value!r}; JSON has no NaN or infinity")
        return float(value)
    mapping = kind is dict or isinstance(value, Mapping)
    nests = mapping or isinstance(value, list | tuple)
    if nests and max_depth is not None and depth >= max_depth:
        raise ValidationError(
            f"{_where(at)} is nested too deep: objects and arrays may nest {max_depth} "
            "deep (MEMORY_MAX_METADATA_DEPTH). Flatten it, or raise "
            "MEMORY_MAX_METADATA_DEPTH"
        )
    if mapping:
        out = {}
        for key, item in value.items():
            if type(key) is not str or _UNSTORABLE.search(key) is not None:
                if not isinstance(key, str):
                    raise ValidationError(
                        f"{_where(at)} has the key {_show(key)} of type {type(key).__name__}; "
                        "JSON object keys must be strings"
                    )
                plain_text(key, f"the key {_show(key)} of {_where(at)}")
            if _plain_scalar(item):
                out[key] = item
            else:
                out[key] = _json_value(item, (*at, ("key", key)), max_depth, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [
            item
            if _plain_scalar(item)
            else _json_value(item, (*at, ("index", i)), max_depth, depth + 1)
            for i, item in enumerate(value)
        ]
    raise ValidationError(
        f"{_where(at)} holds a {type(value).__name__} ({_show(value)}), which is not JSON; "
        "use strings, numbers, booleans, null, lists and objects"
    )


#: What ``json.dumps(value, ensure_ascii=False)`` uses, made once (dumps makes one per call).
_JSON = json.JSONEncoder(ensure_ascii=False)


def metadata(value: Any, name: str = "metadata", limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """A JSON object of at most ``MEMORY_MAX_METADATA_BYTES`` (as UTF-8 JSON) nested at most
    ``MEMORY_MAX_METADATA_DEPTH`` deep. ``None`` is an empty object."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(
            f"{name} must be a dict (a JSON object), got {type(value).__name__} {_show(value)}"
        )
    if len(value) > MAX_METADATA_KEYS:
        raise ValidationError(
            f"{name} has {len(value)} keys; the maximum is {MAX_METADATA_KEYS}. Nest them "
            "under fewer keys"
        )
    result: dict[str, Any] = json_value(value, name, limits.max_metadata_depth)
    text = _JSON.encode(result)
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    if size > limits.max_metadata_bytes:
        raise ValidationError(
            f"{name} is {size} bytes as JSON; the maximum is {limits.max_metadata_bytes} "
            "(MEMORY_MAX_METADATA_BYTES). Store large data elsewhere and keep a reference, or "
            "raise MEMORY_MAX_METADATA_BYTES"
        )
    return result


def metadata_filter(value: Any, limits: Limits = DEFAULT_LIMITS) -> dict[str, Scalar] | None:
    """Recall's ``metadata`` filter: keys mapped to scalar JSON values to compare for equality,
    at most ``RECALL_MAX_METADATA_KEYS`` of them."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError(
            f"metadata filter must be a dict (a JSON object), got {type(value).__name__} "
            f"{_show(value)}"
        )
    if len(value) > limits.max_filter_metadata_keys:
        raise ValidationError(
            f"the metadata filter has {len(value)} keys; the maximum is "
            f"{limits.max_filter_metadata_keys} (RECALL_MAX_METADATA_KEYS)"
        )
    for key, item in value.items():
        if isinstance(item, Mapping | list | tuple):
            raise ValidationError(
                f"metadata filter {key!r} is a {type(item).__name__}; the filter compares "
                "scalar values (string, number, boolean, null) for equality"
            )
    checked: dict[str, Any] = json_value(value, "metadata filter")
    return checked or None


def top_k(
    value: Any,
    name: str = "top_k",
    maximum: int | None = None,
    setting: str | None = "RECALL_MAX_TOP_K",
) -> int:
    """A whole number >= 1 (and <= ``maximum``, set by ``setting``, when given)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(
            f"{name} must be a whole number >= 1, got {type(value).__name__} {_show(value)}"
        )
    if value < 1:
        raise ValidationError(f"{name} must be >= 1, got {value}")
    if maximum is not None and value > maximum:
        where = f" ({setting})" if setting else ""
        raise ValidationError(f"{name} is {_show(value)}; the maximum is {maximum}{where}")
    return int(value)


def query(value: Any, name: str = "query") -> str:
    """A search query: a string with something besides whitespace, storable text."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{name} must be a non-empty string")
    return plain_text(value, name)


def query_terms(terms: tuple[str, ...], limits: Limits = DEFAULT_LIMITS) -> tuple[str, ...]:
    """A keyword query's distinct terms, at most ``KEYWORD_MAX_QUERY_TERMS`` of them."""
    if len(terms) > limits.max_query_terms:
        raise ValidationError(
            f"the query has {len(terms)} distinct keyword terms; the maximum is "
            f"{limits.max_query_terms} (KEYWORD_MAX_QUERY_TERMS). Ask a shorter question, or "
            "use search='vector'"
        )
    return terms


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
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValidationError(
            f"{name} {value.isoformat()} is outside the years 1 to 9999 in UTC, the range "
            "every backend stores"
        ) from None


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


def string_list(
    value: Any, name: str, check: Any, maximum: int | None = None, setting: str = ""
) -> tuple[str, ...] | None:
    """A filter list (tags, memory types) of at most ``maximum`` distinct items (set by
    ``setting``). ``None`` or an empty list means no filter."""
    if value is None:
        return None
    if isinstance(value, str):
        raise ValidationError(
            f"{name} must be a list of strings, not a single string; did you mean [{value!r}]?"
        )
    if not isinstance(value, list | tuple | set | frozenset):
        raise ValidationError(f"{name} must be a list of strings, got {type(value).__name__}")
    items = tuple(dict.fromkeys(check(item) for item in value))
    if maximum is not None and len(items) > maximum:
        raise ValidationError(
            f"{name} has {len(items)} distinct items; the maximum is {maximum} ({setting})"
        )
    return items or None


def utcnow() -> datetime:
    """The current time in UTC."""
    return datetime.now(timezone.utc)
