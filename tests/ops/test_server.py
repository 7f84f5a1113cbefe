"""Real ``conduit serve`` processes: JSON lines in production (uvicorn's and the migrations' too, and
no access line but ours), several workers adding up their metrics (Prometheus multiprocess mode), and
workers slow to start waited for rather than killed."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from bench.ws_latency import free_port, serve, server_env
from tests.conftest import TEST_REDIS_URL

SECRETS = {"secret_key": "k" * 48, "password_pepper": "p" * 40}


def test_import_order_allows_multiprocess_mode() -> None:
    """The CLI must choose the mode before prometheus-client is imported: importing it must not."""
    code = "import sys, app.cli; assert 'prometheus_client' not in sys.modules, 'imported too early'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_production_logs_are_json_lines(tmp_path: Path) -> None:
    env = server_env(tmp_path, env="production", log_level="INFO", **SECRETS)
    log = tmp_path / "server.log"
    with serve(env, tmp_path, log=log) as (base, _):
        response = httpx.get(f"{base}/api/v1/tags", headers={"X-Request-ID": "from-client"}, trust_env=False)
    assert response.headers["x-request-id"] == "from-client"

    lines = [orjson.loads(line) for line in log.read_text().splitlines()]  # every line is JSON
    ours = [line for line in lines if line.get("request_id") == "from-client"]
    assert [(line["logger"], line["route"], line["status"]) for line in ours] == [
        ("conduit.access", "/api/v1/tags", 200)
    ]
    loggers = {line["logger"] for line in lines}
    assert {"uvicorn.error", "alembic.runtime.migration"} <= loggers
    assert "uvicorn.access" not in loggers


def _tags_served(metrics: str) -> float:
    series = r'^http_requests_total\{method="GET",route="/api/v1/tags",status="200"\} (\S+)$'
    match = re.search(series, metrics, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.mark.skipif(not TEST_REDIS_URL, reason="several workers need Redis: set CONDUIT_TEST_REDIS_URL")
def test_several_workers_add_up_their_metrics(tmp_path: Path) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    env = server_env(
        tmp_path, redis_url=str(TEST_REDIS_URL), cache_prefix=prefix, rate_limit_prefix=prefix, **SECRETS
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180  # generous: several processes start on a busy machine
        while True:
            try:
                before = _tags_served(httpx.get(f"{base}/metrics", trust_env=False).text)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, "the server did not start"
                time.sleep(0.2)
        for _ in range(20):  # a connection each: the kernel hands them to either worker
            assert httpx.get(f"{base}/api/v1/tags", trust_env=False).status_code == 200
        # Whichever worker answers the scrape reports the requests of both.
        for _ in range(4):
            assert _tags_served(httpx.get(f"{base}/metrics", trust_env=False).text) == before + 20
        pids = {path.stem.rsplit("_", 1)[1] for path in (tmp_path / "metrics" / "serve").glob("counter_*.db")}
        assert len(pids) >= 2  # both workers write their values to the shared directory
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.skipif(not TEST_REDIS_URL, reason="several workers need Redis: set CONDUIT_TEST_REDIS_URL")
def test_workers_slow_to_start_are_waited_for(tmp_path: Path) -> None:
    """A worker that takes longer to start than uvicorn's default 5 s health check (a busy or
    CPU-throttled host) is waited for, not killed and replaced over and over, never serving."""
    slow = tmp_path / "slow"
    slow.mkdir()
    # Each worker is a fresh process (multiprocessing spawn): 8 s before it even imports the app.
    (slow / "sitecustomize.py").write_text(
        "import sys, time\nif 'spawn_main' in ' '.join(sys.orig_argv):\n    time.sleep(8)\n"
    )
    prefix = f"test-{uuid.uuid4().hex}"
    env = server_env(
        tmp_path,
        redis_url=str(TEST_REDIS_URL),
        cache_prefix=prefix,
        rate_limit_prefix=prefix,
        log_level="INFO",
        worker_healthcheck_timeout="120",  # generous: the point is that it is not 5 s
        **SECRETS,
    )
    env["PYTHONPATH"] = str(slow)
    log = tmp_path / "server.log"
    with serve(env, tmp_path, log=log, args=["--workers", "2"], ready_timeout=300) as (base, _):
        assert httpx.get(f"{base}/api/v1/tags", trust_env=False).status_code == 200
    assert "died" not in log.read_text()
