"""Migrations: up, down and up again on a scratch database; models and migrations agree."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread
import asyncpg
import pytest
from alembic import command
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app.db.migrations import alembic_config
from app.models import User
from tests.conftest import TEST_DATABASE_URL

INDEX_QUERIES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'index'",
    "postgresql": "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'",
}


@pytest.fixture
async def scratch_url(tmp_path: Path) -> AsyncIterator[str]:
    if not TEST_DATABASE_URL:
        yield f"sqlite+aiosqlite:///{tmp_path / 'scratch.db'}"
        return
    name = f"conduit_mig_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(TEST_DATABASE_URL.replace("+asyncpg", "", 1))
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{TEST_DATABASE_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


# SQLite cannot reflect the lower(username) index (migrations/env.py expects the warnings that says
# so); the migrations restore it (asserted below).
async def test_upgrade_downgrade_upgrade(scratch_url: str) -> None:
    config = alembic_config(scratch_url, configure_logging=False)

    def cycle() -> None:
        command.upgrade(config, "head")
        command.downgrade(config, "base")
        command.upgrade(config, "head")
        command.check(config)  # raises if the models and the migrations disagree

    await anyio.to_thread.run_sync(cycle)
    engine = create_async_engine(scratch_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.exec_driver_sql(INDEX_QUERIES[connection.dialect.name])
            indexes = {row[0] for row in rows}
    finally:
        await engine.dispose()
    # SQLite cannot reflect expression indexes, so a batch migration could silently drop this one.
    assert "uq_users_username_lower" in indexes


async def test_usernames_are_unique_regardless_of_case_in_the_database(session: AsyncSession) -> None:
    session.add(User(username="jake", email="a@example.com", password_hash="x"))
    await session.flush()
    session.add(User(username="JAKE", email="b@example.com", password_hash="x"))
    with pytest.raises(IntegrityError):
        await session.flush()
    await session.rollback()
