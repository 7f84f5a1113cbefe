"""Per-request profiling: SQL statements, time in the database and cache hits, as ``Server-Timing``.

Statement counts and timings come from engine events, accumulated in a context variable that the
middleware sets for each request (SQLAlchemy runs its sync core in greenlets that share the request's
context), so concurrent requests never mix their numbers.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import MutableHeaders
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("conduit.profiling")

_START = "conduit.statement_start"


@dataclass
class RequestStats:
    statements: int = 0
    db_seconds: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0


_current: ContextVar[RequestStats | None] = ContextVar("conduit_request_stats", default=None)


def begin_request() -> tuple[RequestStats, Token[RequestStats | None]]:
    """Start counting this request's statements and cache lookups (``end_request`` stops)."""
    stats = RequestStats()
    return stats, _current.set(stats)


def end_request(token: Token[RequestStats | None]) -> None:
    _current.reset(token)


def forget_request() -> None:
    """Count nothing more as the request's in this context (a task started by a request inherits it)."""
    _current.set(None)


def record_cache(*, hit: bool) -> None:
    if (stats := _current.get()) is not None:
        if hit:
            stats.cache_hits += 1
        else:
            stats.cache_misses += 1


def _before(conn: Any, _cursor: Any, _statement: Any, _params: Any, _context: Any, _many: Any) -> None:
    conn.info.setdefault(_START, []).append(time.perf_counter())


def _after(conn: Any, _cursor: Any, _statement: Any, _params: Any, _context: Any, _many: Any) -> None:
    started = conn.info[_START].pop()
    if (stats := _current.get()) is not None:
        stats.statements += 1
        stats.db_seconds += time.perf_counter() - started


def instrument_engine(engine: AsyncEngine) -> None:
    event.listen(engine.sync_engine, "before_cursor_execute", _before)
    event.listen(engine.sync_engine, "after_cursor_execute", _after)


def server_timing(stats: RequestStats, total_seconds: float) -> str:
    return (
        f"total;dur={total_seconds * 1000:.1f}, "
        f'db;dur={stats.db_seconds * 1000:.1f};desc="{stats.statements} statements", '
        f'cache;desc="{stats.cache_hits} hits, {stats.cache_misses} misses"'
    )


class ProfilingMiddleware:
    """Adds ``Server-Timing`` to every response and logs requests slower than ``slow_ms``.

    With ``profile_requests`` (development only), ``?profile=1`` on any request answers with a
    pyinstrument profile of that request, as an HTML page, instead of its response.
    """

    def __init__(self, app: ASGIApp, *, slow_ms: float, profile_requests: bool = False) -> None:
        self.app = app
        self.slow_seconds = slow_ms / 1000
        self.profile_requests = profile_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.profile_requests and ("profile", "1") in parse_qsl(scope["query_string"].decode("latin-1")):
            await self._profile(scope, receive, send)
            return
        # The counts of the observability middleware, which wraps this one, if it runs.
        stats = _current.get()
        token = None
        if stats is None:
            stats, token = begin_request()
        started = time.perf_counter()

        async def send_with_timing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.append("Server-Timing", server_timing(stats, time.perf_counter() - started))
            await send(message)

        try:
            await self.app(scope, receive, send_with_timing)
        finally:
            if token is not None:
                end_request(token)
            elapsed = time.perf_counter() - started
            if elapsed > self.slow_seconds:
                logger.warning(
                    "slow request: %s %s took %.0f ms, %d statements, %.0f ms in the database",
                    scope["method"],
                    scope["path"],
                    elapsed * 1000,
                    stats.statements,
                    stats.db_seconds * 1000,
                )

    async def _profile(self, scope: Scope, receive: Receive, send: Send) -> None:
        from pyinstrument import Profiler  # imported only where profiles are served: development

        async def discard(_message: Message) -> None:
            pass

        with Profiler(async_mode="enabled") as profiler:
            await self.app(scope, receive, discard)
        await HTMLResponse(profiler.output_html())(scope, receive, send)
