"""The Prometheus exposition: HTTP series labelled by route template (never the raw path), the token,
and the pool, cache, statement, rate-limit and job metrics moving with what the app does."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid

import httpx
import pytest
from pydantic import SecretStr

from app.core.metrics import UNMATCHED
from app.core.observability import serve_metrics_port
from app.core.outbox import Job
from app.services.housekeeping import HOUSEKEEPING
from tests.conftest import ClientFactory
from tests.factories import Api
from tests.ops.conftest import sample


async def _exposition(client: httpx.AsyncClient, **headers: str) -> str:
    response = await client.get("http://test/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def _never_called() -> None:
    raise AssertionError("not to be called")


async def test_http_series_are_labelled_by_route_template(make_client: ClientFactory) -> None:
    client = await make_client()
    unused = f"/unused-{uuid.uuid4().hex}"
    client.app.add_api_route(unused, _never_called, methods=["DELETE"])  # type: ignore[attr-defined]
    await client.get("/articles/a-raw-slug-7d3f")
    await client.get("/no/such/route/9c1e")
    text = await _exposition(client)
    assert 'http_requests_total{method="GET",route="/api/v1/articles/{slug}",status="404"}' in text
    assert f'http_requests_total{{method="GET",route="{UNMATCHED}",status="404"}}' in text
    bucket = 'http_request_duration_seconds_bucket{le="0.005",method="GET",route="/api/v1/articles/{slug}"'
    assert bucket in text
    assert "a-raw-slug-7d3f" not in text and "9c1e" not in text
    # Every route's success exists from the start, at zero, so that rates are defined before traffic.
    assert f'http_requests_total{{method="DELETE",route="{unused}",status="200"}} 0.0' in text
    assert "http_requests_in_progress" in text and "conduit_db_pool_size" in text


async def test_the_counters_count_each_request(make_client: ClientFactory) -> None:
    client = await make_client()
    labels = {"method": "GET", "route": "/api/v1/tags", "status": "200"}
    before = sample("http_requests_total", **labels)
    durations = sample("http_request_duration_seconds_count", **labels)
    for _ in range(3):
        await client.get("/tags")
    assert sample("http_requests_total", **labels) == before + 3
    assert sample("http_request_duration_seconds_count", **labels) == durations + 3


async def test_in_progress_counts_the_request_being_served(make_client: ClientFactory) -> None:
    client = await make_client()

    async def in_progress() -> float:
        return sample("http_requests_in_progress")

    client.app.add_api_route("/in-progress", in_progress)  # type: ignore[attr-defined]
    idle = sample("http_requests_in_progress")
    assert (await client.get("http://test/in-progress")).json() == idle + 1
    assert sample("http_requests_in_progress") == idle


async def test_the_metrics_token_is_required_when_set(make_client: ClientFactory) -> None:
    client = await make_client(metrics_token="scrape-secret-1")
    assert (await client.get("http://test/metrics")).status_code == 401
    wrong = await client.get("http://test/metrics", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert "http_requests_total" in await _exposition(client, Authorization="Bearer scrape-secret-1")


async def test_no_route_when_disabled_or_on_a_port_of_its_own(make_client: ClientFactory) -> None:
    for overrides in ({"metrics_enabled": False}, {"metrics_port": 9464}):
        client = await make_client(**overrides)
        assert (await client.get("http://test/metrics")).status_code == 404


def test_the_metrics_port_serves_the_exposition_with_the_token() -> None:
    server = serve_metrics_port("127.0.0.1", 0, None)
    guarded = serve_metrics_port("127.0.0.1", 0, SecretStr("port-secret"))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as r:
            assert b"http_requests_total" in r.read()
        url = f"http://127.0.0.1:{guarded.server_port}/metrics"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 401
        request = urllib.request.Request(url, headers={"Authorization": "Bearer port-secret"})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert b"conduit_jobs_total" in r.read()
    finally:
        server.shutdown()
        guarded.shutdown()


async def test_pool_gauges_follow_checkouts(make_client: ClientFactory) -> None:
    client = await make_client()
    engine = client.app.state.engine  # type: ignore[attr-defined]
    assert sample("conduit_db_pool_size") >= engine.sync_engine.pool.size() > 0
    idle = sample("conduit_db_pool_checked_out")
    async with engine.connect() as connection:
        await connection.exec_driver_sql("SELECT 1")
        assert sample("conduit_db_pool_checked_out") == idle + 1
    assert sample("conduit_db_pool_checked_out") == idle


async def test_cache_and_statement_metrics_move(make_client: ClientFactory) -> None:
    client = await make_client()
    api = Api(client)
    slug = (await api.article(await api.register("author")))["slug"]
    labels = {"method": "GET", "route": "/api/v1/articles/{slug}"}
    hits, misses = sample("conduit_cache_hits_total"), sample("conduit_cache_misses_total")
    statements = sample("http_request_sql_statements_sum", **labels)
    reads = sample("http_request_sql_statements_count", **labels)

    await client.get(f"/articles/{slug}")  # a miss: the article is read with one statement
    assert sample("conduit_cache_misses_total") == misses + 1
    assert sample("http_request_sql_statements_sum", **labels) == statements + 1
    await client.get(f"/articles/{slug}")  # a hit: no statement
    assert sample("conduit_cache_hits_total") == hits + 1
    assert sample("http_request_sql_statements_sum", **labels) == statements + 1
    assert sample("http_request_sql_statements_count", **labels) == reads + 2
    assert sample("http_request_sql_statements_bucket", le="0.0", **labels) >= 1


async def test_rate_limit_rejections_are_counted_by_limit(make_client: ClientFactory) -> None:
    client = await make_client(rate_limit_default_ip="2/minute")
    before = sample("conduit_rate_limit_rejections_total", limit="global-ip")
    statuses = [(await client.get("/tags")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert sample("conduit_rate_limit_rejections_total", limit="global-ip") == before + 1
    rejected = {"method": "GET", "route": UNMATCHED, "status": "429"}  # answered before routing
    assert sample("http_requests_total", **rejected) >= 1


async def test_in_process_jobs_are_counted_by_name_and_outcome(make_client: ClientFactory) -> None:
    client = await make_client()
    queue = client.app.state.jobs  # type: ignore[attr-defined]
    ok = {"queue": "inprocess", "name": HOUSEKEEPING, "outcome": "success"}
    failed = {"queue": "inprocess", "name": HOUSEKEEPING, "outcome": "failure"}
    runs, durations = sample("conduit_jobs_total", **ok), sample("conduit_job_duration_seconds_count", **ok)
    failures = sample("conduit_jobs_total", **failed)

    await queue.enqueue((Job(HOUSEKEEPING, {}),))
    await queue.enqueue((Job(HOUSEKEEPING, {"unexpected": 1}),))  # a TypeError: fails, no retry
    await queue.drain(60)

    assert sample("conduit_jobs_total", **ok) == runs + 1
    assert sample("conduit_job_duration_seconds_count", **ok) == durations + 1
    assert sample("conduit_jobs_total", **failed) == failures + 1
    exposition = await _exposition(client)
    assert f'conduit_jobs_total{{name="{HOUSEKEEPING}",outcome="success",queue="inprocess"}}' in exposition
