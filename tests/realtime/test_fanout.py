"""Across processes: two real ``conduit serve`` sharing the test database and Redis (skipped without
CONDUIT_TEST_REDIS_URL). A socket on one gets what is posted through the other."""

from __future__ import annotations

import statistics
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.exceptions import ConnectionClosed

from bench.ws_latency import comment_deliveries, live_socket, register, serve, server_env
from tests.conftest import TEST_REDIS_URL

pytestmark = pytest.mark.skipif(not TEST_REDIS_URL, reason="needs Redis (CONDUIT_TEST_REDIS_URL)")


@pytest.fixture
def env(database_url: str, tmp_path: Path, engine: AsyncEngine) -> dict[str, str]:
    """What both servers share; ``engine``: the tables they fill are emptied after the test."""
    assert TEST_REDIS_URL is not None
    return server_env(
        tmp_path,
        env="test",
        database_url=database_url,
        redis_url=TEST_REDIS_URL,
        secret_key="fanout-secret-key-" + "k" * 40,
        password_pepper="fanout-pepper-" + "p" * 32,
        cache_prefix=f"test-{uuid.uuid4().hex}",
        rate_limit_prefix=f"test-{uuid.uuid4().hex}",
        task_backend="inprocess",
        bcrypt_rounds="4",
    )


async def test_a_comment_through_one_process_reaches_a_socket_on_the_other(
    env: dict[str, str], tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    with serve(env, tmp_path) as (first, _), serve(env, tmp_path) as (second, _):
        deliveries = await comment_deliveries(first, second, 20)
    assert len(deliveries) == 20
    for delivery in deliveries:
        data = delivery.message["data"]
        assert data["kind"] == "comment"
        assert data["comment"] == {"id": delivery.comment["id"]}
        assert data["actor"]["username"] == delivery.comment["author"]["username"]
    # Reported, never asserted: bench/ws_latency.py measures it (bench/RESULTS.md).
    record_property("ws_latency_median_ms", statistics.median(d.seconds * 1000 for d in deliveries))


async def test_server_shutdown_closes_sockets_gracefully(env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with serve(env, tmp_path, log=log) as (base, process):
        async with httpx.AsyncClient(base_url=base, trust_env=False) as http:
            token = await register(http, "jake")
        async with live_socket(base, token) as ws:
            process.terminate()
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1012  # "service restart": uvicorn closes each socket first
        # Then it shuts down and exits 0 (conduit serve turns uvicorn's re-raised SIGTERM into a clean exit).
        assert process.wait(30) == 0
    assert "Traceback" not in log.read_text(), log.read_text()
