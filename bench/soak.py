"""Soak: a long mixed load (reads, writes, WebSockets) on PostgreSQL + Redis, judged on zero 5xx and on
no unbounded growth of memory, file descriptors or connections.

    uv run python -m bench.soak [--duration 600] [--warmup SECONDS] [--concurrency 12] [--workers 2]

Creates a scratch PostgreSQL database (dropped afterwards) and seeds it (``conduit seed``), then runs
the production shape on this machine: ``conduit serve --workers 2`` and a ``conduit worker`` (Celery,
prefork) sharing Redis for the cache, rate limits, pub/sub and the broker, under a key prefix of the
run's own (its keys are deleted afterwards). For ``--duration`` seconds it drives, over loopback:

- ``--concurrency`` virtual users, each owning a few accounts, picking weighted actions back to back:
  anonymous and signed-in reads (lists, feed, articles, profiles, tags, comments, notifications) and
  writes (articles created, updated and deleted, comments posted and deleted, favorites and follows
  toggled, notifications marked read); what a user creates stays bounded, so the data does not grow
  without end either; every create carries an ``Idempotency-Key`` and one in ten is sent again, which
  must get the first answer back;
- a login every ``--login-interval`` seconds (bcrypt is expensive), one data export after another
  (POST, poll, download: the jobs run on the worker), readiness and liveness probes every 5 s;
- ``--ws-clients`` WebSockets that stay connected, answer pings and count the notifications pushed to
  them, and ``--ws-churn`` clients that connect, authenticate, stay a moment and leave, over and over.

Every ``--interval`` seconds it samples the RSS and open file descriptors of every process of the
server and of the worker, the database's connections (``pg_stat_activity``), the Redis connections
those processes hold (as Redis lists them), the run's Redis keys, throughput, latency and status
counts. The verdict per criterion is in docs/reliability.md (section Soak); the exit status is 1 if
any failed. Results go to ``bench/out/soak-<stamp>.json`` and ``.md``, beside the server's and the
worker's logs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import psutil
import redis.asyncio
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from app.services.seed import DEMO_PASSWORD
from bench.__main__ import machine
from bench.ws_latency import PG, REDIS, free_port, serve, server_env, ws_url

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
RSS_GROWTH_LIMIT = 0.10  # RSS at the end may exceed RSS after the warm-up by at most this share
EDGE_SAMPLES = 3  # samples whose median is "RSS after the warm-up" and "RSS at the end"
FD_SLACK = 16  # file descriptors a process group may add after the warm-up beyond its pools' overflow
EXPORT_TIMEOUT = 120.0  # seconds an export may take before it counts as lost
# The probes as the shipped Deployment runs them (deploy/k8s/api-deployment.yaml, readinessProbe): every
# 5 s, a failure being a 503 or no answer within 3 s, and a pod taken out of rotation after 2 in a row.
PROBE_INTERVAL, PROBE_TIMEOUT, PROBE_FAILURE_THRESHOLD = 5.0, 3.0, 2
READINESS = "health ready"  # the readiness probe's operation: its 503 is an answer, judged on its own
DB_POOL_SIZE, DB_MAX_OVERFLOW = 10, 10  # the defaults, set explicitly: the connection ceiling uses them
OWN_ARTICLES, OWN_COMMENTS, OWN_FAVORITES, OWN_FOLLOWS = 3, 5, 10, 5  # what one account keeps at most
REPLAYED = 0.1  # the share of creates (each with an Idempotency-Key) sent a second time


STARTED = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - STARTED:5.0f} s] {text}", flush=True)


# --- what the load measures --------------------------------------------------------------------


@dataclass
class Stats:
    """Every response and failure of the HTTP load, per operation, and the latencies since the last
    sample (for the time series)."""

    latencies: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: defaultdict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    failures: Counter[str] = field(default_factory=Counter)  # no response: "operation: error"
    unexpected: Counter[str] = field(default_factory=Counter)  # "operation: status"
    examples: list[str] = field(default_factory=list)  # the first unexpected responses, for the report
    window: list[float] = field(default_factory=list)
    server_errors: int = 0  # 5xx of every operation but the readiness probe, which is judged apart

    def record(self, operation: str, response: httpx.Response, seconds: float, ok: bool) -> None:
        self.latencies[operation].append(seconds)
        self.statuses[operation][response.status_code] += 1
        self.window.append(seconds)
        if response.status_code >= 500 and operation != READINESS:
            self.server_errors += 1
        if not ok:
            self.unexpected[f"{operation}: {response.status_code}"] += 1
            if len(self.examples) < 20:
                body = response.text[:300].replace("\n", " ")
                self.examples.append(
                    f"{operation} {response.request.url.path}: {response.status_code} {body}"
                )

    def fail(self, operation: str, error: BaseException) -> None:
        self.failures[f"{operation}: {type(error).__name__}"] += 1

    @property
    def responses(self) -> int:
        return sum(len(values) for values in self.latencies.values())


@dataclass
class SocketStats:
    """The WebSocket clients: what they received, and every way a socket ended that it should not."""

    open: set[ClientConnection] = field(default_factory=set)  # the long-lived sockets, once ready
    notifications: int = 0
    pings: int = 0
    resyncs: int = 0
    churn_cycles: int = 0
    drops: Counter[str] = field(default_factory=Counter)  # a long-lived socket lost, and why
    churn_failures: Counter[str] = field(default_factory=Counter)


@dataclass
class Account:
    username: str
    email: str
    token: str = ""
    articles: list[str] = field(default_factory=list)  # slugs it created during the soak
    comments: list[tuple[str, int]] = field(default_factory=list)  # (slug, id) it posted
    favorited: set[str] = field(default_factory=set)
    following: set[str] = field(default_factory=set)


# --- the HTTP load -----------------------------------------------------------------------------


class Load:
    """The HTTP side of the workload: one action per call, each a request or two."""

    def __init__(
        self, http: httpx.AsyncClient, accounts: list[Account], slugs: list[str], tags: list[str]
    ) -> None:
        self.http, self.accounts, self.slugs, self.tags = http, accounts, slugs, tags
        self.stats = Stats()
        self.exports = Counter[str]()  # started, done, failed, lost
        self.unready = Counter[str]()  # why readiness probes failed: the checks a 503 named, or slowness
        self.unready_run = self.longest_unready_run = 0  # failed readiness probes in a row

    async def call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        account: Account | None = None,
        body: dict[str, Any] | None = None,
        expect: tuple[int, ...] = (200,),
        key: str | None = None,
    ) -> httpx.Response | None:
        """The request, timed and counted; the response if its status was one of ``expect``. ``key``
        is an ``Idempotency-Key``."""
        headers = {"Authorization": f"Token {account.token}"} if account else {}
        if key is not None:
            headers["Idempotency-Key"] = key
        started = time.perf_counter()
        try:
            response = await self.http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as error:
            self.stats.fail(operation, error)
            return None
        ok = response.status_code in expect
        self.stats.record(operation, response, time.perf_counter() - started, ok)
        return response if ok else None

    # Anonymous reads.
    async def articles_anonymous(self, _account: Account, rng: random.Random) -> None:
        await self.call("articles (anonymous)", "GET", f"/api/v1/articles?limit=20&{self._filter(rng)}")

    async def article_anonymous(self, _account: Account, rng: random.Random) -> None:
        await self.call("article (anonymous)", "GET", f"/api/v1/articles/{rng.choice(self.slugs)}")

    async def comments_anonymous(self, _account: Account, rng: random.Random) -> None:
        await self.call("comments (anonymous)", "GET", f"/api/v1/articles/{rng.choice(self.slugs)}/comments")

    async def profile_anonymous(self, _account: Account, rng: random.Random) -> None:
        await self.call(
            "profile (anonymous)", "GET", f"/api/v1/profiles/{rng.choice(self.accounts).username}"
        )

    async def tags_list(self, _account: Account, _rng: random.Random) -> None:
        await self.call("tags", "GET", "/api/v1/tags")

    # Signed-in reads.
    async def articles_signed_in(self, account: Account, rng: random.Random) -> None:
        path = f"/api/v1/articles?limit=20&{self._filter(rng)}"
        await self.call("articles (signed in)", "GET", path, account=account)

    async def feed(self, account: Account, _rng: random.Random) -> None:
        await self.call("feed", "GET", "/api/v1/articles/feed?limit=20", account=account)

    async def article_signed_in(self, account: Account, rng: random.Random) -> None:
        path = f"/api/v1/articles/{rng.choice(self.slugs)}"
        await self.call("article (signed in)", "GET", path, account=account)

    async def profile_signed_in(self, account: Account, rng: random.Random) -> None:
        path = f"/api/v1/profiles/{rng.choice(self.accounts).username}"
        await self.call("profile (signed in)", "GET", path, account=account)

    async def comments_signed_in(self, account: Account, rng: random.Random) -> None:
        path = f"/api/v1/articles/{rng.choice(self.slugs)}/comments"
        await self.call("comments (signed in)", "GET", path, account=account)

    async def notifications(self, account: Account, _rng: random.Random) -> None:
        await self.call("notifications", "GET", "/api/v1/notifications?limit=20", account=account)

    # Writes. Each account only changes what it created itself (nothing another virtual user could
    # delete under it), and keeps a bounded number of each.
    async def article_write(self, account: Account, rng: random.Random) -> None:
        """Create, update or delete (the oldest) one of its own articles, a mix from the start."""
        roll = rng.random()
        if not account.articles or (len(account.articles) < OWN_ARTICLES and roll < 0.5):
            article = {
                "title": f"Soak {secrets.token_hex(4)}",
                "description": "written by the soak",
                "body": "Body. " * rng.randrange(5, 50),
                "tagList": rng.sample(self.tags, 2),
            }
            body = {"article": article}
            key = secrets.token_hex(16)
            path = "/api/v1/articles"
            response = await self.call(
                "article create", "POST", path, account=account, body=body, expect=(201,), key=key
            )
            if response is not None:
                account.articles.append(response.json()["article"]["slug"])
                if rng.random() < REPLAYED:
                    await self.replay("article create, again", path, account, body, key, response)
        elif roll < 0.75:
            changes = {"article": {"body": "Edited. " * rng.randrange(5, 50)}}
            path = f"/api/v1/articles/{rng.choice(account.articles)}"
            await self.call("article update", "PUT", path, account=account, body=changes)
        else:
            path = f"/api/v1/articles/{account.articles.pop(0)}"
            await self.call("article delete", "DELETE", path, account=account, expect=(204,))

    async def comment_write(self, account: Account, rng: random.Random) -> None:
        if len(account.comments) >= OWN_COMMENTS or (account.comments and rng.random() < 0.3):
            slug, comment_id = account.comments.pop(0)
            path = f"/api/v1/articles/{slug}/comments/{comment_id}"
            await self.call("comment delete", "DELETE", path, account=account, expect=(204,))
            return
        slug = rng.choice(self.slugs)
        body = {"comment": {"body": f"A comment from the soak, {secrets.token_hex(4)}."}}
        key = secrets.token_hex(16)
        path = f"/api/v1/articles/{slug}/comments"
        response = await self.call("comment create", "POST", path, account=account, body=body, key=key)
        if response is not None:
            account.comments.append((slug, response.json()["comment"]["id"]))
            if rng.random() < REPLAYED:
                await self.replay("comment create, again", path, account, body, key, response)

    async def replay(
        self,
        operation: str,
        path: str,
        account: Account,
        body: dict[str, Any],
        key: str,
        first: httpx.Response,
    ) -> None:
        """The same create with the same ``Idempotency-Key``, as a client retrying after a lost answer:
        the first answer again (``Idempotent-Replayed``), and nothing created twice."""
        again = await self.call(
            operation, "POST", path, account=account, body=body, key=key, expect=(first.status_code,)
        )
        if again is not None and (
            again.headers.get("idempotent-replayed") != "true" or again.json() != first.json()
        ):
            self.stats.unexpected[f"{operation}: not the first answer"] += 1

    async def favorite_toggle(self, account: Account, rng: random.Random) -> None:
        if len(account.favorited) >= OWN_FAVORITES or (account.favorited and rng.random() < 0.4):
            slug = rng.choice(sorted(account.favorited))
            account.favorited.discard(slug)
            await self.call("unfavorite", "DELETE", f"/api/v1/articles/{slug}/favorite", account=account)
        else:
            slug = rng.choice(self.slugs)
            account.favorited.add(slug)
            await self.call("favorite", "POST", f"/api/v1/articles/{slug}/favorite", account=account)

    async def follow_toggle(self, account: Account, rng: random.Random) -> None:
        if len(account.following) >= OWN_FOLLOWS or (account.following and rng.random() < 0.4):
            username = rng.choice(sorted(account.following))
            account.following.discard(username)
            await self.call("unfollow", "DELETE", f"/api/v1/profiles/{username}/follow", account=account)
        else:
            username = rng.choice([a.username for a in self.accounts if a is not account])
            account.following.add(username)
            await self.call("follow", "POST", f"/api/v1/profiles/{username}/follow", account=account)

    async def notifications_read(self, account: Account, _rng: random.Random) -> None:
        response = await self.call(
            "notifications", "GET", "/api/v1/notifications?limit=20&unread=true", account=account
        )
        if response is not None and (items := response.json()["notifications"]):
            body = {"upTo": items[0]["id"]}  # newest first: this one and every older one
            await self.call(
                "notifications read", "POST", "/api/v1/notifications/read", account=account, body=body
            )

    def _filter(self, rng: random.Random) -> str:
        return rng.choice(
            (
                f"offset={rng.randrange(0, 200, 20)}",
                f"tag={rng.choice(self.tags)}",
                f"author={rng.choice(self.accounts).username}",
                f"favorited={rng.choice(self.accounts).username}",
            )
        )

    # The low-rate loops.
    async def login(self, account: Account) -> None:
        body = {"user": {"email": account.email, "password": DEMO_PASSWORD}}
        response = await self.call("login", "POST", "/api/v1/users/login", body=body)
        if response is not None:
            account.token = response.json()["user"]["token"]

    async def export(self, account: Account) -> None:
        """One data export from start to download: the jobs run on the worker."""
        key = secrets.token_hex(16)
        response = await self.call(
            "export create", "POST", "/api/v1/exports", account=account, expect=(202,), key=key
        )
        if response is None:
            return
        self.exports["started"] += 1
        export_id = response.json()["export"]["id"]
        deadline = time.monotonic() + EXPORT_TIMEOUT
        while time.monotonic() < deadline:
            await asyncio.sleep(1)
            status = await self.call("export status", "GET", f"/api/v1/exports/{export_id}", account=account)
            state = status.json()["export"]["state"] if status is not None else None
            if state == "done":
                path = f"/api/v1/exports/{export_id}/download"
                download = await self.call("export download", "GET", path, account=account)
                self.exports["done" if download is not None else "download failed"] += 1
                return
            if state == "failed":
                self.exports["failed"] += 1
                return
        self.exports["lost"] += 1


Action = Callable[[Load, Account, random.Random], Awaitable[None]]

# Weights out of 100: 62 reads (about half of them signed in), 38 writes (marking notifications read
# lists them first).
ACTIONS: tuple[tuple[Action, int], ...] = (
    (Load.articles_anonymous, 10),
    (Load.article_anonymous, 9),
    (Load.comments_anonymous, 6),
    (Load.profile_anonymous, 4),
    (Load.tags_list, 4),
    (Load.articles_signed_in, 7),
    (Load.feed, 7),
    (Load.article_signed_in, 6),
    (Load.profile_signed_in, 3),
    (Load.comments_signed_in, 3),
    (Load.notifications, 3),
    (Load.article_write, 6),
    (Load.comment_write, 10),
    (Load.favorite_toggle, 8),
    (Load.follow_toggle, 6),
    (Load.notifications_read, 8),
)


async def virtual_user(load: Load, accounts: list[Account], seed: int, stop: asyncio.Event) -> None:
    """Actions back to back, each for one of ``accounts`` (which no other virtual user touches)."""
    rng = random.Random(seed)
    actions, weights = zip(*ACTIONS, strict=True)
    while not stop.is_set():
        action = rng.choices(actions, weights)[0]
        await action(load, rng.choice(accounts), rng)


async def every(seconds: float, stop: asyncio.Event, work: Callable[[], Awaitable[None]]) -> None:
    while not stop.is_set():
        await work()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


async def exports(load: Load, accounts: list[Account], stop: asyncio.Event) -> None:
    rng = random.Random(7)
    while not stop.is_set():
        await load.export(rng.choice(accounts))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2)


# --- the WebSocket clients ---------------------------------------------------------------------

SOCKET_ERRORS = (ConnectionClosed, InvalidHandshake, OSError, TimeoutError, RuntimeError)


async def authenticate(ws: ClientConnection, token: str) -> None:
    await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
    message = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
    if message != {"type": "ready"}:
        raise RuntimeError(f"expected ready, got {message}")


async def receive(ws: ClientConnection, stats: SocketStats) -> None:
    """Answer pings and count what arrives, until the socket closes."""
    async for frame in ws:
        message = orjson.loads(frame)
        if message["type"] == "ping":
            stats.pings += 1
            await ws.send('{"type": "pong"}')
        elif message["type"] == "notification":
            stats.notifications += 1
        elif message["type"] == "resync":
            stats.resyncs += 1


def _why(error: BaseException) -> str:
    if isinstance(error, ConnectionClosed):
        return f"closed with {error.rcvd.code}" if error.rcvd else "closed without a close frame"
    return type(error).__name__


async def long_lived_socket(base: str, account: Account, stats: SocketStats, stop: asyncio.Event) -> None:
    """One socket for the whole run; any end of it before the run ends is a drop (then reconnects)."""
    while not stop.is_set():
        try:
            async with connect(ws_url(base), proxy=None, open_timeout=30) as ws:
                await authenticate(ws, account.token)
                stats.open.add(ws)
                try:
                    await receive(ws, stats)
                finally:
                    stats.open.discard(ws)
            if not stop.is_set():
                stats.drops[f"closed with {ws.close_code}"] += 1
        except SOCKET_ERRORS as error:
            if stop.is_set():
                return
            stats.drops[_why(error)] += 1
        await asyncio.sleep(1)


async def churning_socket(
    base: str, accounts: list[Account], seed: int, stats: SocketStats, stop: asyncio.Event
) -> None:
    """Connect, authenticate, stay 0.5-3 s, leave; again and again."""
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            async with connect(ws_url(base), proxy=None, open_timeout=30) as ws:
                await authenticate(ws, rng.choice(accounts).token)
                try:
                    await asyncio.wait_for(receive(ws, stats), rng.uniform(0.5, 3.0))
                except TimeoutError:
                    stats.churn_cycles += 1  # stayed its time: leaves (the block closes the socket)
                else:
                    stats.churn_failures[f"closed by the server with {ws.close_code}"] += 1
        except SOCKET_ERRORS as error:
            stats.churn_failures[_why(error)] += 1
            await asyncio.sleep(1)


# --- resources ---------------------------------------------------------------------------------


@dataclass
class Group:
    """A process and its descendants, as measured at one moment."""

    rss_mb: float
    fds: int
    rss_by_pid: dict[int, float]
    redis_ports: set[int]  # local ports of its connections to Redis


def measure(root_pid: int, redis_port: int) -> Group:
    root = psutil.Process(root_pid)
    rss: dict[int, float] = {}
    fds = 0
    ports: set[int] = set()
    for process in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            rss[process.pid] = process.memory_info().rss / 2**20
            fds += process.num_fds()
            ports |= {
                c.laddr.port
                for c in process.net_connections("tcp")
                if c.raddr and c.raddr.port == redis_port and c.status == psutil.CONN_ESTABLISHED
            }
    return Group(sum(rss.values()), fds, rss, ports)


@dataclass
class Sample:
    t: float  # seconds since the load started
    warmup: bool
    server_rss_mb: float
    worker_rss_mb: float
    server_fds: int
    worker_fds: int
    server_rss_by_pid: dict[int, float]
    worker_rss_by_pid: dict[int, float]
    db_connections: int  # pg_stat_activity rows of the soak's database
    redis_clients: int  # clients Redis lists whose address is a connection of the server or worker
    redis_clients_by_command: dict[str, int]  # by process group and last command, to tell them apart
    redis_keys: int  # keys under the run's prefix
    websockets: int  # the server's own gauge (conduit_websocket_connections)
    requests: int  # responses since the previous sample
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    server_errors: int  # 5xx so far


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        value = values[0] * 1000 if values else 0.0
        return {"p50": value, "p90": value, "p99": value, "max": value}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49] * 1000, "p90": cuts[89] * 1000, "p99": cuts[98] * 1000, "max": max(values) * 1000}


def scrape(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text: each sample's name to its (labels, value) pairs."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))
    return samples


class Monitor:
    def __init__(
        self,
        load: Load,
        sockets: SocketStats,
        *,
        server_pid: int,
        worker_pid: int,
        database: str,
        prefix: str,
        admin: asyncpg.Connection,
        redis_client: redis.asyncio.Redis,
        redis_port: int,
        warmup: float,
    ) -> None:
        self.load, self.sockets = load, sockets
        self.server_pid, self.worker_pid = server_pid, worker_pid
        self.database, self.prefix = database, prefix
        self.admin, self.redis, self.redis_port = admin, redis_client, redis_port
        self.warmup = warmup
        self.samples: list[Sample] = []
        self.started = time.monotonic()
        self._last = self.started

    async def sample(self) -> Sample:
        try:
            server, worker = await asyncio.gather(
                asyncio.to_thread(measure, self.server_pid, self.redis_port),
                asyncio.to_thread(measure, self.worker_pid, self.redis_port),
            )
        except psutil.NoSuchProcess as gone:
            raise SystemExit(f"process {gone.pid} exited during the soak: see its log in {OUT}") from None
        connections = await self.admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", self.database
        )
        owner = dict.fromkeys(server.redis_ports, "server") | dict.fromkeys(worker.redis_ports, "worker")
        clients = Counter(
            f"{owner[port]} {c['cmd']}"
            for c in await self.redis.client_list()
            if (port := int(c["addr"].rsplit(":", 1)[1])) in owner
        )
        keys = 0
        async for _ in self.redis.scan_iter(match=f"{self.prefix}*", count=1000):
            keys += 1
        websockets = 0
        metrics = await self.load.call("metrics", "GET", "/metrics")
        if metrics is not None:
            websockets = int(sum(value for _, value in scrape(metrics.text)["conduit_websocket_connections"]))
        now = time.monotonic()
        window, self.load.stats.window = self.load.stats.window, []
        latency = percentiles(window)
        t = now - self.started
        sample = Sample(
            t=round(t, 1),
            warmup=t < self.warmup,
            server_rss_mb=round(server.rss_mb, 1),
            worker_rss_mb=round(worker.rss_mb, 1),
            server_fds=server.fds,
            worker_fds=worker.fds,
            server_rss_by_pid={pid: round(mb, 1) for pid, mb in server.rss_by_pid.items()},
            worker_rss_by_pid={pid: round(mb, 1) for pid, mb in worker.rss_by_pid.items()},
            db_connections=connections,
            redis_clients=clients.total(),
            redis_clients_by_command=dict(sorted(clients.items())),
            redis_keys=keys,
            websockets=websockets,
            requests=len(window),
            requests_per_second=round(len(window) / (now - self._last), 1),
            p50_ms=round(latency["p50"], 1),
            p99_ms=round(latency["p99"], 1),
            server_errors=self.load.stats.server_errors,
        )
        self._last = now
        self.samples.append(sample)
        print(
            f"{sample.t:6.0f}s {'warm-up' if sample.warmup else 'steady ':7} "
            f"{sample.requests_per_second:6.0f} req/s p50 {sample.p50_ms:6.1f} p99 {sample.p99_ms:7.1f} ms | "
            f"RSS server {sample.server_rss_mb:6.1f} worker {sample.worker_rss_mb:6.1f} MB | "
            f"fds {sample.server_fds}/{sample.worker_fds} | db {sample.db_connections} "
            f"redis {sample.redis_clients} keys {sample.redis_keys} | ws {sample.websockets} | "
            f"5xx {sample.server_errors}",
            flush=True,
        )
        return sample

    async def run(self, interval: float, duration: float) -> None:
        """A sample every ``interval`` seconds, the last one at ``duration``, still under load."""
        while (elapsed := time.monotonic() - self.started) < duration:
            await asyncio.sleep(min(interval, duration - elapsed))
            await self.sample()


# --- the verdict -------------------------------------------------------------------------------


@dataclass
class Criterion:
    name: str
    passed: bool
    measured: str
    limit: str


@dataclass
class Limits:
    db_ceiling: int  # every pool full, overflow included, plus a readiness probe per process
    db_overflow: int  # connections the pools may open beyond their size
    server_fd_slack: int
    worker_fd_slack: int
    redis_slack: int  # the client pools keep the most connections they ever needed at once


def _edge(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def judge(
    samples: list[Sample],
    load: Load,
    sockets: SocketStats,
    jobs: dict[str, float],
    server_5xx: int | None,  # None: the server's metrics could not be read
    limits: Limits,
) -> list[Criterion]:
    warm = [s for s in samples if s.warmup]
    steady = [s for s in samples if not s.warmup]
    stats = load.stats
    criteria = [
        Criterion(
            "zero 5xx",
            stats.server_errors == 0 and server_5xx == 0,
            f"{stats.server_errors} of {stats.responses:,} responses (the server counted "
            f"{'?' if server_5xx is None else server_5xx})",
            "0 (every response but the readiness probe's, below)",
        ),
        Criterion(
            "readiness probe",
            load.longest_unready_run < PROBE_FAILURE_THRESHOLD,
            f"{load.unready.total()} of {stats.statuses[READINESS].total()} probes failed"
            + (
                f" ({dict(load.unready)}), at most {load.longest_unready_run} in a row"
                if load.unready
                else ""
            ),
            f"never {PROBE_FAILURE_THRESHOLD} in a row (the shipped readinessProbe's failureThreshold)",
        ),
        Criterion(
            "every request answered",
            not stats.failures,
            ", ".join(f"{k} x{v}" for k, v in stats.failures.items()) or "all",
            "no timeout or connection error",
        ),
        Criterion(
            "every response as expected",
            not stats.unexpected,
            ", ".join(f"{k} x{v}" for k, v in stats.unexpected.items()) or "all",
            "the status each operation should get",
        ),
    ]
    if len(steady) < 2 * EDGE_SAMPLES or not warm:
        criteria.append(
            Criterion(
                "enough samples",
                False,
                f"{len(warm)} in warm-up, {len(steady)} after",
                f"≥ 1, ≥ {2 * EDGE_SAMPLES}",
            )
        )
        return criteria
    for group in ("server", "worker"):
        after = _edge([getattr(s, f"{group}_rss_mb") for s in steady[:EDGE_SAMPLES]])
        end = _edge([getattr(s, f"{group}_rss_mb") for s in steady[-EDGE_SAMPLES:]])
        growth = end / after - 1 if after else 0.0
        criteria.append(
            Criterion(
                f"{group} RSS",
                growth <= RSS_GROWTH_LIMIT,
                f"{after:.1f} MB after warm-up, {end:.1f} MB at the end ({growth:+.1%})",
                f"≤ {RSS_GROWTH_LIMIT:+.0%}",
            )
        )
    for group, slack in (("server", limits.server_fd_slack), ("worker", limits.worker_fd_slack)):
        warm_max = max(getattr(s, f"{group}_fds") for s in warm)
        steady_max = max(getattr(s, f"{group}_fds") for s in steady)
        criteria.append(
            Criterion(
                f"{group} file descriptors",
                steady_max <= warm_max + slack,
                f"max {warm_max} in warm-up, {steady_max} after (end {getattr(steady[-1], f'{group}_fds')})",
                f"≤ {warm_max + slack} (warm-up max + {slack})",
            )
        )
    warm_db = max(s.db_connections for s in warm)
    steady_db = max(s.db_connections for s in steady)
    db_bound = min(limits.db_ceiling, warm_db + limits.db_overflow)
    criteria.append(
        Criterion(
            "database connections",
            steady_db <= db_bound and max(s.db_connections for s in samples) <= limits.db_ceiling,
            f"max {warm_db} in warm-up, {steady_db} after (end {steady[-1].db_connections})",
            f"≤ {db_bound} (warm-up max + the pools' overflow, at most {limits.db_ceiling}: every pool full)",
        )
    )
    warm_redis = max(s.redis_clients for s in warm)
    steady_redis = max(s.redis_clients for s in steady)
    criteria.append(
        Criterion(
            "Redis connections",
            steady_redis <= warm_redis + limits.redis_slack,
            f"max {warm_redis} in warm-up, {steady_redis} after (end {steady[-1].redis_clients})",
            f"≤ {warm_redis + limits.redis_slack} (warm-up max + {limits.redis_slack})",
        )
    )
    restarted = [
        group
        for group in ("server", "worker")
        if len({tuple(sorted(getattr(s, f"{group}_rss_by_pid"))) for s in samples}) > 1
    ]
    criteria.append(
        Criterion(
            "no process restarted",
            not restarted,
            f"restarted: {', '.join(restarted)}" if restarted else "the same processes throughout",
            "the same process ids in every sample",
        )
    )
    criteria.append(
        Criterion(
            "WebSockets",
            not sockets.drops
            and not sockets.churn_failures
            and sockets.notifications > 0
            and sockets.churn_cycles > 0,
            f"{sockets.notifications:,} notifications and {sockets.pings:,} pings received, "
            f"{sockets.churn_cycles:,} connect-leave cycles; long-lived sockets lost: "
            f"{dict(sockets.drops) or 0}; churn failures: {dict(sockets.churn_failures) or 0}",
            "no socket lost or refused; notifications delivered",
        )
    )
    failed_jobs = sum(v for k, v in jobs.items() if k.endswith(":failure"))
    unfinished = load.exports["started"] - load.exports["done"]
    criteria.append(
        Criterion(
            "background jobs",
            failed_jobs == 0 and unfinished == 0 and load.exports["done"] > 0,
            f"{int(sum(jobs.values())):,} job runs on the worker ({int(failed_jobs)} failed); exports "
            f"{dict(load.exports)}",
            f"no job failed; every export done within {EXPORT_TIMEOUT:.0f} s",
        )
    )
    return criteria


# --- the run -----------------------------------------------------------------------------------


@contextlib.contextmanager
def celery_worker(env: dict[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``conduit worker`` (prefork, one pool process) until the block ends; SIGTERM is its warm
    shutdown."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--concurrency", "1", "--pool", "prefork"],
            env=env,
            cwd=cwd,
            stdout=output,
            stderr=output,
        )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def job_counts(port: int) -> dict[str, float]:
    """The worker's ``conduit_jobs_total`` as ``name:outcome`` to count (its metrics port)."""
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    counts: defaultdict[str, float] = defaultdict(float)
    for labels, value in scrape(text)["conduit_jobs_total"]:
        counts[f"{labels['name']}:{labels['outcome']}"] += value
    return dict(counts)


async def run(options: argparse.Namespace, stamp: str) -> tuple[dict[str, Any], list[Criterion]]:
    name = f"conduit_soak_{stamp.lower()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(options.pg)
    redis_client = redis.asyncio.Redis.from_url(options.redis)
    redis_port = redis_client.connection_pool.connection_kwargs.get("port", 6379)
    await admin.execute(f'CREATE DATABASE "{name}"')
    OUT.mkdir(exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="conduit-soak-") as tmp:
            server_url = options.pg.replace("postgresql://", "postgresql+asyncpg://", 1).rsplit("/", 1)[0]
            worker_metrics = free_port()
            env = server_env(
                Path(tmp),
                env="production",
                secret_key=secrets.token_urlsafe(48),
                password_pepper=secrets.token_urlsafe(48),
                database_url=f"{server_url}/{name}",
                db_pool_size=str(DB_POOL_SIZE),
                db_max_overflow=str(DB_MAX_OVERFLOW),
                redis_url=options.redis,
                cache_prefix=name,
                rate_limit_prefix=name,
                task_queue=name,
                task_backend="celery",
                ws_heartbeat_interval=str(options.heartbeat),
            )
            say(f"seeding {options.articles} articles by {options.users} users into {name}")
            seeding = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "app.cli", "seed",
                "--users", str(options.users), "--articles", str(options.articles),
                "--favorites", str(options.articles * 2), "--follows", str(options.users * 5),
                "--comments", str(options.articles * 2),
                env=env, cwd=tmp, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            if await seeding.wait():
                raise SystemExit(f"conduit seed failed with status {seeding.returncode}")
            say(f"starting conduit serve --workers {options.workers} and conduit worker")
            database = await asyncpg.connect(f"{options.pg.rsplit('/', 1)[0]}/{name}")
            try:
                accounts = [
                    Account(r["username"], r["email"])
                    for r in await database.fetch("SELECT username, email FROM users")
                ]
                slugs = [r["slug"] for r in await database.fetch("SELECT slug FROM articles")]
                tags = [r["name"] for r in await database.fetch("SELECT name FROM tags")]
            finally:
                await database.close()
            logs = OUT / f"soak-{stamp}"
            worker_env = {**env, "CONDUIT_METRICS_PORT": str(worker_metrics)}
            workers = ["--workers", str(options.workers)]
            with (
                celery_worker(worker_env, Path(tmp), Path(f"{logs}-worker.log")) as worker,
                serve(env, Path(tmp), log=Path(f"{logs}-server.log"), args=workers, ready_timeout=300) as (
                    base,
                    server,
                ),
            ):
                return await drive(
                    options, base, accounts, slugs, tags, server.pid, worker.pid, worker_metrics,
                    name, admin, redis_client, redis_port,
                )  # fmt: skip
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        keys = [key async for key in redis_client.scan_iter(match=f"{name}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await redis_client.delete(*keys[start : start + 1000])
        await redis_client.aclose()


async def drive(
    options: argparse.Namespace,
    base: str,
    accounts: list[Account],
    slugs: list[str],
    tags: list[str],
    server_pid: int,
    worker_pid: int,
    worker_metrics: int,
    database: str,
    admin: asyncpg.Connection,
    redis_client: redis.asyncio.Redis,
    redis_port: int,
) -> tuple[dict[str, Any], list[Criterion]]:
    http_connections = options.concurrency + 8  # the virtual users, and the low-rate loops beside them
    # Idle connections are dropped before uvicorn's keep-alive timeout (5 s) can close them under a
    # request: a client reusing one just as the server closes it sees a ReadError, whoever is right.
    limits = httpx.Limits(
        max_connections=http_connections, max_keepalive_connections=http_connections, keepalive_expiry=2.0
    )
    async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=30, limits=limits) as http:
        load = Load(http, accounts, slugs, tags)
        say(f"serving at {base}; signing in {len(accounts)} accounts")
        signing_in = asyncio.Semaphore(4)

        async def sign_in(account: Account) -> None:
            async with signing_in:
                await load.login(account)

        await asyncio.gather(*(sign_in(account) for account in accounts))
        if not all(account.token for account in accounts):
            raise SystemExit(f"could not sign in every account: {load.stats.examples or load.stats.failures}")
        load.stats = Stats()  # the run counts from here
        sockets = SocketStats()
        stop = asyncio.Event()
        monitor = Monitor(
            load, sockets, server_pid=server_pid, worker_pid=worker_pid, database=database, prefix=database,
            admin=admin, redis_client=redis_client, redis_port=redis_port, warmup=options.warmup,
        )  # fmt: skip
        rng = random.Random(1)
        shares = [accounts[n :: options.concurrency] for n in range(options.concurrency)]
        say(
            f"load for {options.duration} s (warm-up {options.warmup:.0f} s): {options.concurrency} virtual "
            f"users, {options.ws_clients} WebSockets + {options.ws_churn} churning"
        )
        tasks = [
            *(virtual_user(load, share, n, stop) for n, share in enumerate(shares) if share),
            every(options.login_interval, stop, lambda: load.login(rng.choice(accounts))),
            every(PROBE_INTERVAL, stop, lambda: probe(load)),
            exports(load, accounts, stop),
            *(
                long_lived_socket(base, accounts[n % len(accounts)], sockets, stop)
                for n in range(options.ws_clients)
            ),
            *(churning_socket(base, accounts, n, sockets, stop) for n in range(options.ws_churn)),
        ]
        running = [asyncio.create_task(task) for task in tasks]
        await monitor.run(options.interval, options.duration)
        say("load done: waiting for the clients to finish what they started")
        stop.set()
        for ws in list(sockets.open):
            await ws.close()
        _, pending = await asyncio.wait(running, timeout=EXPORT_TIMEOUT + 30)
        for task in pending:
            task.cancel()
        crashed = [error for task in running if not task.cancelled() and (error := task.exception())]
        if crashed:
            raise crashed[0]  # a defect of the soak itself, not a finding about the server
        metrics = await load.call("metrics", "GET", "/metrics")
        server_5xx = None
        if metrics is not None:
            server_5xx = int(
                sum(
                    v
                    for labels, v in scrape(metrics.text)["http_requests_total"]
                    if labels["status"].startswith("5") and labels["route"] != "/health/ready"
                )
            )
        jobs = await job_counts(worker_metrics)
    db_ceiling = (options.workers + 1) * (DB_POOL_SIZE + DB_MAX_OVERFLOW) + options.workers + 1
    overflow = (options.workers + 1) * DB_MAX_OVERFLOW
    bounds = Limits(
        db_ceiling=db_ceiling,
        db_overflow=overflow,
        server_fd_slack=options.workers * DB_MAX_OVERFLOW + options.ws_churn + FD_SLACK,
        worker_fd_slack=DB_MAX_OVERFLOW + FD_SLACK,
        # redis-py's pools never close an idle connection: each keeps as many as it once needed at the
        # same time, which can still rise after the warm-up by up to one per request in flight.
        redis_slack=http_connections,
    )
    criteria = judge(monitor.samples, load, sockets, jobs, server_5xx, bounds)
    operations = {
        operation: {
            "requests": len(values),
            "per_second": round(len(values) / options.duration, 2),
            **{k: round(v, 1) for k, v in percentiles(values).items()},
            "statuses": dict(sorted(load.stats.statuses[operation].items())),
        }
        for operation, values in sorted(load.stats.latencies.items())
    }
    everything = [v for values in load.stats.latencies.values() for v in values]
    result = {
        "responses": load.stats.responses,
        "per_second": round(load.stats.responses / options.duration, 1),
        "latency_ms": {k: round(v, 1) for k, v in percentiles(everything).items()},
        "statuses": dict(sorted(sum(load.stats.statuses.values(), Counter[int]()).items())),
        "failures": dict(load.stats.failures),
        "unexpected": dict(load.stats.unexpected),
        "unexpected_examples": load.stats.examples,
        "operations": operations,
        "websockets": {
            "long_lived": options.ws_clients,
            "churning": options.ws_churn,
            "notifications": sockets.notifications,
            "pings": sockets.pings,
            "resyncs": sockets.resyncs,
            "churn_cycles": sockets.churn_cycles,
            "drops": dict(sockets.drops),
            "churn_failures": dict(sockets.churn_failures),
        },
        "jobs": jobs,
        "exports": dict(load.exports),
        "server_5xx_counted_by_the_server": server_5xx,
        "limits": asdict(bounds),
        "samples": [asdict(s) for s in monitor.samples],
    }
    return result, criteria


async def probe(load: Load) -> None:
    await load.call("health live", "GET", "/health/live")
    started = time.perf_counter()
    response = await load.call(READINESS, "GET", "/health/ready", expect=(200, 503))
    slow = time.perf_counter() - started > PROBE_TIMEOUT
    if response is not None and response.status_code == 200 and not slow:
        load.unready_run = 0
        return
    load.unready_run += 1
    load.longest_unready_run = max(load.longest_unready_run, load.unready_run)
    if response is None:
        load.unready["no answer"] += 1
    elif response.status_code == 503:
        load.unready.update(name for name, state in response.json()["checks"].items() if state != "ok")
    if slow:
        load.unready[f"slower than {PROBE_TIMEOUT:.0f} s"] += 1


# --- the report --------------------------------------------------------------------------------


def markdown(meta: dict[str, Any], result: dict[str, Any], criteria: list[Criterion]) -> str:
    samples = result["samples"]
    steady = [s for s in samples if not s["warmup"]]
    lines = [
        f"### Soak, {meta['date']}: {'PASSED' if all(c.passed for c in criteria) else 'FAILED'}",
        "",
        f"- **How**: `{meta['command']}`: {meta['duration_s']} s of load, the first {meta['warmup_s']:.0f} s "
        f"counted as warm-up; `conduit serve --workers {meta['workers']}` and `conduit worker` (prefork, "
        "1 pool process) on PostgreSQL + Redis (cache, rate limits, pub/sub, broker); "
        f"{meta['concurrency']} virtual users, {meta['ws_clients']} long-lived and {meta['ws_churn']} "
        f"churning WebSockets, a login every {meta['login_interval_s']} s, exports one after another, "
        f"probes every {PROBE_INTERVAL:.0f} s; {meta['users']} users and {meta['articles']} articles seeded.",
        f"- **Machine**: {meta['machine']['cores']} cores ({meta['machine']['cpu']}), Python "
        f"{meta['machine']['python']}; the load generator, PostgreSQL and Redis share it with the server.",
        f"- **Load**: {result['responses']:,} responses ({result['per_second']:,} req/s), latency p50 "
        f"{result['latency_ms']['p50']:.1f} ms, p99 {result['latency_ms']['p99']:.1f} ms; statuses "
        f"{result['statuses']}; {result['websockets']['notifications']:,} notifications pushed to the "
        "sockets.",
        "",
        "| criterion | measured | limit | |",
        "| --- | --- | --- | --- |",
        *(
            f"| {c.name} | {c.measured} | {c.limit} | {'pass' if c.passed else '**FAIL**'} |"
            for c in criteria
        ),
        "",
        "| operation | requests | req/s | p50 ms | p90 ms | p99 ms | max ms | statuses |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        *(
            f"| {name} | {op['requests']:,} | {op['per_second']} | {op['p50']:.1f} | {op['p90']:.1f} | "
            f"{op['p99']:.1f} | {op['max']:.1f} | "
            f"{', '.join(f'{k}: {v}' for k, v in op['statuses'].items())} |"
            for name, op in result["operations"].items()
        ),
    ]
    if steady:
        lines += [
            "",
            "| resource | first sample | after warm-up | end | max after warm-up |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for key, label in (
            ("server_rss_mb", "server RSS, MB"),
            ("worker_rss_mb", "worker RSS, MB"),
            ("server_fds", "server fds"),
            ("worker_fds", "worker fds"),
            ("db_connections", "database connections"),
            ("redis_clients", "Redis connections"),
            ("redis_keys", "Redis keys of the run"),
            ("websockets", "WebSockets open (server's gauge)"),
        ):
            lines.append(
                f"| {label} | {samples[0][key]} | {steady[0][key]} | {steady[-1][key]} | "
                f"{max(s[key] for s in steady)} |"
            )
    if result["unexpected_examples"]:
        lines += [
            "",
            "Unexpected responses (first ones):",
            "",
            *(f"- `{e}`" for e in result["unexpected_examples"]),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=600, help="seconds of load (default 600)")
    parser.add_argument(
        "--warmup", type=float, help="seconds counted as warm-up (default: 20%% of the duration)"
    )
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--concurrency", type=int, default=12, help="virtual users issuing requests")
    parser.add_argument("--workers", type=int, default=2, help="conduit serve --workers")
    parser.add_argument("--ws-clients", type=int, default=40, help="long-lived WebSockets")
    parser.add_argument("--ws-churn", type=int, default=8, help="WebSocket clients that connect and leave")
    parser.add_argument("--login-interval", type=float, default=3.0, help="seconds between logins")
    parser.add_argument("--heartbeat", type=int, default=10, help="CONDUIT_WS_HEARTBEAT_INTERVAL, seconds")
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--pg", default=PG, help="a PostgreSQL URL to create the scratch database from")
    parser.add_argument("--redis", default=REDIS)
    options = parser.parse_args()
    if options.warmup is None:
        options.warmup = options.duration * 0.2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    result, criteria = asyncio.run(run(options, stamp))
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "uv run python -m bench.soak " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "duration_s": options.duration,
        "warmup_s": options.warmup,
        "interval_s": options.interval,
        "concurrency": options.concurrency,
        "workers": options.workers,
        "ws_clients": options.ws_clients,
        "ws_churn": options.ws_churn,
        "login_interval_s": options.login_interval,
        "heartbeat_s": options.heartbeat,
        "users": options.users,
        "articles": options.articles,
    }
    passed = all(c.passed for c in criteria)
    document = {**meta, "passed": passed, "criteria": [asdict(c) for c in criteria], **result}
    (OUT / f"soak-{stamp}.json").write_text(json.dumps(document, indent=2))
    summary = markdown(meta, result, criteria)
    (OUT / f"soak-{stamp}.md").write_text(summary)
    print(f"\n{summary}\nwritten to bench/out/soak-{stamp}.json and .md")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
