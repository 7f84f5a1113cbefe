"""PostgreSQL goes away and comes back, against a throwaway cluster (tests/faults/pg_server.py).

While it is down, ``/health/ready`` says 503 and every request that needs it fails fast with a 503
problem (never a hang, never a 500, nothing internal shown, each logged with its request id). Once it
is back, the pool recovers by itself and requests succeed again, without a restart of the app.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest
from click.testing import Result
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from tests.conftest import make_settings
from tests.factories import Account, Api
from tests.faults.pg_server import JsonLogs, PostgresServer, TcpProxy, assert_unavailable, running_app
from tests.ops.server import invoke_serve, server_env

PATIENCE = 60.0  # bounds every wait, so that a hang fails the test instead of stalling it; nothing is timed
WORKERS = 8  # requests in flight at once
# Every request, even while the database is down, is answered within this: a fraction of a client's
# usual patience (30-60 s). Refused connections fail at once; the connect timeout bounds the others.
FAIL_FAST = 10.0
CONNECT_TIMEOUT = 2.0


@dataclass(frozen=True)
class Outcome:
    request_id: str
    status: int
    seconds: float
    response: httpx.Response


class Load:
    """``WORKERS`` clients, each sending one request after another (reads and writes that need the
    database) until stopped, every outcome recorded."""

    def __init__(self, client: httpx.AsyncClient, account: Account, slug: str) -> None:
        self.client = client
        self.account = account
        self.slug = slug
        self.outcomes: list[Outcome] = []
        self.in_flight = 0
        self._stopped = False
        self._recorded = anyio.Event()  # set (and replaced) on every new outcome

    async def worker(self, number: int) -> None:
        sent = 0
        while not self._stopped:
            request_id = f"load-{number}-{sent}"
            headers = {**self.account.headers, "X-Request-ID": request_id}
            if sent % 2:
                comment = {"comment": {"body": "hi"}}
                request = self.client.build_request(
                    "POST", f"/articles/{self.slug}/comments", json=comment, headers=headers
                )
            else:
                request = self.client.build_request("GET", "/user", headers=headers)
            sent += 1
            self.in_flight += 1
            started = time.monotonic()
            try:
                with anyio.fail_after(PATIENCE):
                    response = await self.client.send(request)
            finally:
                self.in_flight -= 1
            seconds = time.monotonic() - started
            self.outcomes.append(Outcome(request_id, response.status_code, seconds, response))
            self._recorded.set()
            self._recorded = anyio.Event()

    def stop(self) -> None:
        self._stopped = True

    def count(self, status: int, since: int = 0) -> int:
        return sum(1 for outcome in self.outcomes[since:] if outcome.status == status)

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        with anyio.move_on_after(PATIENCE):
            while not condition():
                await self._recorded.wait()
            return
        pytest.fail(f"waited {PATIENCE} s for: {what}")


async def ready_status(client: httpx.AsyncClient) -> int:
    return (await client.get("http://test/health/ready")).status_code


async def wait_until_ready(client: httpx.AsyncClient) -> None:
    for _ in range(int(PATIENCE / 0.1)):
        if await ready_status(client) == 200:
            return
        await anyio.sleep(0.1)
    pytest.fail("the app did not become ready once the database was back")


async def all_succeed(client: httpx.AsyncClient, account: Account, count: int = 20) -> None:
    """``count`` concurrent requests that need the database, every one a 200."""
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await client.get("/user", headers=account.headers)).status_code)

    with anyio.fail_after(PATIENCE):
        async with anyio.create_task_group() as group:
            for _ in range(count):
                group.start_soon(one)
    assert statuses == [200] * count


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_restarts_under_load(pg: PostgresServer, tmp_path: Path, mode: str) -> None:
    """``fast``: PostgreSQL terminates the sessions (a planned restart); ``immediate``: it crashes."""
    url = pg.url(await anyio.to_thread.run_sync(pg.create_database))
    settings = make_settings(
        url, tmp_path, db_connect_timeout=CONNECT_TIMEOUT, db_pool_size=4, cache_enabled=False
    )
    with JsonLogs() as logs:
        async with running_app(settings) as client:
            api = Api(client)
            jake = await api.register("jake")
            load = Load(client, jake, (await api.article(jake))["slug"])
            async with anyio.create_task_group() as group:
                for number in range(WORKERS):
                    group.start_soon(load.worker, number)
                await load.until(lambda: load.count(200) >= 20, "requests succeed before the outage")

                in_flight_when_stopped = load.in_flight
                await anyio.to_thread.run_sync(pg.stop, mode)
                down = len(load.outcomes)
                await load.until(lambda: load.count(503, down) >= 3 * WORKERS, "503s during the outage")
                assert await ready_status(client) == 503

                await anyio.to_thread.run_sync(pg.start)
                up = len(load.outcomes)
                await load.until(lambda: load.count(200, up) >= 3 * WORKERS, "200s after the outage")
                load.stop()

            await wait_until_ready(client)
            await all_succeed(client, jake)
            engine: AsyncEngine = client.app.state.engine  # type: ignore[attr-defined]
            assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]  # no connection leaked

    assert in_flight_when_stopped > 0  # the outage began under load
    assert {outcome.status for outcome in load.outcomes} <= {200, 503}  # never a 500 (nor a hang)
    slowest = max(outcome.seconds for outcome in load.outcomes)
    assert slowest < FAIL_FAST, f"a request took {slowest:.1f} s"
    failed = [outcome for outcome in load.outcomes if outcome.status == 503]
    for outcome in failed:
        assert_unavailable(outcome.response)
        assert outcome.response.headers["x-request-id"] == outcome.request_id
    logged = {line.get("request_id") for line in logs.lines("database unavailable")}
    assert {outcome.request_id for outcome in failed} <= logged


async def test_a_quick_restart_fails_no_request(pg: PostgresServer, tmp_path: Path) -> None:
    """The pool's idle connections all died with the old server: each is replaced at checkout (no
    round trip needed: the driver saw its socket close), so not even the first request fails."""
    url = pg.url(await anyio.to_thread.run_sync(pg.create_database))
    settings = make_settings(url, tmp_path, db_pool_size=4, cache_enabled=False)
    async with running_app(settings) as client:
        jake = await Api(client).register("jake")
        await all_succeed(client, jake)  # fills the pool
        engine: AsyncEngine = client.app.state.engine  # type: ignore[attr-defined]
        assert engine.pool.checkedin() >= 2  # type: ignore[attr-defined]

        await anyio.to_thread.run_sync(pg.stop, "fast")
        await anyio.to_thread.run_sync(pg.start)
        await all_succeed(client, jake)


async def test_the_app_starts_without_its_database_and_serves_once_it_is_back(
    pg: PostgresServer, tmp_path: Path
) -> None:
    url = pg.url(await anyio.to_thread.run_sync(pg.create_database))
    await anyio.to_thread.run_sync(pg.stop, "fast")
    settings = make_settings(url, tmp_path, db_connect_timeout=CONNECT_TIMEOUT)
    async with running_app(settings) as client:
        assert (await client.get("http://test/health/live")).status_code == 200
        ready = await client.get("http://test/health/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["database"] == "unavailable"
        user = {"username": "jake", "email": "jake@example.com", "password": "correct-horse-9"}
        started = time.monotonic()
        with anyio.fail_after(PATIENCE):
            response = await client.post("/users", json={"user": user})
        assert time.monotonic() - started < FAIL_FAST
        assert_unavailable(response)

        await anyio.to_thread.run_sync(pg.start)
        await wait_until_ready(client)
        assert (await client.post("/users", json={"user": user})).status_code == 201


async def test_a_database_that_accepts_and_never_answers_fails_requests_at_the_connect_timeout(
    pg: PostgresServer, tmp_path: Path
) -> None:
    """Not refused but unanswered (a black hole, a partition): each new connection gives up at
    ``db_connect_timeout``, long before the request deadline, with the same 503."""
    proxy = TcpProxy(pg.port)
    await proxy.start()
    proxy.stall()
    name = await anyio.to_thread.run_sync(pg.create_database)
    settings = make_settings(pg.url(name, port=proxy.port), tmp_path, db_connect_timeout=1.0)
    try:
        async with running_app(settings) as client:
            user = {"username": "jake", "email": "jake@example.com", "password": "correct-horse-9"}
            started = time.monotonic()
            with anyio.fail_after(PATIENCE):
                response = await client.post("/users", json={"user": user})
            seconds = time.monotonic() - started
            assert_unavailable(response)
            assert 1.0 <= seconds < FAIL_FAST
            assert await ready_status(client) == 503

            proxy.resume()
            await wait_until_ready(client)
            assert (await client.post("/users", json={"user": user})).status_code == 201
    finally:
        await proxy.close()


def _serve(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: Settings, *args: str
) -> tuple[Result, bool]:
    """``conduit serve *args`` in this process with ``settings`` (in the environment), the server
    recorded, not run: its result, and whether it went on to serve. (What it would serve, the app, is
    shown to start without a database above.)"""
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    for name, value in server_env(settings).items():
        monkeypatch.setenv(name, value)
    result, served = invoke_serve(monkeypatch, *args)
    return result, bool(served)


def test_conduit_serve_when_the_database_is_down(
    pg: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``conduit serve`` applies the migrations first: without a database it says so and exits 1,
    with no traceback. ``--no-migrate`` (the migrations run as a job) starts the server anyway."""
    settings = make_settings(pg.url(pg.create_database()), tmp_path, db_connect_timeout=CONNECT_TIMEOUT)
    pg.stop("fast")
    result, served = _serve(monkeypatch, tmp_path, settings)
    assert (result.exit_code, served) == (1, False)
    assert result.output.strip() == (
        "The database is unavailable (ConnectionRefusedError): migrations cannot be applied."
    )
    result, served = _serve(monkeypatch, tmp_path, settings, "--no-migrate")
    assert (result.exit_code, served) == (0, True)
