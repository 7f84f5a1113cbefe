"""Load benchmark: Conduit on PostgreSQL (+ Redis), 1 worker, against anchors measured in the same run.

    uv run python -m bench [--duration 10] [--connections 64] [--articles 10000] [--redis] [--keep]

Creates a scratch PostgreSQL database, seeds it through the service layer (``conduit seed``), serves
Conduit and the anchor app (``bench/anchor.py``) with uvicorn, uvloop and httptools, one worker each,
then drives every scenario with ``wrk`` and reports requests/s, latency percentiles and non-2xx counts,
also as ratios to the anchors. Results go to ``bench/out/`` as JSON and Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import bcrypt

from app.core.config import Settings
from bench.bulk import bulk_seed

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
LUA = ROOT / "bench" / "request.lua"
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/14")
PASSWORD = "conduit-demo-2026"  # every seeded user's (app/services/seed.py)


@dataclass
class Result:
    scenario: str
    group: str  # which anchor it is compared with, and the target ratio
    requests_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int
    errors: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server at {url} did not come up")


def call(method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(output: str) -> tuple[float, dict[int, float], int, int]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    percentiles = {
        int(p): _ms(v, u)
        for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return (
        rps,
        percentiles,
        int(non_2xx.group(1)) if non_2xx else 0,
        sum(int(n) for n in errors.groups()) if errors else 0,
    )


def wrk(
    base: str, args: list[str], *, duration: int, connections: int
) -> tuple[float, dict[int, float], int, int]:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        str(LUA),
        base,
        "--",
        *args,
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return parse_wrk(output)


def bcrypt_verify_rate(rounds: int, seconds: float = 5.0) -> float:
    """Raw bcrypt verifications per second at ``rounds``, on every core (the server's ceiling)."""
    hashed = bcrypt.hashpw(b"x" * 44, bcrypt.gensalt(rounds))
    workers = os.cpu_count() or 1
    deadline = time.monotonic() + seconds

    def spin() -> int:
        done = 0
        while time.monotonic() < deadline:
            bcrypt.checkpw(b"x" * 44, hashed)
            done += 1
        return done

    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        total = sum(pool.map(lambda _: spin(), range(workers)))
    return total / (time.monotonic() - started)


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(PG)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--articles", type=int, default=10_000)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database (its name is printed)")
    parser.add_argument("--database", help="reuse a database kept by --keep instead of seeding a new one")
    parser.add_argument(
        "--scale",
        type=int,
        help="seed this many articles with COPY (bench/bulk.py) instead of the service layer",
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        help="cache in Redis ($BENCH_REDIS) instead of in process, as with N workers",
    )
    options = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    database = options.database or f"conduit_bench_{stamp.lower()}"
    workdir = Path(tempfile.mkdtemp(prefix="conduit-bench-"))
    if not options.database:
        asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
    dsn = f"{PG.rsplit('/', 1)[0]}/{database}"
    env = {
        **os.environ,
        "CONDUIT_ENV": "production",
        "CONDUIT_SECRET_KEY": "bench-secret-key-" + "k" * 40,
        "CONDUIT_PASSWORD_PEPPER": "bench-pepper-" + "p" * 40,
        "CONDUIT_VAR_DIR": str(workdir),
        "CONDUIT_DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
        **({"CONDUIT_REDIS_URL": REDIS} if options.redis else {}),
        "CONDUIT_CACHE_PREFIX": f"bench-{stamp}",
        "CONDUIT_RATE_LIMIT_ENABLED": "false",  # all load comes from one address
        "CONDUIT_LOG_LEVEL": "WARNING",
    }
    servers: list[subprocess.Popen[bytes]] = []
    try:
        print(f"seeding {options.scale or options.articles} articles into {database} ...", flush=True)
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "app.cli", "migrate"],
            check=True,
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        if options.scale and not options.database:
            asyncio.run(
                bulk_seed(
                    dsn,
                    Settings(
                        _env_file=None,
                        var_dir=workdir,
                        password_pepper=env["CONDUIT_PASSWORD_PEPPER"],
                        secret_key=env["CONDUIT_SECRET_KEY"],
                    ),
                    options.scale,
                )
            )
        elif not options.database:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "app.cli",
                    "seed",
                    "--users",
                    "100",
                    "--articles",
                    str(options.articles),
                    "--favorites",
                    "20000",
                    "--follows",
                    "2000",
                    "--comments",
                    "20000",
                ],
                check=True,
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
            )
        seed_seconds = time.monotonic() - started
        app_port, anchor_port = free_port(), free_port()
        servers.append(
            subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--port", str(app_port)],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        servers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bench.anchor:app",
                    "--port",
                    str(anchor_port),
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                env={**env, "BENCH_DSN": dsn},
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        api = f"http://127.0.0.1:{app_port}/api/v1"
        anchor = f"http://127.0.0.1:{anchor_port}"
        wait_ready(f"{api}/tags")
        wait_ready(f"{anchor}/hello")

        users = call("GET", f"{api}/articles?limit=100")["articles"]
        slugs = [article["slug"] for article in users]
        authors = sorted({article["author"]["username"] for article in users})
        reader = authors[0]
        token = call(
            "POST", f"{api}/users/login", {"user": {"email": f"{reader}@example.com", "password": PASSWORD}}
        )["user"]["token"]
        for author in authors[1:21]:
            call("POST", f"{api}/profiles/{author}/follow", token=token)
        login_body = json.dumps({"user": {"email": f"{authors[1]}@example.com", "password": PASSWORD}})
        prefix = "/api/v1"
        scenarios: list[tuple[str, str, str, list[str]]] = [
            ("anchor: hello", "anchor", anchor, ["GET", "-", "-", "/hello"]),
            (
                "anchor: select",
                "anchor",
                anchor,
                ["GET", "-", "-", *[f"/select?id={n}" for n in range(1, 101)]],
            ),
            # The hello endpoint after 350 µs of CPU work (about a cached Conduit read's cost): how
            # the tail of a saturated single-process server looks when the application is not the cause.
            ("anchor: hello + 350 µs CPU", "reference", anchor, ["GET", "-", "-", "/busy?us=350"]),
            ("tags", "hello", api, ["GET", "-", "-", f"{prefix}/tags"]),
            ("articles, anonymous", "hello", api, ["GET", "-", "-", f"{prefix}/articles?limit=20"]),
            (
                "article, anonymous",
                "hello",
                api,
                ["GET", "-", "-", *[f"{prefix}/articles/{s}" for s in slugs]],
            ),
            ("articles, signed in", "select", api, ["GET", token, "-", f"{prefix}/articles?limit=20"]),
            ("feed", "select", api, ["GET", token, "-", f"{prefix}/articles/feed?limit=20"]),
            (
                "article, signed in",
                "select",
                api,
                ["GET", token, "-", *[f"{prefix}/articles/{s}" for s in slugs]],
            ),
            ("profile", "select", api, ["GET", token, "-", *[f"{prefix}/profiles/{a}" for a in authors]]),
            (
                "comments",
                "select",
                api,
                ["GET", "-", "-", *[f"{prefix}/articles/{s}/comments" for s in slugs]],
            ),
            (
                "favorite + unfavorite",
                "writes",
                api,
                ["TOGGLE", token, "-", *[f"{prefix}/articles/{s}/favorite" for s in slugs]],
            ),
            ("login", "bcrypt", api, ["POST", "-", login_body, f"{prefix}/users/login"]),
        ]
        results: list[Result] = []
        for name, group, base, args in scenarios:
            # Warm-up (caches, pools), but not for logins: there is nothing to warm, and the logins it
            # leaves queued behind bcrypt would run into the measured interval.
            if group != "bcrypt":
                wrk(base, args, duration=2, connections=options.connections)
            rps, percentiles, non_2xx, errors = wrk(
                base, args, duration=options.duration, connections=options.connections
            )
            result = Result(
                name,
                group,
                rps,
                percentiles.get(50, 0),
                percentiles.get(90, 0),
                percentiles.get(99, 0),
                non_2xx,
                errors,
            )
            results.append(result)
            print(
                f"{name:24} {rps:9.0f} req/s  p50 {result.p50_ms:7.2f} ms  "
                f"p99 {result.p99_ms:7.2f} ms  non-2xx {non_2xx}",
                flush=True,
            )
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            server.wait(timeout=30)
        if options.keep or options.database:
            print(f"kept database {database}")
        else:
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        shutil.rmtree(workdir, ignore_errors=True)
    # Once the servers have stopped (logins still queued at the end of the load finish first), so
    # that nothing else competes for the cores.
    bcrypt_rate = bcrypt_verify_rate(int(os.environ.get("CONDUIT_BCRYPT_ROUNDS", "12")))
    report(results, bcrypt_rate, seed_seconds, options, stamp)


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def report(
    results: list[Result], bcrypt_rate: float, seed_seconds: float, options: argparse.Namespace, stamp: str
) -> None:
    by_name = {r.scenario: r for r in results}
    anchors = {
        "hello": by_name["anchor: hello"].requests_per_second,
        "select": by_name["anchor: select"].requests_per_second,
    }
    targets = {"hello": ("hello", 0.5), "select": ("select", 0.5), "writes": ("select", 0.3)}
    rows = []
    for r in results:
        ratio, target, verdict = "", "", ""
        if r.group in targets:
            anchor, goal = targets[r.group]
            value = r.requests_per_second / anchors[anchor]
            ratio, target = f"{value:.2f} x {anchor}", f"≥ {goal} x {anchor}"
            verdict = "met" if value >= goal else "missed"
        elif r.group == "bcrypt":
            value = r.requests_per_second / bcrypt_rate
            ratio, target = f"{value:.2f} x bcrypt", "≥ 0.9 x bcrypt"
            verdict = "met" if value >= 0.9 else "missed"
        reads = r.group in ("hello", "select")
        tail_ok = not reads or (r.p99_ms <= 4 * r.p50_ms and r.p99_ms <= 250)
        rows.append(
            f"| {r.scenario} | {r.requests_per_second:,.0f} | {r.p50_ms:.2f} | {r.p90_ms:.2f} "
            f"| {r.p99_ms:.2f} | "
            f"{r.non_2xx + r.errors} | {ratio} | {target} | {verdict}{'' if tail_ok else ', tail missed'} |"
        )
    table = "\n".join(
        [
            "| scenario | req/s | p50 ms | p90 ms | p99 ms | non-2xx + errors | ratio | target | |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
            *rows,
        ]
    )
    meta = {
        "date": stamp,
        "machine": machine(),
        "duration_s": options.duration,
        "connections": options.connections,
        "articles": options.scale or options.articles,
        "cache": "redis" if options.redis else "in-process",
        "seed_seconds": round(seed_seconds, 1),
        "bcrypt_verify_per_s": round(bcrypt_rate, 2),
    }
    OUT.mkdir(exist_ok=True)
    (OUT / f"{stamp}.json").write_text(
        json.dumps({**meta, "results": [asdict(r) for r in results]}, indent=2)
    )
    (OUT / f"{stamp}.md").write_text(f"{json.dumps(meta)}\n\n{table}\n")
    print(f"\n{json.dumps(meta)}\n\n{table}")


if __name__ == "__main__":
    main()
