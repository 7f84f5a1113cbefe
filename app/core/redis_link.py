"""This process's view of Redis: fast-failing clients, and one circuit breaker shared by the cache, the
rate limiter and pub/sub.

Redis is optional for every request: the cache falls back to the database, the rate limiter fails
open (or closed, as configured), pub/sub to this process's own sockets. What must never happen is a
request waiting on a dead Redis. So every client connects and reads within ``CONDUIT_REDIS_TIMEOUT``
and does not retry (one immediate retry of a connection error, for a pooled connection that a Redis
restart closed); and after a failure :class:`RedisLink` stops requests from trying Redis at all
until a backoff has passed (exponential, with jitter, up to ``CONDUIT_REDIS_BACKOFF_MAX``). Then
one request tries again, and its success, or the pub/sub listener reconnecting, closes the breaker.

``failures`` counts every failure (and every cache invalidation skipped because of one): the cache
compares it with the count it last made safe, and bumps its generation when it grew (see
app/core/cache.py).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from app.core.config import Settings

logger = logging.getLogger("conduit.redis")

BACKOFF_BASE = 0.1  # seconds before the first new attempt; doubled per failed attempt


def backoff(attempt: int, cap: float) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (0-based): exponential up to ``cap``, the upper
    half jittered, so that processes that lost Redis together do not return to it in step."""
    delay = min(cap, BACKOFF_BASE * 2**attempt)
    return random.uniform(delay / 2, delay)


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection options of every Redis client in the request path: bounded connects and replies, and
    one immediate retry of a connection error only (a timeout is not retried: it would double)."""
    return {
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    }


def create_client(url: str, settings: Settings) -> redis.asyncio.Redis:
    client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(url, **client_options(settings))
    return client


def create_pool(url: str, settings: Settings) -> redis.asyncio.ConnectionPool:
    return redis.asyncio.ConnectionPool.from_url(url, **client_options(settings))


class RedisLink:
    """A circuit breaker: whether Redis is worth trying now, and how many failures were seen."""

    def __init__(self, backoff_max: float = 5.0) -> None:
        self._backoff_max = backoff_max
        self._down_since: float | None = None
        self._attempt = 0
        self._next_try = 0.0
        self.failures = 0

    @property
    def up(self) -> bool:
        return self._down_since is None

    def available(self) -> bool:
        """Whether to try Redis now: always while it works; after a failure, once per backoff period
        (the caller that gets ``True`` is the probe, the others skip Redis until it has answered)."""
        if self._down_since is None:
            return True
        now = time.monotonic()
        if now < self._next_try:
            return False
        self._next_try = now + backoff(self._attempt, self._backoff_max)
        return True

    def failed(self, exc: BaseException) -> None:
        """Redis failed (or timed out): skip it for a while. Logged once per outage."""
        self.failures += 1
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._attempt = 0
            logger.warning(
                "redis unavailable (%s): no cache, rate limits fail open or closed as configured, live "
                "events reach this process's sockets only; retrying with backoff",
                type(exc).__name__,
            )
        else:
            self._attempt += 1
        self._next_try = now + backoff(self._attempt, self._backoff_max)

    def missed(self) -> None:
        """Something that needed Redis went without it (a cache invalidation skipped while it is down)."""
        self.failures += 1

    def succeeded(self) -> None:
        if self._down_since is not None:
            logger.info("redis available again after %.1f s", time.monotonic() - self._down_since)
            self._down_since = None
            self._attempt = 0
