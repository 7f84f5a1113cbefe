"""Comments on articles (``/articles/{slug}/comments``)."""

from __future__ import annotations

import httpx
import pytest

from tests.factories import TIMESTAMP, Api, assert_problem


async def comment_ids(
    client: httpx.AsyncClient, slug: str, headers: dict[str, str] | None = None
) -> list[int]:
    response = await client.get(f"/articles/{slug}/comments", headers=headers)
    assert response.status_code == 200, response.text
    return [comment["id"] for comment in response.json()["comments"]]


async def test_add_comment(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    ann = await api.register("ann")
    slug = (await api.article(jake))["slug"]
    response = await client.post(
        f"/articles/{slug}/comments", json={"comment": {"body": "Thank you so much!"}}, headers=ann.headers
    )
    assert response.status_code == 200, response.text
    comment = response.json()["comment"]
    assert isinstance(comment["id"], int)
    assert comment["body"] == "Thank you so much!"
    assert comment["author"] == {"username": "ann", "bio": "", "image": "", "following": False}
    assert TIMESTAMP.match(comment["createdAt"]), comment["createdAt"]
    assert TIMESTAMP.match(comment["updatedAt"]), comment["updatedAt"]
    assert await comment_ids(client, slug) == [comment["id"]]


async def test_list_comments_newest_first(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    ann = await api.register("ann")
    bob = await api.register("bob")
    slug = (await api.article(jake))["slug"]
    first = await api.comment(ann, slug, "first")
    second = await api.comment(jake, slug, "second")
    response = await client.post("/profiles/ann/follow", headers=bob.headers)
    assert response.status_code == 200, response.text

    anonymous = (await client.get(f"/articles/{slug}/comments")).json()["comments"]
    assert [(c["id"], c["body"]) for c in anonymous] == [(second["id"], "second"), (first["id"], "first")]
    assert [c["author"]["following"] for c in anonymous] == [False, False]

    viewed = (await client.get(f"/articles/{slug}/comments", headers=bob.headers)).json()["comments"]
    assert [(c["author"]["username"], c["author"]["following"]) for c in viewed] == [
        ("jake", False),
        ("ann", True),
    ]


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_unknown_article(api: Api, client: httpx.AsyncClient, method: str) -> None:
    ann = await api.register("ann")
    path = "/articles/no-such-article/comments" + ("/1" if method == "DELETE" else "")
    body = {"comment": {"body": "Hello"}} if method == "POST" else None
    response = await client.request(method, path, json=body, headers=ann.headers)
    assert_problem(response, 404, "not_found")


async def test_delete_own_comment(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    ann = await api.register("ann")
    slug = (await api.article(jake))["slug"]
    kept = await api.comment(jake, slug, "kept")
    removed = await api.comment(ann, slug, "removed")
    response = await client.delete(f"/articles/{slug}/comments/{removed['id']}", headers=ann.headers)
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert await comment_ids(client, slug) == [kept["id"]]
    again = await client.delete(f"/articles/{slug}/comments/{removed['id']}", headers=ann.headers)
    assert_problem(again, 404, "not_found", "comment not found")


async def test_delete_someone_elses_comment(api: Api, client: httpx.AsyncClient) -> None:
    """Not even the article's author may delete a reader's comment."""
    jake = await api.register("jake")
    ann = await api.register("ann")
    slug = (await api.article(jake))["slug"]
    comment = await api.comment(ann, slug)
    response = await client.delete(f"/articles/{slug}/comments/{comment['id']}", headers=jake.headers)
    assert_problem(response, 403, "forbidden")
    assert await comment_ids(client, slug) == [comment["id"]]


async def test_delete_unknown_comment(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    slug = (await api.article(jake))["slug"]
    comment = await api.comment(jake, slug)
    response = await client.delete(f"/articles/{slug}/comments/{comment['id'] + 1000}", headers=jake.headers)
    assert_problem(response, 404, "not_found", "comment not found")


async def test_delete_comment_through_another_article(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    here = (await api.article(jake, "Here"))["slug"]
    there = (await api.article(jake, "There"))["slug"]
    comment = await api.comment(jake, there)
    response = await client.delete(f"/articles/{here}/comments/{comment['id']}", headers=jake.headers)
    assert_problem(response, 404, "not_found", "comment not found")
    assert await comment_ids(client, there) == [comment["id"]]


@pytest.mark.parametrize(
    ("comment_id", "message"),
    [
        ("abc", "must be an integer"),
        ("0", "must be at least 1"),
        ("2147483648", "must be at most 2147483647"),
    ],
)
async def test_delete_invalid_comment_id(
    api: Api, client: httpx.AsyncClient, comment_id: str, message: str
) -> None:
    jake = await api.register("jake")
    slug = (await api.article(jake))["slug"]
    response = await client.delete(f"/articles/{slug}/comments/{comment_id}", headers=jake.headers)
    problem = assert_problem(response, 422, "validation_failed")
    assert problem["errors"]["comment_id"] == [message]


@pytest.mark.parametrize("comment", [{"body": ""}, {}], ids=["empty", "missing"])
async def test_add_blank_comment(api: Api, client: httpx.AsyncClient, comment: dict[str, str]) -> None:
    jake = await api.register("jake")
    slug = (await api.article(jake))["slug"]
    response = await client.post(
        f"/articles/{slug}/comments", json={"comment": comment}, headers=jake.headers
    )
    problem = assert_problem(response, 422, "validation_failed")
    # "body" is both the field and the key of the general messages.
    assert "can't be blank" in problem["errors"]["body"]
    assert await comment_ids(client, slug) == []


async def test_comments_require_token(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    slug = (await api.article(jake))["slug"]
    comment = await api.comment(jake, slug)
    added = await client.post(f"/articles/{slug}/comments", json={"comment": {"body": "Anonymous"}})
    deleted = await client.delete(f"/articles/{slug}/comments/{comment['id']}")
    for response in (added, deleted):
        assert_problem(response, 401, "unauthorized", "authentication required")
        assert response.headers["www-authenticate"].startswith("Token")
    assert await comment_ids(client, slug) == [comment["id"]]


async def test_deleting_article_removes_its_comments(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    slug = (await api.article(jake, "Doomed"))["slug"]
    await api.comment(jake, slug)
    assert (await client.delete(f"/articles/{slug}", headers=jake.headers)).status_code == 204
    assert_problem(await client.get(f"/articles/{slug}/comments"), 404, "not_found", "article not found")
    # A new article under the same slug must not inherit the old comments.
    assert (await api.article(jake, "Doomed"))["slug"] == slug
    assert await comment_ids(client, slug) == []


async def test_empty_json_body_is_accepted(api: Api, client: httpx.AsyncClient) -> None:
    """Front ends send ``Content-Type: application/json`` with an empty body on GET and DELETE."""
    jake = await api.register("jake")
    slug = (await api.article(jake))["slug"]
    comment = await api.comment(jake, slug)
    headers = {**jake.headers, "Content-Type": "application/json"}
    listed = await client.request("GET", f"/articles/{slug}/comments", headers=headers, content=b"")
    assert (listed.status_code, len(listed.json()["comments"])) == (200, 1)
    url = f"/articles/{slug}/comments/{comment['id']}"
    deleted = await client.request("DELETE", url, headers=headers, content=b"")
    assert deleted.status_code == 204, deleted.text
    assert await comment_ids(client, slug) == []
