"""WebSocket tests: an app per test (built with ``make_client``'s settings overrides) whose pub/sub is
started, as the lifespan would (Redis when CONDUIT_TEST_REDIS_URL is set), and sockets opened in-process
through httpx-ws."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, aconnect_ws
from httpx_ws.transport import ASGIWebSocketTransport
from starlette.types import ASGIApp

from tests.conftest import ClientFactory
from tests.factories import Account, Api

# Bounds a wait for a frame, so that a missing one fails the test instead of hanging it. No test
# asserts how fast anything arrives.
PATIENCE = 10.0


async def receive(ws: AsyncWebSocketSession) -> dict[str, Any]:
    message: dict[str, Any] = await ws.receive_json(timeout=PATIENCE)
    return message


async def close_code(ws: AsyncWebSocketSession) -> int:
    """Read until the server closes the socket; its close code. Fails on any other frame."""
    try:
        frame = await ws.receive_text(timeout=PATIENCE)
    except WebSocketDisconnect as closed:
        return closed.code
    raise AssertionError(f"expected the socket to close, got {frame}")


@dataclass
class Live:
    app: FastAPI
    client: httpx.AsyncClient  # plain HTTP to the same app
    api: Api

    def user_id(self, account: Account) -> int:
        return int(self.app.state.tokens.verify(account.token).user_id)

    @asynccontextmanager
    async def connect(
        self, token: str | None = None, *, headers: dict[str, str] | None = None, app: ASGIApp | None = None
    ) -> AsyncIterator[AsyncWebSocketSession]:
        """A socket on ``/ws`` (served by ``app``, by default this one); given a token, authenticated
        and ready."""
        transport = ASGIWebSocketTransport(app=app or self.app)  # entered and left by the client
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://test/api/v1") as http,
            aconnect_ws("/ws", http, headers=headers or {}) as ws,
        ):
            if token is not None:
                await ws.send_json({"type": "auth", "token": token})
                assert await receive(ws) == {"type": "ready"}
            yield ws

    async def refusal(self, *, headers: dict[str, str]) -> int:
        """The close code the app refuses a handshake with (before accepting it)."""
        refused: list[int] = []
        try:
            async with self.connect(headers=headers):
                pass
        except* WebSocketDisconnect as group:  # raised in httpx-ws's task group
            refused.extend(_codes(group))
        assert refused, "the handshake was accepted"
        return refused[0]


def _codes(error: BaseException) -> list[int]:
    if isinstance(error, BaseExceptionGroup):
        return [code for inner in error.exceptions for code in _codes(inner)]
    return [error.code] if isinstance(error, WebSocketDisconnect) else []


LiveFactory = Callable[..., Awaitable[Live]]


@pytest.fixture
async def make_live(make_client: ClientFactory) -> AsyncIterator[LiveFactory]:
    """``await make_live(**settings_overrides)``."""
    started: list[FastAPI] = []

    async def make(**overrides: object) -> Live:
        http = await make_client(**overrides)
        app: FastAPI = http.app  # type: ignore[attr-defined]
        await app.state.pubsub.start()
        started.append(app)
        return Live(app, http, Api(http))

    yield make
    for app in started:
        await app.state.pubsub.close()


@pytest.fixture
async def live(make_live: LiveFactory) -> Live:
    return await make_live()
