"""The memory browser: a web page to look into what an agent remembers, and to fix or forget it.

Served by ``memory-drivers serve --ui`` (next to AutoMem's API) or ``memory-drivers ui`` (the
page alone), at ``/ui/``, behind the server's token::

    memory-drivers ui --driver sqlite --token s3cret      # then open http://127.0.0.1:8001/ui/

Python::

    from memory_drivers.server import ServerThread, create_app
    app = create_app(driver, api_token="s3cret", ui=True)    # the API and the page at /ui/

Server-rendered HTML (Jinja2 templates, autoescaped) with a little plain JavaScript and CSS
shipped in the package: no build step. It calls only the public API of the driver.

Layout: this module (the routes, the login and logout handlers), :mod:`.auth` (sessions, the
session cookie, CSRF tokens, login throttling), :mod:`.core` (templates, the guard of every
page, error pages), :mod:`.forms` (fields and URLs read into API arguments), the pages in
:mod:`.memories` and :mod:`.knowledge`, and :mod:`.graph` (the associations' drawing).
See ``docs/ui.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from importlib.resources import files
from urllib.parse import urlsplit

from ..errors import MissingDependencyError

try:
    import jinja2  # noqa: F401 - checked here, used by .core
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise MissingDependencyError(
        f"the memory browser needs Starlette and Jinja2 ({exc}). "
        'Install with: pip install "memory-drivers[server]"'
    ) from exc

from ..base import BaseMemoryDriver
from .auth import Sessions, clear_cookie, set_cookie
from .knowledge import KnowledgePages
from .memories import MemoryPages

__all__ = ["create_ui"]


class Pages(MemoryPages, KnowledgePages):
    """Every page, on one driver and one set of sessions."""

    def _next(self, request: Request, wanted: str) -> str:
        """Where to go after login: a path of this page, never another site."""
        base = request.scope.get("root_path", "")
        parts = urlsplit(wanted)
        if parts.scheme or parts.netloc or not wanted.startswith(base + "/"):
            return base + "/"
        return wanted

    async def login(self, request: Request) -> Response:
        base = request.scope.get("root_path", "") or ""
        if not self.sessions.login_required:
            return self.redirect(request, "/")
        if request.method == "GET":
            wanted = request.query_params.get("next", base + "/")
            return self.render(request, "login.html", next=self._next(request, wanted))
        form = await request.form()
        wanted = self._next(request, str(form.get("next") or base + "/"))
        address = request.client.host if request.client else ""
        wait = self.sessions.wait_before_login(address)
        if wait > 0:
            return self.render(
                request,
                "login.html",
                429,
                next=wanted,
                error=f"Too many wrong tokens from this address; try again in {math.ceil(wait)} "
                "seconds.",
            )
        token = form.get("token")
        if not isinstance(token, str) or not self.sessions.token_matches(token.strip()):
            self.sessions.failed_login(address)
            return self.render(
                request,
                "login.html",
                401,
                next=wanted,
                error="That token is not the server's. Use the token the server was started "
                "with (--token, MEMORY_SERVER_API_TOKEN or AUTOMEM_API_TOKEN).",
            )
        session = self.sessions.open()
        response = self.redirect(request, "")
        response.headers["location"] = wanted
        set_cookie(response, request, session, base or "/")
        return response

    async def logout(self, request: Request) -> Response:
        session = self.sessions.find(request)
        form = await request.form()
        if session is not None and self.sessions.csrf_ok(session, form.get("csrf")):
            self.sessions.close(session)
        response = self.redirect(request, "/login" if self.sessions.login_required else "/")
        clear_cookie(response, request, request.scope.get("root_path", "") or "/")
        return response


def create_ui(driver: Callable[[], BaseMemoryDriver], api_token: str | None = None) -> Starlette:
    """The page as an ASGI app, to mount at ``/ui`` (:func:`memory_drivers.server.create_app`
    with ``ui=True`` does). ``driver`` returns the driver to use (called on every request, so
    the server may replace it); ``api_token`` is the token the login form asks for (None: no
    login, for loopback use)."""
    pages = Pages(driver, Sessions(api_token))

    routes = [
        Route("/", pages.users, methods=["GET"]),
        Route("/login", pages.login, methods=["GET", "POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Route("/search", pages.search, methods=["GET"]),
        Route("/memories/{memory_id}", pages.memory, methods=["GET"]),
        Route("/memories/{memory_id}/edit", pages.edit, methods=["POST"]),
        Route("/memories/{memory_id}/delete", pages.confirm_delete, methods=["GET"]),
        Route("/memories/{memory_id}/delete", pages.delete, methods=["POST"]),
        Route("/knowledge", pages.knowledge, methods=["GET"]),
        Route("/knowledge", pages.store, methods=["POST"]),
        Route("/knowledge/{doc_id:path}/delete", pages.confirm_delete_document, methods=["GET"]),
        Route("/knowledge/{doc_id:path}/delete", pages.delete_document, methods=["POST"]),
        Route("/knowledge/{doc_id:path}", pages.document, methods=["GET"]),
        Route("/health", pages.health, methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(files("memory_drivers.ui") / "static"))),
    ]
    return Starlette(routes=routes)
