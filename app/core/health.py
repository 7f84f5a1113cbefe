"""Connectivity checks of the database, Redis, the broker and SMTP.

The readiness probe (``app/api/health.py``) and ``conduit check`` share them, and bound each with
``asyncio.timeout``. A check raises on failure and returns nothing when the service answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from enum import StrEnum
from typing import Any

import aiosmtplib
import anyio.to_thread
import redis.asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.core.config import Settings

logger = logging.getLogger("conduit.health")


class Check(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"  # an optional dependency failed: the service still answers without it
    UNAVAILABLE = "unavailable"  # the database failed: the service cannot answer
    ABSENT = "absent"  # not configured


def probe_engine(settings: Settings) -> AsyncEngine:
    """An engine of its own for checks, outside the request pool, so that a busy pool never makes a
    healthy process look unready (and unready pods shed load).

    It keeps one connection between checks (pinged on checkout, so a database restart costs no false
    failure). Opening one per probe meant a connection handshake and, on PostgreSQL, a new server
    process every few seconds, which on a saturated host sometimes took longer than
    ``CONDUIT_HEALTH_TIMEOUT`` and answered 503 for a healthy process (seen in the soak).
    """
    if settings.is_sqlite:
        settings.var_dir.mkdir(parents=True, exist_ok=True)  # as the application's engine does
    return create_async_engine(
        settings.database_url,
        pool_size=1,
        max_overflow=0,
        pool_timeout=settings.health_timeout,
        pool_pre_ping=True,
        hide_parameters=True,
    )


async def check_database(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


def redis_client(url: str, socket_timeout: float) -> redis.asyncio.Redis:
    client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
        url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
    )
    return client


async def check_redis(client: redis.asyncio.Redis) -> None:
    await client.ping()


def _connect_to_broker(url: str, socket_timeout: float) -> None:
    from kombu import Connection  # Celery's transport library: imported only when a broker is used

    options: dict[str, Any] = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout}
    with Connection(url, connect_timeout=socket_timeout, transport_options=options) as connection:
        connection.ensure_connection(max_retries=0)  # one attempt, no retries
        connection.default_channel  # noqa: B018  (Redis is only reached once a channel is opened)


async def check_broker(url: str, socket_timeout: float) -> None:
    """Connects to the broker with kombu, as Celery does, in a thread (kombu blocks). If the caller's
    timeout expires first, the thread is abandoned to its own socket timeouts."""
    await anyio.to_thread.run_sync(_connect_to_broker, url, socket_timeout, abandon_on_cancel=True)


async def check_smtp(settings: Settings, step_timeout: float) -> None:
    """Connects (with TLS or STARTTLS as configured), logs in if a login is set, and says goodbye."""
    assert settings.smtp_host
    client = aiosmtplib.SMTP(
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        use_tls=settings.smtp_tls,
        start_tls=settings.smtp_starttls and not settings.smtp_tls,
        timeout=step_timeout,
    )
    await client.connect()
    try:
        if settings.smtp_username:
            password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
            await client.login(settings.smtp_username, password)
    finally:
        await client.quit()


class Readiness:
    """What ``/health/ready`` reports: the database decides, Redis and the broker only degrade.

    Probes that arrive while a round of checks is running share its result, so that a burst of probes
    opens one database connection, not one each. A check's change of state is logged once (a failure
    as a warning, with the exception's type only), not on every probe.
    """

    def __init__(self, settings: Settings) -> None:
        self._timeout = settings.health_timeout
        self.engine = probe_engine(settings)
        self._redis = redis_client(settings.redis_url, self._timeout) if settings.redis_url else None
        self._broker_url = settings.effective_broker_url if settings.uses_celery else None
        self._last: dict[str, Check] = {}
        self._running: asyncio.Future[tuple[Check, dict[str, Check]]] | None = None

    async def _run(self, name: str, check: Awaitable[None], failure: Check) -> Check:
        try:
            async with asyncio.timeout(self._timeout):
                await check
        except Exception as exc:  # whatever the client raises, the answer is the same
            if self._last.get(name) is not failure:
                logger.warning("readiness: %s check failed (%s)", name, type(exc).__name__)
            self._last[name] = failure
            return failure
        if self._last.get(name, Check.OK) is not Check.OK:
            logger.info("readiness: %s check recovered", name)
        self._last[name] = Check.OK
        return Check.OK

    async def _absent(self) -> Check:
        return Check.ABSENT

    async def report(self) -> tuple[Check, dict[str, Check]]:
        """The overall status and each check's: from the round running now, or a new one."""
        if self._running is None:
            self._running = asyncio.ensure_future(self._check())
            self._running.add_done_callback(self._finished)
        # Shielded: a probe that gives up (its client left) does not cancel the others' round.
        return await asyncio.shield(self._running)

    def _finished(self, _round: asyncio.Future[tuple[Check, dict[str, Check]]]) -> None:
        self._running = None

    async def _check(self) -> tuple[Check, dict[str, Check]]:
        """One round: the checks run at once."""
        database = self._run("database", check_database(self.engine), Check.UNAVAILABLE)
        cache = (
            self._absent()
            if self._redis is None
            else self._run("redis", check_redis(self._redis), Check.DEGRADED)
        )
        broker = (
            self._absent()
            if self._broker_url is None
            else self._run("broker", check_broker(self._broker_url, self._timeout), Check.DEGRADED)
        )
        results = await asyncio.gather(database, cache, broker)
        checks = dict(zip(("database", "redis", "broker"), results, strict=True))
        if checks["database"] is not Check.OK:
            return Check.UNAVAILABLE, checks
        if Check.DEGRADED in results:
            return Check.DEGRADED, checks
        return Check.OK, checks

    async def close(self) -> None:
        await self.engine.dispose()
        if self._redis is not None:
            await self._redis.aclose()


PROBE_PREFIX = "/health/"


def is_probe(path: str) -> bool:
    return path.startswith(PROBE_PREFIX)


class ProbeAccessFilter(logging.Filter):
    """Demotes uvicorn's access line of a probe request to DEBUG: dropped unless the access logger is
    at DEBUG. (Probes come every few seconds from every orchestrator; their lines would drown the rest.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args  # uvicorn's: (client address, method, path, HTTP version, status)
        if not (isinstance(args, tuple) and len(args) == 5 and is_probe(str(args[2]))):
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return True


_probe_filter = ProbeAccessFilter()


def quiet_probe_access_logs() -> None:
    """Install the filter on uvicorn's access logger (once per process)."""
    access = logging.getLogger("uvicorn.access")
    if _probe_filter not in access.filters:
        access.addFilter(_probe_filter)
