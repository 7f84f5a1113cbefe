"""Idempotency keys: claiming a user's key for one request, keeping that request's answer, replaying it.

A key is **claimed** by an ``INSERT … ON CONFLICT DO NOTHING`` against the unique ``(user_id, key)``,
committed on its own before the work starts (``app/api/v1/idempotency.py``), so that of any number of
concurrent requests with one key exactly one inserts the row and does the work; the others find the
row and get a 409 while it runs, or its answer once it is kept. The answer is **recorded** by the
claim's holder in the transaction of the work itself (``app/db/unit_of_work.py``): the work and its
answer are committed together or not at all. A claim is a **lease** (``locked_until``): a holder that
died (its transaction rolled back with it) leaves a claim that lapses, and the next request with the
same key and body takes it over. A holder that outlived its lease finds, when it records, that the
claim is no longer its own, and its work is rolled back: at most one of them ever commits.

Every change to a row is conditional on what was read (its ``token``, whether it holds an answer), so
two requests racing to take over a lapsed or expired key cannot both win.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import ConflictError, ValidationFailedError
from app.db.base import utcnow
from app.db.dialect import insert_ignoring_conflicts
from app.models import IdempotencyKey

HEADER = "Idempotency-Key"
RETRY_AFTER = 1  # seconds: most requests a client would retry take milliseconds
CLAIM_ATTEMPTS = 3  # a key that another request released, or took over, meanwhile: look again


@dataclass(frozen=True, slots=True)
class Claim:
    """The right to do the work of a key's request and to record its answer, held by one request."""

    id: int
    token: str


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status_code: int
    content_type: str | None
    body: bytes


class IdempotencyKeyReusedError(ValidationFailedError):
    """The key was first used for a different request (another body, path or method): 422."""

    code = "idempotency_key_reused"

    def __init__(self) -> None:
        message = "was already used for a different request"
        super().__init__(f"{HEADER} {message}", fields={HEADER: [message]})


class _KeyBusyError(ConflictError):
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(RETRY_AFTER)}


class IdempotencyKeyInUseError(_KeyBusyError):
    """The first request with this key is still running: retry shortly for its answer."""

    code = "idempotency_key_in_use"

    def __init__(self) -> None:
        super().__init__(f"a request with this {HEADER} is still in progress; retry shortly")


class IdempotencyClaimLostError(_KeyBusyError):
    """This request ran past its claim's lease and a retry took the key over: its work is undone."""

    code = "idempotency_key_in_use"

    def __init__(self) -> None:
        super().__init__(
            f"this request outlasted its hold on the {HEADER} and a retry took it over; "
            "nothing was changed, retry shortly for that retry's answer"
        )


async def claim(
    session: AsyncSession, user_id: int, key: str, fingerprint: str, *, lease: timedelta, ttl: timedelta
) -> Claim | StoredResponse:
    """Claim the user's ``key`` for the request ``fingerprint`` names, or return the answer kept for it.

    Raises :class:`IdempotencyKeyReusedError` if the key belongs to a different request and
    :class:`IdempotencyKeyInUseError` while the key's first request runs. A key older than ``ttl`` is
    forgotten (even before the housekeeping job purges it), and a claim past its lease is taken over.
    The caller commits (the claim must be visible to other requests before the work starts).
    """
    table = IdempotencyKey.__table__
    for _ in range(CLAIM_ATTEMPTS):
        now = utcnow()
        token = secrets.token_hex(16)
        fresh = {"fingerprint": fingerprint, "token": token, "locked_until": now + lease, "created_at": now}
        claimed = await session.scalar(
            insert_ignoring_conflicts(session, table, table.c.user_id, table.c.key)
            .values(user_id=user_id, key=key, **fresh)
            .returning(table.c.id)
        )
        if claimed is not None:
            return Claim(claimed, token)
        row = await session.scalar(
            select(IdempotencyKey)
            .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
            .execution_options(populate_existing=True)  # as it is now, not as an earlier attempt saw it
        )
        if row is None:  # released or purged since the INSERT: try again
            continue
        if row.created_at < now - ttl:
            pass  # expired: the key is free again, whatever it was used for
        elif row.fingerprint != fingerprint:
            raise IdempotencyKeyReusedError()
        elif row.status_code is not None:
            assert row.body is not None
            return StoredResponse(row.status_code, row.content_type, row.body)
        elif row.locked_until is not None and row.locked_until > now:
            raise IdempotencyKeyInUseError()
        # Expired, or a claim whose holder is gone: take it over, if nobody changed it since.
        if await _take_over(session, row, fresh):
            return Claim(row.id, token)
    raise ConflictError(f"the {HEADER} could not be claimed, please retry")


async def _take_over(session: AsyncSession, row: IdempotencyKey, fresh: dict[str, Any]) -> bool:
    answered = IdempotencyKey.status_code.is_not(None)
    stmt = (
        update(IdempotencyKey)
        .where(
            IdempotencyKey.id == row.id,
            IdempotencyKey.token == row.token,
            answered if row.status_code is not None else ~answered,
        )
        .values(**fresh, status_code=None, content_type=None, body=None)
        .returning(IdempotencyKey.id)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(stmt)).first() is not None


async def record(session: AsyncSession, held: Claim, response: StoredResponse) -> None:
    """Keep ``response`` as the key's answer, in the caller's transaction (the work's, for a success).

    Raises :class:`IdempotencyClaimLostError` if the claim is no longer ``held``'s (its lease lapsed
    and another request took the key over): the caller must then roll its work back.
    """
    stmt = (
        update(IdempotencyKey)
        .where(
            IdempotencyKey.id == held.id,
            IdempotencyKey.token == held.token,
            IdempotencyKey.status_code.is_(None),
        )
        .values(
            status_code=response.status_code,
            content_type=response.content_type,
            body=response.body,
            locked_until=None,
        )
        .returning(IdempotencyKey.id)
        .execution_options(synchronize_session=False)
    )
    if (await session.execute(stmt)).first() is None:
        raise IdempotencyClaimLostError()


async def release(session: AsyncSession, held: Claim) -> None:
    """Free the key for a retry (the request failed, and nothing it did was kept). A no-op if the key
    holds an answer or another request's claim."""
    await session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.id == held.id,
            IdempotencyKey.token == held.token,
            IdempotencyKey.status_code.is_(None),
        )
    )
