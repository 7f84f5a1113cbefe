"""Job functions by name. A job is ``async def job(ctx: JobContext, **kwargs) -> None``, idempotent
(a redelivered job must do no harm: Celery runs them ``acks_late``), registered with :func:`job`.

The same functions run under Celery (``app/workers/celery_app.py``) and in-process
(``app/workers/queue.py``), so the embedded default and a scaled-out deployment share one code path.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.workers.context import JobContext

JobFunction = Callable[..., Awaitable[None]]

# The modules that define jobs; imported by load_jobs() so that every process knows every job.
JOB_MODULES = (
    "app.workers.notifications",
    "app.workers.exports",
    "app.workers.digest",
    "app.workers.housekeeping",
    "app.workers.media",
)


@dataclass(frozen=True, slots=True)
class JobSpec:
    name: str
    func: JobFunction
    soft_time_limit: int  # seconds: the job gets SoftTimeLimitExceeded and may clean up
    time_limit: int  # seconds: the worker process running it is killed
    max_retries: int  # on transient errors, with exponential backoff


JOBS: dict[str, JobSpec] = {}


def job(
    name: str, *, soft_time_limit: int = 60, time_limit: int = 90, max_retries: int = 5
) -> Callable[[JobFunction], JobFunction]:
    def register(func: JobFunction) -> JobFunction:
        if name in JOBS and JOBS[name].func is not func:
            raise RuntimeError(f"job {name!r} registered twice")
        JOBS[name] = JobSpec(name, func, soft_time_limit, time_limit, max_retries)
        return func

    return register


def load_jobs() -> dict[str, JobSpec]:
    for module in JOB_MODULES:
        importlib.import_module(module)
    return JOBS


def longest_time_limit() -> int:
    return max((spec.time_limit for spec in load_jobs().values()), default=60)


async def run_job(ctx: JobContext, name: str, kwargs: dict[str, Any]) -> None:
    await load_jobs()[name].func(ctx, **kwargs)
