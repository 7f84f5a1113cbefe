"""A live connection: heartbeat, token expiry, the bounded mailbox, clean exits, the middleware."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
from httpx_ws import AsyncWebSocketSession
from prometheus_client import REGISTRY
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.outbox import user_channel
from app.core.pubsub import subscription
from app.core.realtime import RESYNC, TASK_PREFIX, Mailbox
from tests.realtime.conftest import Live, LiveFactory, close_code, receive


def connection_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name().startswith(TASK_PREFIX)]


def assert_nothing_left(live: Live) -> None:
    """Every exit path unsubscribes and ends the connection's tasks."""
    assert live.app.state.pubsub.count() == 0
    assert connection_tasks() == []


async def test_client_leaving_unsubscribes_and_ends_the_tasks(live: Live) -> None:
    jake = await live.api.register("jake")
    async with live.connect(jake.token):
        assert live.app.state.pubsub.count() == 1
        assert len(connection_tasks()) == 3
    assert_nothing_left(live)


async def _answer_pings_until_notification(ws: AsyncWebSocketSession) -> dict[str, object]:
    while (message := await receive(ws)) == {"type": "ping"}:
        await ws.send_json({"type": "pong"})
    return message


async def test_pings_answered_keep_the_socket_open(make_live: LiveFactory) -> None:
    live = await make_live(ws_heartbeat_interval=0.3)
    jake, ann = [await live.api.register(name) for name in ("jake", "ann")]
    async with live.connect(jake.token) as ws:
        for _ in range(3):
            assert await receive(ws) == {"type": "ping"}
            await ws.send_json({"type": "pong"})
        await live.client.post("/profiles/jake/follow", headers=ann.headers)
        message = await _answer_pings_until_notification(ws)
        assert message["type"] == "notification"


async def test_unanswered_ping_closes_4408(make_live: LiveFactory) -> None:
    live = await make_live(ws_heartbeat_interval=0.1)
    jake = await live.api.register("jake")
    async with live.connect(jake.token) as ws:
        assert await receive(ws) == {"type": "ping"}
        assert await close_code(ws) == 4408
    assert_nothing_left(live)


async def test_token_expiry_closes_4401(live: Live) -> None:
    jake = await live.api.register("jake")
    # Valid for two more seconds; the heartbeat (30 s) is not what ends it.
    token = live.app.state.tokens.issue(live.user_id(jake), 60, now=datetime.now(UTC) - timedelta(seconds=58))
    async with live.connect(token) as ws:
        assert await close_code(ws) == 4401
    assert_nothing_left(live)


def stalled(app: ASGIApp, flowing: asyncio.Event) -> ASGIApp:
    """``app`` whose outgoing frames wait while ``flowing`` is clear: a client that stopped reading, as
    TCP backpressure makes it look to the server."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        async def held_send(message: Message) -> None:
            if message["type"] == "websocket.send":
                await flowing.wait()
            await send(message)

        await app(scope, receive, held_send)

    return wrapped


async def test_slow_consumer_gets_a_resync_instead_of_a_backlog(make_live: LiveFactory) -> None:
    size, published = 3, 50
    live = await make_live(ws_queue_size=size)
    pubsub = live.app.state.pubsub
    jake = await live.api.register("jake")
    channel = user_channel(live.user_id(jake))
    flowing = asyncio.Event()
    flowing.set()
    async with live.connect(jake.token, app=stalled(live.app, flowing)) as ws:
        flowing.clear()
        for n in range(published):
            await pubsub.publish(channel, orjson.dumps({"type": "notification", "data": {"id": n}}))
        # Pub/sub delivers in order: once this arrives, all of the above reached the socket's mailbox.
        barrier = asyncio.Event()
        with subscription(pubsub, "test-barrier", lambda _: barrier.set()):
            await pubsub.publish("test-barrier", b"")
            await asyncio.wait_for(barrier.wait(), 10)
        flowing.set()

        frames = []
        while (message := await receive(ws)) != {"type": "resync"}:
            frames.append(message)
        frames.append(message)
        await pubsub.publish(channel, b'{"type": "notification", "data": {"id": "after"}}')
        while (message := await receive(ws))["data"] != {"id": "after"}:  # delivery goes on
            frames.append(message)
        # At most the frame the writer held when the client stalled, then the bounded mailbox.
        assert len(frames) <= 1 + size


def test_mailbox_is_bounded_and_resyncs_on_overflow() -> None:
    mailbox = Mailbox(3)
    for n in range(1000):
        mailbox.put(str(n).encode())
        assert len(mailbox) <= 3
    mailbox = Mailbox(3)
    for message in (b"1", b"2", b"3", b"4", b"5"):
        mailbox.put(message)

    async def drain() -> list[bytes]:
        return [await mailbox.get() for _ in range(len(mailbox))]

    # The fourth found the mailbox full: the three queued were dropped for one resync; the fifth follows.
    assert asyncio.run(drain()) == [RESYNC, b"5"]


async def test_websockets_pass_the_http_middleware(make_live: LiveFactory) -> None:
    live = await make_live(
        profiling_enabled=True,
        allowed_hosts=["test"],
        trusted_proxies=["127.0.0.1"],
        rate_limit_default_ip="3/minute",  # HTTP requests only: the two registrations and the follow
    )
    jake, ann = [await live.api.register(name) for name in ("jake", "ann")]
    async with live.connect(jake.token) as first, live.connect(jake.token), live.connect(jake.token):
        response = await live.client.post("/profiles/jake/follow", headers=ann.headers)
        assert response.status_code == 200, response.text
        assert (await receive(first))["data"]["kind"] == "follow"


async def test_open_sockets_are_counted(live: Live) -> None:
    jake = await live.api.register("jake")
    before = REGISTRY.get_sample_value("conduit_websocket_connections") or 0.0
    async with live.connect(jake.token):
        assert REGISTRY.get_sample_value("conduit_websocket_connections") == before + 1
    assert_nothing_left(live)  # the server's side has ended too
    assert REGISTRY.get_sample_value("conduit_websocket_connections") == before
