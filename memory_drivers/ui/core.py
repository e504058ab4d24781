"""What every page shares: templates, the session check, calling the driver, error pages.

:class:`PageBase` is the base of the route modules (:mod:`.memories`, :mod:`.knowledge`);
:func:`page` wraps each handler: it finds the session (or sends the browser to the login
form), checks the CSRF token of every POST, and turns the API's typed errors into a page with
the error's message and the right status.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..base import BaseMemoryDriver
from ..errors import (
    BackendUnavailableError,
    ConflictError,
    DriverClosedError,
    MemoryDriverError,
    NotFoundError,
    ValidationError,
)
from .auth import Session, Sessions, set_cookie

__all__ = ["ERROR_STATUS", "PageBase", "page"]

log = logging.getLogger("memory_drivers.ui")

#: The status of a page showing each of the API's errors.
ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (ValidationError, 400),
    (NotFoundError, 404),
    (ConflictError, 409),
    (BackendUnavailableError, 503),
    (DriverClosedError, 503),
)

#: Sent with every page: scripts and styles from the page's own origin only, no framing, no
#: referrer (a search's URL holds its query), nothing cached (pages show private memories).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else ""


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("memory_drivers.ui", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["score"] = lambda v: "" if v is None else f"{v:.3f}"
    env.filters["urlpart"] = lambda v: quote(str(v), safe="")
    return env


class PageBase:
    """The state of the page: the driver, the templates and the sessions."""

    def __init__(self, driver: Callable[[], BaseMemoryDriver], sessions: Sessions) -> None:
        self._driver = driver
        self.sessions = sessions
        self.env = _environment()

    @property
    def driver(self) -> BaseMemoryDriver:
        return self._driver()

    async def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a (blocking) driver call in the thread pool."""
        return await run_in_threadpool(functools.partial(method, *args, **kwargs))

    def render(
        self,
        request: Request,
        template: str,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        base = request.scope.get("root_path", "")
        session: Session | None = request.scope.get("ui_session")
        html = self.env.get_template(template).render(
            base=base,
            csrf=session.csrf if session else "",
            login_required=self.sessions.login_required,
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html, status, headers=SECURITY_HEADERS)

    def redirect(self, request: Request, path: str, **params: str) -> RedirectResponse:
        """303 to ``path`` (under the page's base), with a query."""
        url = request.scope.get("root_path", "") + path
        if params:
            url += "?" + urlencode(params)
        return RedirectResponse(url, 303, headers=SECURITY_HEADERS)

    def error_page(self, request: Request, exc: Exception) -> Response:
        for kind, status in ERROR_STATUS:
            if isinstance(exc, kind):
                if status >= 500:
                    log.error("the store behind the page is unavailable: %s", exc)
                return self.render(request, "error.html", status, message=str(exc))
        if isinstance(exc, MemoryDriverError):
            log.error("page failed: %s: %s", type(exc).__name__, exc)
            return self.render(request, "error.html", 500, message=str(exc))
        log.error("unhandled error in the page", exc_info=exc)
        return self.render(
            request, "error.html", 500, message="Internal error; the server's log has the details."
        )


Handler = Callable[[Any, Request], Awaitable[Response]]


def page(func: Handler) -> Handler:
    """Guard a handler: a session (else the login form, or a new session when no token is
    set), the CSRF token on POST, and error pages for the API's errors."""

    @functools.wraps(func)
    async def wrapper(self: PageBase, request: Request) -> Response:
        session = self.sessions.find(request)
        fresh = None
        if session is None:
            if self.sessions.login_required or request.method != "GET":
                if request.method != "GET":
                    return self.render(
                        request,
                        "error.html",
                        403,
                        message="Your session has ended; open the page again and log in.",
                    )
                wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return self.redirect(request, "/login", next=wanted)
            session = fresh = self.sessions.open()
        request.scope["ui_session"] = session
        if request.method == "POST":
            form = await request.form()
            if not self.sessions.csrf_ok(session, form.get("csrf")):
                return self.render(
                    request,
                    "error.html",
                    403,
                    message="This form is out of date (its security token does not match your "
                    "session); open the page again and resubmit.",
                )
        try:
            response = await func(self, request)
        except Exception as exc:
            response = self.error_page(request, exc)
        if fresh is not None:
            set_cookie(response, request, fresh, request.scope.get("root_path", "") or "/")
        return response

    return wrapper
