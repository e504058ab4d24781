"""The ASGI application (Starlette): AutoMem's routes, token check and error bodies.

Every answer is JSON. Errors have AutoMem's shape, ``{"status": "error", "code": 400,
"message": "..."}``; an unexpected failure is logged here with its traceback and answered with
``{"status": "error", "code": 500, "message": "Internal server error"}``, never the traceback.

The edge, outermost first: :class:`~.limits.RequestLimits` (body size and time), the token
check, then routing. A JSON body holding text that UTF-8 cannot encode is refused with 400
before any route sees it (:func:`~.responses.check_text`).
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import metrics
from ..base import BaseMemoryDriver
from ..errors import EmbeddingError, MemoryDriverError
from .access_log import TOKEN_PARAMETERS
from .limits import RequestLimits, ServerLimits
from .parsing import ApiError
from .responses import ServerJSONResponse, check_text, error_response
from .service import DRIVER_ERRORS, MemoryService

__all__ = ["UI_PATH", "UNSUPPORTED_ROUTES", "create_app"]

log = logging.getLogger("memory_drivers.server")

#: AutoMem routes this server does not provide: they need AutoMem's graph, enrichment,
#: consolidation or admin machinery. Each answers 501 with a message saying so.
UNSUPPORTED_ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/startup-recall"),
    ("GET", "/analyze"),
    ("POST", "/admin/reembed"),
    ("POST", "/admin/sync"),
    ("GET", "/backup"),
    ("POST", "/consolidate"),
    ("GET", "/consolidate/status"),
    ("GET", "/enrichment/status"),
    ("POST", "/enrichment/reprocess"),
    ("GET", "/graph/snapshot"),
    ("GET", "/graph/neighbors/{memory_id}"),
    ("GET", "/graph/stats"),
    ("GET", "/graph/types"),
    ("GET", "/graph/relations"),
    ("GET", "/stream"),
    ("GET", "/stream/status"),
    ("GET", "/entities"),
    ("GET", "/entities/audit"),
    ("GET", "/entities/merge-candidates"),
    ("GET", "/entity/{slug}"),
    ("POST", "/entity/{slug}/merge"),
)

# Werkzeug's texts, which AutoMem answers with for unknown paths and methods.
_HTTP_MESSAGES = {
    404: "The requested URL was not found on the server. If you entered the URL manually "
    "please check your spelling and try again.",
    405: "The method is not allowed for the requested URL.",
}


def _as_response(exc: Exception) -> ServerJSONResponse:
    """The answer for an exception raised while handling a request."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.message)
    if isinstance(exc, EmbeddingError):
        log.error("the server's embedder failed: %s", exc)
        return error_response(503, "The server's embedder failed; see the server log")
    for kind, status in DRIVER_ERRORS:
        if isinstance(exc, kind):
            if status >= 500:
                log.error("the store behind the server is unavailable: %s", exc)
            return error_response(status, str(exc))
    if isinstance(exc, MemoryDriverError):
        log.error("request failed: %s: %s", type(exc).__name__, exc)
    else:
        log.error("unhandled error", exc_info=exc)
    return error_response(500, "Internal server error")


Handler = Callable[[Request], Awaitable[ServerJSONResponse]]


def _endpoint(func: Callable[[Request], Awaitable[Any]]) -> Handler:
    """Turn a handler's result (a body, or a body and a status) or exception into JSON."""

    @functools.wraps(func)
    async def wrapper(request: Request) -> ServerJSONResponse:
        try:
            result = await func(request)
        except Exception as exc:
            return _as_response(exc)
        body, status = result if isinstance(result, tuple) else (result, 200)
        return ServerJSONResponse(body, status)

    return wrapper


async def _json(request: Request) -> Any:
    """The request's JSON body, or None when there is none or it is not JSON; 400 when it
    holds text that cannot be served back (:func:`~.responses.check_text`)."""
    raw = await request.body()
    if not raw:
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return check_text(body)


#: Where the memory browser is mounted (memory_drivers.ui); it checks the token itself, with a
#: login form and a session cookie.
UI_PATH = "/ui"
#: Client addresses of this machine (``metrics_open`` lets them scrape without the token).
LOOPBACK_CLIENTS = ("127.0.0.1", "::1")


class TokenCheck:
    """AutoMem's token check: ``Authorization: Bearer <token>``, ``X-API-Key: <token>`` or
    ``?api_key=<token>``. ``/health`` and CORS pre-flight requests need none, nor the memory
    browser's paths when ``ui`` (the page asks for the token in its login form), nor ``/`` (a
    redirect to the page) when ``ui_only``, nor ``/metrics`` from a loopback client when
    ``metrics_open``."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        ui: bool = False,
        ui_only: bool = False,
        metrics_open: bool = False,
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.ui = ui
        #: "/" only sends the browser to the page when the page is all that is served
        self.ui_only = ui_only
        self.metrics_open = metrics_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = request.url.path
        if request.method == "OPTIONS" or path == "/health":
            await self.app(scope, receive, send)
            return
        if self.ui and (
            path in (UI_PATH, "/" if self.ui_only else UI_PATH) or path.startswith(UI_PATH + "/")
        ):
            await self.app(scope, receive, send)
            return
        if (
            self.metrics_open
            and path == "/metrics"
            and request.client is not None
            and request.client.host in LOOPBACK_CLIENTS
        ):
            await self.app(scope, receive, send)
            return
        given = _token(request)
        if given is None or not hmac.compare_digest(given.encode(), self.token):
            await error_response(401, "Unauthorized")(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    param = request.query_params.get(TOKEN_PARAMETERS[0])
    return param.strip() if param else None


def create_app(
    driver: BaseMemoryDriver,
    *,
    api_token: str | None = None,
    default_user: str = "automem",
    limits: ServerLimits | None = None,
    ui: bool = False,
    api: bool = True,
    metrics_route: bool = False,
    metrics_open: bool = False,
) -> Starlette:
    """AutoMem's REST API over ``driver``.

    ``api_token``: the token clients must send (None: no check). ``default_user``: the user of
    memories stored by AutoMem clients that do not use the memory-drivers convention.
    ``limits``: request sizes, timeouts and connections (default: from the driver's settings,
    ``MEMORY_SERVER_*``); ``serve`` and ``ServerThread`` read them from ``app.state.limits``.
    ``ui=True`` adds the memory browser at ``/ui/`` (:mod:`memory_drivers.ui`, behind the same
    token, asked for by its login form); ``api=False`` leaves AutoMem's routes out (only
    ``/health``, the page, and ``/`` sending the browser to it).
    ``metrics_route``: answer ``GET /metrics`` (turning metrics on, :mod:`memory_drivers.metrics`);
    it needs the token unless ``metrics_open`` and the client is on this machine. Each request
    is measured as one operation of the driver, named after the route's nearest public method
    (``POST /memory`` is ``store``, ``GET /recall`` is ``recall``, ...).
    The driver stays open; the caller closes it. ``app.state.service`` is the
    :class:`~memory_drivers.server.service.MemoryService` (its ``driver`` may be replaced).
    """
    limits = limits or ServerLimits.from_settings(driver.settings)
    service = MemoryService(driver, default_user=default_user)
    if metrics_route:
        metrics.enable()

    def checked(method: Callable[..., Any], *args: Any) -> Any:
        service.driver._check_open()  # the primitives below do not check it themselves
        return method(*args)

    def measured(operation: str, method: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        return run_in_threadpool(metrics.measure, operation, service.driver.name, method, *args)

    def call(operation: str, method: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        return measured(operation, checked, method, *args)

    @_endpoint
    async def health(request: Request) -> Any:
        return await measured("health_check", service.health)

    @_endpoint
    async def store(request: Request) -> Any:
        return await call("store", service.store, await _json(request))

    @_endpoint
    async def store_batch(request: Request) -> Any:
        return await call("store_many", service.store_batch, await _json(request))

    @_endpoint
    async def by_tag(request: Request) -> Any:
        if request.method == "DELETE":
            return await call("delete", service.delete_by_tag, request.query_params)
        return await call("recall", service.by_tag, request.query_params)

    @_endpoint
    async def one(request: Request) -> Any:
        memory_id = request.path_params["memory_id"]
        if request.method == "PATCH":
            return await call("update", service.update, memory_id, await _json(request))
        if request.method == "DELETE":
            return await call("delete", service.delete, memory_id)
        return await call("get", service.get, memory_id)

    @_endpoint
    async def associate(request: Request) -> Any:
        return await call("associate", service.associate, await _json(request))

    @_endpoint
    async def recall(request: Request) -> Any:
        return await call("recall", service.recall, request.query_params)

    @_endpoint
    async def related(request: Request) -> Any:
        memory_id = request.path_params["memory_id"]
        return await call("related", service.related, memory_id, request.query_params)

    async def metrics_page(request: Request) -> Response:
        body, content_type = await run_in_threadpool(
            metrics.exposition, request.headers.get("accept")
        )
        return Response(body, media_type=content_type)

    async def unsupported(request: Request) -> ServerJSONResponse:
        return error_response(
            501,
            f"{request.method} {request.url.path} is an AutoMem feature that needs AutoMem "
            "itself (its graph, enrichment or consolidation); memory-drivers serve does not "
            "provide it",
        )

    async def http_error(request: Request, exc: Exception) -> ServerJSONResponse:
        assert isinstance(exc, HTTPException)
        message = _HTTP_MESSAGES.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, message)

    async def server_error(request: Request, exc: Exception) -> ServerJSONResponse:
        return _as_response(exc)

    api_routes = [
        Route("/memory", store, methods=["POST"]),
        Route("/memory/batch", store_batch, methods=["POST"]),
        Route("/memory/by-tag", by_tag, methods=["GET", "DELETE"]),
        Route("/memory/{memory_id}", one, methods=["GET", "PATCH", "DELETE"]),
        Route("/associate", associate, methods=["POST"]),
        Route("/recall", recall, methods=["GET"]),
        Route("/memories/{memory_id}/related", related, methods=["GET"]),
        *(Route(path, unsupported, methods=[method]) for method, path in UNSUPPORTED_ROUTES),
    ]
    routes: list[BaseRoute] = [
        Route("/health", health, methods=["GET"]),
        *(api_routes if api else []),
    ]
    if metrics_route:
        routes.append(Route("/metrics", metrics_page, methods=["GET"]))
    if ui:
        from ..ui import create_ui

        routes.append(Mount(UI_PATH, create_ui(lambda: service.driver, api_token)))
        if not api:
            routes.append(Route("/", lambda request: RedirectResponse(UI_PATH + "/")))
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.state.service = service
    app.state.limits = limits
    app.add_middleware(
        TokenCheck, token=api_token, ui=ui, ui_only=ui and not api, metrics_open=metrics_open
    )
    app.add_middleware(RequestLimits, limits=limits)  # added last: the outermost
    return app
