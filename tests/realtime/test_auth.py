"""The handshake: the auth message, each way it can fail (close 4401), and the Origin check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from app.core.security import TokenService
from app.models import User
from tests.realtime.conftest import Live, LiveFactory, close_code, receive


async def test_auth_message_makes_the_socket_ready(live: Live) -> None:
    jake = await live.api.register("jake")
    async with live.connect() as ws:
        await ws.send_json({"type": "auth", "token": jake.token})
        assert await receive(ws) == {"type": "ready"}
        assert live.app.state.pubsub.count() == 1  # subscribed to jake's channel
        # The short-lived session of the auth check is closed: the socket holds no connection.
        assert live.app.state.engine.pool.checkedout() == 0


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "auth", "token": "not-a-jwt"}',
        '{"type": "auth"}',
        '{"type": "auth", "token": ""}',
        '{"type": "auth", "token": 42}',
        '{"type": "pong"}',
        '["auth"]',
        "{",
        "",
    ],
    ids=[
        "bad-token",
        "no-token",
        "empty-token",
        "token-not-a-string",
        "not-auth",
        "not-an-object",
        "malformed",
        "empty",
    ],
)
async def test_anything_but_a_valid_auth_message_closes_4401(live: Live, frame: str) -> None:
    async with live.connect() as ws:
        await ws.send_text(frame)
        assert await close_code(ws) == 4401
    assert live.app.state.pubsub.count() == 0


async def test_no_auth_message_in_time_closes_4401(make_live: LiveFactory) -> None:
    live = await make_live(ws_auth_timeout=0.2)
    async with live.connect() as ws:
        assert await close_code(ws) == 4401


async def _refused(live: Live, token: str) -> None:
    async with live.connect() as ws:
        await ws.send_json({"type": "auth", "token": token})
        assert await close_code(ws) == 4401


async def test_expired_or_forged_token_closes_4401(live: Live) -> None:
    jake = await live.api.register("jake")
    tokens: TokenService = live.app.state.tokens
    await _refused(live, tokens.issue(live.user_id(jake), 60, now=datetime.now(UTC) - timedelta(minutes=2)))
    header_and_claims, _ = jake.token.rsplit(".", 1)
    await _refused(live, f"{header_and_claims}.{'A' * 43}")


async def test_logged_out_session_closes_4401(live: Live) -> None:
    jake = await live.api.register("jake")
    response = await live.client.post("/auth/token", data={"username": "jake", "password": jake.password})
    pair = response.json()
    async with live.connect(pair["access_token"]):
        pass  # valid until the logout
    response = await live.client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert response.status_code == 204, response.text
    await _refused(live, pair["access_token"])


async def test_token_from_before_logout_all_or_of_a_deactivated_user_closes_4401(live: Live) -> None:
    jake = await live.api.register("jake")
    response = await live.client.post("/auth/logout-all", headers=jake.headers)
    assert response.status_code == 204, response.text
    await _refused(live, jake.token)

    finn = await live.api.register("finn")
    async with live.app.state.sessionmaker() as session, session.begin():
        await session.execute(update(User).where(User.username == "finn").values(is_active=False))
    await _refused(live, finn.token)


async def test_foreign_origins_are_refused_before_the_handshake(make_live: LiveFactory) -> None:
    live = await make_live(cors_origins=["https://app.example"])
    jake = await live.api.register("jake")
    # Refused before accepting: a real server answers the handshake with a 403.
    assert await live.refusal(headers={"Origin": "https://evil.example"}) == 4403
    async with live.connect(jake.token, headers={"Origin": "https://app.example"}):
        pass
    async with live.connect(jake.token):  # no Origin: not a browser
        pass


async def test_any_origin_with_a_wildcard(make_live: LiveFactory) -> None:
    live = await make_live(cors_origins=["*"])
    jake = await live.api.register("jake")
    async with live.connect(jake.token, headers={"Origin": "https://anywhere.example"}):
        pass


async def test_open_sockets_close_4401_when_their_sessions_end(live: Live) -> None:
    jake = await live.api.register("jake")
    first = (
        await live.client.post("/auth/token", data={"username": "jake", "password": jake.password})
    ).json()
    other = (
        await live.client.post("/auth/token", data={"username": "jake", "password": jake.password})
    ).json()
    async with (
        live.connect(first["access_token"]) as ws_first,
        live.connect(other["access_token"]) as ws_other,
    ):
        response = await live.client.post("/auth/logout", json={"refresh_token": first["refresh_token"]})
        assert response.status_code == 204, response.text
        assert await close_code(ws_first) == 4401  # the session that logged out
        await live.client.post("/profiles/jake/follow", headers=(await live.api.register("fan")).headers)
        assert (await receive(ws_other))["type"] == "notification"  # the other session is untouched

    async with live.connect(other["access_token"]) as ws_other, live.connect(jake.token) as ws_realworld:
        response = await live.client.post("/auth/logout-all", headers=jake.headers)
        assert response.status_code == 204, response.text
        assert await close_code(ws_other) == 4401  # every token issued before it, RealWorld ones too
        assert await close_code(ws_realworld) == 4401
