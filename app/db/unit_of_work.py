"""One unit of work per request, committed or rolled back in one place: this middleware.

The request's ``AsyncSession`` is created on first use (``get_session``), so a request that never
touches the database, such as a read served from the cache, costs nothing here. When the response
starts, the work is committed if the response is a success (or the error asked to keep its changes,
e.g. revoking a refresh-token family on reuse) and rolled back otherwise. The commit happens *before*
the response goes out: a commit that fails becomes an error response in its place, never a success
the database did not keep. Then the cache entries the work changed are invalidated, still before the
response, so that any read that follows sees the write, and what the work deferred until its commit
(pushes to live connections, background jobs: ``app/core/outbox.py``) goes out. If it does not commit,
what the work did outside the database before the commit (a stored file) is undone. Background tasks
(emails) run after the response, so after the commit; when the commit fails, the rest of the app's
own response, background tasks included, never runs.

A request that claimed an idempotency key (``app/api/v1/idempotency.py``) has its answer recorded
here too: the response is held until its body is complete, written to the key's row in the work's own
transaction, and only sent once that transaction has committed, so the work and its kept answer
exist together or not at all. If its answer is not to be kept (a 5xx, or a failure that says "not
now"), the key is released in a short transaction of its own, so that a retry may run.

A pure ASGI middleware rather than a dependency with ``yield``: FastAPI's machinery for those costs
about a third of the throughput of a small endpoint (measured with ``bench/``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import anyio
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.cache import CHANGED, Cache
from app.core.errors import render_exception
from app.core.outbox import Deferred, Dispatcher, abandoned, committed, rolled_back
from app.db.dialect import commit_unflushed

logger = logging.getLogger("conduit.idempotency")

# Seconds allowed for keeping a failure's answer or releasing a key, even while the request is being
# cancelled; if that fails, the claim's lease lapses instead.
SETTLE_TIMEOUT = 10.0


def _outcome_unknown(exc: BaseException) -> bool:
    """Whether a commit that raised ``exc`` may have committed all the same: the connection broke, or
    the wait was cancelled, while the COMMIT was in flight. Any other error means it did not."""
    return not isinstance(exc, Exception) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


async def end_transaction(session: AsyncSession, *, commit: bool) -> list[Deferred]:
    """Commit (or roll back) the session's transaction, which releases its connection, and return what
    its work deferred until the commit. If it does not commit, what it deferred is dropped and its
    undos run (``app/core/outbox.py``). Raises if the commit fails. Also the end of a job's unit of
    work (``app/workers/context.py``)."""
    if not commit or not session.in_transaction():
        try:
            if session.in_transaction():
                await session.rollback()
        finally:
            await rolled_back(session)
        return []
    try:
        await session.commit()
    except BaseException as exc:
        try:
            if session.in_transaction():
                await session.rollback()
        finally:
            if _outcome_unknown(exc):
                abandoned(session)
            else:
                await rolled_back(session)
        raise
    return committed(session)


class _ResponseReplaced(BaseException):
    """Raised into the app once its response was replaced by the error of a failed commit, so that
    nothing more of that response happens: not the rest of its body, and not its background tasks
    (an email announcing the write). Not an ``Exception``, so that no exception handler on the way
    turns it into a response of its own; the middleware catches it."""


@dataclass(frozen=True, slots=True)
class FinalResponse:
    """A complete response, as the endpoint produced it."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class ClaimedKey(Protocol):
    """An idempotency key this request holds (``app/api/v1/idempotency.py``)."""

    def keeps(self, status: int) -> bool:
        """Whether an answer with this status is kept for the key (else the key is released)."""
        ...

    async def record(self, session: AsyncSession, response: FinalResponse) -> None:
        """Write ``response`` as the key's answer in ``session``'s transaction; raises if the claim was
        lost meanwhile."""
        ...

    async def release(self, session: AsyncSession) -> None:
        """Free the key in ``session``'s transaction (a no-op once it holds an answer)."""
        ...


class UnitOfWork:
    __slots__ = ("_factory", "_session", "claim", "keep_changes")

    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = factory
        self._session: AsyncSession | None = None
        self.keep_changes = False
        self.claim: ClaimedKey | None = None

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            self._session = self._factory()
        return self._session

    async def end_reads(self) -> None:
        """End the transaction of what the request has only read so far, which gives its connection back
        to the pool (the session stays usable, and takes a connection again for its next statement).

        For a request about to use a second connection for a moment (an idempotency claim): holding two
        at once, enough concurrent requests would take every pooled connection and wait for another.
        Only before the request writes anything (it is a commit, of nothing).
        """
        if self._session is not None and self._session.in_transaction():
            await self._session.commit()

    async def finish(
        self, *, commit: bool, cache: Cache, dispatcher: Dispatcher, response: FinalResponse | None = None
    ) -> None:
        """Commit (or roll back), which releases the connection; raises if the commit fails. After a
        commit: invalidate the cache if the work changed cached data, then send what it deferred.

        With a claimed idempotency key, ``response`` (``None`` when there is none: an unhandled error)
        is recorded with the work when the work commits; a failure's answer that is kept is recorded on
        its own after the rollback; otherwise, or if anything here fails, the key is released.
        """
        claim, self.claim = self.claim, None
        if claim is None:
            await self._end(commit=commit, cache=cache, dispatcher=dispatcher)
            return
        keep = response is not None and claim.keeps(response.status)
        try:
            try:
                if keep and commit:
                    assert response is not None
                    await claim.record(self.session, response)
            except BaseException:  # the claim was lost: the work goes too
                await self._end(commit=False, cache=cache, dispatcher=dispatcher)
                raise
            await self._end(commit=commit, cache=cache, dispatcher=dispatcher)
        except BaseException:
            # A no-op if the answer was committed after all (a COMMIT whose outcome is unknown).
            await self._settle(claim.release)
            raise
        if keep and not commit:
            assert response is not None
            answer = response

            async def record(session: AsyncSession) -> None:
                await claim.record(session, answer)

            await self._settle(record)
        elif not keep:
            await self._settle(claim.release)

    async def _settle(self, action: Callable[[AsyncSession], Awaitable[None]]) -> None:
        """Run ``action`` on the claimed key in a transaction of its own. A failure is only logged: the
        claim's lease then lapses, and a retry takes the key over."""
        with anyio.move_on_after(SETTLE_TIMEOUT, shield=True):
            try:
                async with self._factory() as session:
                    await action(session)
                    await commit_unflushed(session)  # if a crash loses it, the lease lapses
            except Exception as exc:
                logger.warning("could not settle an idempotency key: %s", type(exc).__name__)

    async def _end(self, *, commit: bool, cache: Cache, dispatcher: Dispatcher) -> None:
        session = self._session
        self._session = None
        if session is None:  # the request never touched the database (e.g. a read served from the cache)
            return
        deferred = await end_transaction(session, commit=commit)
        if not commit:
            return
        if session.info.pop(CHANGED, False):
            await cache.invalidate()
        await dispatcher.dispatch(deferred)


class UnitOfWorkMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        cache: Cache,
        dispatcher: Dispatcher,
    ) -> None:
        self.app = app
        self.sessionmaker = sessionmaker
        self.cache = cache
        self.dispatcher = dispatcher

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        unit_of_work = UnitOfWork(self.sessionmaker)
        scope.setdefault("state", {})["unit_of_work"] = unit_of_work
        finished = replaced = False
        held: Message | None = None  # the start of a response a claimed key's answer is gathered for
        body = bytearray()

        async def finish(status: int, response: FinalResponse | None) -> None:
            """End the unit of work; if that fails, its error is sent as the response instead."""
            nonlocal finished, replaced
            finished = True
            commit = status < 400 or unit_of_work.keep_changes
            try:
                await unit_of_work.finish(
                    commit=commit, cache=self.cache, dispatcher=self.dispatcher, response=response
                )
            except Exception as exc:
                replaced = True
                error = await render_exception(Request(scope), exc)
                await error(scope, receive, send)
                raise _ResponseReplaced from None

        async def send_after_commit(message: Message) -> None:
            nonlocal held
            if replaced:  # the app's response was replaced by the commit's error: it ends here
                raise _ResponseReplaced
            if held is not None:  # the body of a response whose key keeps it: whole, then committed
                body.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                start, held = held, None
                response = FinalResponse(start["status"], list(start.get("headers", [])), bytes(body))
                await finish(response.status, response)
                await send(start)
                await send({"type": "http.response.body", "body": response.body})
                return
            if message["type"] == "http.response.start" and not finished:
                if unit_of_work.claim is not None:
                    held = message
                    return
                await finish(message["status"], None)
            await send(message)

        try:
            await self.app(scope, receive, send_after_commit)
        except _ResponseReplaced:
            pass
        finally:
            if not finished:  # an unhandled error before any response: roll back
                await unit_of_work.finish(commit=False, cache=self.cache, dispatcher=self.dispatcher)
