"""Who may use the page: the server's token, typed once into a login form, then a session.

- The login form posts the token (never in a URL, so never in an access log or the browser's
  history). It is compared in constant time with the server's; a right one opens a session.
- The session is a random id in a cookie that is ``HttpOnly`` (scripts cannot read it),
  ``SameSite=Strict`` (other sites' pages cannot make the browser send it) and ``Secure`` when
  the page is served over HTTPS; the token itself is never put in a cookie.
- Every form that changes something carries the session's CSRF token in a hidden field; a
  POST without the right one is refused (403), whatever the cookie says.
- Without a server token (loopback only, see ``memory-drivers serve``) there is no login, but
  every visitor still gets a session, so forms keep their CSRF check.

Sessions live in this process's memory: a restart logs everyone out. Each lasts
:data:`SESSION_SECONDS` from login. Guessing is slowed down: after :data:`MAX_FAILURES` wrong
tokens from one address within :data:`FAILURE_WINDOW` seconds, that address's logins are
refused (429) until the oldest failure is that old.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["COOKIE", "SESSION_SECONDS", "Session", "Sessions"]

#: The session cookie's name.
COOKIE = "mdrv_ui_session"
#: How long a session lasts after login (12 hours).
SESSION_SECONDS = 12 * 3600
#: Sessions kept at most; beyond it, the oldest are dropped.
MAX_SESSIONS = 1000
#: Wrong tokens one address may send within :data:`FAILURE_WINDOW` seconds.
MAX_FAILURES = 10
FAILURE_WINDOW = 300.0


@dataclass(frozen=True)
class Session:
    id: str
    csrf: str
    expires: float


class Sessions:
    """The open sessions of one page, and the server token that opens them."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None
        self._sessions: dict[str, Session] = {}
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @property
    def login_required(self) -> bool:
        return self._token is not None

    def token_matches(self, given: str) -> bool:
        """Constant-time comparison with the server's token."""
        if self._token is None:
            return True
        return hmac.compare_digest(given.encode(), self._token)

    def wait_before_login(self, address: str) -> float:
        """Seconds ``address`` must wait before trying a token again (0: it may try now)."""
        now = time.monotonic()
        with self._lock:
            failures = self._failures.get(address)
            while failures and failures[0] <= now - FAILURE_WINDOW:
                failures.popleft()
            if not failures:
                self._failures.pop(address, None)
                return 0.0
            if len(failures) < MAX_FAILURES:
                return 0.0
            return failures[0] + FAILURE_WINDOW - now

    def failed_login(self, address: str) -> None:
        with self._lock:
            if address not in self._failures and len(self._failures) >= MAX_SESSIONS:
                del self._failures[next(iter(self._failures))]
            self._failures.setdefault(address, deque()).append(time.monotonic())

    def open(self) -> Session:
        """A new session."""
        now = time.monotonic()
        session = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), now + SESSION_SECONDS
        )
        with self._lock:
            for sid in [s.id for s in self._sessions.values() if s.expires <= now]:
                del self._sessions[sid]
            while len(self._sessions) >= MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
            self._sessions[session.id] = session
        return session

    def close(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.id, None)

    def find(self, request: Request) -> Session | None:
        """The request's session, when its cookie names an open one."""
        sid = request.cookies.get(COOKIE)
        if not sid:
            return None
        with self._lock:
            session = self._sessions.get(sid)
        if session is None or session.expires <= time.monotonic():
            return None
        return session

    @staticmethod
    def csrf_ok(session: Session, given: object) -> bool:
        return isinstance(given, str) and hmac.compare_digest(given.encode(), session.csrf.encode())


def set_cookie(response: Response, request: Request, session: Session, path: str) -> None:
    response.set_cookie(
        COOKIE,
        session.id,
        max_age=SESSION_SECONDS,
        path=path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, request: Request, path: str) -> None:
    response.delete_cookie(
        COOKIE, path=path, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
