"""Two processes (apps) sharing one Redis: a socket on A gets the events of writes on B through Redis
before an outage; during it, only A's own events (same-process delivery); after it, a resync, then
B's events again, without a restart of either."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from httpx_ws import AsyncWebSocketSession
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.realtime import CLOSE_UNAUTHORIZED
from tests.factories import Account
from tests.faults.redis_apps import PATIENCE, Instance, deployment, eventually, running
from tests.faults.redis_faults import FAULTS, Fault, fault
from tests.faults.redis_server import redis_server, tcp_proxy
from tests.realtime.conftest import close_code, receive

OUTAGE = 4.0  # seconds Redis refuses in the backoff test


@pytest.fixture(params=FAULTS)
def redis_fault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fault]:
    with fault(request.param, tmp_path) as broken:
        yield broken


async def _notification(ws: AsyncWebSocketSession) -> dict[str, Any]:
    message = await receive(ws)
    assert message["type"] == "notification", message
    data: dict[str, Any] = message["data"]
    return data


async def _follow(app: Instance, follower: Account, followee: Account) -> None:
    response = await app.client.post(f"/profiles/{followee.username}/follow", headers=follower.headers)
    assert response.status_code == 200


async def test_fan_out_across_processes_degrades_and_resumes(
    redis_fault: Fault, database_url: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    shared = deployment()
    async with (
        asyncio.timeout(PATIENCE * 4),
        running(database_url, tmp_path, redis_fault.url, **shared) as a,
        running(database_url, tmp_path, redis_fault.url, **shared) as b,
    ):
        jake, ann, finn = [await a.api.register(name) for name in ("jake", "ann", "finn")]
        slug = (await a.api.article(jake))["slug"]
        async with a.connect(jake.token) as ws:
            before = await b.api.comment(ann, slug, "before")  # written on B, pushed to the socket on A
            assert (await _notification(ws))["comment"] == {"id": before["id"]}

            redis_fault.fail()
            await eventually(lambda: not (a.pubsub.subscribed or b.pubsub.subscribed), "both noticed")
            during = await b.api.comment(ann, slug, "during")  # cannot reach A
            await _follow(a, finn, jake)  # on A itself: delivered in the process
            followed = await _notification(ws)
            assert (followed["kind"], followed["actor"]["username"]) == ("follow", "finn")

            redis_fault.restore()
            assert await receive(ws) == {"type": "resync"}  # A is subscribed again: reload
            await eventually(lambda: b.pubsub.subscribed, "B subscribed again")
            after = await b.api.comment(ann, slug, "after")
            # The comment from during the outage never arrived (the resync covers it), or, held by a
            # network that only delayed it, arrives late; then the new one does.
            data = await _notification(ws)
            if data["comment"] == {"id": during["id"]}:
                data = await _notification(ws)
            assert data["comment"] == {"id": after["id"]}
            assert a.pubsub.reconnections >= 1 and b.pubsub.reconnections >= 1


async def test_a_logout_missed_during_the_outage_closes_the_socket_after_it(
    redis_fault: Fault, database_url: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    """Jake logs out everywhere on B while Redis is away: the news cannot reach his socket on A. Once
    A is subscribed again, the socket checks its session before resyncing, and closes with 4401."""
    shared = deployment()
    async with (
        asyncio.timeout(PATIENCE * 3),
        running(database_url, tmp_path, redis_fault.url, **shared) as a,
        running(database_url, tmp_path, redis_fault.url, **shared) as b,
    ):
        jake, ann = await a.api.register("jake"), await a.api.register("ann")
        async with a.connect(jake.token) as jake_ws, a.connect(ann.token) as ann_ws:
            redis_fault.fail()
            await eventually(lambda: not a.pubsub.subscribed, "A noticed the outage")
            assert (await b.client.post("/auth/logout-all", headers=jake.headers)).status_code == 204
            redis_fault.restore()
            assert await close_code(jake_ws) == CLOSE_UNAUTHORIZED
            assert await receive(ann_ws) == {"type": "resync"}  # ann's session holds


async def test_the_listener_reconnects_with_backoff(
    database_url: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    """While Redis refuses, the idle process's listener retries, ever less often (not in a tight loop)."""
    with redis_server(tmp_path) as redis, tcp_proxy(redis.port) as proxy:
        async with asyncio.timeout(PATIENCE * 2), running(database_url, tmp_path, proxy.url) as app:
            assert app.pubsub.subscribed
            proxy.cut()
            accepted = proxy.accepted
            await asyncio.sleep(OUTAGE)  # the outage lasts this long; nothing is asserted about time
            attempts = proxy.accepted - accepted
            # Delays of 0.1, 0.2, 0.4, 0.8, 1.6, 2, 2 s... (half of each jittered): some 5 to 9 attempts
            # in 4 s, fewer on a slow machine; a fixed 50 ms delay would make 80.
            assert 2 <= attempts <= 15
            proxy.restore()
            await eventually(lambda: app.pubsub.subscribed, "resubscribed")


async def test_a_publish_into_a_silent_network_is_delivered_here_once(
    database_url: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    """The network to Redis starts dropping packets while the listener still counts as subscribed: the
    PUBLISH of a comment times out, and the comment reaches the socket in this process directly. The
    PUBLISH was only held back: once the network is restored it reaches Redis and comes back through
    the (still live) subscription, and is not delivered a second time."""
    with redis_server(tmp_path) as redis, tcp_proxy(redis.port) as proxy:
        # A health check far apart: the listener sits the short outage out on its connection.
        async with (
            asyncio.timeout(PATIENCE * 2),
            running(database_url, tmp_path, proxy.url, redis_health_check_interval=60.0) as app,
        ):
            jake, ann, finn = [await app.api.register(name) for name in ("jake", "ann", "finn")]
            slug = (await app.api.article(jake))["slug"]
            async with app.connect(jake.token) as ws:
                await _follow(app, finn, jake)  # through Redis: the publishing connection is open
                assert (await _notification(ws))["kind"] == "follow"
                proxy.blackhole()
                comment = await app.api.comment(ann, slug, "into the void")  # bounded by the timeout
                assert (await _notification(ws))["comment"] == {"id": comment["id"]}
                proxy.restore()
                await eventually(lambda: app.link.up, "Redis answers again")
                favorited = await app.client.post(f"/articles/{slug}/favorite", headers=finn.headers)
                assert favorited.status_code == 200
                data = await _notification(ws)  # next: no second copy of the comment, no resync
                assert (data["kind"], data["actor"]["username"]) == ("favorite", "finn")
                assert app.pubsub.reconnections == 0
