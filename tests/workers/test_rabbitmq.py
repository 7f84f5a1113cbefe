"""RabbitMQ as the broker (``CONDUIT_BROKER_URL=amqp://…``): a job sent by the API after its commit
runs on a real Celery worker. Skipped unless CONDUIT_TEST_AMQP_URL is set (CI sets it)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker

from app.workers.celery_app import create_celery
from tests.conftest import ClientFactory, make_settings
from tests.factories import Api
from tests.workers.support import STUCK_AFTER

AMQP_URL = os.environ.get("CONDUIT_TEST_AMQP_URL")

pytestmark = pytest.mark.skipif(not AMQP_URL, reason="needs RabbitMQ: set CONDUIT_TEST_AMQP_URL")


@pytest.fixture
def amqp_overrides(database_url: str, tmp_path: Path) -> Iterator[dict[str, object]]:
    """A queue of the test's own on RabbitMQ, deleted afterwards."""
    overrides: dict[str, object] = {
        "task_backend": "celery",
        "broker_url": AMQP_URL,
        "task_queue": f"test-{uuid.uuid4().hex}",
    }
    yield overrides
    celery = create_celery(make_settings(database_url, tmp_path, **overrides))
    with celery.connection_for_write() as connection:
        connection.default_channel.queue_delete(str(overrides["task_queue"]))


async def test_a_job_runs_through_rabbitmq(
    make_client: ClientFactory, amqp_overrides: dict[str, object], database_url: str, tmp_path: Path
) -> None:
    client = await make_client(**amqp_overrides)
    api = Api(client)
    author, fan = await api.register("author"), await api.register("fan")
    await client.post("/profiles/author/follow", headers=fan.headers)
    celery = create_celery(make_settings(database_url, tmp_path, **amqp_overrides))
    with start_worker(celery, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        article = await api.article(author, "Through RabbitMQ")  # its fan-out is a Celery job
        deadline = asyncio.get_running_loop().time() + STUCK_AFTER
        while True:
            found = (await client.get("/notifications", headers=fan.headers)).json()["notifications"]
            if any(n["kind"] == "article" for n in found):
                break
            assert asyncio.get_running_loop().time() < deadline, "the job never ran"
            await asyncio.sleep(0.05)
    assert [(n["kind"], n["article"]["slug"]) for n in found if n["kind"] == "article"] == [
        ("article", article["slug"])
    ]
