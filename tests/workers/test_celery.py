"""The export workflow through real Celery workers and Redis (skipped without CONDUIT_TEST_REDIS_URL).

The API under test sends its chains to Redis (``task_backend="celery"``); a worker in a thread of
this process, or ``conduit worker`` processes, run them against the same database.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio
from celery.contrib.testing.worker import start_worker
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Comment
from app.services import exports as export_service
from app.workers.celery_app import create_celery
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL, ClientFactory, make_settings
from tests.factories import Api, assert_problem
from tests.smtp import SmtpServer, smtp_server  # noqa: F401
from tests.workers.support import STUCK_AFTER, download, seed_articles, user_id, wait_for_export

pytestmark = pytest.mark.skipif(not TEST_REDIS_URL, reason="needs Redis: set CONDUIT_TEST_REDIS_URL")


@pytest.fixture
async def celery_overrides() -> AsyncIterator[dict[str, object]]:
    """Settings for Celery on a queue (and Redis key prefix) of the test's own: nothing else's jobs,
    and the broker's keys are deleted afterwards."""
    queue = f"test-{uuid.uuid4().hex}"
    yield {"task_backend": "celery", "task_queue": queue}
    broker = redis.asyncio.Redis.from_url(str(TEST_REDIS_URL))
    async with broker:
        keys = [key async for key in broker.scan_iter(match=f"{queue}:*")]
        if keys:
            await broker.delete(*keys)


async def test_export_through_a_celery_worker(
    make_client: ClientFactory,
    celery_overrides: dict[str, object],
    database_url: str,
    tmp_path: Path,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    overrides = {
        **celery_overrides,
        "smtp_host": smtp_server.host,
        "smtp_port": smtp_server.port,
        "smtp_starttls": False,
    }
    client = await make_client(**overrides)
    api = Api(client)
    jake, other = await api.register("jake"), await api.register("other")
    article = await api.article(jake, "Sent through Celery", tagList=["celery"])
    await api.comment(jake, article["slug"], "Chained")

    # The worker's own settings: the same database, export directory and queue as the API's.
    celery = create_celery(make_settings(database_url, tmp_path, **overrides))
    with start_worker(celery, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        response = await client.post("/exports", headers=jake.headers)
        assert response.status_code == 202
        export, seen = await wait_for_export(client, jake, response.json()["export"]["id"])

    assert export["state"] == "done"
    assert seen == sorted(seen)
    archive = await download(client, jake, export)
    assert sorted(archive.namelist()) == sorted(
        ["manifest.json", "comments.md", f"articles/{article['slug']}.md"]
    )
    assert "Chained" in archive.read("comments.md").decode()
    assert orjson.loads(archive.read("manifest.json"))["articles"][0]["tags"] == ["celery"]
    assert_problem(await client.get(export["downloadUrl"], headers=other.headers), 404, "not_found")
    notifications = (await client.get("/notifications", headers=jake.headers)).json()["notifications"]
    assert [n["export"] for n in notifications if n["kind"] == "export"] == [{"id": export["id"]}]
    ready = [m for m in smtp_server.messages if m["Subject"] == "Your Conduit export is ready"]
    assert [m["To"] for m in ready] == ["jake@example.com"]


VISIBILITY_TIMEOUT = 2  # seconds; the jobs of this test are short, so none is running when it expires


@contextmanager
def _workers(tmp_path: Path, env: dict[str, str]) -> Iterator[Any]:
    """Start ``conduit worker`` processes (prefork, one child each), each in a process group of its
    own; whatever is still running at the end is killed."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--concurrency=1", "--pool=prefork"],
            env=env,
            cwd=tmp_path,  # no .env of the repository's
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in tmp_path.glob("*.log"))


async def _waiting_on_comments(engine: AsyncEngine) -> bool:
    """Whether some session of this database waits for a lock on the comments table."""
    async with engine.connect() as connection:
        count = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE c.relname = 'comments' AND NOT l.granted "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        )
    return bool(count)


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="holds a PostgreSQL table lock: needs PostgreSQL")
async def test_a_worker_killed_mid_export_does_not_lose_it(
    make_client: ClientFactory,
    celery_overrides: dict[str, object],
    database_url: str,
    tmp_path: Path,
    engine: AsyncEngine,
) -> None:
    """An export of 1,000 articles; the worker is killed (SIGKILL, the whole process group) while the
    comments step runs, after the articles step is done. Its job was delivered but never
    acknowledged: once the visibility timeout has passed, a second worker gets it and completes the
    export. The step is held at a known point by a lock on the comments table, not by timing."""
    client = await make_client(**celery_overrides, task_visibility_timeout=VISIBILITY_TIMEOUT)
    settings = client.app.state.settings  # type: ignore[attr-defined]
    api = Api(client)
    jake = await api.register("jake")
    slugs = await seed_articles(engine, jake, 1000)
    async with engine.begin() as connection:
        await connection.execute(
            insert(Comment),
            [
                {"body": f"comment {n}", "article_id": 1 + n, "author_id": await user_id(engine, "jake")}
                for n in range(3)
            ],
        )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")},
        "CONDUIT_ENV": "test",
        "CONDUIT_VAR_DIR": str(settings.var_dir),
        "CONDUIT_DATABASE_URL": database_url,
        "CONDUIT_REDIS_URL": str(TEST_REDIS_URL),
        "CONDUIT_CACHE_PREFIX": settings.cache_prefix,
        "CONDUIT_TASK_QUEUE": settings.task_queue,
        "CONDUIT_TASK_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
        "CONDUIT_LOG_LEVEL": "INFO",
    }

    with _workers(tmp_path, env) as start_worker_process:
        async with engine.connect() as locker:
            await locker.execute(text("LOCK TABLE comments IN ACCESS EXCLUSIVE MODE"))
            first = start_worker_process("first")
            response = await client.post("/exports", headers=jake.headers)
            assert response.status_code == 202
            export_id = response.json()["export"]["id"]
            deadline = time.monotonic() + STUCK_AFTER
            while not await _waiting_on_comments(engine):
                assert first.poll() is None, _logs(tmp_path)
                assert time.monotonic() < deadline, _logs(tmp_path)
                await asyncio.sleep(0.1)
            export = (await client.get(f"/exports/{export_id}", headers=jake.headers)).json()["export"]
            assert (export["state"], export["progress"]) == ("running", export_service.ARTICLES_DONE)

            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
            await locker.rollback()

        # Past the visibility timeout, the job is visible again: the next worker restores it at start.
        await asyncio.sleep(VISIBILITY_TIMEOUT + 1)
        second = start_worker_process("second")
        try:
            export, _ = await wait_for_export(client, jake, export_id)
        except AssertionError:
            raise AssertionError(_logs(tmp_path)) from None
        assert export["state"] == "done", _logs(tmp_path)
        second.send_signal(signal.SIGTERM)  # warm shutdown
        second.wait(timeout=30)

    archive = await download(client, jake, export)
    names = set(archive.namelist())
    assert names == {"manifest.json", "comments.md", *(f"articles/{slug}.md" for slug in slugs)}
    manifest = orjson.loads(archive.read("manifest.json"))
    assert len(manifest["articles"]) == 1000
    assert manifest["comments"]["count"] == 3
    notifications = (await client.get("/notifications", headers=jake.headers)).json()["notifications"]
    assert [n["export"] for n in notifications if n["kind"] == "export"] == [{"id": export_id}]
