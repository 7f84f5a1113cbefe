"""Upload threats, one rule at a time, on both storage backends: oversized and endless bodies, types
disguised by a name or a header, polyglots, decompression bombs, path traversal, other people's images,
and image work kept off the event loop (see docs/uploads.md)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.v1.multipart import FRAMING_BYTES
from app.models import Role, User
from app.services import media as media_service
from tests.factories import Account, assert_problem
from tests.media import Media, MediaFactory, encode, forged_png, multipart, opened, picture, png

KEY = re.compile(r"^(avatars|images)/[A-Za-z0-9_-]{22}(_(64|256|1024))?\.(png|jpg|webp)$")
CAP = 200_000  # a small upload cap, so that these tests move little data


async def _avatar(media: Media, account: Account) -> str:
    response = await media.client.get("/user", headers=account.headers)
    image: str = response.json()["user"]["image"]
    return image


def _padded_png(size: int) -> bytes:
    """A valid PNG padded with trailing bytes to exactly ``size`` bytes (the padding is not kept)."""
    data = png()
    return data + b"\0" * (size - len(data))


async def test_a_file_at_the_cap_is_accepted(make_media: MediaFactory) -> None:
    media = await make_media(upload_max_bytes=CAP)
    jake = await media.api.register("jake")
    assert (await media.upload_avatar(jake, _padded_png(CAP))).status_code == 201


async def test_a_file_over_the_cap_is_refused(make_media: MediaFactory) -> None:
    media = await make_media(upload_max_bytes=CAP)
    jake = await media.api.register("jake")
    response = await media.upload_avatar(jake, _padded_png(CAP + 1))
    assert_problem(response, 413, "payload_too_large", f"the file exceeds {CAP} bytes")
    declared = await media.upload_avatar(jake, _padded_png(CAP + FRAMING_BYTES + 1))
    message = f"the request body exceeds {CAP + FRAMING_BYTES} bytes"
    assert_problem(declared, 413, "payload_too_large", message)  # from Content-Length, unread
    assert await _avatar(media, jake) == ""
    assert await media.stored() == {}


async def test_a_chunked_body_is_cut_off_at_the_cap(make_media: MediaFactory) -> None:
    """Without a Content-Length, the body is refused as soon as the file passes the cap: the rest of
    an endless body is never read, let alone held in memory."""
    media = await make_media(upload_max_bytes=CAP)
    jake = await media.api.register("jake")
    chunk = 16 * 1024
    sent = 0

    def endless() -> Any:
        nonlocal sent
        yield png()
        while sent < 100 * CAP:
            sent += chunk
            yield b"\0" * chunk

    parts, headers = multipart(endless())

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    response = await media.client.put("/user/avatar", content=body(), headers={**jake.headers, **headers})
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large", f"the file exceeds {CAP} bytes")
    assert sent <= CAP + 2 * chunk
    assert await media.stored() == {}


async def test_a_chunked_file_within_the_cap_is_accepted(media: Media) -> None:
    jake = await media.api.register("jake")
    data = png(300, 200)
    parts, headers = multipart([data[i : i + 1000] for i in range(0, len(data), 1000)])

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    response = await media.client.put("/user/avatar", content=body(), headers={**jake.headers, **headers})
    assert response.status_code == 201, response.text
    assert opened((await media.download(response.json()["user"]["image"])).content).size == (300, 200)


DISGUISED = [
    ("page.png", "image/png", b"<!DOCTYPE html><html><script>alert(document.cookie)</script></html>"),
    ("logo.svg", "image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'),
    ("logo.png", "image/png", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>'),
    ("shell.jpg", "image/jpeg", b"<?php system($_GET['c']); ?>"),
    ("doc.gif", "image/gif", b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"),
    ("icon.png", "image/png", encode(picture(16, 16), "BMP")),  # a real image, of a refused type
    ("photo.png", "image/png", encode(picture(16, 16), "TIFF")),
]


@pytest.mark.parametrize(("filename", "content_type", "data"), DISGUISED, ids=[d[0] for d in DISGUISED])
async def test_a_type_disguised_by_its_name_or_header_is_refused(
    media: Media, filename: str, content_type: str, data: bytes
) -> None:
    jake = await media.api.register("jake")
    slug = (await media.api.article(jake))["slug"]
    for response in (
        await media.upload_avatar(jake, data, filename=filename, content_type=content_type),
        await media.upload_image(jake, slug, data, filename=filename, content_type=content_type),
    ):
        problem = assert_problem(response, 415, "unsupported_media_type")
        assert problem["errors"]["file"] == ["must be a JPEG, PNG, WebP or GIF image"]
    assert await media.stored() == {}


async def test_the_content_decides_not_the_name_or_header(media: Media) -> None:
    jake = await media.api.register("jake")
    response = await media.upload_avatar(jake, png(), filename="notes.txt", content_type="text/plain")
    assert response.status_code == 201
    image = response.json()["user"]["image"]
    assert image.endswith(".png") and "notes" not in image
    assert (await media.download(image)).headers["content-type"] == "image/png"


async def test_a_png_polyglot_comes_out_as_a_plain_png(media: Media) -> None:
    jake = await media.api.register("jake")
    payload = b"<html><script>alert(document.cookie)</script></html>"
    data = png() + payload + b"PK\x03\x04" + b"\0" * 30  # an HTML page and a zip entry after the image
    image = (await media.upload_avatar(jake, data)).json()["user"]["image"]
    stored = (await media.download(image)).content
    assert b"<script" not in stored and b"PK\x03\x04" not in stored
    assert stored.endswith(b"IEND\xaeB`\x82")  # nothing after the PNG's last chunk


async def test_metadata_is_stripped(media: Media) -> None:
    jake = await media.api.register("jake")
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 24.0)}  # GPS: where the photo was taken
    comment = b"<?php system($_GET['c']); ?>"
    data = encode(picture(120, 80), "JPEG", exif=exif.tobytes(), comment=comment)
    assert opened(data).getexif()[0x010F] == "SpyCam" and b"<?php" in data
    image = (await media.upload_avatar(jake, data, filename="me.jpg", content_type="image/jpeg")).json()
    stored = (await media.download(image["user"]["image"])).content
    assert not opened(stored).getexif()
    assert b"SpyCam" not in stored and b"<?php" not in stored and b"Exif" not in stored


async def test_the_exif_orientation_is_applied_before_it_is_stripped(media: Media) -> None:
    jake = await media.api.register("jake")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(picture(120, 80), "JPEG", exif=exif.tobytes())
    image = (await media.upload_avatar(jake, data, content_type="image/jpeg")).json()["user"]["image"]
    assert opened((await media.download(image)).content).size == (80, 120)


async def test_a_script_dressed_as_a_gif_is_not_an_image(media: Media) -> None:
    jake = await media.api.register("jake")
    gifar = b"GIF89a/*\x00\x00*/=1;alert(document.domain);//"  # a GIF header that is also JavaScript
    response = await media.upload_avatar(jake, gifar, filename="a.gif", content_type="image/gif")
    problem = assert_problem(response, 422, "validation_failed")
    assert problem["errors"]["file"] == ["is not a valid image"]
    truncated = await media.upload_avatar(jake, png(200, 200)[:300])
    assert assert_problem(truncated, 422, "validation_failed")["errors"]["file"] == ["is not a valid image"]
    assert await media.stored() == {}


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (7000, 7000),  # over the default 40,000,000: refused by our check, from the header
        (100_000, 100_000),  # so far over that Pillow itself refuses to open it
    ],
)
async def test_decompression_bombs_are_refused_before_decoding(media: Media, width: int, height: int) -> None:
    """The header claims more pixels than allowed; its data is garbage, which decoding would have
    reported as "not a valid image": the pixel limit was checked first, from the header alone."""
    jake = await media.api.register("jake")
    response = await media.upload_avatar(jake, forged_png(width, height))
    problem = assert_problem(response, 422, "validation_failed")
    assert problem["errors"]["file"] == ["must have at most 40000000 pixels"]


async def test_a_real_decompression_bomb_is_refused(make_media: MediaFactory) -> None:
    media = await make_media(upload_max_pixels=1_000_000)
    jake = await media.api.register("jake")
    slug = (await media.api.article(jake))["slug"]
    bomb = encode(Image.new("L", (2000, 2000)), "PNG", optimize=True)  # 4,000,000 pixels in a few KB
    assert len(bomb) < 20_000
    problem = assert_problem(await media.upload_image(jake, slug, bomb), 422, "validation_failed")
    assert problem["errors"]["file"] == ["must have at most 1000000 pixels"]
    assert (await media.upload_image(jake, slug, png(1000, 1000))).status_code == 201


TRAVERSALS = [
    "../../../../evil.png",
    "..\\..\\evil.png",
    "/etc/evil.png",
    "....//evil.png",
    "%2e%2e%2fevil.png",
]


@pytest.mark.parametrize("filename", TRAVERSALS)
async def test_the_clients_file_name_is_never_used(media: Media, tmp_path: Path, filename: str) -> None:
    jake = await media.api.register("jake")
    slug = (await media.api.article(jake))["slug"]
    response = await media.upload_image(jake, slug, png(), filename=filename)
    assert response.status_code == 201
    assert "evil" not in response.text
    await media.jobs_done()
    stored = await media.stored()
    assert len(stored) == 4 and all(KEY.match(key) for key in stored)
    assert not [path for path in tmp_path.parent.rglob("*") if "evil" in path.name]


@pytest.mark.parametrize(
    "path",
    [
        "/media/..%2Fsecret_key",
        "/media/avatars/..%2F..%2Fsecret_key",
        "/media/%2e%2e/%2e%2e/secret_key",
        "/media/avatars/%2e%2e%2f%2e%2e%2fconduit.db",
        "/media/avatars/AAAAAAAAAAAAAAAAAAAAAA.png/../../secret_key",
        "/media/secret_key",
        "/media/avatars/short.png",
        "/media/avatars/AAAAAAAAAAAAAAAAAAAAAA.svg",
        "/media/avatars/AAAAAAAAAAAAAAAAAAAAAA.png%00.html",
    ],
)
async def test_the_media_route_serves_generated_keys_only(media: Media, path: str) -> None:
    for name in ("secret_key", "conduit.db"):  # there to be stolen
        (media.settings.var_dir / name).write_text("TOP-SECRET")
    response = await media.client.get(f"http://test{path}")
    assert_problem(response, 404, "not_found", "file not found")
    assert "TOP-SECRET" not in response.text


async def test_a_missing_file_is_not_found(make_media: MediaFactory) -> None:
    media = await make_media(storage_backend="local")
    response = await media.client.get("http://test/media/images/AAAAAAAAAAAAAAAAAAAAAA_64.png")
    assert_problem(response, 404, "not_found", "file not found")


async def test_a_stranger_cannot_delete_someone_elses_image(media: Media, engine: AsyncEngine) -> None:
    jake, ann, mod = [await media.api.register(name) for name in ("jake", "ann", "mod")]
    slug = (await media.api.article(jake, "Jake's"))["slug"]
    other = (await media.api.article(ann, "Ann's"))["slug"]
    image = (await media.upload_image(jake, slug, png())).json()["article"]["images"][0]
    await media.jobs_done()

    stranger = await media.client.delete(f"/articles/{slug}/images/{image['id']}", headers=ann.headers)
    assert_problem(stranger, 403, "forbidden", "only the author may delete this image")
    # Through an article of her own: the image is not one of its images.
    sideways = await media.client.delete(f"/articles/{other}/images/{image['id']}", headers=ann.headers)
    assert_problem(sideways, 404, "not_found", "image not found")
    anonymous = await media.client.delete(f"/articles/{slug}/images/{image['id']}")
    assert_problem(anonymous, 401, "unauthorized")
    await media.jobs_done()
    assert len(await media.stored()) == 4
    images = (await media.client.get(f"/articles/{slug}")).json()["article"]["images"]
    assert [kept["id"] for kept in images] == [image["id"]]

    async with engine.begin() as connection:
        await connection.execute(update(User).where(User.username == "mod").values(role=Role.MODERATOR))
    moderated = await media.client.delete(f"/articles/{slug}/images/{image['id']}", headers=mod.headers)
    assert moderated.status_code == 200 and moderated.json()["article"]["images"] == []
    await media.jobs_done()
    assert await media.stored() == {}


async def test_files_are_served_safe_to_embed_and_never_to_run(make_media: MediaFactory) -> None:
    media = await make_media(storage_backend="local")
    jake = await media.api.register("jake")
    image = (await media.upload_avatar(jake, png())).json()["user"]["image"]
    response = await media.client.get(image)
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert response.headers["cross-origin-resource-policy"] == "cross-origin"  # front ends embed them
    assert response.headers["content-disposition"].startswith("inline; filename=")
    etag = response.headers["etag"]
    assert etag.startswith('"') and int(response.headers["content-length"]) == len(response.content)
    revalidated = await media.client.get(image, headers={"If-None-Match": etag})
    assert revalidated.status_code == 304 and revalidated.content == b""
    assert revalidated.headers["etag"] == etag
    head = await media.client.head(image)
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"] == etag
    api = await media.client.get("/tags")
    assert api.headers["cross-origin-resource-policy"] == "same-origin"


MALFORMED: list[tuple[str, dict[str, str], bytes, int, str, str]] = [
    ("json", {"Content-Type": "application/json"}, b'{"file": "x"}', 415, "unsupported_media_type", ""),
    ("no boundary", {"Content-Type": "multipart/form-data"}, b"--x--\r\n", 415, "unsupported_media_type", ""),
    (
        "no file field",
        {"Content-Type": "multipart/form-data; boundary=b"},
        b'--b\r\nContent-Disposition: form-data; name="bio"\r\n\r\nhello\r\n--b--\r\n',
        422,
        "validation_failed",
        "file can't be blank",
    ),
    (
        "empty file",
        {"Content-Type": "multipart/form-data; boundary=b"},
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n\r\n--b--\r\n',
        422,
        "validation_failed",
        "file is empty",
    ),
    (
        "two files",
        {"Content-Type": "multipart/form-data; boundary=b"},
        b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nA\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nB\r\n--b--\r\n',
        422,
        "validation_failed",
        "file must be sent once",
    ),
    (
        "cut short",
        {"Content-Type": "multipart/form-data; boundary=b"},
        b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\n\x89PNG',
        400,
        "bad_request",
        "the multipart body is incomplete",
    ),
    (
        "garbage",
        {"Content-Type": "multipart/form-data; boundary=b"},
        b"--b\r\nnot a header line\r\n\r\n",
        400,
        "bad_request",
        "the multipart body is malformed",
    ),
]


@pytest.mark.parametrize(
    ("headers", "body", "status", "code", "message"),
    [m[1:] for m in MALFORMED],
    ids=[m[0] for m in MALFORMED],
)
async def test_malformed_uploads(
    media: Media, headers: dict[str, str], body: bytes, status: int, code: str, message: str
) -> None:
    jake = await media.api.register("jake")
    response = await media.client.put("/user/avatar", content=body, headers={**jake.headers, **headers})
    assert_problem(response, status, code, message or None)
    assert await media.stored() == {}


async def test_image_work_runs_off_the_event_loop(media: Media, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sniffing, decoding, re-encoding, hashing and resizing all run in worker threads."""
    loop_thread = threading.get_ident()
    threads: dict[str, set[int]] = {}

    def spy(name: str) -> None:
        original = getattr(media_service, name)

        def recorded(*args: Any, **kwargs: Any) -> Any:
            threads.setdefault(name, set()).add(threading.get_ident())
            return original(*args, **kwargs)

        monkeypatch.setattr(media_service, name, recorded)

    for name in ("process_image", "make_variant_files", "_size_and_digest", "sniff"):
        spy(name)
    jake = await media.api.register("jake")
    slug = (await media.api.article(jake))["slug"]
    assert (await media.upload_image(jake, slug, png())).status_code == 201
    await media.jobs_done()
    assert set(threads) == {"process_image", "make_variant_files", "_size_and_digest", "sniff"}
    assert loop_thread not in set().union(*threads.values())


async def test_every_upload_is_re_encoded_under_a_key_of_its_own(media: Media) -> None:
    jake = await media.api.register("jake")
    slug = (await media.api.article(jake))["slug"]
    data = encode(picture(200, 150), "JPEG", quality=100)
    for _ in range(2):
        assert (await media.upload_image(jake, slug, data)).status_code == 201
    first, second = (await media.client.get(f"/articles/{slug}")).json()["article"]["images"]
    assert first["url"] != second["url"]
    stored = (await media.download(first["url"])).content
    assert len(stored) < len(data)  # written by the server at quality 85, not the upload's 100


async def test_concurrent_uploads_cannot_both_squeeze_into_the_quota(make_media: MediaFactory) -> None:
    media = await make_media(upload_quota_count=1)
    jake = await media.api.register("jake")
    slug = (await media.api.article(jake))["slug"]
    responses = await asyncio.gather(*(media.upload_image(jake, slug, png()) for _ in range(2)))
    assert sorted(response.status_code for response in responses) == [201, 403]
    await media.jobs_done()
    assert len(await media.stored()) == 4
