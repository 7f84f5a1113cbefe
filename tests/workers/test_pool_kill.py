"""A Celery worker's pool process (the prefork child running a job, not the worker) killed with SIGKILL
in the middle of the job, with the settings the project ships (``acks_late``,
``reject_on_worker_lost``, the default visibility timeout): the worker sees its child die, rejects the
job back to the broker, a new child runs it again at once, and its effect happens once. On Redis
(CONDUIT_TEST_REDIS_URL) and on RabbitMQ (CONDUIT_TEST_AMQP_URL).

Two kill points, each held by the test rather than reached by timing:

- after the job's commit: an export's last step has marked the export done and notified its owner,
  and waits for an SMTP server that never answers (the email goes out after the commit). The job run
  again must do nothing;
- before it: the fan-out of a new article waits for a lock the test holds on the notifications table
  (PostgreSQL only). The job run again must notify every follower, once.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis.asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.services import exports as export_service
from app.services.notifications import ARTICLE_PUBLISHED
from app.workers.celery_app import create_celery
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL, ClientFactory, make_settings
from tests.factories import Api
from tests.ops.server import server_env, silent_port

AMQP_URL = os.environ.get("CONDUIT_TEST_AMQP_URL")
# Bounds every wait (a worker process imports the app and forks its pool slowly on a busy machine);
# nothing is timed. The shipped visibility timeout is 12 minutes: a redelivery within this bound was
# not Redis's restore of a lost job, but the worker's own rejection of it.
PATIENCE = 240.0


@pytest.fixture(params=["redis", "rabbitmq"])
async def broker(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> AsyncIterator[dict[str, object]]:
    """Settings for Celery on a queue of the test's own, on Redis or RabbitMQ; the queue is deleted
    afterwards."""
    queue = f"test-{uuid.uuid4().hex}"
    if request.param == "redis":
        if not TEST_REDIS_URL:
            pytest.skip("needs Redis: set CONDUIT_TEST_REDIS_URL")
        yield {"task_backend": "celery", "task_queue": queue}
        async with redis.asyncio.Redis.from_url(str(TEST_REDIS_URL)) as client:
            keys = [key async for key in client.scan_iter(match=f"{queue}:*")]
            if keys:
                await client.delete(*keys)
    else:
        if not AMQP_URL:
            pytest.skip("needs RabbitMQ: set CONDUIT_TEST_AMQP_URL")
        overrides: dict[str, object] = {"task_backend": "celery", "broker_url": AMQP_URL, "task_queue": queue}
        yield overrides
        celery = create_celery(make_settings(database_url, tmp_path, **overrides))
        with celery.connection_for_write() as connection:
            connection.default_channel.queue_delete(queue)


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.add(int(entry.name))
    return found


@dataclass
class Worker:
    """A ``conduit worker`` process: one prefork pool child (``--concurrency=1``)."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pool(self) -> set[int]:
        return _children(self.process.pid)

    def assert_alive(self) -> None:
        assert self.process.poll() is None, f"the worker itself exited:\n{self.log()}"

    async def wait_for(self, pattern: str) -> re.Match[str]:
        """The first match of ``pattern`` in the log, once it is there."""
        deadline = time.monotonic() + PATIENCE
        while (match := re.search(pattern, self.log())) is None:
            self.assert_alive()
            assert time.monotonic() < deadline, f"never logged {pattern!r}:\n{self.log()}"
            await asyncio.sleep(0.1)
        return match

    async def kill_pool_process(self) -> int:
        """SIGKILL the pool process (the one running the job): the worker lives on."""
        (child,) = self.pool()
        os.kill(child, signal.SIGKILL)
        return child


@contextmanager
def _worker(settings: Settings, tmp_path: Path, **overrides: object) -> Iterator[Worker]:
    """``conduit worker --concurrency=1 --pool=prefork`` with ``settings`` (and ``overrides``), in a
    process group of its own, killed at the end."""
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--concurrency=1", "--pool=prefork"],
            env=server_env(settings.model_copy(update={"log_level": "INFO", **overrides})),
            cwd=tmp_path,  # no .env of the repository's
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Worker(process, log_path)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _succeeded(task: str) -> str:
    return rf"Task {re.escape(task)}\[([0-9a-f-]+)\] succeeded"


def _assert_delivered_twice_and_succeeded_once(log: str, task: str, task_id: str) -> None:
    """The worker lost the job with its pool process, the broker delivered it again (the same
    message, so the same id), and it succeeded once."""
    assert "WorkerLostError('Worker exited prematurely: signal 9 (SIGKILL)" in log, log
    assert len(re.findall(rf"Task {re.escape(task)}\[{task_id}\] received", log)) == 2, log
    assert len(re.findall(_succeeded(task), log)) == 1, log


async def _wait_for_export_state(client: httpx.AsyncClient, headers: dict[str, str], export_id: int) -> str:
    """The export's state once it is finished (done or failed)."""
    deadline = time.monotonic() + PATIENCE
    while True:
        export = (await client.get(f"/exports/{export_id}", headers=headers)).json()["export"]
        if export["state"] in ("done", "failed"):
            return str(export["state"])
        assert time.monotonic() < deadline, f"export still {export['state']} at {export['progress']}%"
        await asyncio.sleep(0.1)


async def test_a_job_killed_after_its_commit_runs_again_and_does_nothing_more(
    make_client: ClientFactory, broker: dict[str, object], tmp_path: Path
) -> None:
    client = await make_client(**broker)
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    api = Api(client)
    jake = await api.register("jake")
    await api.article(jake, "Exported once")
    with silent_port() as smtp_port:
        # Only the worker's mail goes to the server that never answers.
        mail = {"smtp_host": "127.0.0.1", "smtp_port": smtp_port, "smtp_starttls": False, "smtp_timeout": 600}
        with _worker(settings, tmp_path, **mail) as worker:
            response = await client.post("/exports", headers=jake.headers)
            assert response.status_code == 202, response.text
            export_id = response.json()["export"]["id"]
            # Done and notified (committed); the step now waits for the SMTP server's greeting.
            assert await _wait_for_export_state(client, jake.headers, export_id) == "done"
            killed = await worker.kill_pool_process()

            match = await worker.wait_for(_succeeded(export_service.EXPORT_FINISH))
            worker.assert_alive()
            assert killed not in worker.pool()
            log = worker.log()

    _assert_delivered_twice_and_succeeded_once(log, export_service.EXPORT_FINISH, match.group(1))
    export = (await client.get(f"/exports/{export_id}", headers=jake.headers)).json()["export"]
    assert (export["state"], export["progress"]) == ("done", 100)
    notifications = (await client.get("/notifications", headers=jake.headers)).json()["notifications"]
    assert [n["export"] for n in notifications if n["kind"] == "export"] == [{"id": export_id}]
    archives = sorted(path.name for path in settings.effective_export_dir.glob("*.zip"))
    assert archives == [export_service.archive_name(export_id)]


async def _waiting_for_notifications(engine: AsyncEngine) -> bool:
    """Whether some session of this database waits for a lock on the notifications table."""
    async with engine.connect() as connection:
        count = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE c.relname = 'notifications' AND NOT l.granted "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        )
    return bool(count)


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="holds a PostgreSQL table lock: needs PostgreSQL")
async def test_a_job_killed_before_its_commit_runs_again_and_does_it_once(
    make_client: ClientFactory, broker: dict[str, object], tmp_path: Path, engine: AsyncEngine
) -> None:
    client = await make_client(**broker)
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    api = Api(client)
    author = await api.register("author")
    fans = [await api.register(f"fan{n}") for n in range(3)]
    for fan in fans:
        assert (await client.post("/profiles/author/follow", headers=fan.headers)).status_code == 200
    with _worker(settings, tmp_path) as worker:
        async with engine.connect() as locker:
            await locker.execute(text("LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE"))
            article = await api.article(author, "Announced once")  # its fan-out is a job
            deadline = time.monotonic() + PATIENCE
            while not await _waiting_for_notifications(engine):
                worker.assert_alive()
                assert time.monotonic() < deadline, worker.log()
                await asyncio.sleep(0.1)
            killed = await worker.kill_pool_process()
            await locker.rollback()

        match = await worker.wait_for(_succeeded(ARTICLE_PUBLISHED))
        worker.assert_alive()
        assert killed not in worker.pool()
        log = worker.log()

    _assert_delivered_twice_and_succeeded_once(log, ARTICLE_PUBLISHED, match.group(1))
    for fan in fans:
        found = (await client.get("/notifications", headers=fan.headers)).json()["notifications"]
        assert [(n["kind"], n["article"]["slug"]) for n in found] == [("article", article["slug"])]
