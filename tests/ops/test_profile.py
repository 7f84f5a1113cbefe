"""``?profile=1``: a pyinstrument profile of the request, in development with profiling on, only."""

from __future__ import annotations

import pytest

from tests.conftest import ClientFactory


async def test_a_profile_of_the_request_in_development(make_client: ClientFactory) -> None:
    client = await make_client(env="development", profiling_enabled=True)
    response = await client.get("/tags?profile=1")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "pyinstrument" in response.text
    assert (await client.get("/tags")).json() == {"tags": []}


@pytest.mark.parametrize(
    "overrides",
    [
        {"env": "production", "profiling_enabled": True},
        {"env": "test", "profiling_enabled": True},
        {"env": "development", "profiling_enabled": False},
    ],
)
async def test_no_profile_anywhere_else(make_client: ClientFactory, overrides: dict[str, object]) -> None:
    client = await make_client(**overrides)
    response = await client.get("/tags?profile=1")
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"tags": []}
