"""A ``conduit serve`` killed (SIGKILL) inside the work of a request sent with an ``Idempotency-Key``:
neither the work nor an answer is kept, the key answers 409 until its claim's lease lapses, and then
the retry does the work, once.

PostgreSQL only: the request is held inside its work by a row lock the test takes on the author
(the work's ``UPDATE users`` waits for it, after the claim and the article's ``INSERT``), which
SQLite's single database-wide write lock cannot do without also holding up the claim before the work.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.base import utcnow
from app.models import Article, IdempotencyKey, User
from tests.conftest import TEST_DATABASE_URL, make_settings
from tests.ops.server import PATIENCE, Server, register, serve

pytestmark = pytest.mark.skipif(
    not TEST_DATABASE_URL, reason="holds a request inside its work with a row lock (PostgreSQL)"
)

ARTICLE = {"article": {"title": "Crash test", "description": "Once", "body": "Exactly once"}}
LOCK_WAITERS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
)
# Transactions other than the asking one: the killed server's, until its backend has noticed.
OTHER_TRANSACTIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
)


async def _scalar(engine: AsyncEngine, stmt: Any) -> Any:
    async with engine.connect() as connection:
        return (await connection.execute(stmt)).scalar_one()


async def _until(engine: AsyncEngine, query: str, expected: int) -> None:
    deadline = time.monotonic() + PATIENCE
    while (found := await _scalar(engine, text(query))) != expected:
        assert time.monotonic() < deadline, f"{query}: {found}, not {expected}"
        await asyncio.sleep(0.05)


def _post(server: Server, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/articles", json=ARTICLE, headers=headers, timeout=PATIENCE)


async def test_a_crash_inside_the_work_keeps_neither_work_nor_answer(
    database_url: str, tmp_path: Path, engine: AsyncEngine, client: httpx.AsyncClient
) -> None:
    settings = make_settings(database_url, tmp_path / "var")
    headers: dict[str, str] = {"Idempotency-Key": f"crash-{secrets.token_hex(8)}"}
    with serve(settings, tmp_path) as server:
        user = await anyio.to_thread.run_sync(register, server, "jake")
        headers["Authorization"] = f"Token {user['token']}"
        async with engine.connect() as locker:
            await locker.begin()
            # FOR NO KEY UPDATE: the work's UPDATE of the user waits, foreign-key checks (the claim's) do not.
            jake = select(User.id).where(User.username == "jake")
            await locker.execute(jake.with_for_update(key_share=True))
            request = asyncio.ensure_future(anyio.to_thread.run_sync(_post, server, headers))
            await _until(engine, LOCK_WAITERS, 1)  # the request is inside its work, waiting
            async with engine.connect() as connection:
                claim = (
                    await connection.execute(select(IdempotencyKey.status_code, IdempotencyKey.locked_until))
                ).one()
            assert claim.status_code is None and claim.locked_until > utcnow()  # claimed, committed
            server.process.kill()
            server.wait()
            await locker.rollback()  # the dead server's work may go on now: it has nobody to commit it
        with pytest.raises(httpx.TransportError):
            await request
        await _until(engine, OTHER_TRANSACTIONS, 0)  # the dead server's transaction is gone
    assert await _scalar(engine, select(func.count()).select_from(Article)) == 0

    # Another instance (this process's app) sees the claim until its lease lapses, then does the work.
    busy = await client.post("/articles", json=ARTICLE, headers=headers)
    assert busy.status_code == 409, busy.text
    assert busy.json()["code"] == "idempotency_key_in_use"
    async with engine.begin() as connection:  # the dead holder's lease runs out
        await connection.execute(update(IdempotencyKey).values(locked_until=IdempotencyKey.created_at))
    done = await client.post("/articles", json=ARTICLE, headers=headers)
    assert done.status_code == 201, done.text
    again = await client.post("/articles", json=ARTICLE, headers=headers)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.content == done.content
    assert await _scalar(engine, select(func.count()).select_from(Article)) == 1
