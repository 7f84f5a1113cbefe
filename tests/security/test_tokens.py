"""Access tokens (RFC 8725): every forged, foreign, stale or misused token gets 401."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.core.security import key_id
from app.models import User
from tests.conftest import ClientFactory
from tests.factories import Api


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _sign(
    claims: dict[str, Any], key: str, *, algorithm: str = "HS256", kid: str | None = None, typ: str = "at+jwt"
) -> str:
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid or key_id(key), "typ": typ})


async def _status(client: httpx.AsyncClient, token: str) -> int:
    response = await client.get("/user", headers={"Authorization": f"Bearer {token}"})
    if response.status_code == 401:
        assert response.headers["www-authenticate"].startswith("Token")
        assert response.json()["code"] == "unauthorized"
    return response.status_code


def _tamper(token: str, **changes: Any) -> str:
    """Change claims without re-signing."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    encoded = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{encoded}.{signature}"


async def test_a_genuine_token_works(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register("jake")
    assert await _status(client, account.token) == 200


async def test_forged_tokens(api: Api, client: httpx.AsyncClient, settings: Settings) -> None:
    account = await api.register("jake")
    assert settings.secret_key is not None
    key = settings.secret_key.get_secret_value()
    claims = _claims(account.token)
    now = int(time.time())
    forgeries = {
        "alg none": jwt.encode(claims, None, algorithm="none", headers={"kid": key_id(key), "typ": "at+jwt"}),
        "other HMAC algorithm": _sign(claims, key + "x" * 64, algorithm="HS512", kid=key_id(key)),
        "foreign key": _sign(claims, "someone-elses-key-" + "z" * 40, kid=key_id(key)),
        "unknown kid": _sign(claims, key, kid="0000000000000000"),
        "tampered subject": _tamper(account.token, sub="2"),
        "expired": _sign({**claims, "exp": now - 10}, key),
        "not yet valid": _sign({**claims, "nbf": now + 3600}, key),
        "wrong issuer": _sign({**claims, "iss": "evil"}, key),
        "wrong audience": _sign({**claims, "aud": "another-api"}, key),
        "algorithm not the pinned one": _sign(claims, key, algorithm="HS512"),  # same key, kid and typ
        "not an access token": _sign(claims, key, typ="JWT"),
        "subject zero": _sign({**claims, "sub": "0"}, key),
        "subject out of range": _sign({**claims, "sub": str(2**40)}, key),
        "subject not a number": _sign({**claims, "sub": "jake"}, key),
        "missing jti": _sign({k: v for k, v in claims.items() if k != "jti"}, key),
        "garbage": "not-a-jwt",
    }
    for name, token in forgeries.items():
        assert await _status(client, token) == 401, name


async def test_tokens_of_a_deactivated_user_stop_at_once(
    api: Api, client: httpx.AsyncClient, make_client: ClientFactory
) -> None:
    from tests.security.test_authorization import make_admin

    admin = await make_admin(api, client)
    jake = await api.register("jake")
    response = await client.post("/admin/users/jake/deactivate", headers=admin.headers)
    assert response.status_code == 200
    assert await _status(client, jake.token) == 401
    login = await client.post("/users/login", json={"user": {"email": jake.email, "password": jake.password}})
    assert login.status_code == 403


async def test_signing_key_rotation(api: Api, make_client: ClientFactory, settings: Settings) -> None:
    assert settings.secret_key is not None
    old_key = settings.secret_key.get_secret_value()
    new_key = "rotated-secret-key-" + "n" * 48
    before = await make_client()
    token = (await Api(before).register("jake")).token

    rotated = await make_client(secret_key=new_key, previous_secret_keys=[old_key])
    assert await _status(rotated, token) == 200  # old tokens keep working during the rotation
    fresh = (await Api(rotated).register("ann")).token
    assert jwt.get_unverified_header(fresh)["kid"] == key_id(new_key)
    assert await _status(rotated, fresh) == 200

    retired = await make_client(secret_key=new_key)
    assert await _status(retired, token) == 401  # once the old key is dropped, its tokens end
    assert await _status(retired, fresh) == 200


@pytest.mark.parametrize("scheme", ["Token", "Bearer", "bearer"])
async def test_both_schemes(api: Api, client: httpx.AsyncClient, scheme: str) -> None:
    account = await api.register("jake")
    response = await client.get("/user", headers={"Authorization": f"{scheme} {account.token}"})
    assert response.status_code == 200


async def test_the_genuine_claims_pass_the_forgery_helper(
    api: Api, client: httpx.AsyncClient, settings: Settings
) -> None:
    """The forgeries above differ from a valid token only where they say they do."""
    account = await api.register("jake")
    assert settings.secret_key is not None
    resigned = _sign(_claims(account.token), settings.secret_key.get_secret_value())
    assert await _status(client, resigned) == 200


async def test_logout_ends_the_sessions_access_tokens(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register("jake")  # RealWorld registration opens a session too
    pair = (await client.post("/auth/token", data={"username": "jake", "password": account.password})).json()
    assert await _status(client, pair["access_token"]) == 200
    await client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert await _status(client, pair["access_token"]) == 401
    assert await _status(client, account.token) == 200  # another session of the same user lives on


async def test_a_deactivated_account_is_refused_even_before_revocation(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    account = await api.register("jake")
    async with engine.begin() as connection:  # the flag alone, without the session cut-off
        await connection.execute(update(User).where(User.username == "jake").values(is_active=False))
    assert await _status(client, account.token) == 401
