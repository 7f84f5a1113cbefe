"""Security headers, Content-Security-Policy, caching headers and CORS."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import pytest
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from app.core.middleware import SecurityHeaders, SecurityHeadersMiddleware
from tests.conftest import ClientFactory
from tests.factories import PASSWORD, Api

API_CSP = "default-src 'none'; frame-ancestors 'none'"
EXPECTED = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "content-security-policy": API_CSP,
}


def _vary(response: httpx.Response) -> list[str]:
    return [item.strip() for value in response.headers.get_list("vary") for item in value.split(",")]


@pytest.mark.parametrize(
    ("method", "url", "body", "status"),
    [
        ("GET", "/articles", None, 200),
        ("GET", "/articles/no-such-article", None, 404),
        ("GET", "http://test/no-such-route", None, 404),
        ("POST", "/users", {"user": {}}, 422),
        ("GET", "/user", None, 401),
    ],
)
async def test_security_headers_on_every_response(
    client: httpx.AsyncClient, method: str, url: str, body: object, status: int
) -> None:
    response = await client.request(method, url, json=body)
    assert response.status_code == status
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, name
    policy = response.headers["permissions-policy"]
    for feature in ("camera", "microphone", "geolocation", "payment", "usb"):
        assert f"{feature}=()" in policy
    assert "server" not in response.headers
    assert "strict-transport-security" not in response.headers  # plain HTTP


async def test_hsts_over_https(client: httpx.AsyncClient) -> None:
    response = await client.get("https://test/api/v1/tags")
    assert response.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"


def _inline_script_hashes(page: str) -> set[str]:
    return {
        f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    }


def _directives(policy: str) -> dict[str, set[str]]:
    return {name: set(sources) for name, *sources in (part.split() for part in policy.split(";"))}


@pytest.mark.parametrize(
    ("path", "inline_scripts"), [("/docs", 1), ("/redoc", 0), ("/docs/oauth2-redirect", 1)]
)
async def test_docs_pages_get_a_policy_of_their_own(
    client: httpx.AsyncClient, path: str, inline_scripts: int
) -> None:
    response = await client.get(f"http://test{path}")
    assert response.status_code == 200
    policy = _directives(response.headers["content-security-policy"])
    # Nothing from another origin: scripts, styles, images and connections from this one only.
    assert policy == {
        "default-src": {"'none'"},
        "base-uri": {"'none'"},
        "frame-ancestors": {"'none'"},
        "form-action": {"'none'"},
        # Inline scripts only by hash: exactly the ones on the page.
        "script-src": {"'self'", *_inline_script_hashes(response.text)},
        "style-src": {"'self'", "'unsafe-inline'"},
        "img-src": {"'self'", "data:"},
        "connect-src": {"'self'"},
        "worker-src": {"blob:"},  # ReDoc's search worker
    }
    assert len(_inline_script_hashes(response.text)) == inline_scripts
    assert response.headers["x-frame-options"] == "DENY"
    assert "cache-control" not in response.headers


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_docs_pages_load_their_assets_from_this_origin(client: httpx.AsyncClient, path: str) -> None:
    page = (await client.get(f"http://test{path}")).text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets, page
    for asset in assets:
        assert asset.startswith("/docs/assets/"), asset
        response = await client.get(f"http://test{asset}")
        assert response.status_code == 200, asset
        assert response.content


async def test_the_api_keeps_the_strict_policy(client: httpx.AsyncClient) -> None:
    response = await client.get("http://test/api/v1/openapi.json")
    assert response.headers["content-security-policy"] == API_CSP


async def test_no_store_on_responses_with_credentials(client: httpx.AsyncClient) -> None:
    user = {"username": "jake", "email": "jake@example.com", "password": PASSWORD}
    registered = await client.post("/users", json={"user": user})
    logged_in = await client.post(
        "/users/login", json={"user": {"email": user["email"], "password": PASSWORD}}
    )
    auth = {"Authorization": f"Token {logged_in.json()['user']['token']}"}
    current = await client.get("/user", headers=auth)
    updated = await client.put("/user", json={"user": {"bio": "hi"}}, headers=auth)
    under_auth = await client.post("/auth/no-such-route", headers=auth)

    for response in (registered, logged_in, current, updated, under_auth):
        assert response.headers["cache-control"] == "no-store", response.request.url
    assert [registered.status_code, logged_in.status_code, current.status_code] == [201, 200, 200]


async def test_authenticated_reads_are_private(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register()
    response = await client.get("/articles", headers=account.headers)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "private, no-cache"
    assert _vary(response).count("Authorization") == 1


async def test_anonymous_reads_are_publicly_cacheable_for_a_moment(client: httpx.AsyncClient) -> None:
    response = await client.get("/articles")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=5"
    assert "Authorization" in _vary(response)  # so no shared cache serves them to a signed-in reader


async def test_vary_merges_with_cors(client: httpx.AsyncClient) -> None:
    response = await client.get("/tags", headers={"Origin": "http://localhost:4100"})
    assert response.headers.get_list("vary") == ["Origin, Authorization"]


async def test_writes_get_no_vary_and_no_cache_control(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register()
    response = await client.post(
        "/articles",
        json={"article": {"title": "T", "description": "D", "body": "B"}},
        headers=account.headers,
    )
    assert response.status_code == 201
    assert "cache-control" not in response.headers
    assert "Authorization" not in _vary(response)


async def test_an_endpoints_own_cache_control_is_kept() -> None:
    async def cached(scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({}, headers={"Cache-Control": "max-age=60", "Vary": "Accept", "Server": "x"})
        await response(scope, receive, send)

    app = SecurityHeadersMiddleware(cached, SecurityHeaders(["/docs"]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        response = await http.get("/api/v1/articles", headers={"Authorization": "Token x"})
    assert response.headers["cache-control"] == "max-age=60"
    assert response.headers.get_list("vary") == ["Accept, Authorization"]
    assert "server" not in response.headers


async def test_preflight_from_a_foreign_origin_is_not_allowed(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/articles",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["x-frame-options"] == "DENY"


async def test_preflight_from_an_allowed_origin(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/articles",
        headers={
            "Origin": "http://localhost:4100",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://localhost:4100"
    assert response.headers["access-control-allow-credentials"] == "true"


async def test_credentials_are_never_allowed_with_a_wildcard_origin(make_client: ClientFactory) -> None:
    http = await make_client(cors_origins="*")
    preflight = await http.options(
        "/articles", headers={"Origin": "https://anywhere.example", "Access-Control-Request-Method": "GET"}
    )
    response = await http.get("/tags", headers={"Origin": "https://anywhere.example"})
    for answer in (preflight, response):
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in answer.headers
