"""What the page's forms and URLs say, read into the public API's arguments.

Only parsing lives here: a field's text becomes the Python value the API takes (a list, a
number, a JSON object). Whether the value is acceptable is the API's to say
(:mod:`memory_drivers.validation`), so the page shows the same typed errors as every other
front-end. A parse error is a :class:`~memory_drivers.errors.ValidationError` too, naming the
field and what to type.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from ..base import SEARCH_MODES
from ..errors import ValidationError

__all__ = [
    "SearchForm",
    "form_text",
    "json_object",
    "line_list",
    "number",
    "text_list",
    "whole_number",
]

#: Results a search shows when ``top_k`` is not given.
DEFAULT_TOP_K = 10


def text_list(value: str | None) -> list[str] | None:
    """A comma-separated field as a list (None when empty): ``"food, travel"``."""
    items = [part.strip() for part in (value or "").split(",")]
    return [item for item in items if item] or None


def line_list(value: str | None) -> list[str]:
    """A field with one item per line as a list (empty lines dropped)."""
    return [line.strip() for line in (value or "").splitlines() if line.strip()]


def number(value: str | None, name: str) -> float | None:
    """A decimal number, or None when the field is empty."""
    if value is None or not value.strip():
        return None
    try:
        return float(value)
    except ValueError:
        raise ValidationError(f"{name} must be a number such as 0.5, got {value!r}") from None


def whole_number(value: str | None, name: str, default: int) -> int:
    """A whole number, or ``default`` when the field is empty."""
    if value is None or not value.strip():
        return default
    try:
        return int(value)
    except ValueError:
        raise ValidationError(f"{name} must be a whole number such as 10, got {value!r}") from None


def json_object(value: str | None, name: str) -> dict[str, Any] | None:
    """A JSON object typed in a field, or None when the field is empty."""
    if value is None or not value.strip():
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise ValidationError(
            f'{name} must be a JSON object such as {{"source": "chat"}}: {exc}'
        ) from None
    if not isinstance(parsed, dict):
        raise ValidationError(
            f'{name} must be a JSON object such as {{"source": "chat"}}, got {value.strip()!r}'
        )
    return parsed


@dataclass
class SearchForm:
    """A memory search as the page's URL holds it (``/ui/search?user_id=...&q=...``).

    Every field is the text of its URL parameter, so the form can be shown again as typed;
    :meth:`recall_arguments` turns it into ``recall``'s keyword arguments.
    """

    user_id: str = ""
    q: str = ""
    search: str = ""
    conversation_id: str = ""
    types: list[str] = field(default_factory=list)
    tags: str = ""
    tag_mode: str = "any"
    exclude_tags: str = ""
    since: str = ""
    until: str = ""
    min_importance: str = ""
    metadata: str = ""
    top_k: str = ""

    @classmethod
    def from_query(cls, params: Any) -> SearchForm:
        """From a request's query parameters (a multi-dict: ``type`` may repeat)."""
        single = {
            name: params.get(name, "") for name in cls.__dataclass_fields__ if name != "types"
        }
        return cls(types=list(params.getlist("type")), **single)

    @property
    def ready(self) -> bool:
        """True when there is a user to search (recall is always one user's)."""
        return bool(self.user_id.strip())

    def recall_arguments(self) -> dict[str, Any]:
        """``recall``'s arguments; the API validates them."""
        search = self.search or None
        if search is not None and search not in SEARCH_MODES:
            raise ValidationError(
                f"search must be one of {', '.join(SEARCH_MODES)}, got {search!r}"
            )
        return {
            "user_id": self.user_id,
            "query": self.q if self.q.strip() else None,
            "search": search,
            "conversation_id": self.conversation_id or None,
            "memory_types": self.types or None,
            "tags": text_list(self.tags),
            "tag_mode": self.tag_mode or "any",
            "exclude_tags": text_list(self.exclude_tags),
            "since": self.since or None,
            "until": self.until or None,
            "min_importance": number(self.min_importance, "minimum importance"),
            "metadata": json_object(self.metadata, "metadata"),
            "top_k": whole_number(self.top_k, "top k", DEFAULT_TOP_K),
            "explain": True,
        }

    def query_string(self, **changes: str) -> str:
        """The URL query of this search (empty fields left out), with ``changes`` applied."""
        values: list[tuple[str, str]] = []
        for name in self.__dataclass_fields__:
            if name == "types":
                values.extend(("type", t) for t in self.types)
            else:
                text = changes.get(name, getattr(self, name))
                if text and not (name == "tag_mode" and text == "any"):
                    values.append((name, text))
        return urlencode(values)


def form_text(form: Mapping[str, Any], name: str) -> str:
    """A submitted text field ("" when absent), with the browser's CRLF line ends made LF."""
    value = form.get(name)
    return value.replace("\r\n", "\n") if isinstance(value, str) else ""
