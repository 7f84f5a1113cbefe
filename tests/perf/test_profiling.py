"""Profiling: Server-Timing with the request's own statement count, and the slow-request log."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from tests.conftest import ClientFactory
from tests.factories import Api

TIMING = re.compile(
    r'total;dur=(?P<total>[\d.]+), db;dur=(?P<db>[\d.]+);desc="(?P<n>\d+) statements", '
    r'cache;desc="(?P<hits>\d+) hits, (?P<misses>\d+) misses"'
)


async def test_server_timing(make_client: ClientFactory) -> None:
    client = await make_client(profiling_enabled=True)
    api = Api(client)
    author = await api.register("author")
    slug = (await api.article(author))["slug"]
    cold = TIMING.fullmatch((await client.get(f"/articles/{slug}")).headers["server-timing"])
    warm = TIMING.fullmatch((await client.get(f"/articles/{slug}")).headers["server-timing"])
    assert cold and warm
    assert (cold["n"], cold["hits"], cold["misses"]) == ("1", "0", "1")
    assert (warm["n"], warm["hits"], warm["misses"]) == ("0", "1", "0")
    assert float(cold["total"]) >= float(cold["db"]) > 0


async def test_concurrent_requests_count_only_their_own_statements(make_client: ClientFactory) -> None:
    client = await make_client(profiling_enabled=True, cache_enabled=False)
    api = Api(client)
    reader = await api.register("reader")
    responses = await asyncio.gather(
        *(client.get("/articles", headers=reader.headers if n % 2 else {}) for n in range(10))
    )
    counts = sorted(int(TIMING.fullmatch(r.headers["server-timing"])["n"]) for r in responses)  # type: ignore[index]
    assert counts == [1] * 5 + [2] * 5  # anonymous: the page; signed in: the user, then the page


async def test_off_by_default(make_client: ClientFactory) -> None:
    client = await make_client()
    assert "server-timing" not in (await client.get("/tags")).headers


async def test_slow_requests_are_logged(make_client: ClientFactory, caplog: pytest.LogCaptureFixture) -> None:
    client = await make_client(profiling_enabled=True, slow_request_ms=0.001)
    with caplog.at_level(logging.WARNING, logger="conduit.profiling"):
        await client.get("/tags")
    assert re.search(r"slow request: GET /api/v1/tags took \d+ ms, 1 statements", caplog.text)
