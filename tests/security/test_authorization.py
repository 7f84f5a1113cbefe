"""Authorization (OWASP API1, API5): ownership in the services, roles, admin-only endpoints."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Role, User
from tests.factories import Account, Api, assert_problem


async def _grant(engine: AsyncEngine, username: str, role: Role) -> None:
    # Roles can only be granted by an admin or the CLI; the first admin comes from the CLI in real life.
    async with engine.begin() as connection:
        await connection.execute(update(User).where(User.username == username).values(role=role))


async def make_admin(api: Api, client: httpx.AsyncClient, username: str = "root") -> Account:
    account = await api.register(username)
    engine: AsyncEngine = client._transport.app.state.engine  # type: ignore[attr-defined]
    await _grant(engine, username, Role.ADMIN)
    return account


async def test_strangers_cannot_touch_others_content(api: Api, client: httpx.AsyncClient) -> None:
    """BOLA: knowing a slug or a comment id grants nothing."""
    owner, stranger = await api.register("owner"), await api.register("stranger")
    slug = (await api.article(owner))["slug"]
    comment_id = (await api.comment(owner, slug))["id"]
    attempts = [
        await client.put(
            f"/articles/{slug}", json={"article": {"body": "mine now"}}, headers=stranger.headers
        ),
        await client.delete(f"/articles/{slug}", headers=stranger.headers),
        await client.delete(f"/articles/{slug}/comments/{comment_id}", headers=stranger.headers),
    ]
    for response in attempts:
        assert_problem(response, 403, "forbidden")
    article = (await client.get(f"/articles/{slug}")).json()["article"]
    assert article["body"] == "You have to believe"
    assert [c["id"] for c in (await client.get(f"/articles/{slug}/comments")).json()["comments"]] == [
        comment_id
    ]


async def test_moderators_delete_but_never_edit(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    owner, moderator = await api.register("owner"), await api.register("mod")
    await _grant(engine, "mod", Role.MODERATOR)
    slug = (await api.article(owner))["slug"]
    comment_id = (await api.comment(owner, slug))["id"]
    edit = await client.put(f"/articles/{slug}", json={"article": {"body": "x"}}, headers=moderator.headers)
    assert_problem(edit, 403, "forbidden")
    assert (
        await client.delete(f"/articles/{slug}/comments/{comment_id}", headers=moderator.headers)
    ).status_code == 204
    assert (await client.delete(f"/articles/{slug}", headers=moderator.headers)).status_code == 204
    assert (await client.get(f"/articles/{slug}")).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/admin/users", None),
        ("PUT", "/admin/users/victim/role", {"role": "admin"}),
        ("POST", "/admin/users/victim/deactivate", None),
    ],
)
async def test_admin_endpoints_need_an_admin(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine, method: str, path: str, body: object
) -> None:
    await api.register("victim")
    user, moderator = await api.register("user"), await api.register("mod")
    await _grant(engine, "mod", Role.MODERATOR)
    assert_problem(await client.request(method, path, json=body), 401, "unauthorized")
    for account in (user, moderator):
        assert_problem(
            await client.request(method, path, json=body, headers=account.headers), 403, "forbidden"
        )


async def test_admin_lists_users_and_sets_roles(api: Api, client: httpx.AsyncClient) -> None:
    admin = await make_admin(api, client)
    await api.register("jake")
    listing = await client.get("/admin/users", params={"limit": 1, "offset": 1}, headers=admin.headers)
    assert listing.status_code == 200
    body = listing.json()
    assert body["usersCount"] == 2
    assert [u["username"] for u in body["users"]] == ["jake"]
    assert body["users"][0]["role"] == "user" and body["users"][0]["isActive"] is True
    promoted = await client.put("/admin/users/jake/role", json={"role": "moderator"}, headers=admin.headers)
    assert promoted.status_code == 200 and promoted.json()["user"]["role"] == "moderator"
    bad_role = await client.put("/admin/users/jake/role", json={"role": "god"}, headers=admin.headers)
    assert_problem(bad_role, 422, "validation_failed")
    unknown = await client.put("/admin/users/nobody/role", json={"role": "user"}, headers=admin.headers)
    assert_problem(unknown, 404, "not_found")


async def test_admins_cannot_demote_or_deactivate_themselves(api: Api, client: httpx.AsyncClient) -> None:
    admin = await make_admin(api, client)
    demote = await client.put("/admin/users/root/role", json={"role": "user"}, headers=admin.headers)
    assert demote.status_code == 422 and demote.json()["errors"]["username"] == [
        "cannot change your own role"
    ]
    deactivate = await client.post("/admin/users/root/deactivate", headers=admin.headers)
    assert deactivate.status_code == 422


async def test_deactivation_ends_refresh_sessions_too(api: Api, client: httpx.AsyncClient) -> None:
    admin = await make_admin(api, client)
    login = await client.post("/auth/token", data={"username": "victim", "password": "x"})
    assert login.status_code == 401
    victim = await api.register("victim")
    pair = (await client.post("/auth/token", data={"username": "victim", "password": victim.password})).json()
    client.cookies.clear()
    await client.post("/admin/users/victim/deactivate", headers=admin.headers)
    refreshed = await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert_problem(refreshed, 401, "unauthorized")
