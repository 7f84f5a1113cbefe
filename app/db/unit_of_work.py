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

A pure ASGI middleware rather than a dependency with ``yield``: FastAPI's machinery for those costs
about a third of the throughput of a small endpoint (measured with ``bench/``).
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.cache import CHANGED, Cache
from app.core.errors import render_exception
from app.core.outbox import Deferred, Dispatcher, abandoned, committed, rolled_back


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


class UnitOfWork:
    __slots__ = ("_factory", "_session", "keep_changes")

    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = factory
        self._session: AsyncSession | None = None
        self.keep_changes = False

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            self._session = self._factory()
        return self._session

    async def finish(self, *, commit: bool, cache: Cache, dispatcher: Dispatcher) -> None:
        """Commit (or roll back), which releases the connection; raises if the commit fails. After a
        commit: invalidate the cache if the work changed cached data, then send what it deferred."""
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

        async def send_after_commit(message: Message) -> None:
            nonlocal finished, replaced
            if replaced:  # the app's response was replaced by the commit's error: it ends here
                raise _ResponseReplaced
            if message["type"] == "http.response.start" and not finished:
                finished = True
                commit = message["status"] < 400 or unit_of_work.keep_changes
                try:
                    await unit_of_work.finish(commit=commit, cache=self.cache, dispatcher=self.dispatcher)
                except Exception as exc:
                    replaced = True
                    response = await render_exception(Request(scope), exc)
                    await response(scope, receive, send)
                    raise _ResponseReplaced from None
            await send(message)

        try:
            await self.app(scope, receive, send_after_commit)
        except _ResponseReplaced:
            pass
        finally:
            if not finished:  # an unhandled error before any response: roll back
                await unit_of_work.finish(commit=False, cache=self.cache, dispatcher=self.dispatcher)
