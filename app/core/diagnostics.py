"""What ``conduit check`` reports: the backends the settings select, described without credentials,
and whether each configured service answers within a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from app.core.config import Settings
from app.core.health import (
    check_broker,
    check_database,
    check_redis,
    check_smtp,
    probe_engine,
    redis_client,
)


def _location(url: str) -> str:
    """``scheme://host:port/path`` of a URL: never its user name or password."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(not a valid URL)"
    path = "" if parts.path in ("", "/") else parts.path
    return f"{parts.scheme}://{parts.hostname or ''}{port}{path}"


def _database(settings: Settings) -> str:
    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        return "(not a valid database URL)"
    kind = f"{url.get_backend_name()} ({url.get_driver_name()})"
    if settings.is_sqlite:
        return f"{kind}, file {url.database}"
    pool = f"pool {settings.db_pool_size} + {settings.db_max_overflow} overflow"
    return f"{kind} at {url.host or 'localhost'}:{url.port or 5432}/{url.database}, {pool}"


def _secret(settings: Settings, name: str) -> str:
    """``set``, or where the development secret generated once into ``var_dir`` is kept."""
    secret = getattr(settings, name)
    path = settings.var_dir / name
    if path.is_file() and path.read_text().strip() == secret.get_secret_value():
        return f"generated, kept in {path}"
    return "set"


def _mail(settings: Settings) -> str:
    if not settings.smtp_host:
        return f".eml files in {settings.var_dir / 'outbox'}"
    security = "implicit TLS" if settings.smtp_tls else "STARTTLS" if settings.smtp_starttls else "no TLS"
    login = ""
    if settings.smtp_username:
        login = f", login {'with' if settings.smtp_password else 'without'} a password"
    return f"SMTP {settings.smtp_host}:{settings.smtp_port} ({security}){login}"


def describe(settings: Settings) -> list[tuple[str, str]]:
    """(what, how) for every backend and secret the settings select."""
    redis = f"Redis at {_location(settings.redis_url)}" if settings.redis_url else None
    broker = settings.effective_broker_url
    if settings.uses_celery and broker:
        tasks = f"Celery via {_location(broker)}, queue {settings.task_queue}"
    else:
        schedule = "in process" if settings.in_process_schedule else "off"
        tasks = f"in process (periodic jobs: {schedule})"
    return [
        ("environment", settings.env),
        ("database", _database(settings)),
        ("cache", "off" if not settings.cache_enabled else redis or "in process"),
        ("rate limits", "off" if not settings.rate_limit_enabled else redis or "in process"),
        ("real time", redis or "in process (one worker only)"),
        ("tasks", tasks),
        ("mail", _mail(settings)),
        ("secret key", _secret(settings, "secret_key")),
        ("password pepper", _secret(settings, "password_pepper")),
        ("previous keys", str(len(settings.previous_secret_keys))),
    ]


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    error: str | None = None  # None: it answered
    configured: bool = True


def _secrets(settings: Settings) -> list[str]:
    """Passwords that an error message could echo, to blank out."""
    values = [settings.smtp_password.get_secret_value()] if settings.smtp_password else []
    for url in (settings.database_url, settings.redis_url, settings.broker_url):
        if url:
            try:
                password = urlsplit(url).password
            except ValueError:
                continue
            if password:
                values.append(password)
    return values


def _explain(exc: BaseException, timeout: float, secrets: list[str]) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    cause: BaseException = getattr(exc, "orig", None) or exc  # the driver's error, not SQLAlchemy's
    while cause.__cause__ is not None:
        cause = cause.__cause__
    lines = str(cause).splitlines()
    text = f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
    for secret in secrets:
        text = text.replace(secret, "***")
    return text[:300]


async def check_connectivity(settings: Settings, seconds: float) -> list[Outcome]:
    """Every service the settings name, checked at once, each given ``seconds``."""
    secrets = _secrets(settings)

    async def database() -> None:
        engine = probe_engine(settings)
        try:
            await check_database(engine)
        finally:
            await engine.dispose()

    async def cache() -> None:
        assert settings.redis_url
        client = redis_client(settings.redis_url, seconds)
        try:
            await check_redis(client)
        finally:
            await client.aclose()

    async def broker() -> None:
        assert settings.effective_broker_url
        await check_broker(settings.effective_broker_url, seconds)

    async def attempt(name: str, check: Callable[[], Awaitable[None]], configured: bool) -> Outcome:
        if not configured:
            return Outcome(name, configured=False)
        try:
            async with asyncio.timeout(seconds):
                await check()
        except Exception as exc:
            return Outcome(name, _explain(exc, seconds, secrets))
        return Outcome(name)

    return list(
        await asyncio.gather(
            attempt("database", database, True),
            attempt("redis", cache, bool(settings.redis_url)),
            attempt("broker", broker, settings.uses_celery),
            attempt("smtp", partial(check_smtp, settings, seconds), bool(settings.smtp_host)),
        )
    )
