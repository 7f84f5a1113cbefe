"""One unit of work per request, committed or rolled back in one place: this middleware.

The request's ``AsyncSession`` is created on first use (``get_session``), so a request that never
touches the database, such as a read served from the cache, costs nothing here. When the response
starts, the work is committed if the response is a success (or the error asked to keep its changes,
e.g. revoking a refresh-token family on reuse) and rolled back otherwise. The commit happens *before*
the response goes out: a commit that fails becomes an error response in its place, never a success
the database did not keep. Then the cache entries the work changed are invalidated, still before the
response, so that any read that follows sees the write, and what the work deferred until its commit
(pushes to live connections, background jobs: ``app/core/outbox.py``) goes out. Background tasks run
after the response, so after the commit.

A pure ASGI middleware rather than a dependency with ``yield``: FastAPI's machinery for those costs
about a third of the throughput of a small endpoint (measured with ``bench/``).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.cache import CHANGED, Cache
from app.core.errors import render_exception
from app.core.outbox import Dispatcher, take_deferred


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
        # A session that never began a transaction holds no connection: nothing to end or release,
        # and skipping it keeps such requests (reads served from the cache) off the greenlet bridge.
        if session is None or not session.in_transaction():
            return
        try:
            await (session.commit() if commit else session.rollback())
        finally:
            if session.in_transaction():  # the commit failed
                await session.rollback()
                take_deferred(session)
        deferred = take_deferred(session)
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
            if replaced:  # the app's response was replaced by the commit's error
                return
            if message["type"] == "http.response.start" and not finished:
                finished = True
                commit = message["status"] < 400 or unit_of_work.keep_changes
                try:
                    await unit_of_work.finish(commit=commit, cache=self.cache, dispatcher=self.dispatcher)
                except Exception as exc:
                    replaced = True
                    response = await render_exception(Request(scope), exc)
                    await response(scope, receive, send)
                    return
            await send(message)

        try:
            await self.app(scope, receive, send_after_commit)
        finally:
            if not finished:  # an unhandled error before any response: roll back
                await unit_of_work.finish(commit=False, cache=self.cache, dispatcher=self.dispatcher)
