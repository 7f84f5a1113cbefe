"""The weekly digest, delivered to a real SMTP server."""

from __future__ import annotations

import socket
from datetime import timedelta

import httpx
import pytest
from aiosmtplib import SMTPConnectError
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.base import utcnow
from app.models import Article, User
from app.services.digest import WEEKLY_DIGEST, iso_week
from tests.conftest import ClientFactory
from tests.factories import Account, Api
from tests.smtp import SmtpServer, smtp_server  # noqa: F401
from tests.workers.support import run

DIGEST_SUBJECT = "Your week on Conduit"


def _digests(server: SmtpServer) -> dict[str, str]:
    """Digest bodies by recipient (registration also sends emails)."""
    return {str(m["To"]): m.get_content() for m in server.messages if m["Subject"] == DIGEST_SUBJECT}


async def _subscribe(engine: AsyncEngine, *usernames: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(update(User).where(User.username.in_(usernames)).values(weekly_digest=True))


async def _favorite(client: httpx.AsyncClient, slug: str, *fans: Account) -> None:
    for fan in fans:
        response = await client.post(f"/articles/{slug}/favorite", headers=fan.headers)
        assert response.status_code == 200


async def _follow(client: httpx.AsyncClient, follower: Account, *usernames: str) -> None:
    for username in usernames:
        response = await client.post(f"/profiles/{username}/follow", headers=follower.headers)
        assert response.status_code == 200


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_digest_sends_the_week_top_articles_of_followed_authors_once(
    make_client: ClientFactory,
    smtp_server: SmtpServer,  # noqa: F811
    engine: AsyncEngine,
) -> None:
    client = await make_client(smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_starttls=False)
    app: FastAPI = client.app  # type: ignore[attr-defined]
    api = Api(client)
    reader, quiet, alice, bob, stranger = [
        await api.register(name) for name in ("reader", "quiet", "alice", "bob", "stranger")
    ]
    fans = [await api.register(f"fan{n}") for n in range(3)]
    popular = await api.article(alice, "Popular this week")
    middling = await api.article(bob, "Middling this week")
    unloved = await api.article(alice, "Nobody favorited this")
    old = await api.article(alice, "Popular last month")
    unfollowed = await api.article(stranger, "By someone reader does not follow")
    await _favorite(client, popular["slug"], *fans)
    await _favorite(client, middling["slug"], fans[0])
    await _favorite(client, old["slug"], *fans)
    await _favorite(client, unfollowed["slug"], *fans)
    async with engine.begin() as connection:
        await connection.execute(
            update(Article).where(Article.slug == old["slug"]).values(created_at=utcnow() - timedelta(days=8))
        )
    await _follow(client, reader, "alice", "bob")
    await _follow(client, quiet, "alice")  # quiet follows too, but never asked for the digest
    await _subscribe(engine, "reader", "stranger")  # stranger follows nobody: nothing to send

    await run(app, WEEKLY_DIGEST)

    digests = _digests(smtp_server)
    assert set(digests) == {"reader@example.com"}
    body = digests["reader@example.com"]
    assert body.startswith("Hello reader,\n")
    ranked = [line for line in body.splitlines() if line[:1].isdigit()]
    assert ranked == [
        '1. "Popular this week" by alice (3 favorites)',
        '2. "Middling this week" by bob (1 favorite)',
        '3. "Nobody favorited this" by alice (0 favorites)',
    ]
    assert f"/article/{popular['slug']}" in body
    assert unloved["slug"] in body
    assert old["slug"] not in body and unfollowed["slug"] not in body

    async with engine.connect() as connection:
        weeks = dict((await connection.execute(select(User.username, User.digest_week))).all())
    assert weeks["reader"] == weeks["stranger"] == iso_week(utcnow())
    assert weeks["quiet"] is None

    # Idempotent per user per week: running again (a redelivery, a second scheduler) sends nothing.
    await run(app, WEEKLY_DIGEST)
    assert len([m for m in smtp_server.messages if m["Subject"] == DIGEST_SUBJECT]) == 1
    # Next week is another digest.
    async with engine.begin() as connection:
        await connection.execute(update(User).values(digest_week="2000-W01"))
    await run(app, WEEKLY_DIGEST)
    assert len([m for m in smtp_server.messages if m["Subject"] == DIGEST_SUBJECT]) == 2


async def test_a_digest_that_could_not_be_sent_is_sent_by_the_retry(
    make_client: ClientFactory,
    smtp_server: SmtpServer,  # noqa: F811
    engine: AsyncEngine,
) -> None:
    """SMTP down: the claim is released and the job fails with the transient error, for the queue to
    retry; the retry (SMTP back) sends it."""
    down = await make_client(smtp_host="127.0.0.1", smtp_port=_closed_port(), smtp_starttls=False)
    api = Api(down)
    reader, author = await api.register("reader"), await api.register("author")
    await api.article(author, "Worth reading")
    await _follow(down, reader, "author")
    await _subscribe(engine, "reader")

    with pytest.raises(SMTPConnectError):
        await run(down.app, WEEKLY_DIGEST)  # type: ignore[attr-defined]
    async with engine.connect() as connection:
        week = (await connection.execute(select(User.digest_week).where(User.username == "reader"))).scalar()
    assert week is None

    up = await make_client(smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_starttls=False)
    await run(up.app, WEEKLY_DIGEST)  # type: ignore[attr-defined]
    assert set(_digests(smtp_server)) == {"reader@example.com"}
