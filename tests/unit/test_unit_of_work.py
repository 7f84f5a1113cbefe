"""The unit of work: commit before the response on success, roll back on errors, and a failing commit
becomes an error response instead of a success the database did not keep."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.v1.dependencies import SessionDep
from app.core.cache import Cache, mark_changed
from app.core.errors import NotFoundError, RefreshTokenReusedError, install_error_handlers
from app.db.unit_of_work import UnitOfWorkMiddleware
from app.models import User


def _user(name: str) -> User:
    return User(username=name, email=f"{name}@example.com", password_hash="x")


@pytest.fixture
async def uow_client(app: FastAPI, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
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
