"""What may happen only once the transaction that caused it has committed: pushes to a user's live
connections and background jobs; and how to undo what had to happen before the commit.

Services record the first on their session with :func:`after_commit`; whoever owns the unit of work
(the request's middleware, a job's ``unit_of_work``: ``app/db/unit_of_work.py``) hands it to the
:class:`Dispatcher` after a successful commit and drops it on rollback. So a WebSocket never announces
a comment that was rolled back, and a job never looks for rows that are not there yet.

Some work outside the database must be done before the commit, because the rows describe its result
(an uploaded file is stored before its row is written). Services record its undoing with
:func:`on_rollback`, run if the transaction does not commit (:func:`rolled_back`), forgotten if it does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

logger = logging.getLogger("conduit.outbox")

AFTER_COMMIT = "conduit.after_commit"
ON_ROLLBACK = "conduit.on_rollback"

Undo = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Publish:
    """A message for every live connection of one user."""

    user_id: int
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Job:
    """A background job by name (``app/workers``); several in one ``Enqueue`` run as a chain."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Enqueue:
    steps: tuple[Job, ...]


Deferred = Publish | Enqueue


def after_commit(session: AsyncSession, item: Deferred) -> None:
    session.info.setdefault(AFTER_COMMIT, []).append(item)


def take_deferred(session: AsyncSession) -> list[Deferred]:
    """Remove and return what the session's work deferred (call after commit or rollback)."""
    items: list[Deferred] = session.info.pop(AFTER_COMMIT, [])
    return items


def on_rollback(session: AsyncSession, undo: Undo) -> None:
    """Undo an effect outside the database (a stored file) should the session's transaction not
    commit. ``undo`` must be idempotent and must not need the session."""
    session.info.setdefault(ON_ROLLBACK, []).append(undo)


def committed(session: AsyncSession) -> list[Deferred]:
    """The transaction committed: its undos are forgotten; returns what it deferred, to dispatch."""
    session.info.pop(ON_ROLLBACK, None)
    return take_deferred(session)


def abandoned(session: AsyncSession) -> None:
    """Whether the transaction committed is unknown (the connection broke during the COMMIT): nothing
    is dispatched, and nothing undone either, since its rows may exist. (A file kept for rows that were
    not kept is an orphan in storage; a file deleted under rows that were kept would be a broken image.)"""
    session.info.pop(ON_ROLLBACK, None)
    take_deferred(session)


async def rolled_back(session: AsyncSession) -> None:
    """The transaction did not commit: drop what it deferred and run its undos, newest first, shielded
    from cancellation. A failing undo is logged (it leaves an orphan behind, never fails the caller)."""
    take_deferred(session)
    undos: list[Undo] = session.info.pop(ON_ROLLBACK, [])
    if not undos:
        return
    with anyio.CancelScope(shield=True):
        for undo in reversed(undos):
            try:
                await undo()
            except Exception as exc:
                logger.error("undoing a rolled-back effect failed: %s", type(exc).__name__)


def user_channel(user_id: int) -> str:
    return f"user:{user_id}"


class Broadcaster(Protocol):
    async def publish(self, channel: str, message: bytes) -> None: ...


class TaskQueue(Protocol):
    async def enqueue(self, steps: tuple[Job, ...]) -> None:
        """Run ``steps`` in order in the background, each after the previous succeeded."""
        ...


class Dispatcher:
    def __init__(self, broadcaster: Broadcaster, queue: TaskQueue) -> None:
        self.broadcaster = broadcaster
        self.queue = queue

    async def dispatch(self, items: list[Deferred]) -> None:
        """Deliver committed work. Never raises: the transaction is committed whatever happens here,
        so a failure is logged. A lost push costs a client a REST reload; a lost export chain is sent
        again by housekeeping; a lost article fan-out is not repaired (its followers can still read
        the article in their feed)."""
        for item in items:
            try:
                if isinstance(item, Publish):
                    await self.broadcaster.publish(user_channel(item.user_id), orjson.dumps(item.message))
                else:
                    await self.queue.enqueue(item.steps)
            except Exception as exc:
                logger.error("after-commit %s failed: %s", type(item).__name__, type(exc).__name__)
