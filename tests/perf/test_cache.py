"""The read cache and HTTP caching: every write is visible to the next read, by anyone; per-viewer
flags never leak between viewers; a broken Redis never breaks a read."""

from __future__ import annotations

import httpx

from tests.conftest import ClientFactory
from tests.factories import Api


async def _warm(client: httpx.AsyncClient, *urls: str) -> None:
    for url in urls:
        assert (await client.get(url)).status_code == 200


async def test_writes_are_visible_to_the_next_anonymous_read(api: Api, client: httpx.AsyncClient) -> None:
    author, fan = await api.register("author"), await api.register("fan")
    slug = (await api.article(author, tagList=["one"]))["slug"]
    urls = ("/articles", f"/articles/{slug}", f"/articles/{slug}/comments", "/profiles/author", "/tags")
    await _warm(client, *urls)

    await api.article(author, "Second", tagList=["two"])
    assert (await client.get("/articles")).json()["articlesCount"] == 2
    assert set((await client.get("/tags")).json()["tags"]) == {"one", "two"}
    await _warm(client, *urls)

    await client.post(f"/articles/{slug}/favorite", headers=fan.headers)
    assert (await client.get(f"/articles/{slug}")).json()["article"]["favoritesCount"] == 1
    await _warm(client, *urls)

    await client.put(f"/articles/{slug}", json={"article": {"body": "edited"}}, headers=author.headers)
    assert (await client.get(f"/articles/{slug}")).json()["article"]["body"] == "edited"
    await _warm(client, *urls)

    await api.comment(fan, slug, "hello")
    assert [c["body"] for c in (await client.get(f"/articles/{slug}/comments")).json()["comments"]] == [
        "hello"
    ]
    await _warm(client, *urls)

    await client.put("/user", json={"user": {"bio": "new bio"}}, headers=author.headers)
    assert (await client.get(f"/articles/{slug}")).json()["article"]["author"]["bio"] == "new bio"
    assert (await client.get("/profiles/author")).json()["profile"]["bio"] == "new bio"
    await _warm(client, *urls)

    await client.delete(f"/articles/{slug}", headers=author.headers)
    assert (await client.get(f"/articles/{slug}")).status_code == 404
    assert (await client.get("/articles")).json()["articlesCount"] == 1


async def test_viewer_flags_never_leak(api: Api, client: httpx.AsyncClient) -> None:
    author, fan, other = await api.register("author"), await api.register("fan"), await api.register("other")
    slug = (await api.article(author))["slug"]
    await client.post(f"/articles/{slug}/favorite", headers=fan.headers)
    await client.post("/profiles/author/follow", headers=fan.headers)
    await api.comment(author, slug)
    # The fan's reads fill the cache (a miss, then a hit), then others read the same entries.
    for _ in range(2):
        article = (await client.get(f"/articles/{slug}", headers=fan.headers)).json()["article"]
        assert article["favorited"] is True and article["author"]["following"] is True
        listed = (await client.get("/articles", headers=fan.headers)).json()["articles"][0]
        assert listed["favorited"] is True and listed["author"]["following"] is True
        comment = (await client.get(f"/articles/{slug}/comments", headers=fan.headers)).json()["comments"][0]
        assert comment["author"]["following"] is True
        assert (await client.get("/profiles/author", headers=fan.headers)).json()["profile"][
            "following"
        ] is True
    for headers in ({}, other.headers):
        article = (await client.get(f"/articles/{slug}", headers=headers)).json()["article"]
        assert article["favorited"] is False and article["author"]["following"] is False
        listed = (await client.get("/articles", headers=headers)).json()["articles"][0]
        assert listed["favorited"] is False and listed["author"]["following"] is False
        comment = (await client.get(f"/articles/{slug}/comments", headers=headers)).json()["comments"][0]
        assert comment["author"]["following"] is False
        assert (await client.get("/profiles/author", headers=headers)).json()["profile"]["following"] is False

    # The fan's own flags are cached for them: their unfavorite and unfollow show at once.
    await client.delete(f"/articles/{slug}/favorite", headers=fan.headers)
    await client.delete("/profiles/author/follow", headers=fan.headers)
    article = (await client.get(f"/articles/{slug}", headers=fan.headers)).json()["article"]
    assert article["favorited"] is False and article["author"]["following"] is False
    listed = (await client.get("/articles", headers=fan.headers)).json()["articles"][0]
    assert listed["favorited"] is False and listed["author"]["following"] is False
    comment = (await client.get(f"/articles/{slug}/comments", headers=fan.headers)).json()["comments"][0]
    assert comment["author"]["following"] is False
    assert (await client.get("/profiles/author", headers=fan.headers)).json()["profile"]["following"] is False
    assert (await client.get("/articles/feed", headers=fan.headers)).json()["articlesCount"] == 0


async def test_etag_and_304(api: Api, client: httpx.AsyncClient) -> None:
    author = await api.register("author")
    slug = (await api.article(author))["slug"]
    for url, headers in ((f"/articles/{slug}", {}), ("/articles", author.headers), ("/tags", {})):
        first = await client.get(url, headers=headers)
        etag = first.headers["etag"]
        assert etag.startswith('W/"')
        again = await client.get(url, headers={**headers, "If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
    anonymous = await client.get(f"/articles/{slug}")
    assert anonymous.headers["cache-control"] == "public, max-age=5"
    signed_in = await client.get(f"/articles/{slug}", headers=author.headers)
    assert signed_in.headers["cache-control"] == "private, no-cache"
    # A change makes the old ETag stale.
    old = anonymous.headers["etag"]
    await client.put(f"/articles/{slug}", json={"article": {"body": "new"}}, headers=author.headers)
    changed = await client.get(f"/articles/{slug}", headers={"If-None-Match": old})
    assert changed.status_code == 200 and changed.headers["etag"] != old


async def test_credentials_are_never_etagged(api: Api, client: httpx.AsyncClient) -> None:
    account = await api.register("jake")
    response = await client.get("/user", headers=account.headers)
    assert "etag" not in response.headers and response.headers["cache-control"] == "no-store"


async def test_reads_work_without_redis(make_client: ClientFactory) -> None:
    """Redis refusing connections: reads and writes go on from the database."""
    client = await make_client(redis_url="redis://127.0.0.1:1/0")
    api = Api(client)
    author = await api.register("author")
    slug = (await api.article(author))["slug"]
    for _ in range(2):
        assert (await client.get(f"/articles/{slug}")).json()["article"]["slug"] == slug
    await client.put(f"/articles/{slug}", json={"article": {"body": "edited"}}, headers=author.headers)
    assert (await client.get(f"/articles/{slug}")).json()["article"]["body"] == "edited"
    cache = client.app.state.cache  # type: ignore[attr-defined]
    assert cache.hits == 0 and cache.stale  # nothing served from Redis; a bump is due before it is again


async def test_cache_can_be_turned_off(make_client: ClientFactory) -> None:
    client = await make_client(cache_enabled=False)
    await client.get("/tags")
    await client.get("/tags")
    cache = client.app.state.cache  # type: ignore[attr-defined]
    assert (cache.hits, cache.misses) == (0, 0)


async def test_cached_caller_verdicts_follow_every_session_change(
    api: Api, client: httpx.AsyncClient
) -> None:
    """Reads check the caller through the cache; logging out, ending sessions and deactivation still
    take effect on the very next read."""
    from tests.security.test_authorization import make_admin

    admin = await make_admin(api, client)
    jake = await api.register("jake")
    pair = (await client.post("/auth/token", data={"username": "jake", "password": jake.password})).json()
    bearer = {"Authorization": f"Bearer {pair['access_token']}"}
    for _ in range(2):  # the second read is served from the cached verdict
        assert (await client.get("/articles", headers=bearer)).status_code == 200
    await client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert (await client.get("/articles", headers=bearer)).status_code == 401

    assert (await client.get("/articles", headers=jake.headers)).status_code == 200
    changed = await client.put(
        "/user", json={"user": {"password": "a-brand-new-pass-4"}}, headers=jake.headers
    )
    assert (await client.get("/articles", headers=jake.headers)).status_code == 401
    fresh = {"Authorization": f"Token {changed.json()['user']['token']}"}
    assert (await client.get("/articles", headers=fresh)).status_code == 200
    await client.post("/admin/users/jake/deactivate", headers=admin.headers)
    assert (await client.get("/articles", headers=fresh)).status_code == 401


async def test_concurrent_misses_share_one_load(app: object) -> None:
    import asyncio

    from app.core.cache import Cache

    cache: Cache = app.state.cache  # type: ignore[attr-defined]
    calls = 0

    async def load() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return b"value"

    results = await asyncio.gather(*(cache.get_or_load("shared-key", load) for _ in range(10)))
    assert [value for value, _ in results] == [b"value"] * 10
    assert calls == 1  # one load for ten concurrent misses


async def test_a_failed_load_does_not_fail_the_waiters(app: object) -> None:
    import asyncio

    from app.core.cache import Cache

    cache: Cache = app.state.cache  # type: ignore[attr-defined]
    calls = 0

    async def load() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        if calls == 1:
            raise RuntimeError("the first loader fails")
        return b"value"

    results = await asyncio.gather(
        *(cache.get_or_load("flaky-key", load) for _ in range(3)), return_exceptions=True
    )
    # Whichever request loaded first fails alone; the ones waiting on it load for themselves.
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and isinstance(failures[0], RuntimeError)
    assert [r[0] for r in results if not isinstance(r, BaseException)] == [b"value", b"value"]
