"""Services called directly, as the CLI and jobs call them."""

from __future__ import annotations

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import Cache
from app.core.errors import NotFoundError, PermissionDeniedError, ValidationFailedError
from app.core.storage import MediaLinks
from app.models import Article, ArticleTag, Comment, Favorite, Notification, Tag, User
from app.schemas.article import NewArticle, UpdateArticle
from app.services import articles, comments, notifications, profiles, users


async def _user(session: AsyncSession, name: str) -> User:
    return await users.create_user(session, username=name, email=f"{name}@example.com", password_hash="x")


async def _list(
    session: AsyncSession, cache: Cache, *, tag: str | None = None, limit: int, offset: int
) -> bytes:
    return await articles.list_articles_json(
        session, cache, None, tag=tag, author=None, favorited=None, limit=limit, offset=offset, links=LINKS
    )


LINKS = MediaLinks("https://conduit.example")


def _draft(title: str = "How to train your dragon", tags: list[str] | None = None) -> NewArticle:
    return NewArticle(title=title, description="d", body="b", tag_list=tags or [])


async def test_create_user_reports_every_taken_field(session: AsyncSession) -> None:
    await _user(session, "jake")
    with pytest.raises(ValidationFailedError) as info:
        await users.create_user(session, username="Jake", email="jake@example.com", password_hash="x")
    assert info.value.fields == {"username": ["has already been taken"], "email": ["has already been taken"]}


async def test_slugs_are_unique_for_equal_titles(session: AsyncSession) -> None:
    jake = await _user(session, "jake")
    slugs = [await articles.publish_article(session, jake, _draft()) for _ in range(3)]
    assert slugs[0] == "how-to-train-your-dragon"
    assert len(set(slugs)) == 3
    assert all(slug.startswith("how-to-train-your-dragon-") for slug in slugs[1:])


@pytest.mark.parametrize(
    ("title", "slug"), [("Feed", "feed-article"), ("!!!", "article"), ("Café Über", "cafe-uber")]
)
async def test_slug_edge_cases(session: AsyncSession, title: str, slug: str) -> None:
    jake = await _user(session, "jake")
    assert await articles.publish_article(session, jake, _draft(title)) == slug


async def test_tags_replace_and_shared_tags_are_reused(session: AsyncSession) -> None:
    jake = await _user(session, "jake")
    first = await articles.publish_article(session, jake, _draft("one", ["a", "b"]))
    await articles.publish_article(session, jake, _draft("two", ["b", "c"]))
    assert await session.scalar(select(func.count()).select_from(Tag)) == 3
    updated = await articles.update_article(session, jake, first, UpdateArticle(tag_list=["c"]), LINKS)
    assert updated.tag_list == ["c"]
    assert await session.scalar(select(func.count()).select_from(ArticleTag)) == 3  # one + two's two


async def test_favorites_count_follows_the_rows(session: AsyncSession) -> None:
    jake, ann = await _user(session, "jake"), await _user(session, "ann")
    slug = await articles.publish_article(session, jake, _draft())
    await articles.favorite(session, jake, slug, LINKS)
    await articles.favorite(session, jake, slug, LINKS)
    result = await articles.favorite(session, ann, slug, LINKS)
    assert result.favorites_count == 2
    await articles.unfavorite(session, ann, slug, LINKS)
    result = await articles.unfavorite(session, ann, slug, LINKS)
    assert (result.favorites_count, result.favorited) == (1, False)
    stored = await session.scalar(select(Article.favorites_count).where(Article.slug == slug))
    assert stored == await session.scalar(select(func.count()).select_from(Favorite)) == 1


async def test_deleting_an_article_removes_its_dependents(session: AsyncSession) -> None:
    jake = await _user(session, "jake")
    slug = await articles.publish_article(session, jake, _draft(tags=["a"]))
    await articles.favorite(session, jake, slug, LINKS)
    await comments.add_comment(session, jake, slug, "hi", LINKS)
    assert await session.scalar(select(User.articles_count).where(User.id == jake.id)) == 1
    await articles.delete_article(session, jake, slug)
    assert await session.scalar(select(User.articles_count).where(User.id == jake.id)) == 0
    for model in (Article, ArticleTag, Favorite, Comment):
        assert await session.scalar(select(func.count()).select_from(model)) == 0
    assert await session.scalar(select(func.count()).select_from(Tag)) == 1  # tags outlive articles


async def test_ownership_is_checked_in_the_service(session: AsyncSession) -> None:
    jake, ann = await _user(session, "jake"), await _user(session, "ann")
    slug = await articles.publish_article(session, jake, _draft())
    comment, _ = await comments.add_comment(session, jake, slug, "mine", LINKS)
    with pytest.raises(PermissionDeniedError):
        await articles.update_article(session, ann, slug, UpdateArticle(body="x"), LINKS)
    with pytest.raises(PermissionDeniedError):
        await articles.delete_article(session, ann, slug)
    with pytest.raises(PermissionDeniedError):
        await comments.delete_comment(session, ann, slug, comment.id)
    with pytest.raises(NotFoundError):
        await comments.delete_comment(session, jake, "other-slug", comment.id)


async def test_feed_and_filters(session: AsyncSession, cache: Cache) -> None:
    jake, ann, bob = await _user(session, "jake"), await _user(session, "ann"), await _user(session, "bob")
    await articles.publish_article(session, ann, _draft("by ann", ["x"]))
    await articles.publish_article(session, bob, _draft("by bob", ["y"]))
    await profiles.follow(session, jake, "ann", LINKS)
    feed = orjson.loads(await articles.feed_json(session, cache, jake.id, LINKS, limit=10, offset=0))
    assert [a["title"] for a in feed["articles"]] == ["by ann"] and feed["articlesCount"] == 1
    assert feed["articles"][0]["author"]["following"] is True
    tagged = orjson.loads(await _list(session, cache, tag="y", limit=10, offset=0))
    assert [a["title"] for a in tagged["articles"]] == ["by bob"] and tagged["articlesCount"] == 1
    assert orjson.loads(await _list(session, cache, limit=1, offset=5))["articlesCount"] == 2


async def test_article_fan_out_is_idempotent(session: AsyncSession) -> None:
    jake, ann = await _user(session, "jake"), await _user(session, "ann")
    await profiles.follow(session, ann, "jake", LINKS)
    slug = await articles.publish_article(session, jake, _draft("news"))
    article_id = await articles.article_id_by_slug(session, slug)
    assert await notifications.notify_followers_of_article(session, article_id, LINKS) == 1
    assert await notifications.notify_followers_of_article(session, article_id, LINKS) == 0  # redelivered
    mine = select(Notification.kind).where(Notification.recipient_id == ann.id)
    assert (await session.scalars(mine)).all() == ["article"]
