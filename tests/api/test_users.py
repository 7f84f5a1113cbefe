"""Registration, login and the current user."""

from __future__ import annotations

import httpx
import jwt
import pytest

from app.core.config import Settings
from tests.factories import PASSWORD, Api


async def test_register_returns_user_with_token(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users", json={"user": {"username": "jake", "email": "Jake@Example.COM", "password": PASSWORD}}
    )
    assert response.status_code == 201
    user = response.json()["user"]
    assert user["username"] == "jake"
    assert user["email"] == "jake@example.com"  # normalised
    assert user["bio"] == "" and user["image"] == ""
    assert user["token"].count(".") == 2


async def test_token_subject_is_the_user_id_not_the_username(api: Api, settings: Settings) -> None:
    account = await api.register("jake")
    assert settings.secret_key is not None
    claims = jwt.decode(
        account.token, settings.secret_key.get_secret_value(), algorithms=["HS256"], audience="conduit-api"
    )
    assert claims["sub"].isdigit()
    assert {"iss", "aud", "sub", "exp", "iat", "nbf", "jti", "sid"} <= claims.keys()
    assert jwt.get_unverified_header(account.token)["typ"] == "at+jwt"
    assert claims["exp"] - claims["iat"] == pytest.approx(settings.realworld_token_ttl, abs=1)


@pytest.mark.parametrize(
    ("user", "field", "message"),
    [
        ({"email": "a@example.com", "password": PASSWORD}, "username", "can't be blank"),
        ({"username": "a", "password": PASSWORD}, "email", "can't be blank"),
        ({"username": "a", "email": "a@example.com"}, "password", "can't be blank"),
        ({"username": "", "email": "a@example.com", "password": PASSWORD}, "username", "can't be blank"),
        ({"username": "a b", "email": "a@example.com", "password": PASSWORD}, "username", "may contain only"),
        ({"username": "a" * 65, "email": "a@example.com", "password": PASSWORD}, "username", "is too long"),
        ({"username": "a", "email": "not-an-email", "password": PASSWORD}, "email", "is invalid"),
        ({"username": "a", "email": "a@example.com", "password": "short"}, "password", "is too short"),
        ({"username": "a", "email": "a@example.com", "password": "x" * 129}, "password", "is too long"),
        (
            {"username": "a\u0000", "email": "a@example.com", "password": PASSWORD},
            "username",
            "may contain only",
        ),
        ({"username": "a", "email": "a@example.com", "password": "pass\u0000word1"}, "password", "NUL"),
        ({"username": 5, "email": "a@example.com", "password": PASSWORD}, "username", "must be a string"),
    ],
)
async def test_register_validation(
    client: httpx.AsyncClient, user: dict[str, object], field: str, message: str
) -> None:
    response = await client.post("/users", json={"user": user})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    errors = response.json()["errors"]
    assert any(message in m for m in errors[field]), errors
    assert errors["body"]


async def test_usernames_accept_letters_digits_underscore_dash(api: Api) -> None:
    account = await api.register("Jake_the-Dog_42")
    assert account.username == "Jake_the-Dog_42"


@pytest.mark.parametrize("field", ["username", "email"])
async def test_register_taken(api: Api, client: httpx.AsyncClient, field: str) -> None:
    await api.register("jake")
    user = {"username": "other", "email": "other@example.com", "password": PASSWORD}
    user[field] = {"username": "JAKE", "email": "JAKE@example.com"}[field]  # case-insensitively taken
    response = await client.post("/users", json={"user": user})
    assert response.status_code == 422
    assert response.json()["errors"][field] == ["has already been taken"]


async def test_login(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register("jake")
    response = await client.post(
        "/users/login", json={"user": {"email": "JAKE@example.com", "password": PASSWORD}}
    )
    assert response.status_code == 200
    assert response.json()["user"]["username"] == account.username


async def test_passwords_longer_than_72_bytes_count_in_full(api: Api, client: httpx.AsyncClient) -> None:
    password = "p" * 100 + "1"
    account = await api.register("jake", password=password)
    wrong = "p" * 100 + "2"  # differs only after bcrypt's 72-byte limit
    bad = await client.post("/users/login", json={"user": {"email": account.email, "password": wrong}})
    good = await client.post("/users/login", json={"user": {"email": account.email, "password": password}})
    assert (bad.status_code, good.status_code) == (401, 200)


async def test_login_failures_are_indistinguishable(api: Api, client: httpx.AsyncClient) -> None:
    await api.register("jake")
    wrong_password = await client.post(
        "/users/login", json={"user": {"email": "jake@example.com", "password": "wrong-password-1"}}
    )
    unknown_email = await client.post(
        "/users/login", json={"user": {"email": "nobody@example.com", "password": "wrong-password-1"}}
    )
    assert wrong_password.status_code == unknown_email.status_code == 401
    assert wrong_password.json() == unknown_email.json()
    assert wrong_password.json()["errors"]["email or password"] == ["is invalid"]
    assert wrong_password.headers["www-authenticate"]


async def test_login_validation(client: httpx.AsyncClient) -> None:
    response = await client.post("/users/login", json={"user": {"email": "jake@example.com"}})
    assert response.status_code == 422
    assert response.json()["errors"]["password"] == ["can't be blank"]


async def test_current_user_returns_the_presented_token(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register("jake")
    response = await client.get("/user", headers=account.headers)
    assert response.status_code == 200
    assert response.json()["user"]["token"] == account.token


async def test_bearer_scheme_is_accepted(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register("jake")
    response = await client.get("/user", headers={"Authorization": f"Bearer {account.token}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Token", "Token ", "Basic abc", "Token not.a.jwt", "Token a.b.c"],
)
async def test_current_user_requires_valid_credentials(
    client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await client.get("/user", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Token")
    assert response.json()["code"] == "unauthorized"


async def test_forged_and_expired_tokens_are_rejected(
    api: Api, client: httpx.AsyncClient, settings: Settings
) -> None:
    account = await api.register("jake")
    claims = jwt.decode(account.token, options={"verify_signature": False})
    forged = jwt.encode(claims, "another-key-that-is-long-enough-32b", algorithm="HS256")
    assert settings.secret_key is not None
    expired = jwt.encode(
        {**claims, "exp": 1_000_000}, settings.secret_key.get_secret_value(), algorithm="HS256"
    )
    unsigned = jwt.encode(claims, None, algorithm="none")
    for token in (forged, expired, unsigned):
        response = await client.get("/user", headers={"Authorization": f"Token {token}"})
        assert response.status_code == 401, token


async def test_token_of_a_deleted_user_is_rejected(
    api: Api, client: httpx.AsyncClient, settings: Settings
) -> None:
    account = await api.register("jake")
    claims = jwt.decode(account.token, options={"verify_signature": False})
    assert settings.secret_key is not None
    ghost = jwt.encode({**claims, "sub": "999999"}, settings.secret_key.get_secret_value(), algorithm="HS256")
    response = await client.get("/user", headers={"Authorization": f"Token {ghost}"})
    assert response.status_code == 401


async def test_update_user(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register("jake")
    response = await client.put(
        "/user",
        json={
            "user": {"bio": "I like to skateboard", "image": "https://example.com/a.png", "username": "jacob"}
        },
        headers=account.headers,
    )
    assert response.status_code == 200
    user = response.json()["user"]
    assert (user["bio"], user["image"], user["username"]) == (
        "I like to skateboard",
        "https://example.com/a.png",
        "jacob",
    )
    assert (await client.get("/profiles/jacob")).status_code == 200
    assert (await client.get("/profiles/jake")).status_code == 404
    # The token stays valid after a username change: its subject is the immutable id.
    assert (await client.get("/user", headers=account.headers)).json()["user"]["username"] == "jacob"


async def test_update_user_with_unchanged_username_and_email(api: Api, client: httpx.AsyncClient) -> None:
    """Front ends send the whole form back, including the unchanged username and email."""
    account = await api.register("jake")
    response = await client.put(
        "/user",
        json={"user": {"username": "jake", "email": "jake@example.com", "bio": "hi", "image": None}},
        headers=account.headers,
    )
    assert response.status_code == 200
    assert response.json()["user"]["bio"] == "hi"


async def test_update_user_image_null_clears_it(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register("jake")
    await client.put("/user", json={"user": {"image": "https://example.com/a.png"}}, headers=account.headers)
    response = await client.put("/user", json={"user": {"image": None}}, headers=account.headers)
    assert response.json()["user"]["image"] == ""


async def test_update_user_password(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register("jake")
    response = await client.put(
        "/user", json={"user": {"password": "a-new-password-2"}}, headers=account.headers
    )
    assert response.status_code == 200
    old = await client.post("/users/login", json={"user": {"email": account.email, "password": PASSWORD}})
    new = await client.post(
        "/users/login", json={"user": {"email": account.email, "password": "a-new-password-2"}}
    )
    assert (old.status_code, new.status_code) == (401, 200)


@pytest.mark.parametrize("field", ["username", "email"])
async def test_update_user_to_a_taken_value(api: Api, client: httpx.AsyncClient, field: str) -> None:
    await api.register("jake")
    other = await api.register("other")
    value = {"username": "jake", "email": "jake@example.com"}[field]
    response = await client.put("/user", json={"user": {field: value}}, headers=other.headers)
    assert response.status_code == 422
    assert response.json()["errors"][field] == ["has already been taken"]


async def test_update_user_validation_and_auth(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register("jake")
    invalid = await client.put("/user", json={"user": {"email": "nope"}}, headers=account.headers)
    assert invalid.status_code == 422 and invalid.json()["errors"]["email"] == ["is invalid"]
    missing = await client.put("/user", json={}, headers=account.headers)
    assert missing.status_code == 422 and missing.json()["errors"]["user"] == ["can't be blank"]
    anonymous = await client.put("/user", json={"user": {"bio": "x"}})
    assert anonymous.status_code == 401


async def test_unknown_fields_are_ignored_on_realworld_routes(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users",
        json={"user": {"username": "jake", "email": "jake@example.com", "password": PASSWORD, "admin": True}},
    )
    assert response.status_code == 201
    assert "admin" not in response.json()["user"]


async def test_invalid_unicode_is_a_clear_422(client: httpx.AsyncClient) -> None:
    body = b'{"user": {"username": "jake", "email": "jake@example.com", "password": "pass\\ud800word-1"}}'
    response = await client.post("/users", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["errors"]["password"] == ["must be valid Unicode"]
