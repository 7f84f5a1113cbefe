"""Articles, the feed and favorites (``/articles``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.factories import TIMESTAMP, Account, Api, assert_problem

JSON_EMPTY = {"Content-Type": "application/json"}
MISSING = object()


async def follow(client: httpx.AsyncClient, follower: Account, followee: Account) -> None:
    response = await client.post(f"/profiles/{followee.username}/follow", headers=follower.headers)
    assert response.status_code == 200, response.text


async def list_slugs(
    client: httpx.AsyncClient, url: str = "/articles", **params: Any
) -> tuple[list[str], int]:
    response = await client.get(url, params=params)
    assert response.status_code == 200, response.text
    data = response.json()
    return [article["slug"] for article in data["articles"]], data["articlesCount"]


# Create


async def test_create_article(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    response = await client.post(
        "/articles",
        json={
            "article": {
                "title": "How to train your dragon",
                "description": "Ever wonder how?",
                "body": "You have to believe",
                "tagList": ["training", "dragons", "training"],
            }
        },
        headers=jake.headers,
    )
    assert response.status_code == 201, response.text
    article = response.json()["article"]
    assert article["slug"] == "how-to-train-your-dragon"
    assert article["title"] == "How to train your dragon"
    assert article["description"] == "Ever wonder how?"
    assert article["body"] == "You have to believe"
    assert article["tagList"] == ["dragons", "training"]
    assert article["favorited"] is False
    assert article["favoritesCount"] == 0
    assert TIMESTAMP.match(article["createdAt"]), article["createdAt"]
    assert TIMESTAMP.match(article["updatedAt"]), article["updatedAt"]
    assert article["author"] == {"username": "jake", "bio": "", "image": "", "following": False}


async def test_same_title_gets_distinct_slugs(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    first = await api.article(jake, "Same title", body="first")
    second = await api.article(jake, "Same title", body="second")
    assert first["slug"] == "same-title"
    assert second["slug"] != first["slug"]
    assert second["slug"].startswith("same-title")
    for article in (first, second):
        response = await client.get(f"/articles/{article['slug']}")
        assert response.json()["article"]["body"] == article["body"]


async def test_title_feed_does_not_take_the_feed_route(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    article = await api.article(jake, "Feed")
    assert article["slug"] != "feed"
    response = await client.get(f"/articles/{article['slug']}")
    assert response.status_code == 200, response.text
    assert response.json()["article"]["title"] == "Feed"


@pytest.mark.parametrize("tag_count", [20, 21])
async def test_create_article_tag_limit(api: Api, client: httpx.AsyncClient, tag_count: int) -> None:
    jake = await api.register("jake")
    tags = [f"tag{i:02d}" for i in range(tag_count)]
    body = {"title": "Tags", "description": "d", "body": "b", "tagList": tags}
    response = await client.post("/articles", json={"article": body}, headers=jake.headers)
    if tag_count <= 20:
        assert response.status_code == 201, response.text
        assert response.json()["article"]["tagList"] == tags
    else:
        problem = assert_problem(response, 422, "validation_failed")
        assert problem["errors"]["tagList"] == ["has too many items (maximum is 20)"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("title", MISSING, "can't be blank"),
        ("description", MISSING, "can't be blank"),
        ("body", MISSING, "can't be blank"),
        ("title", "   ", "can't be blank"),
        ("title", "x" * 256, "is too long (maximum is 255 characters)"),
        ("body", "nul \u0000 byte", "must not contain NUL characters"),
        ("title", 123, "must be a string"),
        ("tagList", "dragons", "must be a list"),
    ],
    ids=[
        "no-title",
        "no-description",
        "no-body",
        "blank-title",
        "long-title",
        "nul",
        "int-title",
        "tags-str",
    ],
)
async def test_create_article_validation(
    api: Api, client: httpx.AsyncClient, field: str, value: object, message: str
) -> None:
    jake = await api.register("jake")
    body: dict[str, object] = {"title": "Title", "description": "Description", "body": "Body"}
    if value is MISSING:
        del body[field]
    else:
        body[field] = value
    response = await client.post("/articles", json={"article": body}, headers=jake.headers)
    problem = assert_problem(response, 422, "validation_failed")
    # "body" is also the key of the general messages, so the field's own message is one of several there.
    assert message in problem["errors"][field]
    assert (await list_slugs(client))[1] == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{", "the request body is not valid JSON"),
        (b"[]", "must be an object"),
    ],
    ids=["malformed", "list"],
)
async def test_create_article_bad_json(
    api: Api, client: httpx.AsyncClient, content: bytes, message: str
) -> None:
    jake = await api.register("jake")
    headers = {**jake.headers, **JSON_EMPTY}
    response = await client.post("/articles", content=content, headers=headers)
    problem = assert_problem(response, 422, "validation_failed")
    assert message in problem["errors"]["body"]


# Read


async def test_get_article_flags_depend_on_viewer(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    ann = await api.register("ann")
    slug = (await api.article(jake))["slug"]
    await follow(client, ann, jake)
    assert (await client.post(f"/articles/{slug}/favorite", headers=ann.headers)).status_code == 200

    anonymous = (await client.get(f"/articles/{slug}")).json()["article"]
    assert anonymous["body"] == "You have to believe"
    assert anonymous["favorited"] is False
    assert anonymous["favoritesCount"] == 1
    assert anonymous["author"]["following"] is False

    viewed = (await client.get(f"/articles/{slug}", headers=ann.headers)).json()["article"]
    assert viewed["favorited"] is True
    assert viewed["favoritesCount"] == 1
    assert viewed["author"]["following"] is True


async def test_get_unknown_article(client: httpx.AsyncClient) -> None:
    response = await client.get("/articles/no-such-article")
    problem = assert_problem(response, 404, "not_found", "article not found")
    assert problem["instance"] == "/api/v1/articles/no-such-article"


# Update


async def test_update_changes_only_sent_fields(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    before = await api.article(jake, tagList=["dragons"])
    response = await client.put(
        f"/articles/{before['slug']}", json={"article": {"body": "With two hands"}}, headers=jake.headers
    )
    assert response.status_code == 200, response.text
    after = response.json()["article"]
    assert after["body"] == "With two hands"
    unchanged = ("slug", "title", "description", "tagList", "createdAt", "author")
    assert {key: after[key] for key in unchanged} == {key: before[key] for key in unchanged}
    assert TIMESTAMP.match(after["updatedAt"])
    assert datetime.fromisoformat(after["updatedAt"]) >= datetime.fromisoformat(before["updatedAt"])
    assert datetime.fromisoformat(after["updatedAt"]) >= datetime.fromisoformat(after["createdAt"])
    stored = (await client.get(f"/articles/{before['slug']}")).json()["article"]
    assert stored["body"] == "With two hands"
    assert stored["title"] == before["title"]


async def test_update_title_keeps_slug(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    slug = (await api.article(jake, "Old title"))["slug"]
    response = await client.put(
        f"/articles/{slug}", json={"article": {"title": "New title"}}, headers=jake.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["article"]["slug"] == slug == "old-title"
    stored = (await client.get(f"/articles/{slug}")).json()["article"]
    assert stored["title"] == "New title"
    assert (await client.get("/articles/new-title")).status_code == 404


async def test_update_replaces_tags(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    slug = (await api.article(jake, tagList=["a", "b"]))["slug"]
    for sent, expected in ((["c", "b", "c"], ["b", "c"]), ([], [])):
        response = await client.put(
            f"/articles/{slug}", json={"article": {"tagList": sent}}, headers=jake.headers
        )
        assert response.status_code == 200, response.text
        assert response.json()["article"]["tagList"] == expected
        assert (await client.get(f"/articles/{slug}")).json()["article"]["tagList"] == expected


async def test_update_by_another_user_is_forbidden(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    ann = await api.register("ann")
    slug = (await api.article(jake))["slug"]
    response = await client.put(
        f"/articles/{slug}", json={"article": {"body": "Hacked"}}, headers=ann.headers
    )
    assert_problem(response, 403, "forbidden")
    assert (await client.get(f"/articles/{slug}")).json()["article"]["body"] == "You have to believe"


# Delete


async def test_delete_article(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    slug = (await api.article(jake))["slug"]
    response = await client.delete(f"/articles/{slug}", headers=jake.headers)
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_problem(await client.get(f"/articles/{slug}"), 404, "not_found", "article not found")
    assert await list_slugs(client) == ([], 0)


async def test_delete_by_another_user_is_forbidden(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    ann = await api.register("ann")
    slug = (await api.article(jake))["slug"]
    assert_problem(await client.delete(f"/articles/{slug}", headers=ann.headers), 403, "forbidden")
    assert (await client.get(f"/articles/{slug}")).status_code == 200


# Authentication


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/articles"),
        ("PUT", "/articles/{slug}"),
        ("DELETE", "/articles/{slug}"),
        ("POST", "/articles/{slug}/favorite"),
        ("DELETE", "/articles/{slug}/favorite"),
        ("GET", "/articles/feed"),
    ],
)
async def test_requires_token(api: Api, client: httpx.AsyncClient, method: str, path: str) -> None:
    jake = await api.register("jake")
    slug = (await api.article(jake))["slug"]
    body = {"article": {"title": "T", "description": "D", "body": "B"}} if method in {"POST", "PUT"} else None
    response = await client.request(method, path.format(slug=slug), json=body)
    assert_problem(response, 401, "unauthorized", "authentication required")
    assert response.headers["www-authenticate"].startswith("Token")
    article = (await client.get(f"/articles/{slug}")).json()["article"]
    assert (article["title"], article["favoritesCount"]) == ("How to train your dragon", 0)


@pytest.mark.parametrize("method", ["GET", "PUT"])
async def test_invalid_token(api: Api, client: httpx.AsyncClient, method: str) -> None:
    """A token that was sent but is not valid is refused, even where authentication is optional."""
    jake = await api.register("jake")
    slug = (await api.article(jake))["slug"]
    headers = {"Authorization": f"Token {jake.token}x"}
    body = {"article": {"body": "Changed"}} if method == "PUT" else None
    response = await client.request(method, f"/articles/{slug}", json=body, headers=headers)
    assert_problem(response, 401, "unauthorized", "the access token is invalid or expired")
    assert response.headers["www-authenticate"].startswith("Token")
    assert (await client.get(f"/articles/{slug}")).json()["article"]["body"] == "You have to believe"


# List


async def test_list_newest_first_with_total_count(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    slugs = [(await api.article(jake, f"Article {i}"))["slug"] for i in range(3)]
    response = await client.get("/articles", params={"limit": 2})
    assert response.status_code == 200, response.text
    data = response.json()
    assert [article["slug"] for article in data["articles"]] == [slugs[2], slugs[1]]
    assert data["articlesCount"] == 3
    assert all("body" not in article for article in data["articles"])
    assert await list_slugs(client, limit=2, offset=2) == ([slugs[0]], 3)
    assert await list_slugs(client, offset=10) == ([], 3)
    assert await list_slugs(client, limit=100) == (slugs[::-1], 3)


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"limit": 0}, "limit", "must be at least 1"),
        ({"limit": 101}, "limit", "must be at most 100"),
        ({"offset": -1}, "offset", "must be at least 0"),
        ({"limit": "abc"}, "limit", "must be an integer"),
    ],
    ids=["limit-0", "limit-101", "offset-negative", "limit-abc"],
)
async def test_list_rejects_bad_paging(
    client: httpx.AsyncClient, params: dict[str, object], field: str, message: str
) -> None:
    problem = assert_problem(await client.get("/articles", params=params), 422, "validation_failed")
    assert problem["errors"][field] == [message]


async def test_list_filters(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    ann = await api.register("ann")
    dragons = (await api.article(jake, "Dragons", tagList=["dragons"]))["slug"]
    training = (await api.article(jake, "Training", tagList=["training"]))["slug"]
    await api.article(ann, "Angular", tagList=["angular"])
    assert (await client.post(f"/articles/{dragons}/favorite", headers=ann.headers)).status_code == 200

    assert await list_slugs(client, tag="dragons") == ([dragons], 1)
    assert await list_slugs(client, author="jake") == ([training, dragons], 2)
    assert await list_slugs(client, favorited="ann") == ([dragons], 1)
    assert await list_slugs(client, author="jake", tag="training") == ([training], 1)
    for no_match in ({"tag": "nope"}, {"author": "nobody"}, {"favorited": "nobody"}, {"favorited": "jake"}):
        assert await list_slugs(client, **no_match) == ([], 0), no_match


# Feed


async def test_feed_has_only_followed_authors(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    bob = await api.register("bob")
    ann = await api.register("ann")
    first = (await api.article(jake, "First"))["slug"]
    await api.article(bob, "Not followed")
    second = (await api.article(jake, "Second"))["slug"]
    await follow(client, ann, jake)

    response = await client.get("/articles/feed", headers=ann.headers)
    assert response.status_code == 200, response.text
    data = response.json()
    assert [article["slug"] for article in data["articles"]] == [second, first]
    assert data["articlesCount"] == 2
    assert all(article["author"]["following"] is True for article in data["articles"])

    paged = (await client.get("/articles/feed", params={"limit": 1}, headers=ann.headers)).json()
    assert ([a["slug"] for a in paged["articles"]], paged["articlesCount"]) == ([second], 2)
    empty = (await client.get("/articles/feed", headers=bob.headers)).json()
    assert (empty["articles"], empty["articlesCount"]) == ([], 0)


# Favorites


async def test_favorite_is_idempotent(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    ann = await api.register("ann")
    slug = (await api.article(jake))["slug"]
    for _ in range(2):
        response = await client.post(f"/articles/{slug}/favorite", headers=ann.headers)
        assert response.status_code == 200, response.text
        article = response.json()["article"]
        assert (article["slug"], article["favorited"], article["favoritesCount"]) == (slug, True, 1)
    assert (await client.get(f"/articles/{slug}")).json()["article"]["favoritesCount"] == 1


async def test_two_users_favorite(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    ann = await api.register("ann")
    slug = (await api.article(jake))["slug"]
    assert (await client.post(f"/articles/{slug}/favorite", headers=ann.headers)).status_code == 200
    response = await client.post(f"/articles/{slug}/favorite", headers=jake.headers)
    assert response.json()["article"]["favoritesCount"] == 2
    assert (await client.get(f"/articles/{slug}")).json()["article"]["favoritesCount"] == 2


async def test_unfavorite_is_idempotent(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    ann = await api.register("ann")
    slug = (await api.article(jake))["slug"]
    assert (await client.post(f"/articles/{slug}/favorite", headers=ann.headers)).status_code == 200
    for _ in range(2):
        response = await client.delete(f"/articles/{slug}/favorite", headers=ann.headers)
        assert response.status_code == 200, response.text
        article = response.json()["article"]
        assert (article["favorited"], article["favoritesCount"]) == (False, 0)
    assert await list_slugs(client, favorited="ann") == ([], 0)


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_favorite_unknown_article(api: Api, client: httpx.AsyncClient, method: str) -> None:
    ann = await api.register("ann")
    response = await client.request(method, "/articles/no-such-article/favorite", headers=ann.headers)
    assert_problem(response, 404, "not_found", "article not found")


# Real front ends


async def test_empty_json_body_is_accepted(api: Api, client: httpx.AsyncClient) -> None:
    """Front ends send ``Content-Type: application/json`` with an empty body on GET, DELETE and favorite."""
    jake = await api.register("jake")
    slug = (await api.article(jake))["slug"]
    headers = {**jake.headers, **JSON_EMPTY}

    listed = await client.request("GET", "/articles", headers=JSON_EMPTY, content=b"")
    assert (listed.status_code, listed.json()["articlesCount"]) == (200, 1)
    got = await client.request("GET", f"/articles/{slug}", headers=headers, content=b"")
    assert (got.status_code, got.json()["article"]["slug"]) == (200, slug)
    feed = await client.request("GET", "/articles/feed", headers=headers, content=b"")
    assert (feed.status_code, feed.json()["articlesCount"]) == (200, 0)
    favorited = await client.post(f"/articles/{slug}/favorite", headers=headers, content=b"")
    assert (favorited.status_code, favorited.json()["article"]["favorited"]) == (200, True)
    unfavorited = await client.request("DELETE", f"/articles/{slug}/favorite", headers=headers, content=b"")
    assert (unfavorited.status_code, unfavorited.json()["article"]["favorited"]) == (200, False)
    deleted = await client.request("DELETE", f"/articles/{slug}", headers=headers, content=b"")
    assert deleted.status_code == 204, deleted.text
    assert (await client.get(f"/articles/{slug}")).status_code == 404
