"""Profiles and follows."""

from __future__ import annotations

import httpx

from tests.factories import Api


async def test_get_profile_anonymous(api: Api, client: httpx.AsyncClient) -> None:
    await api.register("celeb")
    response = await client.get("/profiles/celeb")
    assert response.status_code == 200
    assert response.json() == {"profile": {"username": "celeb", "bio": "", "image": "", "following": False}}


async def test_unknown_profile(client: httpx.AsyncClient) -> None:
    response = await client.get("/profiles/nobody")
    assert response.status_code == 404
    assert response.json()["errors"]["body"] == ["profile not found"]


async def test_follow_and_unfollow_are_idempotent(api: Api, client: httpx.AsyncClient) -> None:
    await api.register("celeb")
    fan = await api.register("fan")
    for _ in range(2):
        response = await client.post("/profiles/celeb/follow", headers=fan.headers)
        assert response.status_code == 200
        assert response.json()["profile"]["following"] is True
    assert (await client.get("/profiles/celeb", headers=fan.headers)).json()["profile"]["following"] is True
    assert (await client.get("/profiles/celeb")).json()["profile"]["following"] is False
    for _ in range(2):
        response = await client.delete("/profiles/celeb/follow", headers=fan.headers)
        assert response.status_code == 200
        assert response.json()["profile"]["following"] is False
    assert (await client.get("/profiles/celeb", headers=fan.headers)).json()["profile"]["following"] is False


async def test_follow_with_a_json_body_and_empty_bodies(api: Api, client: httpx.AsyncClient) -> None:
    """The RealWorld suite posts a body to follow; front ends send Content-Type with no body."""
    await api.register("celeb")
    fan = await api.register("fan")
    with_body = await client.post(
        "/profiles/celeb/follow", json={"user": {"email": "fan@example.com"}}, headers=fan.headers
    )
    assert with_body.status_code == 200
    empty = {**fan.headers, "Content-Type": "application/json"}
    unfollow = await client.request("DELETE", "/profiles/celeb/follow", content=b"", headers=empty)
    assert unfollow.status_code == 200
    assert (await client.post("/profiles/celeb/follow", content=b"", headers=empty)).status_code == 200
    assert (await client.get("/profiles/celeb", headers=empty)).json()["profile"]["following"] is True


async def test_follow_requires_auth_and_an_existing_user(api: Api, client: httpx.AsyncClient) -> None:
    fan = await api.register("fan")
    assert (await client.post("/profiles/fan/follow")).status_code == 401
    assert (await client.delete("/profiles/fan/follow")).status_code == 401
    assert (await client.post("/profiles/nobody/follow", headers=fan.headers)).status_code == 404
    assert (await client.delete("/profiles/nobody/follow", headers=fan.headers)).status_code == 404


async def test_cannot_follow_yourself(api: Api, client: httpx.AsyncClient) -> None:
    fan = await api.register("fan")
    response = await client.post("/profiles/fan/follow", headers=fan.headers)
    assert response.status_code == 422
    assert response.json()["errors"]["username"] == ["cannot be followed by yourself"]
