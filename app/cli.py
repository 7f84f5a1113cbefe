"""The ``conduit`` command."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError

from app.core.config import Settings
from app.db import migrations

cli = typer.Typer(
    help="Conduit: a production-grade RealWorld backend.",
    no_args_is_help=True,
    add_completion=False,
)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        messages = "\n".join(f"  - {error['msg'].removeprefix('Value error, ')}" for error in exc.errors())
        typer.echo(f"Configuration error:\n{messages}", err=True)
        raise typer.Exit(2) from None


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(min=1, help="Worker processes (more than 1 needs CONDUIT_REDIS_URL)."),
    ] = 1,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
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
    migrations.upgrade(settings.database_url)  # once, before any worker starts
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=None if reload else workers,
        reload=reload,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level.lower(),
        server_header=False,
    )


@cli.command()
def migrate() -> None:
    """Apply all database migrations."""
    migrations.upgrade(_settings().database_url)


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
    migrations.upgrade(settings.database_url)
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


def main() -> None:
    cli()
