"""Notifications: written with the event that causes them, listed newest first with a cursor, marked
read, pushed after the commit, and emailed when the recipient asked for it."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from app.core.outbox import user_channel
from app.core.pubsub import subscription
from app.core.security import TokenService
from tests.conftest import ClientFactory
from tests.factories import Account, Api, assert_problem
from tests.smtp import SmtpServer, smtp_server  # noqa: F401


async def _notifications(client: httpx.AsyncClient, account: Account, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/notifications{query}", headers=account.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_comments_follows_and_favorites_notify_the_other_user(
    api: Api, client: httpx.AsyncClient
) -> None:
    author, fan = await api.register("author"), await api.register("fan")
    article = await api.article(author, "Dragons")
    await client.post("/profiles/author/follow", headers=fan.headers)
    await client.post(f"/articles/{article['slug']}/favorite", headers=fan.headers)
    comment = await api.comment(fan, article["slug"], "Great read")
    await api.comment(author, article["slug"], "my own")  # nobody is notified of their own actions

    body = await _notifications(client, author)
    assert body["unreadCount"] == 3 and body["nextCursor"] is None
    kinds = [n["kind"] for n in body["notifications"]]
    assert kinds == ["comment", "favorite", "follow"]  # newest first
    on_comment, on_favorite, on_follow = body["notifications"]
    assert on_comment["actor"] == {"username": "fan", "bio": "", "image": "", "following": False}
    assert on_comment["article"] == {"slug": article["slug"], "title": "Dragons"}
    assert on_comment["comment"] == {"id": comment["id"]} and on_comment["export"] is None
    assert on_favorite["article"]["slug"] == article["slug"] and on_favorite["comment"] is None
    assert on_follow["article"] is None and on_follow["actor"]["username"] == "fan"
    assert all(n["readAt"] is None and n["createdAt"].endswith("Z") for n in body["notifications"])
    assert (await _notifications(client, fan))["notifications"] == []


async def test_repeated_follows_and_favorites_notify_once(api: Api, client: httpx.AsyncClient) -> None:
    author, fan = await api.register("author"), await api.register("fan")
    slug = (await api.article(author))["slug"]
    for _ in range(2):
        await client.post("/profiles/author/follow", headers=fan.headers)
        await client.post(f"/articles/{slug}/favorite", headers=fan.headers)
    assert [n["kind"] for n in (await _notifications(client, author))["notifications"]] == [
        "favorite",
        "follow",
    ]


async def test_cursor_unread_filter_and_mark_read(api: Api, client: httpx.AsyncClient) -> None:
    author = await api.register("author")
    for n in range(5):
        follower = await api.register(f"follower{n}")
        await client.post("/profiles/author/follow", headers=follower.headers)

    first = await _notifications(client, author, "?limit=2")
    assert [n["actor"]["username"] for n in first["notifications"]] == ["follower4", "follower3"]
    second = await _notifications(client, author, f"?limit=2&before={first['nextCursor']}")
    assert [n["actor"]["username"] for n in second["notifications"]] == ["follower2", "follower1"]
    third = await _notifications(client, author, f"?limit=2&before={second['nextCursor']}")
    assert [n["actor"]["username"] for n in third["notifications"]] == ["follower0"]
    assert third["nextCursor"] is None

    up_to = second["notifications"][0]["id"]  # follower2's, and every older one
    for _ in range(2):  # idempotent
        response = await client.post("/notifications/read", json={"upTo": up_to}, headers=author.headers)
        assert response.status_code == 200 and response.json() == {"unreadCount": 2}
    unread = await _notifications(client, author, "?unread=true")
    assert [n["actor"]["username"] for n in unread["notifications"]] == ["follower4", "follower3"]
    everything = await _notifications(client, author)
    assert [n["readAt"] is not None for n in everything["notifications"]] == [False, False, True, True, True]


async def test_others_notifications_cannot_be_marked_read(api: Api, client: httpx.AsyncClient) -> None:
    author, fan, other = await api.register("author"), await api.register("fan"), await api.register("other")
    await client.post("/profiles/author/follow", headers=fan.headers)
    newest = (await _notifications(client, author))["notifications"][0]["id"]
    await client.post("/notifications/read", json={"upTo": newest}, headers=other.headers)
    assert (await _notifications(client, author))["unreadCount"] == 1


async def test_a_new_article_reaches_every_follower(api: Api, client: httpx.AsyncClient) -> None:
    author, fans, stranger = (
        await api.register("author"),
        [await api.register(f"fan{n}") for n in range(3)],
        (await api.register("stranger")),
    )
    for fan in fans:
        await client.post("/profiles/author/follow", headers=fan.headers)
    article = await api.article(author, "Fresh")
    for fan in fans:  # fanned out by a job after the commit: wait for it, within reason
        for _ in range(200):
            found = (await _notifications(client, fan))["notifications"]
            if found:
                break
            await asyncio.sleep(0.01)
        assert [(n["kind"], n["article"]["slug"], n["actor"]["username"]) for n in found] == [
            ("article", article["slug"], "author")
        ]
    assert (await _notifications(client, stranger))["notifications"] == []
    assert (await _notifications(client, author))["unreadCount"] == 3  # the three follows only


async def test_pushed_after_the_commit_as_listed(api: Api, client: httpx.AsyncClient, app: FastAPI) -> None:
    author, fan = await api.register("author"), await api.register("fan")
    slug = (await api.article(author))["slug"]
    author_id = await _notifications(client, author)  # registered; find the id through the token
    del author_id

    tokens: TokenService = app.state.tokens
    received: list[bytes] = []
    with subscription(app.state.pubsub, user_channel(tokens.verify(author.token).user_id), received.append):
        await client.post(f"/articles/{slug}/comments", json={"comment": {"body": "x"}}, headers=fan.headers)
        response = await client.post(
            "/articles/nope/comments", json={"comment": {"body": "x"}}, headers=fan.headers
        )
        assert response.status_code == 404  # rolled back: nothing pushed
        for _ in range(200):  # through Redis when the suite runs with it
            if received:
                break
            await asyncio.sleep(0.01)
    listed = (await _notifications(client, author))["notifications"][0]
    assert [orjson.loads(message) for message in received] == [{"type": "notification", "data": listed}]


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", "/notifications?limit=0", None),
        ("GET", "/notifications?limit=101", None),
        ("GET", "/notifications?before=0", None),
        ("GET", "/notifications?before=abc", None),
        ("GET", "/notifications?unread=maybe", None),
        ("POST", "/notifications/read", {"upTo": 0}),
        ("POST", "/notifications/read", {"upTo": "1"}),
        ("POST", "/notifications/read", {}),
        ("POST", "/notifications/read", {"upTo": 2**64}),
    ],
)
async def test_bad_input_is_a_422(
    api: Api, client: httpx.AsyncClient, method: str, url: str, body: dict[str, Any] | None
) -> None:
    account = await api.register()
    response = await client.request(method, url, json=body, headers=account.headers)
    assert_problem(response, 422, "validation_failed")


async def test_notifications_need_a_token(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/notifications"), 401, "unauthorized")
    assert_problem(await client.post("/notifications/read", json={"upTo": 1}), 401, "unauthorized")


async def test_settings_read_and_change(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register()
    response = await client.get("/user/settings", headers=account.headers)
    assert response.json() == {
        "settings": {"emailOnFollow": True, "emailOnComment": True, "weeklyDigest": False}
    }
    response = await client.put(
        "/user/settings",
        json={"settings": {"weeklyDigest": True, "emailOnFollow": False}},
        headers=account.headers,
    )
    assert response.json() == {
        "settings": {"emailOnFollow": False, "emailOnComment": True, "weeklyDigest": True}
    }
    again = await client.get("/user/settings", headers=account.headers)
    assert again.json() == response.json()
    for bad in ({"weeklyDigest": "yes"}, {"weeklyDigest": 1}, {"unknown": True}, []):
        response = await client.put("/user/settings", json={"settings": bad}, headers=account.headers)
        assert_problem(response, 422, "validation_failed")
    assert_problem(await client.get("/user/settings"), 401, "unauthorized")


def _notification_mails(server: SmtpServer) -> list[EmailMessage]:
    return [m for m in server.messages if not str(m["Subject"]).startswith("Confirm your email")]


async def test_follow_and_comment_emails(make_client: ClientFactory, smtp_server: SmtpServer) -> None:  # noqa: F811
    client = await make_client(**smtp_server.settings, frontend_url="https://conduit.example")
    api = Api(client)
    author, fan = await api.register("author"), await api.register("fan")
    slug = (await api.article(author, "Dragons"))["slug"]
    await client.post("/profiles/author/follow", headers=fan.headers)
    await api.comment(fan, slug, "Great read")
    # Sent after each response (registrations also send a verification email: not counted here).
    follow_mail, comment_mail = _notification_mails(smtp_server)
    assert follow_mail["To"] == author.email and follow_mail["Subject"] == "fan now follows you"
    assert "https://conduit.example/profile/fan" in follow_mail.get_content()
    assert comment_mail["Subject"] == 'fan commented on "Dragons"'
    assert f"https://conduit.example/article/{slug}" in comment_mail.get_content()

    await client.put("/user/settings", json={"settings": {"emailOnComment": False}}, headers=author.headers)
    await api.comment(fan, slug, "Again")
    other = await api.register("other")
    await client.post("/profiles/fan/follow", headers=other.headers)  # fan still gets follow emails
    assert [m["Subject"] for m in _notification_mails(smtp_server)[2:]] == ["other now follows you"]


async def test_a_failing_mail_server_fails_no_request(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(smtp_host="127.0.0.1", smtp_port=9, smtp_starttls=False, smtp_timeout=1)
    api = Api(client)
    author, fan = await api.register("author"), await api.register("fan")
    response = await client.post("/profiles/author/follow", headers=fan.headers)
    assert response.status_code == 200
    assert (await _notifications(client, author))["unreadCount"] == 1  # the notification is kept
    assert any("not sent" in record.getMessage() for record in caplog.records)
