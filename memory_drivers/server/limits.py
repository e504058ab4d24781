"""The server's limits, set once at its edge: how big and how slow a request may be, and how
many connections may be open at once (``MEMORY_SERVER_*`` settings; see ``docs/server.md``).

- **Request head**: at most ``max_head_bytes`` (h11's ``max_incomplete_event_size``; beyond,
  uvicorn answers 400), received within ``head_timeout`` seconds of the connection opening or
  of its first byte on a kept-alive connection; otherwise the connection is closed
  (:class:`HeadTimeoutProtocol`; uvicorn has no such timeout of its own).
- **Request body**: at most ``max_body_bytes``. A larger ``Content-Length`` is answered 413
  before any of the body is read; a body without one (chunked) is counted as it arrives and
  refused with 413 once over. The whole body must arrive within ``body_timeout`` seconds,
  else 408 (:class:`RequestLimits`, an ASGI middleware).
- **Connections**: uvicorn's ``limit_concurrency``: a request arriving while
  ``max_connections`` connections are open (or requests running) is answered 503 at once.
  Idle kept-alive connections are closed after ``keep_alive_timeout`` seconds.

A refused request is answered with ``Connection: close``, as is any request whose body was
not read to its end, so a client cannot keep a connection busy with a body nobody reads.

Starlette 1.x's own ``max_body_size`` is not used: it answers in plain text, only once the app
reads the body, keeps the connection, and has no timeout (and the server supports Starlette
0.37 and later).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, fields
from typing import Any

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..config import Settings
from .parsing import ApiError
from .responses import error_response

__all__ = ["HeadTimeoutProtocol", "RequestLimits", "ServerLimits", "head_timeout_protocol"]

log = logging.getLogger("memory_drivers.server")

_CLOSE = (b"connection", b"close")


def _default(name: str) -> Any:
    return Settings.model_fields[f"memory_server_{name}"].default


@dataclass(frozen=True)
class ServerLimits:
    """The limits of one server; the defaults are the ``MEMORY_SERVER_*`` settings'."""

    max_body_bytes: int = _default("max_body_bytes")
    max_head_bytes: int = _default("max_head_bytes")
    head_timeout: float = _default("head_timeout")
    body_timeout: float = _default("body_timeout")
    keep_alive_timeout: int = _default("keep_alive_timeout")
    max_connections: int = _default("max_connections")

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerLimits:
        return cls(**{f.name: getattr(settings, f"memory_server_{f.name}") for f in fields(cls)})

    def uvicorn_options(self) -> dict[str, Any]:
        """uvicorn's own settings for these limits (``uvicorn.Config`` keywords)."""
        return {
            "http": head_timeout_protocol(self.head_timeout),
            "h11_max_incomplete_event_size": self.max_head_bytes,
            "limit_concurrency": self.max_connections,
            "timeout_keep_alive": self.keep_alive_timeout,
        }


# ---------------------------------------------------------------------- request head
class HeadTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head does not arrive within
    ``head_timeout`` seconds: from the connection's start, or from the first byte of a later
    request on a kept-alive connection (the wait before it is uvicorn's keep-alive timeout)."""

    head_timeout: float = _default("head_timeout")
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # part of a head has arrived
            if self._head_timer is None:
                self._arm_head_timer()
        else:
            self._disarm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info(
                "closed a connection from %s: no complete request head within %gs",
                self.client[0] if self.client else "?",
                self.head_timeout,
            )
            self.transport.close()


def head_timeout_protocol(head_timeout: float) -> type[HeadTimeoutProtocol]:
    """:class:`HeadTimeoutProtocol` with this timeout (uvicorn takes a protocol class)."""
    return type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"head_timeout": head_timeout})


# ---------------------------------------------------------------------- request body
def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # h11 has refused it already
    return None


def _has_body(scope: Scope) -> bool:
    return any(
        name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0")
        for name, value in scope["headers"]
    )


class RequestLimits:
    """ASGI middleware: the body size and body timeout of :class:`ServerLimits`.

    A body over the limit or too slow is refused by raising :class:`ApiError` (413, 408) from
    ``receive``, which the app answers like any other error; a ``Content-Length`` over the
    limit is answered here without calling the app."""

    def __init__(self, app: ASGIApp, limits: ServerLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_body_bytes
        length = _content_length(scope)
        if length is not None and length > limit:
            response = error_response(413, self._too_large(length), {"Connection": "close"})
            await response(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_timeout
        received = 0
        complete = False

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                raise ApiError(
                    408,
                    f"the request body did not arrive within {self.limits.body_timeout:g} "
                    "seconds (MEMORY_SERVER_BODY_TIMEOUT)",
                ) from None
            if message["type"] != "http.request":
                complete = True  # the client went away
                return message
            received += len(message.get("body", b""))
            if received > limit:
                raise ApiError(413, self._too_large(None))
            complete = not message.get("more_body", False)
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not complete:
                message = {**message, "headers": [*message.get("headers", []), _CLOSE]}
            await send(message)

        await self.app(scope, limited_receive, closing_send)

    def _too_large(self, length: int | None) -> str:
        size = f" ({length} bytes)" if length is not None else ""
        return (
            f"the request body{size} is larger than this server accepts, "
            f"{self.limits.max_body_bytes} bytes (MEMORY_SERVER_MAX_BODY_BYTES)"
        )
