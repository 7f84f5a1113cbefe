"""Rate limiting: a limiter over Redis (or process memory) and a global per-client-IP ASGI middleware.

Routes add their own limits with ``await limiter.hit(settings.rate_limit_login_ip, "login-ip", ip)``.
"""

from __future__ import annotations

import logging
import math
import time
from functools import cache

import redis.asyncio
from limits import parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.config import Settings
from app.core.errors import AppError, RateLimitedError, ServiceUnavailableError, problem_response
from app.core.metrics import RATE_LIMIT_REJECTIONS
from app.core.redis_link import RedisLink, create_pool

logger = logging.getLogger("conduit.ratelimit")

_parse_rule = cache(parse)


def _storage_uri(redis_url: str) -> str:
    """The ``limits`` spelling of a redis-py URL (``redis://`` becomes ``async+redis://``)."""
    scheme, _, rest = redis_url.partition("://")
    return f"async+redis+unix://{rest}" if scheme == "unix" else f"async+{redis_url}"


class RateLimiter:
    """Consumes rate-limit budgets, shared by every worker when Redis is configured."""

    def __init__(self, settings: Settings, link: RedisLink | None = None) -> None:
        self._enabled = settings.rate_limit_enabled
        self._fail_open = settings.rate_limit_fail_open
        self._link = link or RedisLink(settings.redis_backoff_max)
        self.storage_errors = 0
        self._pool: redis.asyncio.ConnectionPool | None = None
        storage: Storage
        if settings.redis_url:
            # Our own pool: redis-py's default client retries with backoff for seconds, this one fails
            # fast (CONDUIT_REDIS_TIMEOUT), and while Redis is down the breaker skips it altogether.
            self._pool = create_pool(settings.redis_url, settings)
            storage = RedisStorage(
                _storage_uri(settings.redis_url),
                implementation="redispy",
                wrap_exceptions=True,
                key_prefix=settings.rate_limit_prefix,
                connection_pool=self._pool,  # type: ignore[arg-type]  # limits types options as scalars
            )
        else:
            storage = MemoryStorage(wrap_exceptions=True)
        # Sliding window counter: no burst of twice the limit at a fixed window's edge, and two counters
        # per key where a moving window would store one entry per hit (600 per IP at the default).
        self._strategy = SlidingWindowCounterRateLimiter(storage)

    async def hit(self, rule: str, *identifiers: str) -> None:
        """Consume one unit of ``rule`` (e.g. ``"5/minute"``) for the identifiers, or raise RateLimitedError.

        The key is the rule and the identifiers only: start them with the limit's name
        (``"login-ip", ip``) so that two limits with the same rule never share a budget.
        """
        if not self._enabled:
            return
        item = _parse_rule(rule)
        if self._pool is not None and not self._link.available():
            self._storage_failed(rule, None)  # Redis is down: decide as if it had failed, at once
            return
        try:
            if await self._strategy.hit(item, *identifiers):
                self._link.succeeded()
                return
            stats = await self._strategy.get_window_stats(item, *identifiers)
        except StorageError as exc:
            self._link.failed(exc.storage_error)
            self._storage_failed(rule, exc)
            return
        self._link.succeeded()
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        RATE_LIMIT_REJECTIONS.labels(identifiers[0] if identifiers else rule).inc()  # the limit's name
        raise RateLimitedError(
            f"too many requests, retry in {retry_after} seconds", limit=item.amount, retry_after=retry_after
        )

    def _storage_failed(self, rule: str, exc: StorageError | None) -> None:
        """Allow or refuse as configured. An actual failure is logged; a request that skipped Redis
        because the breaker is open is only counted (the breaker logs the outage once)."""
        self.storage_errors += 1
        if exc is not None:
            verdict = "allowing" if self._fail_open else "refusing"
            logger.warning(
                "rate limit storage failed (%s), %s: %s", rule, verdict, type(exc.storage_error).__name__
            )
        if not self._fail_open:
            raise ServiceUnavailableError("the service is temporarily unavailable, please retry") from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


class RateLimitMiddleware:
    """Applies ``rule`` per client IP to every HTTP request but health checks and OPTIONS."""

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter, rule: str) -> None:
        self.app = app
        self.limiter = limiter
        self.rule = rule

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        path: str = scope.get("path", "")
        # Without a client address (e.g. a Unix socket with no proxy) there is no one to attribute it to.
        if (
            scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or path == "/health"
            or path.startswith("/health/")
            or not client
        ):
            await self.app(scope, receive, send)
            return
        try:
            await self.limiter.hit(self.rule, "global-ip", client[0])
        except AppError as exc:
            response = problem_response(
                Request(scope), exc.status_code, exc.detail, code=exc.code, headers=exc.headers()
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
