"""Sessions: refresh-token rotation with reuse detection (RFC 9700 §4.14.2), logout, revocation.

A login opens a *family*. Each refresh spends the presented token and issues the next one of the same
family. Presenting a spent token again means it was stolen (or replayed): the whole family is revoked.
Spending is a single conditional ``UPDATE … RETURNING``, so of two concurrent refreshes with one token
exactly one succeeds; the other sees a spent token and revokes the family.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import mark_changed
from app.core.errors import AuthenticationError, RefreshTokenReusedError
from app.core.outbox import Publish, after_commit
from app.core.realtime import SESSIONS_ENDED
from app.core.security import TokenService, digest, new_opaque_token
from app.db.base import utcnow
from app.models import RefreshToken, User

USER_AGENT_MAX = 255


@dataclass(frozen=True, slots=True)
class SessionTokens:
    access_token: str
    expires_in: int
    refresh_token: str
    family_id: str


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Where a session was opened or refreshed from (kept as last-use metadata)."""

    ip: str | None = None
    user_agent: str | None = None


async def _issue(
    session: AsyncSession,
    tokens: TokenService,
    user: User,
    family_id: str,
    *,
    access_ttl: int,
    refresh_ttl: int,
    client: ClientInfo,
) -> SessionTokens:
    refresh_token = new_opaque_token()
    now = utcnow()
    session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family_id,
            token_hash=digest(refresh_token),
            created_at=now,
            expires_at=now + timedelta(seconds=refresh_ttl),
            created_ip=client.ip,
            user_agent=(client.user_agent or "")[:USER_AGENT_MAX] or None,
        )
    )
    await session.flush()
    return SessionTokens(
        tokens.issue(user.id, access_ttl, session_id=family_id), access_ttl, refresh_token, family_id
    )


async def open_session(
    session: AsyncSession,
    tokens: TokenService,
    user: User,
    *,
    access_ttl: int,
    refresh_ttl: int,
    client: ClientInfo,
) -> SessionTokens:
    """Start a new token family for ``user`` (a login)."""
    family_id = uuid.uuid4().hex
    return await _issue(
        session, tokens, user, family_id, access_ttl=access_ttl, refresh_ttl=refresh_ttl, client=client
    )


async def family_of(session: AsyncSession, refresh_token: str) -> str | None:
    """The family a refresh token belongs to, if it is ours (spent or not)."""
    return await session.scalar(
        select(RefreshToken.family_id).where(RefreshToken.token_hash == digest(refresh_token))
    )


async def revoke_family(session: AsyncSession, family_id: str) -> None:
    revoked = await session.scalars(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(RefreshToken.user_id)
    )
    mark_changed(session)  # the cached verdicts on this session's access tokens
    for user_id in set(revoked):  # and the live sockets it opened, once committed
        after_commit(session, Publish(user_id, {"type": SESSIONS_ENDED, "session": family_id}))


async def rotate(
    session: AsyncSession,
    tokens: TokenService,
    refresh_token: str,
    *,
    access_ttl: int,
    refresh_ttl: int,
    client: ClientInfo,
) -> tuple[User, SessionTokens]:
    """Spend ``refresh_token`` and issue the next pair of its family."""
    now = utcnow()
    token_hash = digest(refresh_token)
    spent = (
        await session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.token_hash == token_hash,
                RefreshToken.used_at.is_(None),
                RefreshToken.revoked_at.is_(None),
                RefreshToken.expires_at > now,
            )
            .values(used_at=now)
            .returning(RefreshToken.user_id, RefreshToken.family_id)
        )
    ).one_or_none()
    if spent is None:
        known = (
            await session.execute(
                select(RefreshToken.family_id, RefreshToken.used_at).where(
                    RefreshToken.token_hash == token_hash
                )
            )
        ).one_or_none()
        if known is not None and known.used_at is not None:
            await revoke_family(session, known.family_id)
            raise RefreshTokenReusedError("this refresh token was already used; the session has been ended")
        raise AuthenticationError("the refresh token is invalid, expired or revoked")
    user = await session.get(User, spent.user_id)
    if user is None or not user.is_active:
        await revoke_family(session, spent.family_id)
        raise AuthenticationError("the refresh token is invalid, expired or revoked")
    issued = await _issue(
        session, tokens, user, spent.family_id, access_ttl=access_ttl, refresh_ttl=refresh_ttl, client=client
    )
    return user, issued


async def end_sessions(session: AsyncSession, user: User, *, keep_family: str | None = None) -> None:
    """Revoke every session of ``user`` (all refresh families but ``keep_family``, every access token
    issued until now). Used by logout-all, password changes and deactivation."""
    stmt = update(RefreshToken).where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
    if keep_family is not None:
        stmt = stmt.where(RefreshToken.family_id != keep_family)
    await session.execute(stmt.values(revoked_at=utcnow()))
    user.sessions_valid_after = utcnow()
    await session.flush()
    mark_changed(session)  # the cached verdicts on the user's access tokens
    before = int(user.sessions_valid_after.timestamp() * 1000)
    after_commit(session, Publish(user.id, {"type": SESSIONS_ENDED, "before": before}))  # and live sockets
