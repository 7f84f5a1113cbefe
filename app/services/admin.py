"""User administration: listing, roles and deactivation."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import NotFoundError, ValidationFailedError
from app.models import Role, User
from app.services.auth import end_sessions


async def list_users(session: AsyncSession, *, limit: int, offset: int) -> tuple[list[User], int]:
    users = list(await session.scalars(select(User).order_by(User.id).limit(limit).offset(offset)))
    total = await session.scalar(select(func.count()).select_from(User))
    return users, int(total or 0)


async def _by_username(session: AsyncSession, username: str) -> User:
    user = await session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFoundError("user not found")
    return user


async def set_role(session: AsyncSession, actor: User | None, username: str, role: Role) -> User:
    """Give ``username`` a role. ``actor`` is the admin doing it (``None`` from the CLI); admins cannot
    change their own role, so the last admin cannot lock everyone out by accident."""
    user = await _by_username(session, username)
    if actor is not None and actor.id == user.id:
        raise ValidationFailedError.for_field("username", "cannot change your own role")
    user.role = role
    await session.flush()
    return user


async def deactivate(session: AsyncSession, actor: User, username: str) -> User:
    """Deactivate an account: its tokens stop working at once and it cannot log in."""
    user = await _by_username(session, username)
    if actor.id == user.id:
        raise ValidationFailedError.for_field("username", "cannot deactivate yourself")
    user.is_active = False
    await end_sessions(session, user)
    return user
