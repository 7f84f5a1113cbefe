"""Request ids: the client's X-Request-ID when acceptable, a new one otherwise, echoed on every
response (errors included) and carried by every line logged during the request."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import ClientFactory
from tests.ops.conftest import LogLines, access_lines

GENERATED = re.compile(r"[0-9a-f]{32}")


async def _boom() -> None:
    raise RuntimeError("the route failed")


@pytest.fixture
async def raw_client(make_client: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app that also has ``GET /boom`` (an unhandled error), which sees the 500s."""
    app = (await make_client(log_level="INFO")).app  # type: ignore[attr-defined]
    app.add_api_route("/boom", _boom)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_the_clients_id_is_kept_and_echoed(raw_client: httpx.AsyncClient) -> None:
    response = await raw_client.get("/api/v1/tags", headers={"X-Request-ID": "req-42.A_b"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-42.A_b"


async def test_an_id_is_generated_when_there_is_none(raw_client: httpx.AsyncClient) -> None:
    ids = [(await raw_client.get("/api/v1/tags")).headers["x-request-id"] for _ in range(2)]
    assert all(GENERATED.fullmatch(value) for value in ids)
    assert ids[0] != ids[1]


@pytest.mark.parametrize("given", ["", "x" * 129, "two words", "semi;colon", "quote'", "a/b"])
async def test_an_unacceptable_id_is_replaced(raw_client: httpx.AsyncClient, given: str) -> None:
    response = await raw_client.get("/api/v1/tags", headers={"X-Request-ID": given})
    assert GENERATED.fullmatch(response.headers["x-request-id"])


async def test_the_longest_acceptable_id_is_kept(raw_client: httpx.AsyncClient) -> None:
    response = await raw_client.get("/api/v1/tags", headers={"X-Request-ID": "x" * 128})
    assert response.headers["x-request-id"] == "x" * 128


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/nowhere", 404),
        ("/api/v1/articles/no-such-article", 404),
        ("/api/v1/articles?limit=many", 422),
        ("/boom", 500),
    ],
)
async def test_errors_carry_the_id_too(
    raw_client: httpx.AsyncClient, log_lines: LogLines, path: str, status: int
) -> None:
    response = await raw_client.get(path, headers={"X-Request-ID": "error-case"})
    assert response.status_code == status
    assert response.headers["x-request-id"] == "error-case"
    lines = [line for line in log_lines() if line["logger"].startswith("conduit.")]  # not httpx's own
    assert [line["status"] for line in access_lines(lines)] == [status]
    # Every line logged during the request carries its id: on a 500, the error's too.
    assert all(line.get("request_id") == "error-case" for line in lines)
    if status == 500:
        assert any(line["event"].startswith("unhandled error on GET /boom") for line in lines)


async def test_rate_limited_responses_carry_the_id(make_client: ClientFactory) -> None:
    client = await make_client(rate_limit_default_ip="1/minute")
    assert (await client.get("/tags")).status_code == 200
    response = await client.get("/tags", headers={"X-Request-ID": "throttled"})
    assert response.status_code == 429
    assert response.headers["x-request-id"] == "throttled"
