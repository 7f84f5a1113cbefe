"""Comments on articles."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import Cache, mark_changed
from app.core.errors import NotFoundError, PermissionDeniedError
from app.core.mail import EmailMessageData
from app.core.storage import MediaLinks
from app.models import Article, Comment, NotificationKind, User
from app.schemas.comment import CommentListResponse, CommentOut
from app.services import notifications
from app.services.articles import article_id_by_slug, article_ref_by_slug, can_moderate
from app.services.documents import Refs, cached_document
from app.services.profiles import following_expr, profile_from_row, profile_of


async def _comment_rows(
    session: AsyncSession, slug: str, viewer_id: int | None
) -> list[Row[*tuple[Any, ...]]]:
    article_id = await article_id_by_slug(session, slug)
    stmt = (
        select(
            Comment.id,
            Comment.body,
            Comment.created_at,
            Comment.updated_at,
            Comment.author_id,
            User.username,
            User.bio,
            User.image,
            User.avatar_key,
            following_expr(viewer_id, Comment.author_id).label("following"),
        )
        .join(User, User.id == Comment.author_id)
        .where(Comment.article_id == article_id)
        .order_by(Comment.id.desc())
    )
    return list((await session.execute(stmt)).all())


def _comment(row: Row[*tuple[Any, ...]], links: MediaLinks) -> CommentOut:
    return CommentOut(
        id=row.id,
        body=row.body,
        created_at=row.created_at,
        updated_at=row.updated_at,
        author=profile_from_row(row, links),
    )


async def comments_json(
    session: AsyncSession, cache: Cache, slug: str, viewer_id: int | None, links: MediaLinks
) -> bytes:
    """``list_comments`` as a response body, its shared part served from the cache."""

    async def load() -> tuple[Refs, dict[str, Any]]:
        rows = await _comment_rows(session, slug, viewer_id)
        document = CommentListResponse(comments=[_comment(row, links) for row in rows])
        return [(None, row.author_id) for row in rows], document.model_dump(mode="json", by_alias=True)

    return await cached_document(session, cache, f"comments:{slug}@{links.base}", viewer_id, load)


async def add_comment(
    session: AsyncSession,
    author: User,
    slug: str,
    body: str,
    links: MediaLinks,
    *,
    frontend_url: str | None = None,
) -> tuple[CommentOut, EmailMessageData | None]:
    """Comment on an article and notify its author. Returns the comment and, if the author asked
    for one, the email to send them after the response."""
    article_id, article_author_id = await article_ref_by_slug(session, slug)
    comment = Comment(article_id=article_id, author_id=author.id, body=body)
    session.add(comment)
    await session.flush()
    mark_changed(session)
    email = await notifications.notify(
        session,
        recipient_id=article_author_id,
        kind=NotificationKind.COMMENT,
        actor_id=author.id,
        article_id=article_id,
        comment_id=comment.id,
        frontend_url=frontend_url,
        links=links,
    )
    out = CommentOut(
        id=comment.id,
        body=comment.body,
        created_at=comment.created_at,
        updated_at=comment.updated_at,
        author=profile_of(author, links, following=False),
    )
    return out, email


async def delete_comment(session: AsyncSession, user: User, slug: str, comment_id: int) -> None:
    """Delete a comment of the article ``slug``: its author or a moderator may."""
    comment = await session.scalar(
        select(Comment)
        .join(Article, Article.id == Comment.article_id)
        .where(Comment.id == comment_id, Article.slug == slug)
    )
    if comment is None:
        raise NotFoundError("comment not found")
    if comment.author_id != user.id and not can_moderate(user):
        raise PermissionDeniedError("only the author may delete this comment")
    await session.delete(comment)
    await session.flush()
    mark_changed(session)
