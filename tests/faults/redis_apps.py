"""The apps of the Redis fault tests: each a full ``create_app`` with its lifespan running (so its pub/sub
listener is live, as under a server), reached in-process over HTTP and WebSocket, and pointed at a
throwaway Redis (``tests/faults/redis_server.py``) rather than the machine's shared one."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from app.core.cache import Cache
from app.core.pubsub import RedisPubSub
from app.core.redis_link import RedisLink
from app.main import create_app
from tests.conftest import make_settings
from tests.factories import Api
from tests.realtime.conftest import Live

# Bounds every wait for something to happen (a recovery, a message), so that one that never happens
# fails the test instead of hanging it. No test asserts how fast anything happens within it.
PATIENCE = 30.0

# Timeouts long enough that a loaded machine (a stalled event loop) does not fake a failure before the
# test injects one; backoffs and health checks short enough that recoveries happen well within PATIENCE.
FAULT_SETTINGS: dict[str, object] = {
    "redis_timeout": 2.0,
    "redis_backoff_max": 2.0,
    "redis_health_check_interval": 2.0,
}


def deployment() -> dict[str, object]:
    """Settings that make several apps one deployment, sharing Redis keys and pub/sub channels
    (``make_settings`` gives every app prefixes of its own)."""
    prefix = f"test-{uuid.uuid4().hex}"
    return {"cache_prefix": prefix, "rate_limit_prefix": prefix}


@dataclass
class Instance(Live):
    """One app (one "process"): ``client`` fails the test on any 5xx; ``statuses`` records them all."""

    statuses: list[int] = field(default_factory=list)

    @property
    def cache(self) -> Cache:
        cache: Cache = self.app.state.cache
        return cache

    @property
    def link(self) -> RedisLink:
        link: RedisLink = self.app.state.redis_link
        return link

    @property
    def pubsub(self) -> RedisPubSub:
        pubsub: RedisPubSub = self.app.state.pubsub
        return pubsub


@asynccontextmanager
async def running(
    database_url: str, var_dir: Path, redis_url: str | None, **overrides: object
) -> AsyncIterator[Instance]:
    """An app on ``redis_url`` with its lifespan entered (as a server would), and its HTTP client."""
    settings = make_settings(database_url, var_dir, redis_url=redis_url, **{**FAULT_SETTINGS, **overrides})
    app = create_app(settings)
    statuses: list[int] = []

    async def record(response: httpx.Response) -> None:
        statuses.append(response.status_code)
        if response.status_code >= 500:
            await response.aread()
            raise AssertionError(f"{response.request.method} {response.request.url} -> {response.text}")

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://test/api/v1",
            event_hooks={"response": [record]},
        ) as client,
    ):
        yield Instance(app, client, Api(client), statuses)


async def eventually(condition: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Wait until ``condition()`` holds (polling), or fail the test saying ``what`` never happened."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE
    while loop.time() < deadline:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"never happened within {PATIENCE} s: {what}")
