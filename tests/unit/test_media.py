"""The media service and the storage backends, called directly (as the jobs call them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.errors import ServiceUnavailableError
from app.core.storage import LocalStorage, S3Storage, StorageError
from app.models import Upload, User
from app.services import media, users
from tests.conftest import make_settings
from tests.media import S3_CREDENTIALS, png

RULES = media.UploadRules(max_pixels=1_000_000, quota_count=10, quota_bytes=10_000_000)


async def _user(session: AsyncSession) -> User:
    return await users.create_user(session, username="jake", email="jake@example.com", password_hash="x")


def _s3_settings(database_url: str, tmp_path: Path, endpoint: str, bucket: str) -> Settings:
    return make_settings(
        database_url,
        tmp_path,
        storage_backend="s3",
        s3_bucket=bucket,
        s3_endpoint_url=endpoint,
        **S3_CREDENTIALS,
    )


async def test_thumbnails_of_an_image_deleted_meanwhile_are_deleted(
    session: AsyncSession, tmp_path: Path
) -> None:
    storage = LocalStorage(tmp_path / "media")
    source = tmp_path / "thumbnail.png"
    source.write_bytes(png())
    keys = [media.variant_key(media.new_key("images", "png"), size) for size in media.VARIANT_SIZES]
    for key in keys:  # the job stored them while the image was being deleted
        await storage.put(key, source, "image/png")
    await media.variants_made(session, storage, 12345, keys)
    assert not list((tmp_path / "media").rglob("*.png"))


async def test_a_failing_storage_is_a_503_and_nothing_is_kept(
    session: AsyncSession, tmp_path: Path, database_url: str, moto_endpoint: str
) -> None:
    storage = S3Storage(_s3_settings(database_url, tmp_path, moto_endpoint, "no-such-bucket"))
    upload = tmp_path / "upload"
    upload.write_bytes(png())
    user = await _user(session)
    with pytest.raises(ServiceUnavailableError):
        await media.set_avatar(session, storage, user, upload, RULES)
    await storage.close()
    assert user.avatar_key is None
    assert await session.scalar(select(Upload)) is None


async def test_a_failing_storage_raises_a_storage_error(
    tmp_path: Path, database_url: str, moto_endpoint: str
) -> None:
    storage = S3Storage(_s3_settings(database_url, tmp_path, moto_endpoint, "no-such-bucket"))
    with pytest.raises(StorageError):
        await storage.delete([media.new_key("images", "png")])
    await storage.close()


@pytest.mark.parametrize("key", ["../secret_key", "avatars/../../x.png", "avatars/x.png", "/etc/passwd", ""])
async def test_storage_takes_generated_keys_only(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(ValueError, match="not a storage key"):
        await storage.put(key, tmp_path / "x", "image/png")
    with pytest.raises(ValueError, match="not a storage key"):
        await storage.locate(key)


def test_keys_are_random_and_variants_follow_them() -> None:
    first, second = media.new_key("images", "jpg"), media.new_key("images", "jpg")
    assert first != second and first.startswith("images/") and first.endswith(".jpg")
    assert media.variant_key(first, 64) == first.removesuffix(".jpg") + "_64.jpg"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "PNG"),
        (b"GIF87a\x01\x00", "GIF"),
        (b"GIF89a\x01\x00", "GIF"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "WEBP"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),
        (b"<svg xmlns=", None),
        (b"BM\x36\x00", None),
        (b"", None),
    ],
)
def test_sniffing(head: bytes, expected: str | None) -> None:
    assert media.sniff(head) == expected
