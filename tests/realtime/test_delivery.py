"""Notifications reach every live socket of their recipient, and nobody else's, as published."""

from __future__ import annotations

from typing import Any

from httpx_ws import AsyncWebSocketSession

from tests.factories import Account
from tests.realtime.conftest import Live, receive


async def _latest(live: Live, account: Account) -> dict[str, Any]:
    """The newest notification of ``account`` through REST."""
    response = await live.client.get("/notifications", headers=account.headers)
    assert response.status_code == 200, response.text
    latest: dict[str, Any] = response.json()["notifications"][0]
    return latest


async def _follow(live: Live, follower: Account, followee: Account) -> None:
    response = await live.client.post(f"/profiles/{followee.username}/follow", headers=follower.headers)
    assert response.status_code == 200, response.text


async def _assert_follow_is_next(
    live: Live, ws: AsyncWebSocketSession, follower: Account, who: Account
) -> None:
    """``follower`` follows ``who``: the next frame on ``ws`` (a socket of ``who``) is that notification,
    so nothing published before it was delivered there."""
    await _follow(live, follower, who)
    message = await receive(ws)
    assert message["type"] == "notification"
    assert message["data"]["kind"] == "follow"
    assert message["data"]["actor"]["username"] == follower.username


async def test_comment_reaches_the_author_only(live: Live) -> None:
    jake, finn, ann = [await live.api.register(name) for name in ("jake", "finn", "ann")]
    article = await live.api.article(jake)
    async with live.connect(jake.token) as jake_ws, live.connect(finn.token) as finn_ws:
        comment = await live.api.comment(ann, article["slug"], "Great read")
        message = await receive(jake_ws)
        assert message == {"type": "notification", "data": await _latest(live, jake)}
        data = message["data"]
        assert data["kind"] == "comment"
        assert data["actor"]["username"] == "ann"
        assert data["article"] == {"slug": article["slug"], "title": article["title"]}
        assert data["comment"] == {"id": comment["id"]}
        assert data["readAt"] is None
        await _assert_follow_is_next(live, finn_ws, ann, finn)


async def test_follow_reaches_the_followee_only(live: Live) -> None:
    jake, finn, ann = [await live.api.register(name) for name in ("jake", "finn", "ann")]
    async with live.connect(jake.token) as jake_ws, live.connect(finn.token) as finn_ws:
        await _follow(live, ann, jake)
        message = await receive(jake_ws)
        assert message == {"type": "notification", "data": await _latest(live, jake)}
        assert message["data"]["kind"] == "follow"
        assert message["data"]["actor"]["username"] == "ann"
        await _assert_follow_is_next(live, finn_ws, jake, finn)


async def test_favorite_reaches_the_author_only(live: Live) -> None:
    jake, finn, ann = [await live.api.register(name) for name in ("jake", "finn", "ann")]
    article = await live.api.article(jake)
    async with live.connect(jake.token) as jake_ws, live.connect(finn.token) as finn_ws:
        response = await live.client.post(f"/articles/{article['slug']}/favorite", headers=ann.headers)
        assert response.status_code == 200, response.text
        message = await receive(jake_ws)
        assert message == {"type": "notification", "data": await _latest(live, jake)}
        assert message["data"]["kind"] == "favorite"
        assert message["data"]["article"]["slug"] == article["slug"]
        await _assert_follow_is_next(live, finn_ws, ann, finn)


async def test_every_socket_of_the_recipient_gets_it(live: Live) -> None:
    jake, ann = [await live.api.register(name) for name in ("jake", "ann")]
    async with live.connect(jake.token) as phone, live.connect(jake.token) as laptop:
        await _follow(live, ann, jake)
        assert (await receive(phone))["data"] == (await receive(laptop))["data"]
