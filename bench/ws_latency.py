"""WebSocket delivery latency: from the start of a comment's POST to its notification on the article
author's socket, over real ``conduit serve`` processes on loopback.

    uv run python -m bench.ws_latency [--comments 200] [--pg URL] [--redis URL]

Two setups: the embedded default (one process, SQLite, in-process pub/sub), then two processes sharing
a scratch PostgreSQL database and Redis, the socket on one and the comments posted to the other. Rate
limits are relaxed (they would throttle one user posting hundreds of comments); nothing else changes.
Prints the median, p90 and maximum of each. ``tests/realtime/test_fanout.py`` reuses the helpers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/14")
PASSWORD = "correct-horse-9"
RELAXED = "100000/minute"
RATE_LIMITS = ("default_ip", "login_ip", "login_account", "register_ip", "refresh_family", "writes_user")


def server_env(var_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a ``conduit serve``: ``settings`` as ``CONDUIT_*`` variables, rate limits
    relaxed, nothing inherited from a ``CONDUIT_*`` of the caller's."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONDUIT_")}
    env |= {f"CONDUIT_RATE_LIMIT_{rule.upper()}": RELAXED for rule in RATE_LIMITS}
    env |= {"CONDUIT_VAR_DIR": str(var_dir), "CONDUIT_LOG_LEVEL": "WARNING"}
    env |= {f"CONDUIT_{name.upper()}": value for name, value in settings.items()}
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(
    env: dict[str, str],
    cwd: Path,
    *,
    log: Path | None = None,
    args: Sequence[str] = (),
    ready_timeout: float = 60,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``conduit serve`` on a free port until the block ends (SIGTERM, as a supervisor stops it):
    its base URL and process, once it answers (within ``ready_timeout`` seconds). Its output goes to
    ``log`` if given; ``args`` are more options (``--workers 2``)."""
    port = free_port()
    with open(log, "wb") if log else nullcontext() as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port), *args],
            env=env,
            cwd=cwd,
            stdout=output,
            stderr=output,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process, ready_timeout)
        yield base, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"conduit serve exited with {process.returncode}")
        try:
            httpx.get(f"{base}/api/v1/tags", timeout=1, trust_env=False)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"conduit serve at {base} did not come up")


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://", 1) + "/api/v1/ws"


@asynccontextmanager
async def live_socket(base: str, token: str) -> AsyncIterator[ClientConnection]:
    """An authenticated socket on the server at ``base``, once it is ready."""
    async with connect(ws_url(base), proxy=None) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        assert orjson.loads(await ws.recv()) == {"type": "ready"}
        yield ws


async def register(http: httpx.AsyncClient, username: str) -> str:
    user = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
    response = await http.post("/api/v1/users", json={"user": user})
    response.raise_for_status()
    token: str = response.json()["user"]["token"]
    return token


@dataclass
class Delivery:
    seconds: float  # from the start of the POST to the notification's arrival
    response_seconds: float  # from the start of the POST to its response, for comparison
    comment: dict[str, Any]  # as the POST answered
    message: dict[str, Any]  # as the socket received it


async def _timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    response = await request
    return response, time.perf_counter()


async def comment_deliveries(socket_base: str, post_base: str, comments: int) -> list[Delivery]:
    """An author's socket on ``socket_base``; someone else comments ``comments`` times on their
    article through ``post_base``, one comment after another's notification arrived."""
    tag = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(base_url=post_base, trust_env=False, timeout=30) as http:
        author = await register(http, f"author{tag}")
        reader = {"Authorization": f"Token {await register(http, f'reader{tag}')}"}
        article = {"title": f"Latency {tag}", "description": "d", "body": "b"}
        response = await http.post(
            "/api/v1/articles", json={"article": article}, headers={"Authorization": f"Token {author}"}
        )
        response.raise_for_status()
        path = f"/api/v1/articles/{response.json()['article']['slug']}/comments"
        deliveries = []
        async with live_socket(socket_base, author) as ws:
            for n in range(comments):
                started = time.perf_counter()
                # The notification may arrive before the POST's response: wait for both at once.
                post = asyncio.create_task(
                    _timed(http.post(path, json={"comment": {"body": f"#{n}"}}, headers=reader))
                )
                while (message := orjson.loads(await ws.recv()))["type"] != "notification":
                    pass  # a ping (every 30 s) or a resync: not what is measured
                arrived = time.perf_counter()
                response, responded = await post
                response.raise_for_status()
                deliveries.append(
                    Delivery(arrived - started, responded - started, response.json()["comment"], message)
                )
        return deliveries


def summary(deliveries: list[Delivery]) -> str:
    ms = sorted(delivery.seconds * 1000 for delivery in deliveries)
    p90 = ms[int(len(ms) * 0.9) - 1]
    response = statistics.median(delivery.response_seconds * 1000 for delivery in deliveries)
    return (
        f"delivery median {statistics.median(ms):.1f} ms, p90 {p90:.1f} ms, max {ms[-1]:.1f} ms "
        f"(n={len(ms)}); the POST's own response: median {response:.1f} ms"
    )


async def embedded(comments: int) -> str:
    with tempfile.TemporaryDirectory() as tmp, serve(server_env(Path(tmp)), Path(tmp)) as (base, _):
        return summary(await comment_deliveries(base, base, comments))


async def two_processes(comments: int, pg: str, redis: str) -> str:
    name = f"conduit_wsbench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory() as tmp:
            server = pg.replace("postgresql://", "postgresql+asyncpg://", 1).rsplit("/", 1)[0]
            env = server_env(
                Path(tmp),
                database_url=f"{server}/{name}",
                secret_key=secrets.token_urlsafe(48),
                password_pepper=secrets.token_urlsafe(48),
                redis_url=redis,
                cache_prefix=f"wsbench-{uuid.uuid4().hex[:8]}",
                task_backend="inprocess",
            )
            with serve(env, Path(tmp)) as (first, _), serve(env, Path(tmp)) as (second, _):
                return summary(await comment_deliveries(first, second, comments))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--comments", type=int, default=200)
    parser.add_argument("--pg", default=PG)
    parser.add_argument("--redis", default=REDIS)
    args = parser.parse_args()
    print(f"embedded (1 process, SQLite, in-process pub/sub): {asyncio.run(embedded(args.comments))}")
    across = asyncio.run(two_processes(args.comments, args.pg, args.redis))
    print(f"2 processes (PostgreSQL, Redis pub/sub): {across}")


if __name__ == "__main__":
    main()
