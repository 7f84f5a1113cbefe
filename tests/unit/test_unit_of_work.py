"""The unit of work: commit before the response on success, roll back on errors, and a failing commit
becomes an error response instead of a success the database did not keep."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI
from sqlalchemy import event, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api.v1.dependencies import SessionDep
from app.core.cache import Cache, mark_changed
from app.core.errors import NotFoundError, RefreshTokenReusedError, install_error_handlers
from app.core.outbox import on_rollback
from app.db.unit_of_work import UnitOfWorkMiddleware
from app.models import User


def _user(name: str) -> User:
    return User(username=name, email=f"{name}@example.com", password_hash="x")


def _outside(session: AsyncSession, done: list[str], name: str) -> None:
    """Something done outside the database before the commit: its undo records ``name`` in ``done``."""

    async def undo() -> None:
        done.append(name)

    on_rollback(session, undo)


@pytest.fixture
def undone() -> list[str]:
    return []


@pytest.fixture
def background() -> list[str]:
    return []


@pytest.fixture
async def uow_client(
    app: FastAPI, engine: AsyncEngine, undone: list[str], background: list[str]
) -> AsyncIterator[httpx.AsyncClient]:
    test_app = FastAPI()
    install_error_handlers(test_app)
    cache: Cache = app.state.cache
    test_app.add_middleware(
        UnitOfWorkMiddleware,
        sessionmaker=app.state.sessionmaker,
        cache=cache,
        dispatcher=app.state.dispatcher,
    )

    @test_app.post("/ok")
    async def ok(session: SessionDep) -> dict[str, str]:
        session.add(_user("ok"))
        mark_changed(session)
        return {"status": "ok"}

    @test_app.post("/commit-fails")
    async def commit_fails(session: SessionDep) -> dict[str, str]:
        session.add_all([_user("twin"), User(username="other", email="twin@example.com", password_hash="x")])
        return {"status": "looks fine"}  # the duplicate email only fails at the commit

    @test_app.post("/domain-error")
    async def domain_error(session: SessionDep) -> None:
        session.add(_user("rolled-back"))
        await session.flush()
        raise NotFoundError("nothing here")

    @test_app.post("/kept")
    async def kept(session: SessionDep) -> None:
        session.add(_user("kept"))
        await session.flush()
        raise RefreshTokenReusedError("keep the revocation")

    @test_app.post("/crash")
    async def crash(session: SessionDep) -> None:
        session.add(_user("crash"))
        await session.flush()
        raise RuntimeError("boom")

    async def later(name: str) -> None:
        background.append(name)

    @test_app.post("/undo/{outcome}")
    async def undo(outcome: str, session: SessionDep, tasks: BackgroundTasks) -> dict[str, str]:
        session.add(_user("stored"))
        await session.flush()
        _outside(session, undone, "file")
        if outcome == "error":
            raise NotFoundError("nothing here")
        if outcome == "commit-fails":
            session.add(User(username="other", email="stored@example.com", password_hash="x"))
        tasks.add_task(later, "email")
        return {"status": "looks fine"}

    transport = httpx.ASGITransport(app=test_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def _names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set((await connection.execute(select(User.username))).scalars())


async def test_success_commits_and_invalidates(
    uow_client: httpx.AsyncClient, engine: AsyncEngine, app: FastAPI
) -> None:
    cache: Cache = app.state.cache
    before, _ = await cache.get_or_load("probe", _load(b"old"))
    response = await uow_client.post("/ok")
    assert response.status_code == 200
    assert await _names(engine) == {"ok"}
    after, _ = await cache.get_or_load("probe", _load(b"new"))
    assert (before, after) == (b"old", b"new")  # the write made the old entry unreachable


async def test_a_failing_commit_is_an_error_not_a_success(
    uow_client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    response = await uow_client.post("/commit-fails")
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert "looks fine" not in response.text
    assert await _names(engine) == set()


async def test_errors_roll_back(uow_client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    assert (await uow_client.post("/domain-error")).status_code == 404
    assert (await uow_client.post("/crash")).status_code == 500
    assert await _names(engine) == set()


async def test_errors_that_keep_their_changes(uow_client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    assert (await uow_client.post("/kept")).status_code == 401
    assert await _names(engine) == {"kept"}


def _load(value: bytes) -> Callable[[], Awaitable[bytes]]:
    async def load() -> bytes:
        return value

    return load


async def test_undos_run_unless_the_work_commits(
    uow_client: httpx.AsyncClient, engine: AsyncEngine, undone: list[str], background: list[str]
) -> None:
    assert (await uow_client.post("/undo/error")).status_code == 404
    assert undone == ["file"]
    assert (await uow_client.post("/undo/ok")).status_code == 200
    assert undone == ["file"]  # committed: kept
    assert background == ["email"]
    assert await _names(engine) == {"stored"}


async def test_a_failing_commit_runs_the_undos_and_no_background_task(
    uow_client: httpx.AsyncClient, engine: AsyncEngine, undone: list[str], background: list[str]
) -> None:
    response = await uow_client.post("/undo/commit-fails")
    assert response.status_code == 409
    assert "looks fine" not in response.text
    assert undone == ["file"]
    assert background == []  # the response it belonged to was never sent: no email for a lost write
    assert await _names(engine) == set()


@pytest.fixture
def connection_lost_at_commit(engine: AsyncEngine) -> Iterator[None]:
    def lose(_connection: Connection) -> None:
        raise OperationalError("COMMIT", None, ConnectionResetError(), connection_invalidated=True)

    event.listen(engine.sync_engine, "commit", lose)
    yield
    event.remove(engine.sync_engine, "commit", lose)


@pytest.mark.usefixtures("connection_lost_at_commit")
async def test_no_undo_when_the_commit_may_have_happened(
    uow_client: httpx.AsyncClient, undone: list[str], background: list[str]
) -> None:
    """The connection broke during the COMMIT: the rows may exist, so what they describe is kept (a
    file without rows is an orphan in storage; rows without their file would be a broken image)."""
    response = await uow_client.post("/undo/ok")
    assert response.status_code == 503
    assert undone == []
    assert background == []
