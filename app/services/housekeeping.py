"""Purges of data past its use (run hourly by ``app/workers/housekeeping.py``; exports have theirs in
``app/services/exports.py``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, exists
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from app.db.base import utcnow
from app.models import IdempotencyKey, Notification, RefreshToken

# The job (app/workers/housekeeping.py); the scheduler runs it hourly.
HOUSEKEEPING = "housekeeping.run"


def _count(result: Any) -> int:
    return int(result.rowcount or 0)


async def purge_refresh_tokens(session: AsyncSession) -> int:
    """Delete the refresh tokens of sessions that are over: families whose every token has expired.

    A family with a live token keeps its expired (spent) ones, so that replaying one of those still
    ends the session (reuse detection, app/services/auth.py). Returns how many were deleted.
    """
    now = utcnow()
    sibling = aliased(RefreshToken)
    live = exists().where(sibling.family_id == RefreshToken.family_id, sibling.expires_at >= now)
    return _count(await session.execute(delete(RefreshToken).where(RefreshToken.expires_at < now, ~live)))


async def purge_read_notifications(session: AsyncSession, *, older_than: timedelta) -> int:
    """Delete read notifications created more than ``older_than`` ago (unread ones stay)."""
    cutoff = utcnow() - older_than
    return _count(
        await session.execute(
            delete(Notification).where(Notification.read_at.is_not(None), Notification.created_at < cutoff)
        )
    )


async def purge_idempotency_keys(session: AsyncSession, *, older_than: timedelta) -> int:
    """Delete the idempotency keys first used more than ``older_than`` ago (answers and lapsed claims
    alike: a claim's lease is far shorter). Until then, ``idempotency.claim`` already ignores them."""
    cutoff = utcnow() - older_than
    return _count(await session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < cutoff)))
