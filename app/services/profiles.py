"""Profiles and follows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Row, delete, exists, false, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from app.core.cache import Cache, mark_changed
from app.core.errors import NotFoundError, ValidationFailedError
from app.core.mail import EmailMessageData
from app.core.storage import MediaLinks
from app.db.dialect import insert_ignoring_conflicts
from app.models import Follow, NotificationKind, User
from app.schemas.profile import Profile, ProfileResponse
from app.services import notifications
from app.services.documents import Refs, cached_document


def following_expr(viewer_id: int | None, author_id: QueryableAttribute[int]) -> ColumnElement[bool]:
    """Whether the viewer follows ``author_id``, as a column (always false for anonymous viewers)."""
    if viewer_id is None:
        return false()
    return exists().where(Follow.follower_id == viewer_id, Follow.followee_id == author_id)


def profile_from_row(row: Row[*tuple[Any, ...]], links: MediaLinks) -> Profile:
    """The author profile of a row that selected ``username, bio, image, avatar_key, following``."""
    return Profile(
        username=row.username,
        bio=row.bio,
        image=links.avatar(row.image, row.avatar_key),
        following=bool(row.following),
    )


def profile_of(user: User, links: MediaLinks, *, following: bool) -> Profile:
    return Profile(
        username=user.username,
        bio=user.bio,
        image=links.avatar(user.image, user.avatar_key),
        following=following,
    )


async def _profile_row(session: AsyncSession, username: str, viewer_id: int | None) -> Row[*tuple[Any, ...]]:
    stmt = select(
        User.id,
        User.username,
        User.bio,
        User.image,
        User.avatar_key,
        following_expr(viewer_id, User.id).label("following"),
    ).where(User.username == username)
    row: Row[*tuple[Any, ...]] | None = (await session.execute(stmt)).one_or_none()
    if row is None:
        raise NotFoundError("profile not found")
    return row


async def profile_json(
    session: AsyncSession, cache: Cache, username: str, viewer_id: int | None, links: MediaLinks
) -> bytes:
    """``get_profile`` as a response body, its shared part served from the cache."""

    async def load() -> tuple[Refs, dict[str, Any]]:
        row = await _profile_row(session, username, viewer_id)
        return [(None, row.id)], ProfileResponse(profile=profile_from_row(row, links)).model_dump(mode="json")

    name = f"profile:{username}@{links.base}"  # image URLs differ by base
    return await cached_document(session, cache, name, viewer_id, load)


async def _user_by_username(session: AsyncSession, username: str) -> User:
    user = await session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFoundError("profile not found")
    return user


async def follow(
    session: AsyncSession,
    follower: User,
    username: str,
    links: MediaLinks,
    *,
    frontend_url: str | None = None,
) -> tuple[Profile, EmailMessageData | None]:
    """Follow ``username``. Idempotent: following twice is the same as once (and notifies once).
    Returns the profile and, if the followee asked for one, the email to send them after the response."""
    followee = await _user_by_username(session, username)
    if followee.id == follower.id:
        raise ValidationFailedError.for_field("username", "cannot be followed by yourself")
    inserted = await session.execute(
        insert_ignoring_conflicts(session, Follow.__table__)
        .values(follower_id=follower.id, followee_id=followee.id)
        .returning(Follow.__table__.c.follower_id)
    )
    email = None
    if inserted.first() is not None:
        mark_changed(session)  # the follower's cached flags and feed
        email = await notifications.notify(
            session,
            recipient_id=followee.id,
            kind=NotificationKind.FOLLOW,
            actor_id=follower.id,
            frontend_url=frontend_url,
            links=links,
        )
    return profile_of(followee, links, following=True), email


async def unfollow(session: AsyncSession, follower: User, username: str, links: MediaLinks) -> Profile:
    """Stop following ``username``. Idempotent."""
    followee = await _user_by_username(session, username)
    await session.execute(
        delete(Follow).where(Follow.follower_id == follower.id, Follow.followee_id == followee.id)
    )
    mark_changed(session)  # the follower's cached flags and feed
    return profile_of(followee, links, following=False)
