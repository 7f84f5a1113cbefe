"""The ``Idempotency-Key`` request header, on the operations that create something.

An endpoint that accepts it takes :data:`IdempotencyDep` and calls ``claim(user_id)`` once the request
is known to be valid (authenticated, rate-limited, its body parsed) and before it does any work:

- a new key is claimed, committed on its own so that other requests see it, and bound to the request's
  unit of work, which keeps the answer with the work (``app/db/unit_of_work.py``);
- a key whose first request got an answer replays that answer (:class:`IdempotentReplay`): same status
  and body, plus ``Idempotent-Replayed: true``, and nothing is done again;
- a key used for a different request is a 422, a key whose first request still runs a 409.

The request is identified by its **fingerprint**: SHA-256 over the method, the path and the body's
own SHA-256, which for uploads is that of the file's bytes, hashed as they stream in
(``app/api/v1/multipart.py``), since clients draw a new multipart boundary for every attempt.

Kept: 2xx answers, and failures the work itself decided (404, 403, 415, 422, …) except 409 and 429,
which say "not now" rather than "no". Not kept, and the key released for a retry: those, 5xx, and
any request that ended without an answer. Request validation, authentication and rate limits answer
before the key is claimed, so they never touch it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import Headers
from starlette.responses import Response

from app.core.config import Settings
from app.core.errors import PATTERN_MESSAGES, PROBLEM_MEDIA_TYPE, Problem
from app.db.dialect import commit_unflushed
from app.db.unit_of_work import FinalResponse, UnitOfWork
from app.services import idempotency as idempotency_service
from app.services.idempotency import HEADER, RETRY_AFTER, Claim, StoredResponse

REPLAYED = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
# Visible ASCII, no spaces: a UUID, a ULID or base64 all fit; nothing a proxy would trim or re-encode.
KEY_PATTERN = r"^[!-~]+$"
PATTERN_MESSAGES[KEY_PATTERN] = "must be visible ASCII characters, without spaces"

# Failures that depend on the moment, not on the request: a retry may succeed, so they are not kept.
NOT_NOW = frozenset({409, 429})


class IdempotentReplay(Exception):  # noqa: N818 - not an error: the answer, raised past the endpoint
    """The key's first request was answered: that answer is the response (see :func:`replay`)."""

    def __init__(self, stored: StoredResponse) -> None:
        super().__init__("replayed")
        self.stored = stored


async def replay(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, IdempotentReplay)
    stored = exc.stored
    headers = {REPLAYED: "true"}
    return Response(stored.body, stored.status_code, headers, media_type=stored.content_type)


@dataclass(frozen=True, slots=True)
class ClaimedKey:
    """A key this request holds: what ``app/db/unit_of_work.py`` records with the work, or releases."""

    claim: Claim

    def keeps(self, status: int) -> bool:
        return status < 500 and status not in NOT_NOW

    async def record(self, session: AsyncSession, response: FinalResponse) -> None:
        content_type = Headers(raw=response.headers).get("content-type")
        await idempotency_service.record(
            session, self.claim, StoredResponse(response.status, content_type, response.body)
        )

    async def release(self, session: AsyncSession) -> None:
        await idempotency_service.release(session, self.claim)


def fingerprint(method: str, path: str, body_sha256: str) -> str:
    """What identifies a request for its key: its method, path and the SHA-256 of its body."""
    return hashlib.sha256(f"{method} {path}\n{body_sha256}".encode()).hexdigest()


class Idempotency:
    """The request's ``Idempotency-Key``, if it sent one."""

    __slots__ = ("key", "request")

    def __init__(self, request: Request, key: str | None) -> None:
        self.request = request
        self.key = key

    async def claim(self, user_id: int, *, body_sha256: str | None = None) -> None:
        """Claim the key for this request (see the module's docstring): call it before the request
        writes anything. A no-op without a key. ``body_sha256``: the body's digest when it was not read
        as a whole (uploads)."""
        if self.key is None:
            return
        request = self.request
        if body_sha256 is None:
            body_sha256 = hashlib.sha256(await request.body()).hexdigest()
        settings: Settings = request.app.state.settings
        sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
        unit_of_work: UnitOfWork = request.state.unit_of_work
        await unit_of_work.end_reads()  # one pooled connection at a time
        # Committed now, on its own: every other request with this key must see it while the work runs.
        async with sessionmaker() as session:
            outcome = await idempotency_service.claim(
                session,
                user_id,
                self.key,
                fingerprint(request.method, request.url.path, body_sha256),
                lease=timedelta(seconds=settings.idempotency_lease),
                ttl=timedelta(seconds=settings.idempotency_ttl),
            )
            await commit_unflushed(session)  # durable with the work's own commit, which follows it
        if isinstance(outcome, StoredResponse):
            raise IdempotentReplay(outcome)
        unit_of_work.claim = ClaimedKey(outcome)


async def get_idempotency(
    request: Request,
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            min_length=1,
            max_length=MAX_KEY_LENGTH,
            pattern=KEY_PATTERN,
            description="A key of your choosing (a UUID, say), new for each operation you mean to do "
            "once. Retrying with the same key and the same request returns the first answer "
            f"(with `{REPLAYED}: true`) instead of doing it again. Keys are yours alone, kept for a day.",
        ),
    ] = None,
) -> Idempotency:
    return Idempotency(request, key)


IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]


def _problem(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "model": Problem,
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": schema or {"$ref": "#/components/schemas/Problem"}}},
    }


def idempotent_responses(
    success: int, *, conflict: dict[str, Any] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of an operation taking ``Idempotency-Key``: the replay header on its
    success, the 409 while the key's first request runs and the 422 of a malformed or reused key.
    ``conflict``: the operation's own 409 entry, which then also covers the key's."""
    in_use = (
        f"A request with this `{HEADER}` is still in progress (`code: idempotency_key_in_use`, with "
        "`Retry-After`)"
    )
    busy = dict(conflict or _problem(in_use + "."))
    if conflict is not None:
        busy["description"] = f"{conflict['description']} Or: {in_use[0].lower()}{in_use[1:]}."
    busy["headers"] = {
        "Retry-After": {
            "description": f"Seconds to wait before retrying (sent when the `{HEADER}` is in use).",
            "schema": {"type": "integer", "minimum": 1, "examples": [RETRY_AFTER]},
        }
    }
    return {
        success: {
            "headers": {
                REPLAYED: {
                    "description": f"`true` when this is the kept answer of an earlier request with the "
                    f"same `{HEADER}`.",
                    "schema": {"type": "string", "enum": ["true"]},
                }
            }
        },
        409: busy,
        422: _problem(
            f"{HTTPStatus.UNPROCESSABLE_ENTITY.phrase}: invalid input, or an `{HEADER}` that is malformed "
            "or was already used for a different request (`code: idempotency_key_reused`)."
        ),
    }


def install_idempotency(app: FastAPI) -> None:
    app.add_exception_handler(IdempotentReplay, replay)
