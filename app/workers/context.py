"""What a job needs (settings, database, mail, pushes, more jobs) and its unit of work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.cache import CHANGED, Cache
from app.core.config import Settings
from app.core.mail import Mailer
from app.core.outbox import Dispatcher
from app.db.unit_of_work import end_transaction


@dataclass(frozen=True, slots=True)
class JobContext:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    mailer: Mailer
    cache: Cache
    dispatcher: Dispatcher

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        """A session committed at the end of the block (rolled back on error); what its work deferred
        (pushes, further jobs) goes out after the commit, as for a request, and what it did outside the
        database is undone if it does not commit."""
        async with self.sessionmaker() as session:
            try:
                yield session
            except BaseException:
                await end_transaction(session, commit=False)
                raise
            deferred = await end_transaction(session, commit=True)
            if session.info.pop(CHANGED, False):
                await self.cache.invalidate()
            await self.dispatcher.dispatch(deferred)
