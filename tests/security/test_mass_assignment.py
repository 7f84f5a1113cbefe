"""Mass assignment (OWASP API3): input schemas accept only what a caller may set."""

from __future__ import annotations

import httpx

from tests.factories import PASSWORD, Api, assert_problem


async def test_realworld_routes_ignore_unknown_fields(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register("jake")
    response = await client.put(
        "/user",
        json={"user": {"bio": "hi", "role": "admin", "is_active": False, "emailVerified": True, "id": 999}},
        headers=account.headers,
    )
    assert response.status_code == 200
    admin_only = await client.get("/admin/users", headers=account.headers)
    assert_problem(admin_only, 403, "forbidden")  # still a plain user


async def test_article_fields_a_client_may_not_set(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register("jake")
    fields = {"title": "How to train your dragon", "description": "d", "body": "b", "favoritesCount": 1000}
    response = await client.post(
        "/articles",
        json={"article": {**fields, "slug": "chosen-slug", "author": {"username": "x"}}},
        headers=account.headers,
    )
    assert response.status_code == 201
    article = response.json()["article"]
    assert article["favoritesCount"] == 0
    assert article["slug"] == "how-to-train-your-dragon"
    assert article["author"]["username"] == "jake"


async def test_our_own_routes_reject_unknown_fields(api: Api, client: httpx.AsyncClient) -> None:
    await api.register("jake")
    reset = await client.post("/auth/password-reset", json={"email": "jake@example.com", "admin": True})
    problem = assert_problem(reset, 422, "validation_failed")
    assert problem["errors"]["admin"] == ["is not an accepted field"]
    refresh = await client.post("/auth/refresh", json={"refresh_token": "x", "user_id": 1})
    assert_problem(refresh, 422, "validation_failed")


async def test_role_cannot_be_chosen_at_registration(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users",
        json={
            "user": {"username": "jake", "email": "jake@example.com", "password": PASSWORD, "role": "admin"}
        },
    )
    assert response.status_code == 201
    token = response.json()["user"]["token"]
    assert (await client.get("/admin/users", headers={"Authorization": f"Token {token}"})).status_code == 403
