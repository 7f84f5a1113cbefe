"""Celery's broker on a Redis that is down: a write whose after-commit enqueue fails still succeeds
(it is committed), within a bounded time, and the failure is logged (app/core/outbox.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.faults.redis_apps import PATIENCE, running
from tests.faults.redis_faults import FAULTS, Fault, fault


@pytest.fixture(params=FAULTS)
def broker_fault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fault]:
    with fault(request.param, tmp_path) as broken:
        yield broken


async def test_a_write_whose_enqueue_fails_still_succeeds(
    broker_fault: Fault,
    database_url: str,
    tmp_path: Path,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Only the broker fails: the cache and pub/sub stay in process.
    overrides = {"task_backend": "celery", "broker_url": broker_fault.url}
    async with running(database_url, tmp_path, None, **overrides) as app:
        jake = await app.api.register("jake")
        with caplog.at_level(logging.ERROR, logger="conduit.outbox"):
            await app.api.article(jake, "Before")  # the broker works: the fan-out job is sent
            broker_fault.fail()
            # The broker's timeouts (CONDUIT_BROKER_TIMEOUT, with Celery's publish retries) bound it.
            async with asyncio.timeout(PATIENCE):
                article = await app.api.article(jake, "During")  # 201: committed, whatever the broker does
            broker_fault.restore()
        assert (await app.client.get(f"/articles/{article['slug']}")).status_code == 200
        assert [r.getMessage() for r in caplog.records if r.name == "conduit.outbox"] == [
            "after-commit Enqueue failed: OperationalError"
        ]
