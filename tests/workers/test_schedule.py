"""The periodic jobs: their schedule, the in-process scheduler, and the commands that run Celery."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from app.cli import cli
from app.db.base import utcnow
from app.models import RefreshToken
from app.services.digest import WEEKLY_DIGEST
from app.services.housekeeping import HOUSEKEEPING
from app.workers.registry import load_jobs
from app.workers.schedule import SCHEDULE, InProcessScheduler, Periodic, beat_schedule
from tests.conftest import TEST_REDIS_URL, ClientFactory
from tests.factories import Api
from tests.workers.support import STUCK_AFTER, user_id


def test_housekeeping_runs_hourly_and_the_digest_weekly() -> None:
    assert {entry.job: entry.every for entry in SCHEDULE} == {
        HOUSEKEEPING: timedelta(hours=1),
        WEEKLY_DIGEST: timedelta(weeks=1),
    }
    assert {entry.job for entry in SCHEDULE} <= set(load_jobs())
    schedule = beat_schedule("my-queue")
    assert schedule[HOUSEKEEPING] == {
        "task": HOUSEKEEPING,
        "schedule": timedelta(hours=1),
        "options": {"queue": "my-queue", "expires": 3600.0},
    }
    assert schedule[WEEKLY_DIGEST]["schedule"] == timedelta(weeks=1)


async def test_the_in_process_scheduler_runs_housekeeping_on_the_app_queue(
    app: FastAPI, api: Api, engine: AsyncEngine
) -> None:
    await api.register("ann")
    async with engine.begin() as connection:
        expired = (
            await connection.execute(
                insert(RefreshToken)
                .values(
                    user_id=await user_id(engine, "ann"),
                    family_id="over",
                    token_hash=secrets.token_hex(32),
                    expires_at=utcnow() - timedelta(days=1),
                )
                .returning(RefreshToken.id)
            )
        ).scalar_one()
    scheduler = InProcessScheduler(app.state.jobs, (Periodic(HOUSEKEEPING, timedelta(hours=1)),), first_run=0)
    scheduler.start()
    try:
        deadline = time.monotonic() + STUCK_AFTER
        while True:  # until the first run, enqueued by the scheduler on the app's queue, has purged it
            async with engine.connect() as connection:
                ids = set((await connection.execute(select(RefreshToken.id))).scalars())
            if expired not in ids:
                break
            assert time.monotonic() < deadline, "housekeeping never ran"
            await asyncio.sleep(0.05)
    finally:
        await scheduler.stop()
    assert not _scheduler_tasks()


def _scheduler_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == "conduit-scheduler"]


async def test_the_app_runs_the_scheduler_only_without_a_broker(make_client: ClientFactory) -> None:
    embedded = (await make_client(in_process_schedule=True)).app  # type: ignore[attr-defined]
    async with embedded.router.lifespan_context(embedded):
        assert len(_scheduler_tasks()) == 1
    assert not _scheduler_tasks()
    switched_off = (await make_client(in_process_schedule=False)).app  # type: ignore[attr-defined]
    async with switched_off.router.lifespan_context(switched_off):
        assert not _scheduler_tasks()
    if TEST_REDIS_URL:  # with a broker, beat schedules the jobs (conduit beat)
        with_celery = (await make_client(task_backend="celery", in_process_schedule=True)).app  # type: ignore[attr-defined]
        async with with_celery.router.lifespan_context(with_celery):
            assert not _scheduler_tasks()


runner = CliRunner()


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_celery_commands_need_a_broker(command: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONDUIT_VAR_DIR", str(tmp_path))
    monkeypatch.delenv("CONDUIT_REDIS_URL", raising=False)
    monkeypatch.delenv("CONDUIT_BROKER_URL", raising=False)
    result = runner.invoke(cli, [command])
    assert result.exit_code == 2
    assert "Celery needs a broker: set CONDUIT_BROKER_URL" in result.output
