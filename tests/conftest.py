"""Test fixtures: a real database (SQLite by default, PostgreSQL when CONDUIT_TEST_DATABASE_URL is set),
migrated once per run with Alembic, emptied after every test.

On PostgreSQL a database of its own is created for the run (and dropped after), so a run never
touches data it did not make and parallel runs do not collide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio.to_thread
import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.core.cache import Cache
from app.core.config import Settings
from app.db import migrations
from app.db.base import Base
from app.main import create_app
from tests.factories import Api

# Upload fixtures (make_media, media, moto_endpoint), for tests/api and tests/security alike.
pytest_plugins = ("tests.media",)

TEST_DATABASE_URL = os.environ.get("CONDUIT_TEST_DATABASE_URL")
TEST_REDIS_URL = os.environ.get("CONDUIT_TEST_REDIS_URL") or None


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@pytest.fixture(scope="session")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    if not TEST_DATABASE_URL:
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
        await anyio.to_thread.run_sync(lambda: migrations.upgrade(url, configure_logging=False))
        yield url
        return
    name = f"conduit_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(_plain(TEST_DATABASE_URL))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{TEST_DATABASE_URL.rsplit('/', 1)[0]}/{name}"
    try:
        await anyio.to_thread.run_sync(lambda: migrations.upgrade(url, configure_logging=False))
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def make_settings(database_url: str, var_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "test",
        "var_dir": var_dir,
        "database_url": database_url,
        "secret_key": "test-secret-key-" + "k" * 48,
        "password_pepper": "test-pepper-" + "p" * 32,
        "bcrypt_rounds": 4,  # the minimum: hashing cost is not what these tests measure
        "log_level": "WARNING",
        # Real Redis for the rate limiter (and later cache and pub/sub) when CONDUIT_TEST_REDIS_URL is set.
        "redis_url": TEST_REDIS_URL,
        "rate_limit_prefix": f"test-{uuid.uuid4().hex}",
        "cache_prefix": f"test-{uuid.uuid4().hex}",
        # Jobs run in the test's own process; tests/workers runs them through a real Celery worker.
        "task_backend": "inprocess",
        "in_process_schedule": False,  # periodic jobs run when a test says so (tests/workers)
        "task_queue": f"test-{uuid.uuid4().hex}",
        # Every test request comes from the one ASGITransport client address: the real per-IP default
        # (600/minute) would throttle the suite. tests/security/test_rate_limiting.py tests the limits.
        "rate_limit_default_ip": "100000/minute",
        # Likewise for the route limits; tests/security/test_brute_force.py tests them with the defaults.
        **{
            f"rate_limit_{rule}": "100000/minute"
            for rule in (
                "login_ip",
                "login_account",
                "register_ip",
                "refresh_family",
                "writes_user",
                "uploads_user",
            )
        },
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(database_url, tmp_path_factory.mktemp("var"))


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):  # as a server would run it
        yield application


@pytest.fixture(scope="session")
def engine(app: FastAPI) -> AsyncEngine:
    engine: AsyncEngine = app.state.engine
    return engine


@pytest.fixture
async def session(app: FastAPI, engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session for calling services directly, as the request dependency would hand it out."""
    async with app.state.sessionmaker() as db:
        yield db


@pytest.fixture
def cache(app: FastAPI) -> Cache:
    """The app's read cache (emptied after every test that touches the database)."""
    cache: Cache = app.state.cache
    return cache


JOB_GRACE = 60.0  # seconds for a test's in-process jobs to finish before they are cancelled


async def jobs_done(app: FastAPI) -> None:
    """Let the in-process jobs a test started finish: left running, they would race the emptying of
    the tables they work on (a deadlock on PostgreSQL) or reach into the next test."""
    if app.state.jobs is not None:
        await app.state.jobs.drain(JOB_GRACE)


@pytest.fixture(autouse=True)
async def _empty_database(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Every test starts from empty tables (only for tests that touch the database)."""
    yield
    if "engine" not in request.fixturenames:
        return
    engine: AsyncEngine = request.getfixturevalue("engine")
    app: FastAPI = request.getfixturevalue("app")
    await jobs_done(app)
    await app.state.cache.invalidate()
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                await connection.execute(text(f"DELETE FROM {table}"))


async def _no_server_errors(response: httpx.Response) -> None:
    # No request in the tests may yield a 500: fail the test at the request that did.
    if response.status_code >= 500:
        await response.aread()
        raise AssertionError(
            f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text}"
        )


@pytest.fixture
async def client(app: FastAPI, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test/api/v1", event_hooks={"response": [_no_server_errors]}
    ) as http:
        yield http


@pytest.fixture
def api(client: httpx.AsyncClient) -> Api:
    return Api(client)


ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def make_client(database_url: str, tmp_path: Path, engine: AsyncEngine) -> AsyncIterator[ClientFactory]:
    """``await make_client(**settings_overrides)``: a client of a fresh app built with those settings.

    Depends on ``engine`` so that the tables are emptied after the test like everywhere else.
    """
    opened: list[tuple[httpx.AsyncClient, Settings]] = []

    async def make(*, client_ip: str = "127.0.0.1", **overrides: object) -> httpx.AsyncClient:
        url = str(overrides.pop("database_url", database_url))
        settings = make_settings(url, tmp_path, **overrides)
        app = create_app(settings)
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(client_ip, 50000)),
            base_url="http://test/api/v1",
            event_hooks={"response": [_no_server_errors]},
        )
        http.app = app  # type: ignore[attr-defined]
        opened.append((http, settings))
        return http

    yield make
    for http, _ in opened:
        await jobs_done(http.app)  # type: ignore[attr-defined]
        await http.aclose()
        await http.app.state.limiter.close()  # type: ignore[attr-defined]
        await http.app.state.engine.dispose()  # type: ignore[attr-defined]
        await http.app.state.readiness.close()  # type: ignore[attr-defined]
