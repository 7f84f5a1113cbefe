"""Account recovery and email verification with single-use tokens.

Tokens are random (256 bits), stored only as a digest, expire, and are spent by one conditional
``UPDATE … RETURNING``, so a token works once even under concurrent use. The services return the
email to send; the caller sends it after the commit (an email must never announce a change that was
rolled back).
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import ValidationFailedError
from app.core.mail import EmailMessageData
from app.core.security import PasswordHasher, digest, new_opaque_token
from app.db.base import utcnow
from app.models import OneTimeToken, TokenPurpose, User
from app.services import users as user_service


async def _issue(session: AsyncSession, user: User, purpose: TokenPurpose, ttl: int) -> str:
    token = new_opaque_token()
    now = utcnow()
    session.add(
        OneTimeToken(
            user_id=user.id,
            purpose=purpose,
            token_hash=digest(token),
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
    )
    await session.flush()
    return token


async def _spend(session: AsyncSession, token: str, purpose: TokenPurpose) -> User:
    now = utcnow()
    user_id = await session.scalar(
        update(OneTimeToken)
        .where(
            OneTimeToken.token_hash == digest(token),
            OneTimeToken.purpose == purpose,
            OneTimeToken.used_at.is_(None),
            OneTimeToken.expires_at > now,
        )
        .values(used_at=now)
        .returning(OneTimeToken.user_id)
    )
    user = await user_service.get_user(session, user_id) if user_id is not None else None
    if user is None or not user.is_active:
        raise ValidationFailedError.for_field("token", "is invalid or has expired")
    return user


def _link(frontend_url: str, path: str, token: str) -> str:
    return f"{frontend_url.rstrip('/')}/{path}?{urlencode({'token': token})}"


async def request_password_reset(
    session: AsyncSession, email: str, *, ttl: int, frontend_url: str
) -> EmailMessageData | None:
    """The reset email for ``email``'s account, or ``None`` if there is no such active account.

    Callers answer the same way in both cases, so the endpoint reveals nothing about who has an account.
    """
    user = await user_service.get_by_email(session, email)
    if user is None or not user.is_active:
        return None
    token = await _issue(session, user, TokenPurpose.PASSWORD_RESET, ttl)
    minutes = ttl // 60
    return EmailMessageData(
        to=user.email,
        subject="Reset your Conduit password",
        text=(
            f"Hello {user.username},\n\n"
            f"Someone asked to reset the password of your Conduit account. To choose a new one, open\n\n"
            f"    {_link(frontend_url, 'reset-password', token)}\n\n"
            f"or use this code with POST /api/v1/auth/password-reset/confirm:\n\n    {token}\n\n"
            f"It works once, for {minutes} minutes. If it wasn't you, ignore this email: nothing changes.\n"
        ),
    )


async def reset_password(
    session: AsyncSession,
    hasher: PasswordHasher,
    token: str,
    password: str,
    *,
    require_letter_and_digit: bool,
) -> None:
    """Set a new password with a reset token and end every session of the account."""
    user = await _spend(session, token, TokenPurpose.PASSWORD_RESET)
    # Any other reset link still in a mailbox dies with this reset.
    await session.execute(
        update(OneTimeToken)
        .where(
            OneTimeToken.user_id == user.id,
            OneTimeToken.purpose == TokenPurpose.PASSWORD_RESET,
            OneTimeToken.used_at.is_(None),
        )
        .values(used_at=utcnow())
    )
    await user_service.set_password(
        session, hasher, user, password, require_letter_and_digit=require_letter_and_digit
    )


async def verification_email(
    session: AsyncSession, user: User, *, ttl: int, frontend_url: str
) -> EmailMessageData:
    """The email asking ``user`` to confirm their address."""
    token = await _issue(session, user, TokenPurpose.VERIFY_EMAIL, ttl)
    return EmailMessageData(
        to=user.email,
        subject="Confirm your email address for Conduit",
        text=(
            f"Welcome to Conduit, {user.username}!\n\n"
            f"Please confirm your email address by opening\n\n"
            f"    {_link(frontend_url, 'verify-email', token)}\n\n"
            f"or use this code with POST /api/v1/auth/verify-email:\n\n    {token}\n"
        ),
    )


async def verify_email(session: AsyncSession, token: str) -> None:
    user = await _spend(session, token, TokenPurpose.VERIFY_EMAIL)
    user.email_verified_at = utcnow()
    await session.flush()
