"""The Celery app: ``conduit worker`` (or ``celery -A app.workers.celery_app:celery_app worker``) and
``conduit beat`` (the periodic jobs of ``app/workers/schedule.py``).

Every registered job (``app/workers/registry.py``) becomes a task: ``acks_late`` with
``reject_on_worker_lost`` (a job whose worker dies is delivered again, so jobs are idempotent),
retried with exponential backoff on transient errors, with soft and hard time limits. The broker's
visibility timeout is set just above the longest hard limit (or ``CONDUIT_TASK_VISIBILITY_TIMEOUT``),
not Redis's default hour, so a job lost with its worker comes back within minutes.

Async job code runs on one event loop per worker process (per thread with a thread pool), kept for
the life of the process, with its own engine and connections: never a new loop per call.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from celery import Celery, Task
from celery.signals import setup_logging, worker_init, worker_process_shutdown

from app.core import tracing
from app.core.cache import Cache
from app.core.config import Settings, get_settings
from app.core.logging import configure_logging
from app.core.mail import create_mailer
from app.core.metrics import process_exited, record_job
from app.core.outbox import Dispatcher
from app.core.pubsub import create_pubsub
from app.db.session import create_engine, create_sessionmaker
from app.workers.context import JobContext
from app.workers.queue import TRANSIENT_ERRORS, CeleryQueue, visibility_timeout
from app.workers.registry import load_jobs, run_job
from app.workers.schedule import beat_schedule

_local = threading.local()


def _loop_runner() -> asyncio.Runner:
    runner: asyncio.Runner | None = getattr(_local, "runner", None)
    if runner is None:
        runner = _local.runner = asyncio.Runner()
    return runner


async def _run_in_context(celery: Celery, settings: Settings, name: str, kwargs: dict[str, Any]) -> None:
    context: JobContext | None = getattr(_local, "context", None)
    if context is None:  # built inside the loop, which its connections belong to
        engine = create_engine(settings)
        if (provider := tracing.setup(settings)) is not None:
            tracing.trace_engine(engine, provider)
        context = _local.context = JobContext(
            settings=settings,
            sessionmaker=create_sessionmaker(engine),
            mailer=create_mailer(settings),
            cache=Cache(settings),
            dispatcher=Dispatcher(create_pubsub(settings), CeleryQueue(celery, settings.task_queue)),
        )
    await run_job(context, name, kwargs)


def create_celery(settings: Settings) -> Celery:
    celery = Celery("conduit", broker=settings.effective_broker_url, set_as_current=False)
    celery.conf.update(
        task_default_queue=settings.task_queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        result_expires=None,  # no results are kept: beat needs no daily cleanup task
        worker_prefetch_multiplier=1,  # with acks_late: a busy worker does not hoard jobs
        broker_transport_options={
            "visibility_timeout": visibility_timeout(settings),
            # Redis keys under the queue's name, unacknowledged jobs included: deployments (and test
            # runs) sharing a Redis never restore each other's jobs. (RabbitMQ ignores both options.)
            "global_keyprefix": f"{settings.task_queue}:",
            # A Redis broker that stops answering (a network dropping packets) fails an enqueue within
            # a few of these, with Celery's publish retries, instead of hanging the request that sent it.
            "socket_timeout": settings.broker_timeout,
            "socket_connect_timeout": settings.broker_timeout,
        },
        beat_schedule=beat_schedule(settings.task_queue),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    for spec in load_jobs().values():

        def body(task: Task[Any, Any], /, _name: str = spec.name, **kwargs: Any) -> None:
            started = time.perf_counter()
            outcome = "failure"
            try:
                _loop_runner().run(_run_in_context(celery, settings, _name, kwargs))
                outcome = "success"
            except TRANSIENT_ERRORS:
                # autoretry_for retries it, unless its retries are spent.
                if task.max_retries is None or task.request.retries < task.max_retries:
                    outcome = "retry"
                raise
            finally:
                record_job("celery", _name, outcome, time.perf_counter() - started)

        celery.task(
            name=spec.name,
            # Not shared: a shared task is added to every Celery app created later in the process, with
            # this app's settings captured in its body (another app's export directory, database...).
            shared=False,
            bind=True,
            acks_late=True,
            reject_on_worker_lost=True,
            autoretry_for=TRANSIENT_ERRORS,
            retry_backoff=True,
            retry_backoff_max=300,
            retry_jitter=True,
            max_retries=spec.max_retries,
            soft_time_limit=spec.soft_time_limit,
            time_limit=spec.time_limit,
        )(body)
    return celery


def prepare_worker(settings: Settings) -> None:
    """For ``conduit worker`` and ``conduit beat``: Conduit's logging instead of Celery's (Celery
    configures none once a ``setup_logging`` receiver exists); tracing set up as the worker starts,
    before its pool forks (the SDK restarts its export thread in each child); in multiprocess mode,
    a pool process's live gauges dropped when it exits."""
    configure_logging(settings.log_level, log_format=settings.effective_log_format)
    setup_logging.connect(_keep_logging, weak=False)
    worker_init.connect(lambda **_: tracing.setup(settings), weak=False)
    worker_process_shutdown.connect(lambda **_: process_exited(), weak=False)


def _keep_logging(**_: Any) -> None:
    """Receives ``setup_logging``: the logging configured by ``prepare_worker`` stays as it is."""


def __getattr__(name: str) -> Celery:
    """``celery_app``, built from the environment on first use (``celery -A
    app.workers.celery_app:celery_app worker``): importing this module for :func:`create_celery`, as
    the API does with settings of its own, reads no settings."""
    if name == "celery_app":
        celery: Celery = create_celery(get_settings())
        globals()[name] = celery
        return celery
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
