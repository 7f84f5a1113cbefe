"""Redis is down when the app starts: it starts anyway and serves everything without it.

"Down" is each of: nothing listening (connections refused), and a network that silently drops
packets (a proxy that accepts and never answers), where only timeouts can tell.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.factories import PASSWORD, Account, assert_problem
from tests.faults.redis_apps import PATIENCE, Instance, running
from tests.faults.redis_server import RedisServer, TcpProxy, redis_server, tcp_proxy
from tests.realtime.conftest import receive


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


@pytest.fixture
def proxy(redis: RedisServer) -> Iterator[TcpProxy]:
    with tcp_proxy(redis.port) as proxy:
        yield proxy


@pytest.fixture(params=["refused", "blackhole"])
def dead_redis_url(request: pytest.FixtureRequest, redis: RedisServer, proxy: TcpProxy) -> str:
    """The URL of a Redis that is down, in one of two ways."""
    if request.param == "refused":
        redis.stop()  # nothing listens on its port any more
        return redis.url
    proxy.blackhole()
    return proxy.url


async def _login(instance: Instance, account: Account) -> httpx.Response:
    return await instance.client.post(
        "/users/login", json={"user": {"email": account.email, "password": PASSWORD}}
    )


async def test_serves_everything_without_redis(
    dead_redis_url: str, database_url: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    # Every step bounded: a dead Redis must never make a request (or the start) hang.
    async with (
        asyncio.timeout(PATIENCE * 3),
        running(database_url, tmp_path, dead_redis_url, rate_limit_login_account="2/minute") as app,
    ):
        ready = await app.client.get("http://test/health/ready")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "degraded",
            "checks": {"database": "ok", "redis": "degraded", "broker": "absent"},
        }
        assert not app.pubsub.subscribed

        jake, ann = await app.api.register("jake"), await app.api.register("ann")
        slug = (await app.api.article(jake))["slug"]
        for _ in range(2):  # reads come from the database, every time
            article = (await app.client.get(f"/articles/{slug}")).json()["article"]
            assert article["body"] == "You have to believe"
        edited = await app.client.put(
            f"/articles/{slug}", json={"article": {"body": "edited"}}, headers=jake.headers
        )
        assert edited.status_code == 200
        assert (await app.client.get(f"/articles/{slug}")).json()["article"]["body"] == "edited"
        assert app.cache.hits == 0

        # Fan-out within the process: jake's socket gets ann's comment.
        async with app.connect(jake.token) as ws:
            comment = await app.api.comment(ann, slug, "first!")
            message = await receive(ws)
            assert message["type"] == "notification"
            assert message["data"]["comment"] == {"id": comment["id"]}

        # Rate limits fail open (the default): a third login within the minute is not refused.
        assert [(await _login(app, ann)).status_code for _ in range(3)] == [200, 200, 200]


async def test_rate_limits_fail_closed_when_configured(
    dead_redis_url: str, database_url: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    async with (
        asyncio.timeout(PATIENCE * 3),
        running(database_url, tmp_path, dead_redis_url, rate_limit_fail_open=False) as app,
    ):
        # A client of its own: the app's own fails the test on any 5xx, and here a 503 is the point.
        transport = httpx.ASGITransport(app=app.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for _ in range(3):
                refused = await client.get("/api/v1/tags")
                assert_problem(refused, 503, "service_unavailable")
            # The probes are not rate limited: the process is ready, degraded.
            assert (await client.get("/health/ready")).json()["status"] == "degraded"
