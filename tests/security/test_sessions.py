"""OAuth2 password flow and refresh-token rotation with reuse detection (RFC 9700 §4.14.2)."""

from __future__ import annotations

import asyncio

import httpx
import jwt
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.models import RefreshToken, User
from tests.factories import Account, Api, assert_problem


async def _login(
    client: httpx.AsyncClient, account: Account, *, login: str | None = None
) -> dict[str, object]:
    response = await client.post(
        "/auth/token", data={"username": login or account.username, "password": account.password}
    )
    assert response.status_code == 200, response.text
    pair: dict[str, object] = response.json()
    return pair


async def _refresh(client: httpx.AsyncClient, token: object) -> httpx.Response:
    client.cookies.clear()  # use only the token given, not a cookie from an earlier response
    return await client.post("/auth/refresh", json={"refresh_token": token})


async def test_password_flow_with_username_or_email(
    api: Api, client: httpx.AsyncClient, settings: Settings
) -> None:
    account = await api.register("jake")
    for login in (account.username, account.email.upper()):
        pair = await _login(client, account, login=login)
        assert pair["token_type"] == "bearer"
        assert pair["expires_in"] == settings.access_token_ttl == 900
        assert isinstance(pair["refresh_token"], str) and len(pair["refresh_token"]) >= 43  # 256 bits
        claims = jwt.decode(str(pair["access_token"]), options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == pytest.approx(settings.access_token_ttl, abs=1)
        assert claims["sid"]  # the session (refresh family) the token belongs to
        me = await client.get("/user", headers={"Authorization": f"Bearer {pair['access_token']}"})
        assert me.json()["user"]["username"] == "jake"


async def test_password_flow_failures(api: Api, client: httpx.AsyncClient) -> None:
    await api.register("jake")
    wrong = await client.post("/auth/token", data={"username": "jake", "password": "wrong-password-1"})
    assert_problem(wrong, 401, "unauthorized")
    missing = await client.post("/auth/token", data={"username": "jake"})
    assert_problem(missing, 422, "validation_failed")
    grant = await client.post(
        "/auth/token", data={"username": "jake", "password": "x", "grant_type": "client_credentials"}
    )
    assert_problem(grant, 422, "validation_failed")


async def test_refresh_rotates(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register("jake")
    first = await _login(client, account)
    response = await _refresh(client, first["refresh_token"])
    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (
        await client.get("/user", headers={"Authorization": f"Bearer {second['access_token']}"})
    ).status_code == 200
    assert (await _refresh(client, second["refresh_token"])).status_code == 200


async def test_reuse_revokes_the_whole_family(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    account = await api.register("jake")
    first = await _login(client, account)
    second = (await _refresh(client, first["refresh_token"])).json()
    replay = await _refresh(client, first["refresh_token"])  # an attacker replays the spent token
    assert_problem(replay, 401, "unauthorized")
    assert replay.headers["www-authenticate"]
    # The legitimate holder's newer token died with the family (and that survived the failed request).
    assert_problem(await _refresh(client, second["refresh_token"]), 401, "unauthorized")
    family = jwt.decode(str(first["access_token"]), options={"verify_signature": False})["sid"]
    async with engine.connect() as connection:
        rows = (await connection.execute(select(RefreshToken.family_id, RefreshToken.revoked_at))).all()
    assert {bool(revoked) for family_id, revoked in rows if family_id == family} == {True}
    assert any(revoked is None for family_id, revoked in rows if family_id != family)  # registration's
    # Other sessions of the same user are untouched.
    other = await _login(client, account)
    assert (await _refresh(client, other["refresh_token"])).status_code == 200


async def test_concurrent_refreshes_mint_one_live_token(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register("jake")
    pair = await _login(client, account)
    client.cookies.clear()
    responses = await asyncio.gather(
        *(client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}) for _ in range(5))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) <= 1 and set(statuses) <= {200, 401}
    for response in responses:
        if response.status_code == 200:  # the winner's token died with the family on the reuses
            assert (await _refresh(client, response.json()["refresh_token"])).status_code == 401


async def test_unknown_and_missing_refresh_tokens(client: httpx.AsyncClient) -> None:
    assert_problem(await _refresh(client, "not-a-token"), 401, "unauthorized")
    client.cookies.clear()
    assert_problem(await client.post("/auth/refresh"), 401, "unauthorized")


async def test_cookies_on_register_login_and_refresh(api: Api, client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users",
        json={"user": {"username": "jake", "email": "jake@example.com", "password": "correct-horse-9"}},
    )
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("conduit_refresh=")
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/api/v1/auth", "Max-Age=1209600"):
        assert attribute.lower() in cookie.lower()
    assert "secure" not in cookie.lower()  # plain http here; Secure is set over https
    # The cookie alone refreshes (browser clients), and rotation replaces it.
    refreshed = await client.post("/auth/refresh")
    assert refreshed.status_code == 200
    assert refreshed.json()["refresh_token"] in refreshed.headers["set-cookie"]
    login = await client.post(
        "/users/login", json={"user": {"email": "jake@example.com", "password": "correct-horse-9"}}
    )
    assert "conduit_refresh=" in login.headers["set-cookie"]


async def test_cookie_is_secure_over_https(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register("jake")
    response = await client.post(
        "https://test/api/v1/auth/token", data={"username": account.username, "password": account.password}
    )
    assert "secure" in response.headers["set-cookie"].lower()


async def test_logout_revokes_the_family(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register("jake")
    pair = await _login(client, account)
    response = await client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert response.status_code == 204
    assert (
        'conduit_refresh=""' in response.headers["set-cookie"]
        or "Max-Age=0" in response.headers["set-cookie"]
    )
    assert_problem(await _refresh(client, pair["refresh_token"]), 401, "unauthorized")
    assert (
        await client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
    ).status_code == 204


async def test_logout_all_ends_every_session(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register("jake")
    pairs = [await _login(client, account) for _ in range(2)]
    response = await client.post(
        "/auth/logout-all", headers={"Authorization": f"Bearer {pairs[0]['access_token']}"}
    )
    assert response.status_code == 204
    for pair in pairs:
        assert_problem(await _refresh(client, pair["refresh_token"]), 401, "unauthorized")
        me = await client.get("/user", headers={"Authorization": f"Bearer {pair['access_token']}"})
        assert_problem(me, 401, "unauthorized")
    assert (await client.get("/user", headers=account.headers)).status_code == 401  # the RealWorld token too
    assert (await client.post("/auth/logout-all")).status_code == 401


async def test_password_change_ends_other_sessions(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register("jake")
    elsewhere = await _login(client, account)
    here = await _login(client, account)  # leaves this session's refresh cookie on the client
    response = await client.put(
        "/user",
        json={"user": {"password": "a-brand-new-pass-4"}},
        headers={"Authorization": f"Bearer {here['access_token']}"},
    )
    assert response.status_code == 200
    new_token = response.json()["user"]["token"]
    assert (await client.get("/user", headers={"Authorization": f"Token {new_token}"})).status_code == 200
    assert (
        await client.get("/user", headers={"Authorization": f"Bearer {here['access_token']}"})
    ).status_code == 401
    assert_problem(await _refresh(client, elsewhere["refresh_token"]), 401, "unauthorized")
    assert (await _refresh(client, here["refresh_token"])).status_code == 200  # this session continues


async def test_expired_refresh_tokens_are_refused(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    account = await api.register("jake")
    pair = await _login(client, account)
    async with engine.begin() as connection:
        await connection.execute(update(RefreshToken).values(expires_at=RefreshToken.created_at))
    assert_problem(await _refresh(client, pair["refresh_token"]), 401, "unauthorized")


async def test_refresh_of_a_deactivated_account_is_refused(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    account = await api.register("jake")
    pair = await _login(client, account)
    async with engine.begin() as connection:  # the flag alone, without revoking anything
        await connection.execute(update(User).where(User.username == "jake").values(is_active=False))
    assert_problem(await _refresh(client, pair["refresh_token"]), 401, "unauthorized")
