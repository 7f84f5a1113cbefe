"""Redis goes away in the middle of load, then comes back: no 5xx, reads and writes go on (each read
showing the write before it), live events reach the process's own sockets; afterwards everything
recovers without a restart: the cache is used again, rate limits are enforced again, and pub/sub
resumes with a resync for the sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from httpx_ws import AsyncWebSocketSession
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.factories import PASSWORD, Account
from tests.faults.redis_apps import PATIENCE, Instance, eventually, running
from tests.faults.redis_faults import FAULTS, Fault, fault
from tests.realtime.conftest import receive

WRITERS = 4  # each updates its own article and reads it back, over and over
READERS = 2  # anonymous and signed-in reads of lists, articles and tags
STEP = 20  # requests of the load before the fault, during it, and after the recovery


@pytest.fixture(params=FAULTS)
def redis_fault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fault]:
    with fault(request.param, tmp_path) as broken:
        yield broken


class Load:
    """Requests running concurrently until ``stop()``; ``done`` counts the completed ones."""

    def __init__(self, app: Instance) -> None:
        self.app = app
        self.done = 0
        self.last_bodies: dict[str, str] = {}  # slug -> the body its last acknowledged write set
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, author: Account, slugs: list[str], reader: Account) -> None:
        self._tasks = [asyncio.create_task(self._write_and_read(author, slug)) for slug in slugs]
        self._tasks += [
            asyncio.create_task(self._read(slugs, reader if n % 2 else None)) for n in range(READERS)
        ]

    async def after(self, requests: int) -> None:
        """Wait until ``requests`` more requests have completed (failing if the load itself failed)."""
        target = self.done + requests
        await eventually(lambda: self.done >= target or any(task.done() for task in self._tasks), "load")
        for task in self._tasks:
            if task.done():
                task.result()  # raises the load's failure

    async def stop(self) -> None:
        self._stopping.set()
        await asyncio.gather(*self._tasks)

    async def _write_and_read(self, author: Account, slug: str) -> None:
        client = self.app.client
        version = 0
        while not self._stopping.is_set():
            version += 1
            body = f"version {version}"
            written = await client.put(
                f"/articles/{slug}", json={"article": {"body": body}}, headers=author.headers
            )
            assert written.status_code == 200, written.text
            self.last_bodies[slug] = body
            read = await client.get(f"/articles/{slug}")
            assert read.json()["article"]["body"] == body  # every read shows the write before it
            self.done += 2

    async def _read(self, slugs: list[str], reader: Account | None) -> None:
        headers = reader.headers if reader else {}
        while not self._stopping.is_set():
            for url in ("/articles", f"/articles/{slugs[self.done % len(slugs)]}", "/tags"):
                assert (await self.app.client.get(url, headers=headers)).status_code == 200
                self.done += 1


async def _comment_reaches(app: Instance, ws: AsyncWebSocketSession, author: Account, slug: str) -> None:
    comment = await app.api.comment(author, slug)
    message = await receive(ws)
    assert message["type"] == "notification"
    assert message["data"]["comment"] == {"id": comment["id"]}


async def test_redis_stops_under_load_and_comes_back(
    redis_fault: Fault, database_url: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    overrides = {"rate_limit_login_account": "3/minute"}
    async with (
        asyncio.timeout(PATIENCE * 6),
        running(database_url, tmp_path, redis_fault.url, **overrides) as app,
    ):
        author, jake, ann = [await app.api.register(name) for name in ("author", "jake", "ann")]
        slugs = [(await app.api.article(author, f"Article {n}"))["slug"] for n in range(WRITERS)]
        jake_slug = (await app.api.article(jake, "Jake's"))["slug"]
        for slug in slugs:  # warm: the second read is a hit
            await app.client.get(f"/articles/{slug}")
            await app.client.get(f"/articles/{slug}")
        assert app.cache.hits >= WRITERS
        load = Load(app)

        async with app.connect(jake.token) as ws:
            load.start(author, slugs, ann)
            await load.after(STEP)

            redis_fault.fail()
            await load.after(STEP)
            # Even a silent outage is noticed by the listener (a ping that goes unanswered).
            await eventually(lambda: not app.pubsub.subscribed, "the listener noticed the outage")
            await _comment_reaches(app, ws, ann, jake_slug)  # delivered in the process, without Redis
            await load.after(STEP)

            redis_fault.restore()
            await eventually(lambda: app.pubsub.subscribed, "pub/sub resubscribed")
            assert await receive(ws) == {"type": "resync"}  # events from elsewhere may have been missed
            await load.after(STEP)
            await load.stop()
            await _comment_reaches(app, ws, ann, jake_slug)  # through Redis again

        # Every acknowledged write is there, and shown, now from the cache again.
        await eventually(lambda: app.link.up and not app.cache.stale, "the cache trusted again")
        for slug, body in load.last_bodies.items():
            hits = app.cache.hits
            for _ in range(2):
                assert (await app.client.get(f"/articles/{slug}")).json()["article"]["body"] == body
            assert app.cache.hits > hits

        # Rate limits are enforced again (they failed open during the outage).
        fresh = await app.api.register("fresh")
        logins = [
            await app.client.post("/users/login", json={"user": {"email": fresh.email, "password": PASSWORD}})
            for _ in range(4)
        ]
        assert [response.status_code for response in logins] == [200, 200, 200, 429]
        assert not [status for status in app.statuses if status >= 500]
