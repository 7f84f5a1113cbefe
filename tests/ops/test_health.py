"""``/health/live`` and ``/health/ready``: what they check, their status codes and bodies, and the
middleware they bypass. Unreachable services are real: refused ports and a port that never answers."""

from __future__ import annotations

import asyncio
import io
import logging
import os

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from app.core.health import Check, Readiness, quiet_probe_access_logs
from tests.conftest import TEST_REDIS_URL, ClientFactory
from tests.ops.server import closed_port, silent_port

TEST_AMQP_URL = os.environ.get("CONDUIT_TEST_AMQP_URL")
REDIS = "ok" if TEST_REDIS_URL else "absent"  # the test settings use Redis when there is one


def _assert_probe_response(response: httpx.Response, status_code: int, body: dict[str, object]) -> None:
    assert response.status_code == status_code
    assert response.json() == body  # these keys and states only: no driver, host or error
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"


def _allowing_503(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The client without the suite's hook that fails any 5xx: here the 503 is the answer under test."""
    client.event_hooks = {"response": []}
    return client


async def test_live_does_no_io(make_client: ClientFactory) -> None:
    client = await make_client(database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/x")
    response = await client.get("http://test/health/live")
    _assert_probe_response(response, 200, {"status": "ok"})


async def test_ready_when_every_dependency_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("http://test/health/ready")
    checks = {"database": "ok", "redis": REDIS, "broker": "absent"}  # jobs run in process here
    _assert_probe_response(response, 200, {"status": "ok", "checks": checks})


async def test_ready_is_unavailable_without_the_database(make_client: ClientFactory) -> None:
    client = await make_client(database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/x")
    response = await _allowing_503(client).get("http://test/health/ready")
    checks = {"database": "unavailable", "redis": REDIS, "broker": "absent"}
    _assert_probe_response(response, 503, {"status": "unavailable", "checks": checks})


async def test_ready_gives_up_on_a_database_that_never_answers(make_client: ClientFactory) -> None:
    with silent_port() as port:
        client = await make_client(
            database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x", health_timeout=0.2
        )
        response = await _allowing_503(client).get("http://test/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "unavailable"


async def test_redis_and_broker_failures_only_degrade(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(
        redis_url=f"redis://:redis-secret@127.0.0.1:{closed_port()}/0",
        task_backend="celery",
        broker_url=f"amqp://guest:guest@127.0.0.1:{closed_port()}//",
    )
    with caplog.at_level(logging.WARNING, logger="conduit.health"):
        for _ in range(2):
            response = await client.get("http://test/health/ready")
            checks = {"database": "ok", "redis": "degraded", "broker": "degraded"}
            _assert_probe_response(response, 200, {"status": "degraded", "checks": checks})
    # A change of state is logged once, by the exception's type, not on every probe.
    failures = sorted(record.getMessage() for record in caplog.records if "failed" in record.getMessage())
    assert failures == [
        "readiness: broker check failed (OperationalError)",
        "readiness: redis check failed (ConnectionError)",
    ]
    assert "redis-secret" not in caplog.text


@pytest.mark.skipif(not TEST_REDIS_URL, reason="needs Redis (CONDUIT_TEST_REDIS_URL)")
async def test_a_redis_broker_that_answers(make_client: ClientFactory) -> None:
    client = await make_client(task_backend="celery", broker_url=TEST_REDIS_URL)
    response = await client.get("http://test/health/ready")
    checks = {"database": "ok", "redis": "ok", "broker": "ok"}
    _assert_probe_response(response, 200, {"status": "ok", "checks": checks})


@pytest.mark.skipif(not TEST_AMQP_URL, reason="needs RabbitMQ (CONDUIT_TEST_AMQP_URL)")
async def test_a_rabbitmq_broker_that_answers(make_client: ClientFactory) -> None:
    client = await make_client(task_backend="celery", broker_url=TEST_AMQP_URL)
    response = await client.get("http://test/health/ready")
    assert response.status_code == 200
    assert response.json()["checks"]["broker"] == "ok"


async def test_probes_bypass_the_host_check_https_redirect_and_rate_limit(make_client: ClientFactory) -> None:
    client = await make_client(
        allowed_hosts=["api.example.com"], https_redirect=True, rate_limit_default_ip="2/minute"
    )
    # As a kubelet sends them: to the pod's address, over plain HTTP, every few seconds.
    for _ in range(3):
        for path in ("/health/live", "/health/ready"):
            response = await client.get(f"http://127.0.0.1:8000{path}")
            assert response.status_code == 200, path
    # Everything else still gets each of the three.
    assert (await client.get("http://127.0.0.1:8000/api/v1/tags")).status_code == 400
    assert (await client.get("http://api.example.com/api/v1/tags")).status_code == 307
    statuses = [(await client.get("https://api.example.com/api/v1/tags")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_probe_access_lines_are_logged_at_debug_only() -> None:
    quiet_probe_access_logs()
    access = logging.getLogger("uvicorn.access")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    level, access.propagate = access.level, False
    access.addHandler(handler)
    try:
        for threshold in (logging.INFO, logging.DEBUG):
            access.setLevel(threshold)
            for path in ("/health/ready", "/api/v1/tags"):
                # As uvicorn's access logger writes them.
                access.info('%s - "%s %s HTTP/%s" %d', "10.0.0.9:41000", "GET", path, "1.1", 200)
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
        access.propagate = True
    assert stream.getvalue().splitlines() == [
        'INFO 10.0.0.9:41000 - "GET /api/v1/tags HTTP/1.1" 200',
        'DEBUG 10.0.0.9:41000 - "GET /health/ready HTTP/1.1" 200',
        'INFO 10.0.0.9:41000 - "GET /api/v1/tags HTTP/1.1" 200',
    ]


async def test_probes_arriving_together_share_one_round_of_checks(make_client: ClientFactory) -> None:
    connections: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)  # accepted, never answered: the round lasts until its timeout

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await make_client(
            database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x", health_timeout=0.5
        )
        readiness: Readiness = client.app.state.readiness  # type: ignore[attr-defined]
        reports = await asyncio.gather(*(readiness.report() for _ in range(20)))
        assert len(connections) == 1
        assert {status for status, _ in reports} == {Check.UNAVAILABLE}
        # The next probe starts a round of its own.
        await readiness.report()
        assert len(connections) == 2
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_readiness_keeps_one_database_connection(app: FastAPI, client: httpx.AsyncClient) -> None:
    """Probe after probe, the database check reuses one connection instead of opening one each."""
    readiness: Readiness = app.state.readiness
    opened: list[object] = []

    def on_connect(connection: object, _record: object) -> None:
        opened.append(connection)

    event.listen(readiness.engine.sync_engine, "connect", on_connect)
    try:
        for _ in range(3):
            assert (await client.get("http://test/health/ready")).status_code == 200
    finally:
        event.remove(readiness.engine.sync_engine, "connect", on_connect)
    assert len(opened) <= 1  # none if an earlier probe of this app opened it
