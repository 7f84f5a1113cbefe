"""Brute force and probing (OWASP API4): the route limits answer 429 with the default rules."""

from __future__ import annotations

import uuid

import httpx

from app.core.config import Settings
from tests.conftest import ClientFactory
from tests.factories import Api, assert_problem

DEFAULTS = Settings.model_fields


def _rule(name: str) -> int:
    default = DEFAULTS[f"rate_limit_{name}"].default
    assert isinstance(default, str)
    return int(default.split("/")[0])


async def _defaults(make_client: ClientFactory, client_ip: str = "10.0.0.1") -> httpx.AsyncClient:
    return await make_client(
        client_ip=client_ip,
        rate_limit_prefix=f"bf-{uuid.uuid4().hex}",
        **{
            f"rate_limit_{name}": DEFAULTS[f"rate_limit_{name}"].default
            for name in ("login_ip", "login_account", "register_ip", "refresh_family", "writes_user")
        },
    )


def _assert_limited(response: httpx.Response) -> None:
    assert_problem(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["ratelimit-remaining"] == "0"


async def test_login_attempts_per_account(make_client: ClientFactory) -> None:
    client = await _defaults(make_client)
    await Api(client).register("jake")
    body = {"user": {"email": "jake@example.com", "password": "guess-123"}}
    for _ in range(_rule("login_account")):
        assert (await client.post("/users/login", json=body)).status_code == 401
    _assert_limited(await client.post("/users/login", json=body))
    # The OAuth2 endpoint shares the account's budget; another account is unaffected.
    _assert_limited(await client.post("/auth/token", data={"username": "jake@example.com", "password": "x"}))
    other = await client.post(
        "/users/login", json={"user": {"email": "ann@example.com", "password": "guess-123"}}
    )
    assert other.status_code == 401


async def test_login_attempts_per_ip(make_client: ClientFactory) -> None:
    client = await _defaults(make_client)
    for n in range(_rule("login_ip")):
        response = await client.post(
            "/users/login", json={"user": {"email": f"u{n}@example.com", "password": "x"}}
        )
        assert response.status_code == 401
    _assert_limited(
        await client.post("/users/login", json={"user": {"email": "z@example.com", "password": "x"}})
    )
    elsewhere = await _defaults(make_client, client_ip="10.0.0.2")
    assert (
        await elsewhere.post("/users/login", json={"user": {"email": "z@example.com", "password": "x"}})
    ).status_code == 401


async def test_registrations_per_ip(make_client: ClientFactory) -> None:
    client = await _defaults(make_client)
    api = Api(client)
    for n in range(_rule("register_ip")):
        await api.register(f"user{n}")
    response = await client.post(
        "/users",
        json={
            "user": {"username": "one-more", "email": "one-more@example.com", "password": "correct-horse-9"}
        },
    )
    _assert_limited(response)


async def test_writes_per_user(make_client: ClientFactory) -> None:
    client = await _defaults(make_client)
    api = Api(client)
    author, fan = await api.register("author"), await api.register("fan")
    slug = (await api.article(author))["slug"]
    for _ in range(_rule("writes_user")):
        assert (await client.post(f"/articles/{slug}/favorite", headers=fan.headers)).status_code == 200
    _assert_limited(await client.post(f"/articles/{slug}/favorite", headers=fan.headers))
    assert (
        await client.get(f"/articles/{slug}", headers=fan.headers)
    ).status_code == 200  # reads are not writes
    assert (await client.post(f"/articles/{slug}/favorite", headers=author.headers)).status_code == 200


async def test_one_budget_per_account_whatever_the_login_typed(make_client: ClientFactory) -> None:
    client = await _defaults(make_client)
    await Api(client).register("jake")
    logins = ["jake", "jake@example.com", "JAKE@example.com"]
    for n in range(_rule("login_account")):
        form = {"username": logins[n % len(logins)], "password": "guess-123"}
        assert (await client.post("/auth/token", data=form)).status_code == 401
    _assert_limited(await client.post("/auth/token", data={"username": "jake", "password": "guess-123"}))


async def test_token_endpoint_per_ip(make_client: ClientFactory) -> None:
    client = await _defaults(make_client)
    for n in range(_rule("login_ip")):
        assert (
            await client.post("/auth/token", data={"username": f"u{n}", "password": "x"})
        ).status_code == 401
    _assert_limited(await client.post("/auth/token", data={"username": "z", "password": "x"}))


async def test_refreshes_per_family(make_client: ClientFactory) -> None:
    client = await _defaults(make_client)
    account = await Api(client).register("jake")
    pair = (await client.post("/auth/token", data={"username": "jake", "password": account.password})).json()
    token = pair["refresh_token"]
    for _ in range(_rule("refresh_family")):
        client.cookies.clear()
        response = await client.post("/auth/refresh", json={"refresh_token": token})
        assert response.status_code == 200
        token = response.json()["refresh_token"]
    client.cookies.clear()
    _assert_limited(await client.post("/auth/refresh", json={"refresh_token": token}))


async def test_account_recovery_endpoints_per_ip(make_client: ClientFactory) -> None:
    client = await _defaults(make_client)
    for path, body in (
        ("/auth/password-reset/confirm", {"token": "x" * 43, "password": "a-fresh-secret-5"}),
        ("/auth/verify-email", {"token": "x" * 43}),
    ):
        for _ in range(_rule("login_ip")):
            assert (await client.post(path, json=body)).status_code == 422
        _assert_limited(await client.post(path, json=body))


async def test_password_reset_requests_per_account(make_client: ClientFactory) -> None:
    client = await _defaults(make_client)
    for _ in range(_rule("login_account")):
        assert (
            await client.post("/auth/password-reset", json={"email": "jake@example.com"})
        ).status_code == 202
    _assert_limited(await client.post("/auth/password-reset", json={"email": "jake@example.com"}))
