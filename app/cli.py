"""The ``conduit`` command."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import serving
from app.core.config import Settings
from app.core.errors import AppError
from app.core.logging import configure_logging, logging_config
from app.core.multiprocess import prepare_metrics_dir
from app.db import migrations

cli = typer.Typer(
    help="Conduit: a production-grade RealWorld backend.",
    no_args_is_help=True,
    add_completion=False,
)


def _describe_error(error: ErrorDetails) -> str:
    """One configuration error, named by its environment variable when it is about one setting."""
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return message
    return f"CONDUIT_{str(error['loc'][0]).upper()}: {message}"


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        messages = "\n".join(f"  - {_describe_error(error)}" for error in exc.errors())
        typer.echo(f"Configuration error:\n{messages}", err=True)
        raise typer.Exit(2) from None


def _upgrade(database_url: str, *, configure_logging: bool = True) -> None:
    """Apply the migrations; if the database cannot be reached, say so and exit 1 (no traceback)."""
    try:
        migrations.upgrade(database_url, configure_logging=configure_logging)
    except (OperationalError, InterfaceError) as exc:
        cause = (exc.orig.__cause__ or exc.orig) if exc.orig is not None else exc  # the driver's error
        typer.echo(
            f"The database is unavailable ({type(cause).__name__}): migrations cannot be applied.",
            err=True,
        )
        raise typer.Exit(1) from None


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(min=1, help="Worker processes (more than 1 needs CONDUIT_REDIS_URL)."),
    ] = 1,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
    migrate: Annotated[
        bool,
        typer.Option(help="Apply pending migrations first (--no-migrate: a migration job does it)."),
    ] = True,
) -> None:
    """Apply migrations, then serve the API (uvloop + httptools)."""
    settings = _settings()
    if workers > 1 and not settings.redis_url:
        typer.echo(
            "--workers > 1 needs CONDUIT_REDIS_URL: the in-process cache, rate limiter and pub/sub "
            "cannot be shared between processes. Set CONDUIT_REDIS_URL or serve with one worker.",
            err=True,
        )
        raise typer.Exit(2)
    _setup_metrics(settings, "serve", host, multiprocess=workers > 1 or reload)
    configure_logging(settings.log_level, log_format=settings.effective_log_format)  # also the migrations'
    if migrate:
        # Once, before any worker starts. An unreachable database ends the command here (exit 1); with
        # --no-migrate the server starts anyway, not ready (/health/ready: 503) until the database is.
        _upgrade(settings.database_url, configure_logging=False)
    # Once it has shut down gracefully, uvicorn raises the SIGTERM it caught again, which would end the
    # process as killed by the signal (status 143): a graceful shutdown exits 0 instead.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serving.run(
        uvicorn.Config(
            "app.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=None if reload else workers,
            reload=reload,
            loop="app.core.serving:new_event_loop",  # uvloop, whose listeners close without resets
            http=serving.GracefulHttpProtocol,  # httptools, closing connections without losing requests
            log_config=logging_config(settings.log_level, log_format=settings.effective_log_format),
            server_header=False,
            # On SIGTERM: stop accepting, let in-flight requests finish for this long, then shut down.
            timeout_graceful_shutdown=settings.graceful_shutdown_timeout,
            # A worker is a fresh process that imports the app before it can answer a health check.
            timeout_worker_healthcheck=settings.worker_healthcheck_timeout,
            proxy_headers=False,  # X-Forwarded-* are handled in the app, from CONDUIT_TRUSTED_PROXIES only
        )
    )


def _setup_metrics(settings: Settings, name: str, host: str, *, multiprocess: bool) -> None:
    """Prometheus multiprocess mode for a server of several processes (before anything imports
    prometheus-client), and the metrics port, if set, served from this process, which outlives them."""
    if not settings.metrics_enabled:
        return
    if multiprocess:
        prepare_metrics_dir(settings.var_dir, name)
    if settings.metrics_port is not None:
        from app.core.observability import serve_metrics_port

        serve_metrics_port(host, settings.metrics_port, settings.metrics_token)


@cli.command()
def check(
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds allowed for each service.")] = 3.0,
) -> None:
    """Validate the configuration, show what it selects, and check that each service answers."""
    from app.core.diagnostics import check_connectivity, describe

    settings = _settings()  # exits 2 with the configuration errors
    typer.echo("Configuration: valid")
    for name, value in describe(settings):
        typer.echo(f"  {name:<16} {value}")
    typer.echo(f"Connectivity (timeout {timeout:g} s):")
    failures = 0
    for outcome in asyncio.run(check_connectivity(settings, timeout)):
        if not outcome.configured:
            state = "not configured"
        elif outcome.error is None:
            state = "ok"
        else:
            failures += 1
            state = f"FAILED: {outcome.error}"
        typer.echo(f"  {outcome.name:<16} {state}")
    if failures:
        typer.echo(f"{failures} check(s) failed.", err=True)
        raise typer.Exit(1)
    typer.echo("All checks passed.")


@cli.command()
def migrate() -> None:
    """Apply all database migrations."""
    _upgrade(_settings().database_url)


@cli.command()
def seed(
    users: Annotated[int, typer.Option(min=0, help="Users to create.")] = 20,
    articles: Annotated[int, typer.Option(min=0, help="Articles to create.")] = 200,
    favorites: Annotated[int, typer.Option(min=0, help="Favorites to create.")] = 400,
    follows: Annotated[int, typer.Option(min=0, help="Follows to create.")] = 40,
    comments: Annotated[int, typer.Option(min=0, help="Comments to create.")] = 400,
) -> None:
    """Fill the database with realistic demo data (password of every user: conduit-demo-2026)."""
    from app.core.security import PasswordHasher
    from app.db.session import create_engine, create_sessionmaker
    from app.services.seed import DEMO_PASSWORD, SeedCounts
    from app.services.seed import seed as run_seed

    settings = _settings()
    _upgrade(settings.database_url)
    counts = SeedCounts(
        users=users,
        articles=articles,
        favorites=favorites,
        follows=follows,
        comments=comments,
    )

    async def run() -> None:
        engine = create_engine(settings)
        try:
            await run_seed(create_sessionmaker(engine), PasswordHasher(settings), counts)
        finally:
            await engine.dispose()

    started = time.perf_counter()
    asyncio.run(run())
    typer.echo(
        f"Seeded {users} users, {articles} articles, {favorites} favorites, {follows} follows, "
        f"{comments} comments in {time.perf_counter() - started:.1f}s (password: {DEMO_PASSWORD})."
    )


def _run_in_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[str]]) -> None:
    """Run ``work`` in one transaction (committed if it succeeds) and print what it returns."""
    from app.db.session import create_engine, create_sessionmaker

    async def run() -> str:
        engine = create_engine(settings)
        try:
            async with create_sessionmaker(engine)() as session:
                message = await work(session)
                await session.commit()
                return message
        finally:
            await engine.dispose()

    try:
        typer.echo(asyncio.run(run()))
    except AppError as exc:
        typer.echo(f"Error: {exc.detail}", err=True)
        raise typer.Exit(1) from None


@cli.command("create-admin")
def create_admin(
    username: Annotated[str, typer.Argument(help="Username of the new admin.")],
    email: Annotated[str, typer.Option(prompt=True, help="Email address.")],
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="Password (prompted).")
    ],
) -> None:
    """Create an administrator account."""
    from app.core.security import PasswordHasher
    from app.models import Role
    from app.schemas.user import NewUser
    from app.services import users as user_service

    settings = _settings()
    _upgrade(settings.database_url)
    try:
        data = NewUser(username=username, email=email, password=password)
    except ValidationError as exc:
        typer.echo(f"Error: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}", err=True)
        raise typer.Exit(1) from None

    async def work(session: AsyncSession) -> str:
        user = await user_service.register(
            session,
            PasswordHasher(settings),
            username=data.username,
            email=data.email,
            password=data.password,
            require_letter_and_digit=settings.password_require_letter_and_digit,
        )
        user.role = Role.ADMIN
        return f"Created admin {user.username}."

    _run_in_session(settings, work)


@cli.command("set-role")
def set_role(
    username: Annotated[str, typer.Argument(help="The user's username.")],
    role: Annotated[str, typer.Argument(help="user, moderator or admin.")],
) -> None:
    """Give a user a role."""
    from app.models import Role
    from app.services import admin as admin_service

    try:
        new_role = Role(role)
    except ValueError:
        typer.echo(f"Error: role must be one of {', '.join(r.value for r in Role)}", err=True)
        raise typer.Exit(1) from None
    settings = _settings()
    _upgrade(settings.database_url)

    async def work(session: AsyncSession) -> str:
        user = await admin_service.set_role(session, None, username, new_role)
        return f"{user.username} is now {user.role}."

    _run_in_session(settings, work)


class Pool(StrEnum):
    PREFORK = "prefork"
    THREADS = "threads"
    SOLO = "solo"


def _celery_settings() -> Settings:
    settings = _settings()
    if not settings.effective_broker_url:
        typer.echo("Celery needs a broker: set CONDUIT_BROKER_URL (or CONDUIT_REDIS_URL).", err=True)
        raise typer.Exit(2)
    return settings


@cli.command()
def worker(
    concurrency: Annotated[
        int, typer.Option(min=1, help="Jobs run at once (processes or threads); default: one per CPU core.")
    ] = os.cpu_count() or 1,
    pool: Annotated[Pool, typer.Option(help="prefork (processes), threads, or solo (one at a time).")] = (
        Pool.PREFORK
    ),
) -> None:
    """Run a Celery worker for the background jobs (on the queue CONDUIT_TASK_QUEUE)."""
    settings = _celery_settings()
    # Its metrics (jobs, pool) are served on CONDUIT_METRICS_PORT only: a worker has no HTTP port.
    _setup_metrics(settings, "worker", "0.0.0.0", multiprocess=pool is Pool.PREFORK)
    from app.workers.celery_app import create_celery, prepare_worker

    prepare_worker(settings)
    create_celery(settings).worker_main(
        [
            "worker",
            f"--queues={settings.task_queue}",
            f"--concurrency={concurrency}",
            f"--pool={pool.value}",
            f"--loglevel={settings.log_level}",
            # No revocations or worker-to-worker state to synchronise: skip their broker traffic.
            "--without-mingle",
            "--without-gossip",
        ]
    )


@cli.command()
def beat() -> None:
    """Run Celery beat: sends the periodic jobs (housekeeping hourly, the digest weekly). Run one."""
    from app.workers.celery_app import create_celery, prepare_worker

    settings = _celery_settings()
    prepare_worker(settings)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    create_celery(settings).start(
        [
            "beat",
            f"--schedule={settings.var_dir / 'celerybeat-schedule'}",
            f"--loglevel={settings.log_level}",
        ]
    )


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
