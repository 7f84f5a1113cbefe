"""Uploads in tests: images made with Pillow, multipart bodies, and an app on either storage backend.

S3 is a real local ``moto`` server (one per run, a bucket per test), reached over HTTP by the app's
boto3 client exactly as a real S3 or MinIO would be.
"""

from __future__ import annotations

import io
import struct
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import boto3
import httpx
import pytest
from fastapi import FastAPI
from moto.server import ThreadedMotoServer
from PIL import Image

from app.core.config import Settings
from tests.conftest import ClientFactory, jobs_done
from tests.factories import Account, Api

S3_CREDENTIALS = {"s3_access_key_id": "test-key", "s3_secret_access_key": "test-secret"}


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def picture(width: int = 64, height: int = 48) -> Image.Image:
    """An RGB image with some structure (a gradient), so that resizing it means something."""
    return Image.merge(
        "RGB",
        [
            Image.linear_gradient("L").resize((width, height)),
            Image.radial_gradient("L").resize((width, height)),
            Image.new("L", (width, height), 128),
        ],
    )


def png(width: int = 64, height: int = 48) -> bytes:
    return encode(picture(width, height), "PNG")


def forged_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, followed by a few bytes of nothing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def multipart(
    chunks: Iterator[bytes] | list[bytes],
    *,
    boundary: str = "conduit-test-boundary",
    filename: str = "image.png",
    content_type: str = "image/png",
) -> tuple[Iterator[bytes], dict[str, str]]:
    """A multipart body with one ``file`` part whose content comes in ``chunks``, and its headers."""

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        yield from chunks
        yield f"\r\n--{boundary}--\r\n".encode()

    return body(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@dataclass
class Media:
    """A client of an app with uploads on one storage backend, and a look into that storage."""

    client: httpx.AsyncClient
    app: FastAPI
    settings: Settings
    backend: str

    @property
    def api(self) -> Api:
        return Api(self.client)

    async def upload_avatar(
        self, account: Account, data: bytes, *, filename: str = "me.png", content_type: str = "image/png"
    ) -> httpx.Response:
        return await self.client.put(
            "/user/avatar", files={"file": (filename, data, content_type)}, headers=account.headers
        )

    async def upload_image(
        self,
        account: Account,
        slug: str,
        data: bytes,
        *,
        filename: str = "picture.png",
        content_type: str = "image/png",
    ) -> httpx.Response:
        return await self.client.post(
            f"/articles/{slug}/images",
            files={"file": (filename, data, content_type)},
            headers=account.headers,
        )

    async def jobs_done(self) -> None:
        await jobs_done(self.app)

    async def stored(self) -> dict[str, bytes]:
        """Every file in the storage, by key."""
        if self.backend == "local":
            root = self.settings.effective_media_dir

            def read_all() -> dict[str, bytes]:
                return {
                    path.relative_to(root).as_posix(): path.read_bytes()
                    for path in root.rglob("*")
                    if path.is_file()
                }

            return await anyio.to_thread.run_sync(read_all)

        def read_bucket() -> dict[str, bytes]:
            s3 = _s3_client(self.settings.s3_endpoint_url)
            listing = s3.list_objects_v2(Bucket=self.settings.s3_bucket or "")
            return {
                item["Key"]: s3.get_object(Bucket=self.settings.s3_bucket or "", Key=item["Key"])[
                    "Body"
                ].read()
                for item in listing.get("Contents", [])
            }

        return await anyio.to_thread.run_sync(read_bucket)

    async def download(self, url: str) -> httpx.Response:
        """What a browser gets for an image URL: the app's file, or (S3) the presigned URL it redirects to."""
        response = await self.client.get(url)
        if self.backend == "local":
            return response
        assert response.status_code == 307, response.text
        assert response.headers["cache-control"] == f"public, max-age={self.settings.s3_presign_ttl // 2}"
        async with httpx.AsyncClient() as outside:  # the S3 endpoint, over the network
            return await outside.get(response.headers["location"])


def _s3_client(endpoint_url: str | None) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=S3_CREDENTIALS["s3_access_key_id"],
        aws_secret_access_key=S3_CREDENTIALS["s3_secret_access_key"],
    )


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3 API on a free local port, for the whole run."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


MediaFactory = Callable[..., Coroutine[Any, Any, Media]]


@pytest.fixture(params=["local", "s3"])
async def make_media(
    request: pytest.FixtureRequest, make_client: ClientFactory, tmp_path: Path
) -> AsyncIterator[MediaFactory]:
    """``await make_media(**settings_overrides)``: a ``Media`` on the backend of this test's run."""
    made: list[Media] = []

    async def make(**overrides: Any) -> Media:
        if request.param == "s3":
            endpoint = request.getfixturevalue("moto_endpoint")
            bucket = f"conduit-test-{uuid.uuid4().hex}"
            await anyio.to_thread.run_sync(lambda: _s3_client(endpoint).create_bucket(Bucket=bucket))
            overrides = {
                "storage_backend": "s3",
                "s3_bucket": bucket,
                "s3_endpoint_url": endpoint,
                **S3_CREDENTIALS,
                **overrides,
            }
        http = await make_client(**overrides)
        app: FastAPI = http.app  # type: ignore[attr-defined]
        made.append(Media(http, app, app.state.settings, request.param))
        return made[-1]

    yield make
    for media in made:
        await media.jobs_done()
        await media.app.state.storage.close()


@pytest.fixture
async def media(make_media: MediaFactory) -> Media:
    return await make_media()
