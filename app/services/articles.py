"""Articles, their tags and favorites.

Reads are single Core statements (no ORM identity map, no lazy loads): one query returns a page of
articles with their authors, tags (aggregated as JSON), the viewer's ``favorited``/``following``
flags (``EXISTS``) and the total count (a window function), whatever the page size.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
from slugify import slugify
from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    delete,
    exists,
    false,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.core.cache import Cache, mark_changed
from app.core.errors import ConflictError, NotFoundError, PermissionDeniedError
from app.core.storage import MediaLinks
from app.db.base import utcnow
from app.db.dialect import insert_ignoring_conflicts, json_array_agg
from app.models import Article, ArticleTag, Favorite, Follow, NotificationKind, Role, Tag, User
from app.schemas.article import (
    ArticleListResponse,
    ArticleOut,
    ArticleResponse,
    ArticleSummary,
    NewArticle,
    UpdateArticle,
)
from app.services import media, notifications
from app.services.documents import Refs, cached_document
from app.services.profiles import following_expr, profile_from_row

SLUG_BASE_MAX = 200
SLUG_ATTEMPTS = 5
# Slugs that would be shadowed by a fixed route under /articles/.
RESERVED_SLUGS = frozenset({"feed"})


def _favorited_expr(viewer_id: int | None) -> ColumnElement[bool]:
    if viewer_id is None:
        return false()
    return exists().where(Favorite.user_id == viewer_id, Favorite.article_id == Article.id)


def _article_select(session: AsyncSession, viewer_id: int | None, *, with_body: bool) -> Select[Any]:
    tags = (
        select(json_array_agg(session, Tag.name))
        .join(ArticleTag, ArticleTag.tag_id == Tag.id)
        .where(ArticleTag.article_id == Article.id)
        .scalar_subquery()
    )
    columns: list[Any] = [
        Article.id,
        Article.author_id,
        Article.slug,
        Article.title,
        Article.description,
        Article.created_at,
        Article.updated_at,
        Article.favorites_count,
        User.username,
        User.bio,
        User.image,
        User.avatar_key,
        tags.label("tags"),
        media.images_column(session).label("images"),
        _favorited_expr(viewer_id).label("favorited"),
        following_expr(viewer_id, Article.author_id).label("following"),
    ]
    if with_body:
        columns.append(Article.body)
    return select(*columns).join(User, User.id == Article.author_id)


def _summary_fields(row: Row[Any], links: MediaLinks) -> dict[str, Any]:
    return {
        "slug": row.slug,
        "title": row.title,
        "description": row.description,
        "tag_list": sorted(row.tags or []),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "favorited": bool(row.favorited),
        "favorites_count": row.favorites_count,
        "author": profile_from_row(row, links),
        "images": media.article_images(row.images, links),
    }


def _filters(
    tag: str | None, author: str | None, favorited: str | None, followed_by: int | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if tag is not None:
        conditions.append(
            Article.id.in_(
                select(ArticleTag.article_id).join(Tag, Tag.id == ArticleTag.tag_id).where(Tag.name == tag)
            )
        )
    if author is not None:  # by id, so that the count needs no join
        conditions.append(
            Article.author_id == select(User.id).where(User.username == author).scalar_subquery()
        )
    if favorited is not None:
        fan = aliased(User)
        conditions.append(
            Article.id.in_(
                select(Favorite.article_id)
                .join(fan, fan.id == Favorite.user_id)
                .where(fan.username == favorited)
            )
        )
    if followed_by is not None:
        conditions.append(
            Article.author_id.in_(select(Follow.followee_id).where(Follow.follower_id == followed_by))
        )
    return conditions


def _count(
    conditions: list[ColumnElement[bool]], *, author: str | None, followed_by: int | None, other_filters: bool
) -> Select[Any]:
    """The statement counting the articles that match: from the authors' ``articles_count`` when the
    filter is only an author or the people followed (a sum over at most the users followed, whatever
    the number of articles), otherwise an index-backed ``count(*)``."""
    if not other_filters and followed_by is not None and author is None:
        followed = select(Follow.followee_id).where(Follow.follower_id == followed_by)
        return select(func.coalesce(func.sum(User.articles_count), 0)).where(User.id.in_(followed))
    if not other_filters and author is not None and followed_by is None:
        return select(func.coalesce(func.sum(User.articles_count), 0)).where(User.username == author)
    return select(func.count()).select_from(Article).where(*conditions)


async def _page_rows(
    session: AsyncSession,
    viewer_id: int | None,
    *,
    tag: str | None,
    author: str | None,
    favorited: str | None,
    followed_by: int | None,
    limit: int,
    offset: int,
) -> tuple[list[Row[Any]], int]:
    """The page (authors, tags and viewer flags in one statement) and the total matching.

    The total is ``count`` (see ``_count``), skipped when the page itself shows it (a first page
    shorter than the limit). Not a ``count(*) OVER ()`` window: with one, PostgreSQL
    computes the tags and flags of every matching row, not only of the page.
    """
    conditions = _filters(tag, author, favorited, followed_by)
    stmt = (
        _article_select(session, viewer_id, with_body=False)
        .where(*conditions)
        .order_by(Article.created_at.desc(), Article.id.desc())
        .limit(limit)
        .offset(offset)
    )
    rows = list((await session.execute(stmt)).all())
    if not offset and len(rows) < limit:
        return rows, len(rows)
    other_filters = tag is not None or favorited is not None
    count = _count(conditions, author=author, followed_by=followed_by, other_filters=other_filters)
    return rows, int(await session.scalar(count) or 0)


async def _page_document(
    session: AsyncSession,
    viewer_id: int | None,
    *,
    tag: str | None = None,
    author: str | None = None,
    favorited: str | None = None,
    followed_by: int | None = None,
    limit: int,
    offset: int,
    links: MediaLinks,
) -> tuple[Refs, dict[str, Any]]:
    """A page of articles, newest first, with the total matching: the refs and the response document."""
    rows, total = await _page_rows(
        session,
        viewer_id,
        tag=tag,
        author=author,
        favorited=favorited,
        followed_by=followed_by,
        limit=limit,
        offset=offset,
    )
    document = ArticleListResponse(
        articles=[ArticleSummary(**_summary_fields(row, links)) for row in rows], articles_count=total
    )
    return [(row.id, row.author_id) for row in rows], document.model_dump(mode="json", by_alias=True)


async def list_articles_json(
    session: AsyncSession,
    cache: Cache,
    viewer_id: int | None,
    *,
    tag: str | None,
    author: str | None,
    favorited: str | None,
    limit: int,
    offset: int,
    links: MediaLinks,
) -> bytes:
    """A page of articles as a response body, its shared part served from the cache."""

    async def load() -> tuple[Refs, dict[str, Any]]:
        return await _page_document(
            session,
            viewer_id,
            tag=tag,
            author=author,
            favorited=favorited,
            limit=limit,
            offset=offset,
            links=links,
        )

    # Image URLs differ by base, so the base is part of the name.
    name = "articles:" + orjson.dumps([tag, author, favorited, limit, offset, links.base]).decode()
    return await cached_document(session, cache, name, viewer_id, load)


async def feed_json(
    session: AsyncSession, cache: Cache, viewer_id: int, links: MediaLinks, *, limit: int, offset: int
) -> bytes:
    """The articles by the people ``viewer_id`` follows, as a response body.

    Cached per viewer (the page depends on whom they follow) under the shared generation, which any
    new, edited or deleted article and any follow or unfollow bumps.
    """

    async def load() -> tuple[Refs, dict[str, Any]]:
        return await _page_document(
            session, viewer_id, followed_by=viewer_id, limit=limit, offset=offset, links=links
        )

    name = f"feed:{viewer_id}:{limit}:{offset}@{links.base}"
    return await cached_document(session, cache, name, viewer_id, load)


async def _article_row(session: AsyncSession, slug: str, viewer_id: int | None) -> Row[Any]:
    stmt = _article_select(session, viewer_id, with_body=True).where(Article.slug == slug)
    row: Row[Any] | None = (await session.execute(stmt)).one_or_none()
    if row is None:
        raise NotFoundError("article not found")
    return row


async def get_article(
    session: AsyncSession, slug: str, viewer_id: int | None, links: MediaLinks
) -> ArticleOut:
    row = await _article_row(session, slug, viewer_id)
    return ArticleOut(**_summary_fields(row, links), body=row.body)


async def article_json(
    session: AsyncSession, cache: Cache, slug: str, viewer_id: int | None, links: MediaLinks
) -> bytes:
    """``get_article`` as a response body, its shared part served from the cache."""

    async def load() -> tuple[Refs, dict[str, Any]]:
        row = await _article_row(session, slug, viewer_id)
        document = ArticleResponse(article=ArticleOut(**_summary_fields(row, links), body=row.body))
        return [(row.id, row.author_id)], document.model_dump(mode="json", by_alias=True)

    return await cached_document(session, cache, f"article:{slug}@{links.base}", viewer_id, load)


def _slug_base(title: str) -> str:
    base = slugify(title, max_length=SLUG_BASE_MAX, word_boundary=True) or "article"
    return f"{base}-article" if base in RESERVED_SLUGS else base


async def _set_tags(session: AsyncSession, article_id: int, names: list[str], *, replace: bool) -> None:
    """Make the article's tags exactly ``names`` (``replace=False`` for an article with no tags yet)."""
    remove = delete(ArticleTag).where(ArticleTag.article_id == article_id)
    if not names:
        if replace:
            await session.execute(remove)
        return
    # Parameter lists (executemany) rather than multi-row VALUES, so the statement is compiled once.
    await session.execute(
        insert_ignoring_conflicts(session, Tag.__table__, "name"),
        [{"name": n} for n in names],
    )
    tag_ids = list(await session.scalars(select(Tag.id).where(Tag.name.in_(names))))
    if replace:
        await session.execute(remove.where(ArticleTag.tag_id.not_in(tag_ids)))
    await session.execute(
        insert_ignoring_conflicts(session, ArticleTag.__table__),
        [{"article_id": article_id, "tag_id": tag_id} for tag_id in tag_ids],
    )


async def create_article(
    session: AsyncSession, author: User, data: NewArticle, links: MediaLinks
) -> ArticleOut:
    """Publish an article and return it as the author sees it."""
    return await get_article(session, await publish_article(session, author, data), author.id, links)


async def publish_article(session: AsyncSession, author: User, data: NewArticle) -> str:
    """Insert an article with its tags and return its slug: the title's, with a random suffix if taken."""
    base = _slug_base(data.title)
    now = utcnow()
    for attempt in range(SLUG_ATTEMPTS):
        slug = base if attempt == 0 else f"{base}-{secrets.token_hex(3)}"
        stmt = (
            insert_ignoring_conflicts(session, Article.__table__, "slug")
            .values(
                slug=slug,
                title=data.title,
                description=data.description,
                body=data.body,
                author_id=author.id,
                created_at=now,
                updated_at=now,
            )
            .returning(Article.__table__.c.id)
        )
        article_id = (await session.execute(stmt)).scalar_one_or_none()
        if article_id is not None:
            break
    else:
        raise ConflictError("could not allocate a unique slug, please retry")
    await _set_tags(session, article_id, data.tag_list, replace=False)
    await session.execute(
        update(User).where(User.id == author.id).values(articles_count=User.articles_count + 1)
    )
    mark_changed(session)
    notifications.announce_article(session, article_id)
    return slug


def can_moderate(user: User) -> bool:
    """Moderators and admins may delete anyone's articles and comments (never edit them)."""
    return user.role in (Role.MODERATOR, Role.ADMIN)


async def _owned_article(
    session: AsyncSession, user: User, slug: str, *, moderating: bool = False
) -> Article:
    article = await session.scalar(select(Article).where(Article.slug == slug))
    if article is None:
        raise NotFoundError("article not found")
    if article.author_id != user.id and not (moderating and can_moderate(user)):
        raise PermissionDeniedError("only the author may change this article")
    return article


async def update_article(
    session: AsyncSession, user: User, slug: str, changes: UpdateArticle, links: MediaLinks
) -> ArticleOut:
    """Change the fields sent. The slug stays stable, so links to the article keep working."""
    article = await _owned_article(session, user, slug)
    if changes.title is not None:
        article.title = changes.title
    if changes.description is not None:
        article.description = changes.description
    if changes.body is not None:
        article.body = changes.body
    article.updated_at = utcnow()
    await session.flush()
    if changes.tag_list is not None:
        await _set_tags(session, article.id, changes.tag_list, replace=True)
    mark_changed(session)
    return await get_article(session, slug, user.id, links)


async def delete_article(session: AsyncSession, user: User, slug: str) -> None:
    """Delete an article with its comments, favorites and tag links (its author or a moderator)."""
    article = await _owned_article(session, user, slug, moderating=True)
    await media.forget_article_images(session, article.id)
    await session.delete(article)
    await session.execute(
        update(User).where(User.id == article.author_id).values(articles_count=User.articles_count - 1)
    )
    await session.flush()
    mark_changed(session)


async def article_id_by_slug(session: AsyncSession, slug: str) -> int:
    """The id of the article with ``slug``; ``NotFoundError`` if there is none."""
    return (await article_ref_by_slug(session, slug))[0]


async def article_ref_by_slug(session: AsyncSession, slug: str) -> tuple[int, int]:
    """The id and the author's id of the article with ``slug``; ``NotFoundError`` if there is none."""
    row = (await session.execute(select(Article.id, Article.author_id).where(Article.slug == slug))).first()
    if row is None:
        raise NotFoundError("article not found")
    return row.id, row.author_id


async def favorite(session: AsyncSession, user: User, slug: str, links: MediaLinks) -> ArticleOut:
    """Favorite an article. Idempotent; the count moves only when a favorite row was inserted."""
    article_id, author_id = await article_ref_by_slug(session, slug)
    inserted = await session.execute(
        insert_ignoring_conflicts(session, Favorite.__table__)
        .values(user_id=user.id, article_id=article_id)
        .returning(Favorite.__table__.c.article_id)
    )
    if inserted.first() is not None:
        await session.execute(
            update(Article)
            .where(Article.id == article_id)
            .values(favorites_count=Article.favorites_count + 1)
        )
        mark_changed(session)
        await notifications.notify(
            session,
            recipient_id=author_id,
            kind=NotificationKind.FAVORITE,
            actor_id=user.id,
            article_id=article_id,
            links=links,
        )
    return await get_article(session, slug, user.id, links)


async def unfavorite(session: AsyncSession, user: User, slug: str, links: MediaLinks) -> ArticleOut:
    """Remove a favorite. Idempotent; the count moves only when a favorite row was deleted."""
    article_id = await article_id_by_slug(session, slug)
    deleted = await session.execute(
        delete(Favorite)
        .where(Favorite.user_id == user.id, Favorite.article_id == article_id)
        .returning(Favorite.article_id)
    )
    if deleted.first() is not None:
        await session.execute(
            update(Article)
            .where(Article.id == article_id)
            .values(favorites_count=Article.favorites_count - 1)
        )
        mark_changed(session)
    return await get_article(session, slug, user.id, links)
