"""Uploads as clients see them: avatars, article images and their thumbnails, deletion, quotas and
rate limits, on the local and the S3 storage backend alike (see tests/media.py)."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.factories import Account, assert_problem
from tests.media import Media, MediaFactory, encode, opened, picture, png

MEDIA_URL = re.compile(r"^http://test/media/(avatars|images)/[A-Za-z0-9_-]{22}\.(png|jpg|webp)$")


def key_of(url: str) -> str:
    return url.removeprefix("http://test/media/")


async def _user(media: Media, account: Account) -> dict[str, str]:
    response = await media.client.get("/user", headers=account.headers)
    assert response.status_code == 200
    user: dict[str, str] = response.json()["user"]
    return user


async def test_an_avatar_becomes_the_users_image(media: Media) -> None:
    jake = await media.api.register("jake")
    response = await media.upload_avatar(jake, png(800, 600))
    assert response.status_code == 201, response.text
    image = response.json()["user"]["image"]
    assert MEDIA_URL.match(image) and "/avatars/" in image and image.endswith(".png")
    assert response.json()["user"]["token"] == jake.token
    assert response.headers["cache-control"] == "no-store"  # it carries the token
    assert (await _user(media, jake))["image"] == image
    profile = await media.client.get("/profiles/jake")
    assert profile.json()["profile"]["image"] == image

    served = await media.download(image)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png"
    assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert served.headers["content-disposition"] == f'inline; filename="{image.rsplit("/", 1)[1]}"'
    assert opened(served.content).size == (512, 384)  # avatars are stored at most 512 pixels a side
    assert await media.stored() == {key_of(image): served.content}


async def test_the_avatar_shows_wherever_the_profile_does(media: Media) -> None:
    jake, ann = await media.api.register("jake"), await media.api.register("ann")
    image = (await media.upload_avatar(jake, png())).json()["user"]["image"]
    article = await media.api.article(jake, "Dragons")
    await media.api.comment(jake, article["slug"])
    follow = await media.client.post("/profiles/jake/follow", headers=ann.headers)
    assert follow.json()["profile"]["image"] == image
    listed = await media.client.get("/articles")
    assert listed.json()["articles"][0]["author"]["image"] == image
    single = await media.client.get(f"/articles/{article['slug']}", headers=ann.headers)
    assert single.json()["article"]["author"]["image"] == image
    comments = await media.client.get(f"/articles/{article['slug']}/comments")
    assert comments.json()["comments"][0]["author"]["image"] == image
    await media.client.post(f"/articles/{article['slug']}/favorite", headers=ann.headers)
    await media.upload_avatar(ann, png())
    await media.client.post("/profiles/ann/follow", headers=jake.headers)
    notifications = await media.client.get("/notifications", headers=jake.headers)
    actors = {n["actor"]["image"] for n in notifications.json()["notifications"]}
    assert actors == {(await _user(media, ann))["image"]}


async def test_the_latest_of_an_upload_and_an_image_url_wins(media: Media) -> None:
    jake = await media.api.register("jake")
    first = (await media.upload_avatar(jake, png())).json()["user"]["image"]
    second = (await media.upload_avatar(jake, png())).json()["user"]["image"]
    assert second != first
    await media.jobs_done()
    assert set(await media.stored()) == {key_of(second)}  # the replaced avatar's file is deleted

    url = "https://images.example/jake.jpg"
    response = await media.client.put("/user", json={"user": {"image": url}}, headers=jake.headers)
    assert response.json()["user"]["image"] == url
    assert (await media.client.get("/profiles/jake")).json()["profile"]["image"] == url
    await media.jobs_done()
    assert await media.stored() == {}

    third = (await media.upload_avatar(jake, png())).json()["user"]["image"]
    assert MEDIA_URL.match(third)
    assert (await media.client.get("/profiles/jake")).json()["profile"]["image"] == third


async def test_sending_back_the_avatars_url_keeps_it(media: Media) -> None:
    """RealWorld settings forms send every field back, the image URL they were given included."""
    jake = await media.api.register("jake")
    image = (await media.upload_avatar(jake, png())).json()["user"]["image"]
    user = {"image": image, "bio": "I fly", "username": "jake", "email": "jake@example.com"}
    response = await media.client.put("/user", json={"user": user}, headers=jake.headers)
    assert response.json()["user"]["image"] == image
    assert response.json()["user"]["bio"] == "I fly"
    await media.jobs_done()
    assert set(await media.stored()) == {key_of(image)}
    assert (await media.download(image)).status_code == 200


async def test_removing_the_avatar(media: Media) -> None:
    jake = await media.api.register("jake")
    image = (await media.upload_avatar(jake, png())).json()["user"]["image"]
    for _ in range(2):  # idempotent
        response = await media.client.delete("/user/avatar", headers=jake.headers)
        assert response.status_code == 200
        assert response.json()["user"]["image"] == ""
    assert (await media.client.get("/profiles/jake")).json()["profile"]["image"] == ""
    await media.jobs_done()
    assert await media.stored() == {}
    if media.backend == "local":
        assert (await media.client.get(image)).status_code == 404


async def test_article_images_and_their_thumbnails(media: Media) -> None:
    jake = await media.api.register("jake")
    article = await media.api.article(jake, "Dragons")
    slug = article["slug"]
    assert article["images"] == []
    assert (await media.client.get(f"/articles/{slug}")).json()["article"]["images"] == []  # now cached

    response = await media.upload_image(jake, slug, encode(picture(1600, 1200), "JPEG"), filename="a.jpg")
    assert response.status_code == 201, response.text
    (image,) = response.json()["article"]["images"]
    assert MEDIA_URL.match(image["url"]) and image["url"].endswith(".jpg")
    assert image == {
        "id": image["id"],
        "url": image["url"],
        "contentType": "image/jpeg",
        "width": 1600,
        "height": 1200,
        "variants": {},  # made by a job after the commit
    }
    await media.jobs_done()
    shown = (await media.client.get(f"/articles/{slug}")).json()["article"]["images"]
    stem = image["url"].removesuffix(".jpg")
    assert shown == [{**image, "variants": {size: f"{stem}_{size}.jpg" for size in ("64", "256", "1024")}}]
    listed = (await media.client.get("/articles")).json()["articles"][0]["images"]
    assert listed == shown
    for size, url in shown[0]["variants"].items():
        served = await media.download(url)
        assert served.status_code == 200
        assert served.headers["content-type"] == "image/jpeg"
        assert max(opened(served.content).size) == int(size)
    original = await media.download(image["url"])
    assert opened(original.content).size == (1600, 1200)
    assert len(await media.stored()) == 4


async def test_thumbnails_never_enlarge_a_small_image(media: Media) -> None:
    jake = await media.api.register("jake")
    slug = (await media.api.article(jake))["slug"]
    await media.upload_image(jake, slug, png(100, 40))
    await media.jobs_done()
    (image,) = (await media.client.get(f"/articles/{slug}")).json()["article"]["images"]
    sizes = {
        size: opened((await media.download(url)).content).size for size, url in image["variants"].items()
    }
    assert sizes == {"64": (64, 26), "256": (100, 40), "1024": (100, 40)}


async def test_images_in_order_and_deleted_one_by_one(media: Media) -> None:
    jake = await media.api.register("jake")
    slug = (await media.api.article(jake))["slug"]
    ids = [
        (await media.upload_image(jake, slug, png())).json()["article"]["images"][-1]["id"] for _ in range(3)
    ]
    await media.jobs_done()
    response = await media.client.delete(f"/articles/{slug}/images/{ids[1]}", headers=jake.headers)
    assert response.status_code == 200
    assert [image["id"] for image in response.json()["article"]["images"]] == [ids[0], ids[2]]
    await media.jobs_done()
    assert len(await media.stored()) == 8  # two images and their three thumbnails each
    again = await media.client.delete(f"/articles/{slug}/images/{ids[1]}", headers=jake.headers)
    assert_problem(again, 404, "not_found", "image not found")


async def test_only_the_author_adds_images(media: Media) -> None:
    jake, ann = await media.api.register("jake"), await media.api.register("ann")
    slug = (await media.api.article(jake))["slug"]
    response = await media.upload_image(ann, slug, png())
    assert_problem(response, 403, "forbidden", "only the author may add images to this article")
    assert_problem(await media.upload_image(jake, "no-such-article", png()), 404, "not_found")
    anonymous = await media.client.post(f"/articles/{slug}/images", files={"file": ("a.png", png())})
    assert_problem(anonymous, 401, "unauthorized")
    assert await media.stored() == {}


async def test_deleting_an_article_deletes_its_images_and_gives_back_the_quota(
    make_media: MediaFactory,
) -> None:
    media = await make_media(upload_quota_count=2)
    jake = await media.api.register("jake")
    first, second = (
        (await media.api.article(jake, "One"))["slug"],
        (await media.api.article(jake, "Two"))["slug"],
    )
    for _ in range(2):
        assert (await media.upload_image(jake, first, png())).status_code == 201
    await media.jobs_done()
    assert_problem(await media.upload_image(jake, second, png()), 403, "quota_exceeded")
    assert (await media.client.delete(f"/articles/{first}", headers=jake.headers)).status_code == 204
    await media.jobs_done()
    assert await media.stored() == {}
    assert (await media.upload_image(jake, second, png())).status_code == 201


async def test_quota_of_images(make_media: MediaFactory) -> None:
    media = await make_media(upload_quota_count=2)
    jake = await media.api.register("jake")
    slug = (await media.api.article(jake))["slug"]
    assert (await media.upload_avatar(jake, png())).status_code == 201
    image = (await media.upload_image(jake, slug, png())).json()["article"]["images"][0]
    response = await media.upload_image(jake, slug, png())
    problem = assert_problem(response, 403, "quota_exceeded")
    assert "2 images" in problem["detail"]
    # Replacing the avatar takes no more room, and what is deleted frees its place.
    assert (await media.upload_avatar(jake, png())).status_code == 201
    await media.client.delete(f"/articles/{slug}/images/{image['id']}", headers=jake.headers)
    assert (await media.upload_image(jake, slug, png())).status_code == 201
    await media.jobs_done()
    assert len(await media.stored()) == 1 + 4


async def test_quota_of_bytes(make_media: MediaFactory) -> None:
    big = encode(picture(400, 400), "PNG")  # stored as it is: the same encoder, the same settings
    media = await make_media(upload_quota_bytes=len(big) * 3 // 2)
    jake = await media.api.register("jake")
    slug = (await media.api.article(jake))["slug"]
    assert (await media.upload_image(jake, slug, big)).status_code == 201
    problem = assert_problem(await media.upload_image(jake, slug, big), 403, "quota_exceeded")
    assert f"{len(big) * 3 // 2} bytes" in problem["detail"]
    assert (await media.upload_image(jake, slug, png(8, 8))).status_code == 201
    await media.jobs_done()
    assert len(await media.stored()) == 2 * 4  # the refused image was never stored


async def test_uploads_are_rate_limited_per_user(make_media: MediaFactory) -> None:
    media = await make_media(rate_limit_uploads_user="2/minute")
    jake, ann = await media.api.register("jake"), await media.api.register("ann")
    for _ in range(2):
        assert (await media.upload_avatar(jake, png())).status_code == 201
    response = await media.upload_avatar(jake, png())
    assert_problem(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1
    assert (await media.upload_avatar(ann, png())).status_code == 201  # another user's own budget


@pytest.mark.parametrize(
    ("fmt", "options", "content_type", "extension"),
    [
        ("JPEG", {}, "image/jpeg", "jpg"),
        ("PNG", {}, "image/png", "png"),
        ("WEBP", {}, "image/webp", "webp"),
        ("GIF", {}, "image/png", "png"),  # the first frame, as a PNG
    ],
)
async def test_each_accepted_format(
    media: Media, fmt: str, options: dict[str, object], content_type: str, extension: str
) -> None:
    jake = await media.api.register("jake")
    slug = (await media.api.article(jake))["slug"]
    response = await media.upload_image(jake, slug, encode(picture(90, 60), fmt, **options))
    assert response.status_code == 201, response.text
    (image,) = response.json()["article"]["images"]
    assert (image["contentType"], image["width"], image["height"]) == (content_type, 90, 60)
    assert image["url"].endswith(f".{extension}")
    served = await media.download(image["url"])
    assert served.headers["content-type"] == content_type
    assert opened(served.content).format == {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[extension]


async def test_transparency_is_kept(media: Media) -> None:
    jake = await media.api.register("jake")
    translucent = picture(20, 20).convert("RGBA")
    translucent.putalpha(100)
    image = (await media.upload_avatar(jake, encode(translucent, "PNG"))).json()["user"]["image"]
    stored = opened((await media.download(image)).content)
    assert stored.mode == "RGBA" and stored.getpixel((5, 5))[3] == 100  # type: ignore[index]


async def test_a_body_over_the_json_cap_is_fine_for_uploads(media: Media) -> None:
    jake = await media.api.register("jake")
    noisy = encode(picture(1200, 900).effect_spread(40), "PNG")  # hard to compress
    assert len(noisy) > media.settings.max_body_bytes
    assert (await media.upload_avatar(jake, noisy)).status_code == 201


async def test_image_urls_follow_the_request_host(media: Media) -> None:
    jake = await media.api.register("jake")
    await media.upload_avatar(jake, png())
    slug = (await media.api.article(jake))["slug"]
    await media.upload_image(jake, slug, png())
    for base in ("http://test", "http://conduit.example:8443"):  # cached per base: never another's
        article = (await media.client.get(f"{base}/api/v1/articles/{slug}")).json()["article"]
        assert article["author"]["image"].startswith(f"{base}/media/avatars/")
        assert article["images"][0]["url"].startswith(f"{base}/media/images/")
        profile = (await media.client.get(f"{base}/api/v1/profiles/jake")).json()["profile"]
        assert profile["image"].startswith(f"{base}/media/avatars/")


async def test_image_urls_behind_a_trusted_proxy(make_media: MediaFactory) -> None:
    media = await make_media(trusted_proxies=["127.0.0.1"])
    jake = await media.api.register("jake")
    response = await media.client.put(
        "http://api.conduit.example/api/v1/user/avatar",
        files={"file": ("me.png", png(), "image/png")},
        headers={**jake.headers, "X-Forwarded-Proto": "https"},
    )
    assert response.json()["user"]["image"].startswith("https://api.conduit.example/media/avatars/")


async def test_image_urls_under_the_configured_public_url(make_media: MediaFactory) -> None:
    media = await make_media(public_url="https://cdn.conduit.example/")
    jake = await media.api.register("jake")
    image = (await media.upload_avatar(jake, png())).json()["user"]["image"]
    assert image.startswith("https://cdn.conduit.example/media/avatars/")
    key = image.removeprefix("https://cdn.conduit.example/media/")
    assert set(await media.stored()) == {key}


async def test_the_operations_are_documented(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert set(paths["/api/v1/user/avatar"]) == {"put", "delete"}
    assert set(paths["/api/v1/articles/{slug}/images"]) == {"post"}
    assert set(paths["/api/v1/articles/{slug}/images/{image_id}"]) == {"delete"}
    assert not [path for path in paths if path.startswith("/media")]
