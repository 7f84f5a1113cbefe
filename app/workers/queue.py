"""The queues that run jobs: Celery when a broker is configured, otherwise this process.

Both take a chain of steps (``Job``s) and run each after the previous one succeeded. Transient
errors (database, Redis, network) are retried with exponential backoff; anything else fails the
chain, logged without its message (which may hold data).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING

import anyio.to_thread
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError

from app.core.metrics import record_job
from app.core.outbox import Job
from app.core.profiling import forget_request
from app.workers.registry import load_jobs, longest_time_limit, run_job

if TYPE_CHECKING:
    from celery import Celery

    from app.core.config import Settings
    from app.workers.context import JobContext

logger = logging.getLogger("conduit.jobs")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    OperationalError,
    InterfaceError,
    RedisError,
)
BACKOFF_BASE = 1.0  # seconds; doubled per attempt, with jitter
BACKOFF_MAX = 300.0


def visibility_timeout(settings: Settings) -> int:
    """Seconds before Redis hands a job that was delivered but never acknowledged (its worker died)
    to another worker. It must exceed the longest job, or a job still running is run twice."""
    return settings.task_visibility_timeout or longest_time_limit() + 60


def backoff(attempt: int) -> float:
    return random.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2**attempt))


class InProcessQueue:
    """The embedded default: jobs run as tasks of this process's event loop, off the request (they
    start after the response), with their blocking parts (files, zip) in worker threads. Jobs still
    running at shutdown are waited for (``drain``), then cancelled."""

    def __init__(self) -> None:
        self._context: JobContext | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def bind(self, context: JobContext) -> None:
        self._context = context

    async def enqueue(self, steps: tuple[Job, ...]) -> None:
        task = asyncio.create_task(self._run(steps), name=f"conduit-job-{steps[0].name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, steps: tuple[Job, ...]) -> None:
        assert self._context is not None, "InProcessQueue.bind() was not called"
        # This task inherited the context of the request that enqueued it: keep its request id in the
        # log lines, but count no statement of the job as the request's.
        forget_request()
        jobs = load_jobs()
        for step in steps:
            spec = jobs[step.name]
            for attempt in range(spec.max_retries + 1):
                started = time.perf_counter()
                outcome = "failure"
                try:
                    async with asyncio.timeout(spec.time_limit):
                        await run_job(self._context, step.name, step.kwargs)
                    outcome = "success"
                except TRANSIENT_ERRORS as exc:
                    if attempt < spec.max_retries:
                        outcome = "retry"
                    else:
                        logger.error(
                            "job %s failed after %d attempts: %s", step.name, attempt + 1, type(exc).__name__
                        )
                except Exception as exc:
                    logger.error("job %s failed: %s", step.name, type(exc).__name__)
                record_job("inprocess", step.name, outcome, time.perf_counter() - started)
                if outcome == "success":
                    break
                if outcome == "failure":
                    return
                await asyncio.sleep(backoff(attempt))

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for running jobs, then cancel what is left."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            logger.warning("%d jobs cancelled at shutdown", len(pending))


class CeleryQueue:
    """Sends chains to the broker. Publishing is blocking network I/O (kombu), so it runs in a thread."""

    def __init__(self, celery: Celery, queue: str) -> None:
        self._celery = celery
        self._queue = queue

    async def enqueue(self, steps: tuple[Job, ...]) -> None:
        from celery import chain

        signatures = [
            self._celery.signature(step.name, kwargs=step.kwargs, immutable=True, queue=self._queue)
            for step in steps
        ]
        workflow = signatures[0] if len(signatures) == 1 else chain(*signatures)
        await anyio.to_thread.run_sync(workflow.apply_async)

    async def close(self) -> None:
        """Close the broker connections kept for publishing."""
        await anyio.to_thread.run_sync(self._celery.close)
