"""Prometheus metrics (prometheus-client), served at ``/metrics`` (``app/core/observability.py``) or on
``CONDUIT_METRICS_PORT``; the list with labels is in docs/observability.md.

The metrics live in prometheus-client's default registry, one set per process. With several
processes (``conduit serve --workers N``, a prefork Celery worker), ``PROMETHEUS_MULTIPROC_DIR`` is set
before this module is first imported (``app/core/multiprocess.py``): each process then writes its
values to files in that directory, and the exposition adds them up (see ``registry``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.multiprocess import MULTIPROC_ENV

UNMATCHED = "<unmatched>"  # the route label of requests that matched no route

_HTTP_LABELS = ("method", "route", "status")

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests by method, route template and status.", _HTTP_LABELS
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request duration in seconds, until the last byte of the response was sent.",
    _HTTP_LABELS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_REQUESTS_IN_PROGRESS = Gauge(
    "http_requests_in_progress", "HTTP requests being served.", multiprocess_mode="livesum"
)
HTTP_REQUEST_STATEMENTS = Histogram(
    "http_request_sql_statements",
    "SQL statements executed per HTTP request, by method and route template.",
    ("method", "route"),
    buckets=(0, 1, 2, 3, 5, 8, 13, 21, 34, 55),
)
DB_POOL_SIZE = Gauge(
    "conduit_db_pool_size",
    "Connections the database pool keeps (CONDUIT_DB_POOL_SIZE); up to CONDUIT_DB_MAX_OVERFLOW more "
    "are opened under load.",
    multiprocess_mode="livesum",
)
DB_POOL_CHECKED_OUT = Gauge(
    "conduit_db_pool_checked_out", "Database connections in use.", multiprocess_mode="livesum"
)
CACHE_HITS = Counter("conduit_cache_hits_total", "Read cache lookups that found an entry.")
CACHE_MISSES = Counter("conduit_cache_misses_total", "Read cache lookups that found none.")
RATE_LIMIT_REJECTIONS = Counter(
    "conduit_rate_limit_rejections_total",
    "Requests refused with 429, by limit (global-ip, login-ip, login-account, ...).",
    ("limit",),
)
WEBSOCKET_CONNECTIONS = Gauge(
    "conduit_websocket_connections",
    "Authenticated notification WebSockets open.",
    multiprocess_mode="livesum",
)
_JOB_LABELS = ("queue", "name", "outcome")
JOBS = Counter(
    "conduit_jobs_total",
    "Job runs by queue (inprocess, celery), job name and outcome (success, retry, failure).",
    _JOB_LABELS,
)
JOB_DURATION = Histogram(
    "conduit_job_duration_seconds",
    "Job run duration in seconds, by queue, job name and outcome.",
    _JOB_LABELS,
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0),
)


def record_job(queue: str, name: str, outcome: str, seconds: float) -> None:
    JOBS.labels(queue, name, outcome).inc()
    JOB_DURATION.labels(queue, name, outcome).observe(seconds)


def _checked_out(*_args: Any) -> None:
    DB_POOL_CHECKED_OUT.inc()


def _checked_in(*_args: Any) -> None:
    DB_POOL_CHECKED_OUT.dec()


def instrument_pool(engine: AsyncEngine) -> None:
    """Track the engine's pool in the pool gauges (a process with several engines adds them up)."""
    pool = engine.sync_engine.pool
    DB_POOL_SIZE.inc(pool.size() if hasattr(pool, "size") else 0)
    event.listen(pool, "checkout", _checked_out)
    event.listen(pool, "checkin", _checked_in)


def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def registry() -> CollectorRegistry:
    """What to expose: this process's registry, or in multiprocess mode every process's values."""
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    aggregate = CollectorRegistry()
    MultiProcessCollector(aggregate, path=str(path))  # type: ignore[no-untyped-call]
    return aggregate


def process_exited(pid: int | None = None) -> None:
    """Drop a finished process's live gauges (in-flight requests, pool, sockets) in multiprocess mode."""
    path = multiprocess_dir()
    if path is not None:
        mark_process_dead(pid or os.getpid(), str(path))  # type: ignore[no-untyped-call]
