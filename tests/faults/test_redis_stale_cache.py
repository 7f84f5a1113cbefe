"""No cache entry from before a Redis outage is served after it (app/core/cache.py, docs/reliability.md).

The hazard: an article is cached, Redis goes away, the article is updated (the write cannot bump the
cache generation), Redis comes back with the old entry still in it (it was only unreachable), and a
read serves the old article. Tested in one process, across two processes sharing the Redis (the
reader never saw the write), across a partial partition (only the writer lost Redis), and for the
two races of a Redis that restarted empty: a store computed before the restart, and a generation
counter starting over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.cache import Cache
from tests.conftest import make_settings
from tests.faults.redis_apps import FAULT_SETTINGS, PATIENCE, Instance, deployment, eventually, running
from tests.faults.redis_faults import FAULTS, Fault, fault
from tests.faults.redis_server import redis_server, tcp_proxy


@pytest.fixture(params=FAULTS)
def redis_fault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fault]:
    with fault(request.param, tmp_path) as broken:
        yield broken


async def _body(app: Instance, slug: str) -> str:
    body: str = (await app.client.get(f"/articles/{slug}")).json()["article"]["body"]
    return body


async def _cached(app: Instance, slug: str) -> None:
    """Read ``slug`` until it is served from the cache."""
    hits = app.cache.hits
    await _body(app, slug)
    await _body(app, slug)
    assert app.cache.hits > hits


async def _reads_show(app: Instance, slug: str, body: str) -> None:
    """Read ``slug`` until it is served from the cache again, each read showing ``body``."""

    async def from_cache() -> bool:
        hits = app.cache.hits
        assert await _body(app, slug) == body
        return app.cache.hits > hits

    await eventually(from_cache, f"{slug} served from the cache again")


async def test_an_update_during_the_outage_is_read_after_it(
    redis_fault: Fault, database_url: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    async with asyncio.timeout(PATIENCE * 3), running(database_url, tmp_path, redis_fault.url) as app:
        jake = await app.api.register("jake")
        slug = (await app.api.article(jake))["slug"]
        await _cached(app, slug)

        redis_fault.fail()
        edited = await app.client.put(
            f"/articles/{slug}", json={"article": {"body": "edited"}}, headers=jake.headers
        )
        assert edited.status_code == 200
        redis_fault.restore()

        await _reads_show(app, slug, "edited")


async def test_a_write_by_another_process_during_the_outage_is_read_after_it(
    redis_fault: Fault, database_url: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    """Process A caches an article and a caller's session; B, during the outage, updates the article
    and logs the caller out everywhere. After it, A shows the update and refuses the token, although
    A itself served no request meanwhile."""
    shared = deployment()
    async with (
        asyncio.timeout(PATIENCE * 3),
        running(database_url, tmp_path, redis_fault.url, **shared) as a,
        running(database_url, tmp_path, redis_fault.url, **shared) as b,
    ):
        jake = await a.api.register("jake")
        slug = (await a.api.article(jake))["slug"]
        await _cached(a, slug)
        hits = a.cache.hits
        for _ in range(2):  # the caller's verdict is cached too
            assert (await a.client.get("/articles", headers=jake.headers)).status_code == 200
        assert a.cache.hits > hits

        redis_fault.fail()
        edited = await b.client.put(
            f"/articles/{slug}", json={"article": {"body": "edited"}}, headers=jake.headers
        )
        assert edited.status_code == 200
        assert (await b.client.post("/auth/logout-all", headers=jake.headers)).status_code == 204
        redis_fault.restore()

        if redis_fault.name == "blackhole":
            # A silent outage may pass unnoticed by A; B, the writer, knows, and bumps as soon as
            # Redis answers it again (the guarantee for that case, docs/reliability.md).
            await eventually(lambda: not b.cache.stale, "B, the writer, bumped the generation")
        await _reads_show(a, slug, "edited")
        assert (await a.client.get("/articles", headers=jake.headers)).status_code == 401


async def test_a_write_by_a_process_that_died_during_the_outage_is_read_after_it(
    redis_fault: Fault, database_url: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    """B writes during the outage and is gone before Redis is back, so B never bumps: A, which saw the
    outage (its pub/sub connection failed), bumps before it serves from the cache again."""
    shared = deployment()
    async with asyncio.timeout(PATIENCE * 3), running(database_url, tmp_path, redis_fault.url, **shared) as a:
        jake = await a.api.register("jake")
        slug = (await a.api.article(jake))["slug"]
        await _cached(a, slug)
        async with running(database_url, tmp_path, redis_fault.url, **shared) as b:
            redis_fault.fail()
            await eventually(lambda: not a.pubsub.subscribed, "A noticed the outage")
            edited = await b.client.put(
                f"/articles/{slug}", json={"article": {"body": "edited"}}, headers=jake.headers
            )
            assert edited.status_code == 200
        redis_fault.restore()

        await _reads_show(a, slug, "edited")


async def test_a_write_across_a_partial_partition_is_read_once_the_writer_is_back(
    database_url: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    """Only B loses Redis; A keeps it and never sees a failure. Once B reaches Redis again, B's bump
    makes A read B's write (before that, A may serve the older entry: the documented limit)."""
    with redis_server(tmp_path) as redis, tcp_proxy(redis.port) as to_a, tcp_proxy(redis.port) as to_b:
        shared = deployment()
        async with (
            asyncio.timeout(PATIENCE * 3),
            running(database_url, tmp_path, to_a.url, **shared) as a,
            running(database_url, tmp_path, to_b.url, **shared) as b,
        ):
            jake = await a.api.register("jake")
            slug = (await a.api.article(jake))["slug"]
            await _cached(a, slug)

            to_b.cut()
            edited = await b.client.put(
                f"/articles/{slug}", json={"article": {"body": "edited"}}, headers=jake.headers
            )
            assert edited.status_code == 200
            assert a.link.up and not a.cache.stale
            to_b.restore()

            await eventually(lambda: b.pubsub.subscribed, "B reached Redis again")  # after its bump
            await _reads_show(a, slug, "edited")


def _cache(url: str, tmp_path: Path) -> tuple[Cache, str]:
    """A cache of its own on ``url``, and the key of its generation."""
    settings = make_settings("sqlite+aiosqlite://", tmp_path, redis_url=url, **FAULT_SETTINGS)
    return Cache(settings), f"{settings.cache_prefix}:cache:generation"


async def test_a_store_computed_before_redis_restarted_empty_is_never_served(tmp_path: Path) -> None:
    """A load that began before Redis restarted empty stores its (older) value after the restart, under
    the generation it looked up then. The generation starts over after a restart, at a random value:
    counting from 0 again, it would reach that number after as many bumps, and serve the value."""
    with redis_server(tmp_path) as redis:
        cache, _ = _cache(redis.url, tmp_path)
        try:
            for _ in range(2):
                await cache.invalidate()

            async def load_then_restart() -> bytes:
                redis.stop()
                redis.start()  # empty
                return b"computed before the restart"

            assert await cache.get_or_load("article", load_then_restart) == (
                b"computed before the restart",
                False,
            )

            async def load_now() -> bytes:
                return b"current"

            for _ in range(5):  # the writes that follow, each read after
                await cache.invalidate()
                value, _ = await cache.get_or_load("article", load_now)
                assert value == b"current"
        finally:
            await cache.close()


async def test_a_failed_invalidation_is_repaired_without_a_read(tmp_path: Path) -> None:
    """A write that could not bump the generation bumps it as soon as Redis answers again, even if
    this process never reads: other processes would go on serving the older entries."""
    with redis_server(tmp_path) as redis, tcp_proxy(redis.port) as proxy, redis.client() as direct:
        cache, generation_key = _cache(proxy.url, tmp_path)
        try:
            await cache.invalidate()
            before = int(direct.get(generation_key) or 0)
            proxy.cut()
            await cache.invalidate()  # fails: the cache turns stale
            assert cache.stale
            proxy.restore()
            await eventually(lambda: not cache.stale, "the generation bumped")
            assert int(direct.get(generation_key) or 0) > before
        finally:
            await cache.close()
