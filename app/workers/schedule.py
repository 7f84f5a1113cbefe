"""The periodic jobs, and what runs them: ``conduit beat`` (Celery beat, from :func:`beat_schedule`)
when there is a broker, :class:`InProcessScheduler` in the embedded default.

Each entry runs every ``every``. The jobs do not depend on running exactly then: housekeeping purges
what is due whenever it runs, and the digest sends at most one per user per ISO week however often it
runs, so a schedule restarted (beat without its state file, the in-process scheduler at every start)
or run twice (two app processes) costs nothing but an idle run.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from app.core.outbox import Job, TaskQueue
from app.services.digest import WEEKLY_DIGEST
from app.services.housekeeping import HOUSEKEEPING
from app.utils.tasks import cancel_and_wait

logger = logging.getLogger("conduit.jobs")


@dataclass(frozen=True, slots=True)
class Periodic:
    job: str
    every: timedelta


SCHEDULE = (
    Periodic(HOUSEKEEPING, timedelta(hours=1)),
    Periodic(WEEKLY_DIGEST, timedelta(weeks=1)),
)
STARTUP_DELAY = 60.0  # seconds before the in-process scheduler's first runs: let the app settle first


def beat_schedule(queue: str) -> dict[str, dict[str, Any]]:
    """Celery beat's ``beat_schedule``. A run not started before the next one is due is dropped
    (``expires``), so workers that were down do not find a pile of identical runs on their return."""
    return {
        entry.job: {
            "task": entry.job,
            "schedule": entry.every,
            "options": {"queue": queue, "expires": entry.every.total_seconds()},
        }
        for entry in SCHEDULE
    }


class InProcessScheduler:
    """Enqueues each periodic job on the in-process queue, first ``first_run`` seconds after start,
    then every ``every``. Started and stopped with the app (``app/main.py``).

    Hand-written: Celery beat needs a broker and a process of its own, which the embedded default has
    neither of, and a scheduling library would be a dependency for what is a loop over two intervals.
    """

    def __init__(
        self, queue: TaskQueue, schedule: tuple[Periodic, ...] = SCHEDULE, *, first_run: float = STARTUP_DELAY
    ) -> None:
        self._queue = queue
        self._schedule = schedule
        self._first_run = first_run
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="conduit-scheduler")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = {entry: loop.time() + self._first_run for entry in self._schedule}
        while True:
            entry = min(due, key=due.__getitem__)
            await asyncio.sleep(max(0.0, due[entry] - loop.time()))
            due[entry] = loop.time() + entry.every.total_seconds()
            try:
                await self._queue.enqueue((Job(entry.job),))
            except Exception as exc:
                logger.error("periodic job %s not enqueued: %s", entry.job, type(exc).__name__)

    async def stop(self) -> None:
        if self._task is None:
            return
        await cancel_and_wait(self._task)
        self._task = None
