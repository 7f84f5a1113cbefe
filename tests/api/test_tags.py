"""Popular tags (``/tags``)."""

from __future__ import annotations

import httpx

from tests.factories import Api


async def tags(client: httpx.AsyncClient) -> list[str]:
    response = await client.get("/tags")
    assert response.status_code == 200, response.text
    names: list[str] = response.json()["tags"]
    return names


async def test_no_tags_initially(client: httpx.AsyncClient) -> None:
    response = await client.get("/tags")
    assert response.status_code == 200, response.text
    assert response.json() == {"tags": []}


async def test_tags_most_used_first(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    await api.article(jake, "One", tagList=["zebra", "angular"])
    await api.article(jake, "Two", tagList=["dragons", "zebra"])
    await api.article(jake, "Three", tagList=["zebra", "dragons", "react"])
    # Ties are broken by name.
    assert await tags(client) == ["zebra", "dragons", "angular", "react"]


async def test_unused_tags_disappear(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    deleted = await api.article(jake, "Deleted", tagList=["gone", "shared"])
    edited = await api.article(jake, "Edited", tagList=["shared", "dropped"])
    assert set(await tags(client)) == {"gone", "shared", "dropped"}

    assert (await client.delete(f"/articles/{deleted['slug']}", headers=jake.headers)).status_code == 204
    assert sorted(await tags(client)) == ["dropped", "shared"]
    response = await client.put(
        f"/articles/{edited['slug']}", json={"article": {"tagList": ["shared"]}}, headers=jake.headers
    )
    assert response.status_code == 200, response.text
    assert await tags(client) == ["shared"]
