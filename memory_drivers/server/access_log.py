"""Tokens never reach the log: uvicorn's access log (``-v``) writes each request's path with
its query string, and AutoMem clients may send the token as ``?api_key=<token>``.

:class:`RedactTokens`, a filter on the ``uvicorn.access`` logger itself (so every handler gets
the redacted record), replaces the value of every token parameter with ``[redacted]``.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote_plus

__all__ = ["REDACTED", "TOKEN_PARAMETERS", "RedactTokens", "install", "redact_query"]

#: Query parameters that carry the token (the server reads the first; see ``TokenCheck``).
TOKEN_PARAMETERS: tuple[str, ...] = ("api_key",)

REDACTED = "[redacted]"

ACCESS_LOGGER = "uvicorn.access"


def _is_token(name: str) -> bool:
    # Compared as Starlette reads names (percent- and plus-decoded), and in any case.
    return unquote_plus(name).strip().lower() in TOKEN_PARAMETERS


def redact_query(target: str) -> str:
    """``target`` (a path with its query string) with token values replaced."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    parts = []
    for part in query.split("&"):
        name, equals, _ = part.partition("=")
        parts.append(f"{name}={REDACTED}" if equals and _is_token(name) else part)
    return f"{path}?{'&'.join(parts)}"


class RedactTokens(logging.Filter):
    """Redacts token parameters in every string argument of a log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_query(arg) if isinstance(arg, str) and "?" in arg else arg
                for arg in record.args
            )
        if isinstance(record.msg, str) and "?" in record.msg:
            record.msg = redact_query(record.msg)
        return True


def install() -> None:
    """Put :class:`RedactTokens` on uvicorn's access logger (once; uvicorn's logging setup
    replaces its handlers but keeps the logger's filters)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactTokens) for f in logger.filters):
        logger.addFilter(RedactTokens())
