"""Trusted hosts, proxy headers (client address and scheme), HSTS and the HTTPS redirect."""

from __future__ import annotations

import httpx
import pytest
from fastapi import Request

from tests.conftest import ClientFactory
from tests.factories import assert_problem

HSTS = "max-age=63072000; includeSubDomains"
PROXY = "10.0.0.1"
HOSTS = "conduit.example,*.conduit.example"
FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


async def _client_address(request: Request) -> dict[str, str]:
    assert request.client is not None
    return {"host": request.client.host, "scheme": request.url.scheme}


async def _reporting_client(make_client: ClientFactory, **overrides: object) -> httpx.AsyncClient:
    """A client of an app that also answers ``GET /client-address`` with what it believes about the peer."""
    http = await make_client(**overrides)
    http.app.add_api_route("/client-address", _client_address)  # type: ignore[attr-defined]
    return http


@pytest.mark.parametrize("host", ["conduit.example", "api.conduit.example", "conduit.example:8443"])
async def test_allowed_hosts_are_served(make_client: ClientFactory, host: str) -> None:
    http = await make_client(allowed_hosts=HOSTS)
    response = await http.get(f"http://{host}/api/v1/tags")
    assert response.status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "conduit.example.evil.example", "127.0.0.1"])
async def test_a_bad_host_gets_a_problem_document(make_client: ClientFactory, host: str) -> None:
    http = await make_client(allowed_hosts=HOSTS)
    response = await http.get(f"http://{host}/api/v1/tags")
    assert_problem(response, 400, "invalid_host", "invalid host header")
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


async def test_any_host_by_default(client: httpx.AsyncClient) -> None:
    response = await client.get("http://anything.example/api/v1/tags")
    assert response.status_code == 200


async def test_forwarded_headers_from_a_trusted_proxy_are_believed(make_client: ClientFactory) -> None:
    http = await _reporting_client(make_client, client_ip=PROXY, trusted_proxies=[PROXY])
    response = await http.get("http://test/client-address", headers=FORWARDED)
    tags = await http.get("/tags", headers=FORWARDED)
    assert response.json() == {"host": "203.0.113.7", "scheme": "https"}
    assert tags.headers["strict-transport-security"] == HSTS


async def test_trusted_proxies_may_be_networks(make_client: ClientFactory) -> None:
    http = await _reporting_client(make_client, client_ip="10.1.2.3", trusted_proxies='["10.0.0.0/8"]')
    response = await http.get("http://test/client-address", headers=FORWARDED)
    assert response.json() == {"host": "203.0.113.7", "scheme": "https"}


@pytest.mark.parametrize(
    ("peer", "trusted_proxies"),
    [("192.0.2.1", [PROXY]), (PROXY, []), ("127.0.0.1", [])],
    ids=["untrusted-peer", "no-trusted-proxies", "loopback-not-trusted-by-default"],
)
async def test_forwarded_headers_from_anyone_else_are_ignored(
    make_client: ClientFactory, peer: str, trusted_proxies: list[str]
) -> None:
    http = await _reporting_client(make_client, client_ip=peer, trusted_proxies=trusted_proxies)
    response = await http.get("http://test/client-address", headers=FORWARDED)
    tags = await http.get("/tags", headers=FORWARDED)
    assert response.json() == {"host": peer, "scheme": "http"}
    assert "strict-transport-security" not in tags.headers


async def test_https_redirect_when_enabled(make_client: ClientFactory) -> None:
    http = await make_client(https_redirect=True)
    response = await http.get("/tags?limit=1")
    secure = await http.get("https://test/api/v1/tags")
    assert response.status_code == 307
    assert response.headers["location"] == "https://test/api/v1/tags?limit=1"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert secure.status_code == 200
    assert secure.headers["strict-transport-security"] == HSTS


@pytest.mark.parametrize(("peer", "status"), [(PROXY, 200), ("192.0.2.1", 307)])
async def test_https_redirect_counts_the_scheme_from_a_trusted_proxy_only(
    make_client: ClientFactory, peer: str, status: int
) -> None:
    http = await make_client(client_ip=peer, https_redirect=True, trusted_proxies=[PROXY])
    response = await http.get("/tags", headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == status


async def test_no_redirect_by_default(client: httpx.AsyncClient) -> None:
    response = await client.get("/tags")
    assert response.status_code == 200
