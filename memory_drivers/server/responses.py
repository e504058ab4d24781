"""The server's JSON answers: AutoMem's error shape, and bodies that always encode.

A Python string can hold a lone surrogate (``"\\ud800"``), which UTF-8 cannot encode. The
server refuses such text in requests (:func:`check_text`), but a store may already hold some
(written before, or by another program): then the answer shows U+FFFD in its place rather
than failing with a 500 for every client that reaches it.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from starlette.responses import JSONResponse

from .parsing import ApiError

__all__ = [
    "ServerJSONResponse",
    "check_text",
    "error_response",
    "has_surrogates",
    "replace_surrogates",
]

log = logging.getLogger("memory_drivers.server")

_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_surrogates(value: Any) -> Any:
    """``value`` (strings, lists, dicts) with every surrogate replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list | tuple):
        return type(value)(replace_surrogates(item) for item in value)
    if isinstance(value, dict):
        return {replace_surrogates(k): replace_surrogates(v) for k, v in value.items()}
    return value


def _first_surrogate(value: Any, path: str) -> str | None:
    """Where in ``value`` the first string with a surrogate is (a JSON path), or None."""
    if isinstance(value, str):
        return path if _SURROGATE.search(value) else None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _first_surrogate(item, f"{path}[{index}]")
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{replace_surrogates(key)}" if path else replace_surrogates(key)
            if isinstance(key, str) and _SURROGATE.search(key):
                return f"{where} (its name)"
            found = _first_surrogate(item, where)
            if found is not None:
                return found
    return None


def has_surrogates(value: Any) -> bool:
    """Whether a string in ``value`` (strings, lists, dicts) holds a surrogate."""
    return _first_surrogate(value, "") is not None


def check_text(body: Any) -> Any:
    """``body`` (parsed JSON) unchanged, or :class:`ApiError` 400 when a string in it holds a
    lone surrogate (JSON ``"\\ud800"``): such text cannot be encoded in UTF-8, so the server
    could store it but never serve it back."""
    where = _first_surrogate(body, "")
    if where is not None:
        raise ApiError(
            400,
            f"'{where or 'body'}' holds a lone UTF-16 surrogate (such as \\ud800), which is not "
            "valid Unicode text and cannot be stored",
        )
    return body


class ServerJSONResponse(JSONResponse):
    """Starlette's JSON answer, with U+FFFD for surrogates instead of an encoding error."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(
            content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
        )
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            log.warning("an answer held text that is not valid Unicode; sent with U+FFFD")
            # json.dumps leaves surrogates as they are, inside string literals only.
            return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> ServerJSONResponse:
    """AutoMem's error answer: ``{"status": "error", "code": status, "message": message}``."""
    body = {"status": "error", "code": status, "message": message}
    return ServerJSONResponse(body, status, headers=headers)
