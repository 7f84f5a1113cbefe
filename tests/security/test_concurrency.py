"""Races (OWASP API4/API6): concurrent duplicates end in one row and clear answers, never a 500."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.storage import MediaLinks
from app.models import Article, Comment, Favorite, Follow, Notification, User
from app.services.notifications import notify_followers_of_article
from tests.conftest import jobs_done
from tests.factories import PASSWORD, Api


async def _count(engine: AsyncEngine, model: type) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(model))).scalar_one())


async def test_concurrent_registrations_with_one_email(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    responses = await asyncio.gather(
        *(
            client.post(
                "/users",
                json={"user": {"username": f"racer{n}", "email": "same@example.com", "password": PASSWORD}},
            )
            for n in range(10)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [422] * 9
    for response in responses:
        if response.status_code == 422:
            assert response.json()["errors"]["email"] == ["has already been taken"]
    assert await _count(engine, User) == 1


async def test_parallel_follows_and_favorites(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    author, fan = await api.register("author"), await api.register("fan")
    slug = (await api.article(author))["slug"]
    follows = await asyncio.gather(
        *(client.post("/profiles/author/follow", headers=fan.headers) for _ in range(10))
    )
    favorites = await asyncio.gather(
        *(client.post(f"/articles/{slug}/favorite", headers=fan.headers) for _ in range(10))
    )
    assert {r.status_code for r in follows} == {r.status_code for r in favorites} == {200}
    assert await _count(engine, Follow) == 1
    assert await _count(engine, Favorite) == 1
    assert (await client.get(f"/articles/{slug}")).json()["article"]["favoritesCount"] == 1


async def test_fifty_parallel_favorites_by_one_user_count_once(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    author, fan = await api.register("author"), await api.register("fan")
    slug = (await api.article(author))["slug"]
    responses = await asyncio.gather(
        *(client.post(f"/articles/{slug}/favorite", headers=fan.headers) for _ in range(50))
    )
    assert {r.status_code for r in responses} == {200}
    assert await _count(engine, Favorite) == 1
    assert (await client.get(f"/articles/{slug}")).json()["article"]["favoritesCount"] == 1
    assert await _count(engine, Notification) == 1  # the author hears of it once


async def test_fifty_users_favoriting_count_fifty(api: Api, client: httpx.AsyncClient) -> None:
    author = await api.register("author")
    slug = (await api.article(author))["slug"]
    fans = [await api.register(f"fan{n}") for n in range(50)]
    responses = await asyncio.gather(
        *(client.post(f"/articles/{slug}/favorite", headers=fan.headers) for fan in fans)
    )
    assert {r.status_code for r in responses} == {200}
    assert (await client.get(f"/articles/{slug}")).json()["article"]["favoritesCount"] == 50
    unfavorites = await asyncio.gather(
        *(client.delete(f"/articles/{slug}/favorite", headers=fan.headers) for fan in fans[:20])
    )
    assert {r.status_code for r in unfavorites} == {200}
    assert (await client.get(f"/articles/{slug}")).json()["article"]["favoritesCount"] == 30


async def test_parallel_comments_and_equal_titles(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    author = await api.register("author")
    slug = (await api.article(author, "Base"))["slug"]
    comments = await asyncio.gather(
        *(
            client.post(
                f"/articles/{slug}/comments", json={"comment": {"body": f"#{n}"}}, headers=author.headers
            )
            for n in range(30)
        )
    )
    assert {r.status_code for r in comments} == {200}
    assert len({r.json()["comment"]["id"] for r in comments}) == 30
    assert await _count(engine, Comment) == 30
    articles = await asyncio.gather(
        *(
            client.post(
                "/articles",
                json={"article": {"title": "Same title", "description": "d", "body": "b"}},
                headers=author.headers,
            )
            for _ in range(20)
        )
    )
    assert {r.status_code for r in articles} == {201}
    slugs = {r.json()["article"]["slug"] for r in articles}
    assert len(slugs) == 20 and "same-title" in slugs
    assert (await client.get("/articles?author=author&limit=100")).json()["articlesCount"] == 21


async def test_two_runs_of_the_article_fan_out_at_once_notify_each_follower_once(
    api: Api, client: httpx.AsyncClient, app: FastAPI, engine: AsyncEngine
) -> None:
    """A job may be delivered twice at the same moment (a redelivery while the first run is still
    going): the second run's INSERT waits for the first's commit on the partial unique index, then
    adds nothing. (Without the index both runs see no notification yet and both insert.)"""
    author = await api.register("author")
    fans = [await api.register(f"fan{n}") for n in range(3)]
    for fan in fans:
        assert (await client.post("/profiles/author/follow", headers=fan.headers)).status_code == 200
    slug = (await api.article(author))["slug"]
    await jobs_done(app)  # the fan-out the publication sent
    async with engine.begin() as connection:  # as if it had not run yet
        article_id = (await connection.execute(select(Article.id).where(Article.slug == slug))).scalar_one()
        gone = await connection.execute(delete(Notification).where(Notification.kind == "article"))
        assert gone.rowcount == len(fans)
    links = MediaLinks("https://conduit.example")
    async with app.state.sessionmaker() as first, app.state.sessionmaker() as second:
        assert await notify_followers_of_article(first, article_id, links) == 3
        racing = asyncio.create_task(notify_followers_of_article(second, article_id, links))
        await asyncio.sleep(0.3)  # the second run is now waiting for the first (on PostgreSQL)
        await first.commit()
        assert await racing == 0
        await second.commit()
    async with engine.connect() as connection:
        recipients = (
            await connection.scalars(select(Notification.recipient_id).where(Notification.kind == "article"))
        ).all()
    assert len(recipients) == len(set(recipients)) == len(fans)
