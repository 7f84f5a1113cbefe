"""Notifications: written in the transaction of the event that causes them, pushed after its commit.

Each row is rendered once, in that transaction, to the same JSON the REST listing returns, and
deferred (``app/core/outbox.py``) as a ``{"type": "notification", "data": ...}`` message for the
recipient's live connections. Nobody is notified of their own actions.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, and_, exists, func, insert, literal, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.core.mail import EmailMessageData
from app.core.outbox import Enqueue, Job, Publish, after_commit
from app.core.storage import RELATIVE_LINKS, MediaLinks
from app.db.base import utcnow
from app.db.dialect import insert_ignoring_conflicts
from app.models import Article, Follow, Notification, NotificationKind, User
from app.models.notification import ARTICLE_PREDICATE
from app.schemas.notification import NotificationArticle, NotificationListResponse, NotificationOut, Ref
from app.schemas.profile import Profile

Actor = aliased(User)
Recipient = aliased(User)

# The job that fans a new article out to its author's followers (app/workers/notifications.py).
ARTICLE_PUBLISHED = "notifications.article_published"
ARTICLE_WHERE = text(ARTICLE_PREDICATE)  # the partial unique index's (see app/models/notification.py)


def _select() -> Any:
    following = exists().where(
        Follow.follower_id == Notification.recipient_id, Follow.followee_id == Actor.id
    )
    return (
        select(
            Notification,
            Actor.username,
            Actor.bio,
            Actor.image,
            Actor.avatar_key,
            following.label("following"),
            Article.slug,
            Article.title,
        )
        .outerjoin(Actor, Actor.id == Notification.actor_id)
        .outerjoin(Article, Article.id == Notification.article_id)
    )


def _out(row: Row[Any], links: MediaLinks) -> NotificationOut:
    notification: Notification = row[0]
    image = links.avatar(row.image, row.avatar_key)
    return NotificationOut(
        id=notification.id,
        kind=NotificationKind(notification.kind),
        actor=Profile(username=row.username, bio=row.bio, image=image, following=bool(row.following))
        if row.username is not None
        else None,
        article=NotificationArticle(slug=row.slug, title=row.title) if row.slug is not None else None,
        comment=Ref(id=notification.comment_id) if notification.comment_id is not None else None,
        export=Ref(id=notification.export_id) if notification.export_id is not None else None,
        created_at=notification.created_at,
        read_at=notification.read_at,
    )


def message(notification: NotificationOut) -> dict[str, Any]:
    """The WebSocket message announcing ``notification``."""
    return {"type": "notification", "data": notification.model_dump(mode="json", by_alias=True)}


async def _push(session: AsyncSession, ids: list[int], links: MediaLinks) -> None:
    """Render the notifications ``ids`` and defer their pushes until the commit."""
    if not ids:
        return
    rows = (await session.execute(_select().where(Notification.id.in_(ids)).order_by(Notification.id))).all()
    for row in rows:
        after_commit(session, Publish(row[0].recipient_id, message(_out(row, links))))


async def notify(
    session: AsyncSession,
    *,
    recipient_id: int,
    kind: NotificationKind,
    actor_id: int | None = None,
    article_id: int | None = None,
    comment_id: int | None = None,
    export_id: int | None = None,
    frontend_url: str | None = None,
    links: MediaLinks = RELATIVE_LINKS,
) -> EmailMessageData | None:
    """Record a notification for ``recipient_id`` (not if they caused it themselves) and push it
    once the transaction commits. Returns the email to send after the response if the recipient
    asked for emails of this kind (and ``frontend_url`` is given for its link). ``links`` render the
    actor's avatar (notifications without an actor need none)."""
    if actor_id is not None and actor_id == recipient_id:
        return None
    notification_id = await session.scalar(
        insert(Notification)
        .values(
            recipient_id=recipient_id,
            kind=kind,
            actor_id=actor_id,
            article_id=article_id,
            comment_id=comment_id,
            export_id=export_id,
            created_at=utcnow(),
        )
        .returning(Notification.id)
    )
    assert notification_id is not None
    stmt = (
        _select()
        .add_columns(
            Recipient.username.label("recipient_username"),
            Recipient.email.label("recipient_email"),
            Recipient.email_on_follow,
            Recipient.email_on_comment,
        )
        .join(Recipient, Recipient.id == Notification.recipient_id)
        .where(Notification.id == notification_id)
    )
    row = (await session.execute(stmt)).one()
    notification = _out(row, links)
    after_commit(session, Publish(recipient_id, message(notification)))
    wanted = (kind == NotificationKind.FOLLOW and row.email_on_follow) or (
        kind == NotificationKind.COMMENT and row.email_on_comment
    )
    if not wanted or frontend_url is None:
        return None
    return notification_email(notification, row.recipient_username, row.recipient_email, frontend_url)


def notification_email(
    notification: NotificationOut, username: str, email: str, frontend_url: str
) -> EmailMessageData:
    """The email for a follow or comment notification, with a link to where it happened."""
    base = frontend_url.rstrip("/")
    assert notification.actor is not None
    actor = notification.actor.username
    if notification.article is not None:
        subject = f'{actor} commented on "{notification.article.title}"'
        link = f"{base}/article/{notification.article.slug}"
        what = f'{actor} commented on your article "{notification.article.title}":\n\n    {link}'
    else:
        subject = f"{actor} now follows you"
        what = f"{actor} now follows you on Conduit:\n\n    {base}/profile/{actor}"
    return EmailMessageData(
        to=email,
        subject=subject,
        text=(
            f"Hello {username},\n\n{what}\n\n"
            f"You get this email because of your notification settings; change them at {base}/settings.\n"
        ),
    )


def announce_article(session: AsyncSession, article_id: int) -> None:
    """After the commit, fan the new article out to the author's followers (a background job)."""
    after_commit(session, Enqueue((Job(ARTICLE_PUBLISHED, {"article_id": article_id}),)))


async def notify_followers_of_article(session: AsyncSession, article_id: int, links: MediaLinks) -> int:
    """Notify every follower of the article's author, once each: one ``INSERT … SELECT`` whatever the
    number of followers. Only people who followed before the article appeared: the job runs after the
    commit, when later followers may exist. Running it again, even at the same time as itself, adds
    nothing: the partial unique index on (article, recipient) turns a second notification into a
    no-op (``ON CONFLICT DO NOTHING``; a concurrent run waits for the first one's commit, then skips
    its rows). Returns how many were notified."""
    article = await session.get(Article, article_id)
    if article is None:  # deleted since: nothing to announce
        return 0
    followers = select(
        Follow.follower_id,
        literal(NotificationKind.ARTICLE.value),
        literal(article.author_id),
        literal(article_id),
        literal(utcnow(), type_=Notification.created_at.type),
    ).where(
        and_(
            Follow.followee_id == article.author_id,
            Follow.created_at <= article.created_at,  # new to them: they followed before it appeared
        )
    )
    inserted = await session.scalars(
        insert_ignoring_conflicts(
            session,
            Notification.__table__,
            Notification.article_id,
            Notification.recipient_id,
            index_where=ARTICLE_WHERE,
        )
        .from_select(["recipient_id", "kind", "actor_id", "article_id", "created_at"], followers)
        .returning(Notification.id)
    )
    ids = list(inserted)
    await _push(session, ids, links)
    return len(ids)


async def unread_count(session: AsyncSession, user_id: int) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(Notification)
        .where(Notification.recipient_id == user_id, Notification.read_at.is_(None))
    )
    return int(count or 0)


async def list_notifications(
    session: AsyncSession, user_id: int, links: MediaLinks, *, unread: bool, before: int | None, limit: int
) -> NotificationListResponse:
    """Newest first, ``limit`` at a time; ``before`` is the cursor (the previous page's ``nextCursor``)."""
    stmt = _select().where(Notification.recipient_id == user_id)
    if unread:
        stmt = stmt.where(Notification.read_at.is_(None))
    if before is not None:
        stmt = stmt.where(Notification.id < before)
    rows = (await session.execute(stmt.order_by(Notification.id.desc()).limit(limit + 1))).all()
    page = [_out(row, links) for row in rows[:limit]]
    return NotificationListResponse(
        notifications=page,
        unread_count=await unread_count(session, user_id),
        next_cursor=page[-1].id if len(rows) > limit else None,
    )


async def mark_read(session: AsyncSession, user_id: int, up_to: int) -> int:
    """Mark notification ``up_to`` and every older one read (idempotent); returns the unread count."""
    await session.execute(
        update(Notification)
        .where(
            Notification.recipient_id == user_id,
            Notification.id <= up_to,
            Notification.read_at.is_(None),
        )
        .values(read_at=utcnow())
    )
    return await unread_count(session, user_id)
