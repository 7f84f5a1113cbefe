"""Request ids, the access log and the HTTP metrics, in one pure ASGI middleware; the ``/metrics``
endpoint (or a separate metrics port); and the wiring of logging, metrics and tracing into the app.

See docs/observability.md. The middleware is the outermost one the app adds, and runs on every
request, so it does as little as it can: the route template is read from ``scope["route"]`` once the
app has run (no matching of its own), the metric children of each (method, route, status) are looked
up once and kept, and the access line is only built when its level is enabled.

Since FastAPI 0.137, ``include_router`` keeps the included routers, and ``scope["route"]`` is the route
as its router declared it, without the prefixes it was included under (``/articles/{slug}``). The
full templates (``/api/v1/articles/{slug}``) come from FastAPI's ``iter_route_contexts``, mapped once
from each route object to its template when the middleware is built.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from time import perf_counter
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import anyio.to_thread
import structlog
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.telemetry import TelemetryConfig
from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, choose_encoder
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import metrics, tracing
from app.core.config import Settings
from app.core.errors import REQUEST_ID, problem_response
from app.core.logging import configure_structlog
from app.core.profiling import RequestStats, begin_request, end_request

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
METRICS_PATH = "/metrics"
# Requests for these are logged at debug level: probes and scrapes would drown the access log.
QUIET_PREFIXES = ("/health/", METRICS_PATH)
QUIET_PATHS = frozenset({"/health", METRICS_PATH})
# Metric labels take the method only from this list: any other would be a new series per spelling.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

access_log = structlog.stdlib.get_logger("conduit.access")
_access_level = logging.getLogger("conduit.access")
_IN_PROGRESS = metrics.HTTP_REQUESTS_IN_PROGRESS


def _take_request_id(scope: Scope) -> str:
    """The client's ``X-Request-ID`` if acceptable (1-128 of ``A-Za-z0-9._-``), else a new random one."""
    name: bytes
    value: bytes
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            if _VALID_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return os.urandom(16).hex()


def _is_quiet(path: str) -> bool:
    return path in QUIET_PATHS or path.startswith(QUIET_PREFIXES)


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return _is_quiet(scope["path"])


class _Series:
    """The metric children of one (method, route, status)."""

    __slots__ = ("duration", "requests", "statements")

    def __init__(self, method: str, route: str, status: int) -> None:
        self.requests = metrics.HTTP_REQUESTS.labels(method, route, str(status))
        self.duration = metrics.HTTP_REQUEST_DURATION.labels(method, route, str(status))
        self.statements = metrics.HTTP_REQUEST_STATEMENTS.labels(method, route)


class ObservabilityMiddleware:
    """Gives every HTTP request an id (bound to its log lines, echoed in ``X-Request-ID``), logs one
    access line for it and records it in the HTTP metrics."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[BaseRoute], metrics_enabled: bool) -> None:
        self.app = app
        self.metrics_enabled = metrics_enabled
        self._series: dict[tuple[str, str, int], _Series] = {}
        # id(route object) -> its full template. (Routes define __eq__, so are not hashable; they live
        # as long as the app.) A router included twice would keep its first prefix here.
        self._templates: dict[int, str] = {}
        for context in iter_route_contexts(routes):
            route, template = context.original_route, context.path
            if template is not None:
                self._templates.setdefault(id(route), template)
                if metrics_enabled and isinstance(route, APIRoute):  # successes exist from the start
                    for method in route.methods or ():
                        self._get_series(method, template, route.status_code or 200)

    def _get_series(self, method: str, route: str, status: int) -> _Series:
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(method, route, status)
        return series

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _take_request_id(scope)
        scope[REQUEST_ID] = rid
        header = (REQUEST_ID_HEADER, rid.encode("ascii"))
        log_context = structlog.contextvars.bind_contextvars(request_id=rid)
        stats, stats_token = begin_request()
        status = 0
        if self.metrics_enabled:
            _IN_PROGRESS.inc()
        started = perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])  # a plain int: responses may give an HTTPStatus
                message.setdefault("headers", []).append(header)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            # Starlette answers the 500 and logs the error outside every middleware, once this has
            # returned: the log context stays bound for those lines, and uvicorn's own. (A server
            # runs each request in a task, and so a context, of its own: nothing else inherits it.)
            self._finish(scope, status or 500, perf_counter() - started, stats)
            raise
        else:
            self._finish(scope, status or 500, perf_counter() - started, stats)
            structlog.contextvars.reset_contextvars(**log_context)
        finally:
            end_request(stats_token)
            if self.metrics_enabled:
                _IN_PROGRESS.dec()

    def _finish(self, scope: Scope, status: int, seconds: float, stats: RequestStats) -> None:
        route = scope.get("route")
        template: str = (
            metrics.UNMATCHED
            if route is None
            else self._templates.get(id(route)) or getattr(route, "path", None) or metrics.UNMATCHED
        )
        method: str = scope["method"]
        if self.metrics_enabled:
            series = self._get_series(method if method in KNOWN_METHODS else "OTHER", template, status)
            series.requests.inc()
            series.duration.observe(seconds)
            series.statements.observe(stats.statements)
        level = logging.DEBUG if _is_quiet(scope["path"]) else logging.INFO
        if _access_level.isEnabledFor(level):
            client = scope.get("client")
            access_log.log(
                level,
                "request",
                method=method,
                route=template,
                path=scope["path"],
                status=status,
                duration_ms=round(seconds * 1000, 2),
                statements=stats.statements,
                client=client[0] if client else None,
            )


def _bearer(token: SecretStr | None) -> bytes | None:
    return f"Bearer {token.get_secret_value()}".encode() if token is not None else None


def _authorized(expected: bytes | None, authorization: str | None) -> bool:
    return expected is None or hmac.compare_digest((authorization or "").encode(), expected)


def metrics_endpoint(token: SecretStr | None) -> Callable[[Request], Any]:
    expected = _bearer(token)

    async def serve_metrics(request: Request) -> Response:
        if not _authorized(expected, request.headers.get("authorization")):
            return problem_response(
                request,
                401,
                "the metrics need a valid token",
                code="unauthorized",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        # In multiprocess mode this reads every process's files: off the event loop.
        body = await anyio.to_thread.run_sync(encode, metrics.registry())
        return Response(body, headers={"Content-Type": content_type})

    return serve_metrics


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


def serve_metrics_port(host: str, port: int, token: SecretStr | None) -> WSGIServer:
    """Serve the metrics on ``host:port`` from a daemon thread (``CONDUIT_METRICS_PORT``): from the
    process that supervises the workers, which in multiprocess mode sees all of their values.
    prometheus-client's own ``start_http_server`` has no way to require a token, hence this."""
    expected = _bearer(token)
    exposition = make_wsgi_app(metrics.registry())

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not _authorized(expected, environ.get("HTTP_AUTHORIZATION")):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="metrics"')],
            )
            return [b"the metrics need a valid token\n"]
        body: Iterable[bytes] = exposition(environ, start_response)
        return body

    server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="conduit-metrics", daemon=True).start()
    return server


class Observability:
    """Logging, metrics and tracing for one app: built before the ``FastAPI`` object (whose own
    tracing is configured by ``fastapi_telemetry``), installed once it has its middleware, closed at
    the end of its lifespan."""

    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        configure_structlog()
        self.settings = settings
        self.tracer_provider = tracing.setup(settings)
        if self.tracer_provider is not None:
            tracing.trace_engine(engine, self.tracer_provider)

    def fastapi_telemetry(self) -> TelemetryConfig:
        return tracing.fastapi_telemetry(self.tracer_provider, exclude=_untraced)

    def install(self, app: FastAPI) -> None:
        """Add the middleware (outermost: add it last) and, unless on a port of its own, ``/metrics``."""
        settings = self.settings
        if settings.metrics_enabled and settings.metrics_port is None:
            app.add_route(METRICS_PATH, metrics_endpoint(settings.metrics_token), include_in_schema=False)
        # app.routes is read when the middleware is built, at the first request: every route is there.
        app.add_middleware(
            ObservabilityMiddleware, routes=app.routes, metrics_enabled=settings.metrics_enabled
        )

    def close(self) -> None:
        tracing.shutdown(self.tracer_provider)
        metrics.process_exited()
