"""Uploaded images: the rules every upload passes, avatars, article images and their thumbnails.

An upload reaches a service as a temporary file: the API layer has streamed the body to disk under the
size cap (``app/api/v1/multipart.py``). Then, in a worker thread:

1. the **type** comes from the file's magic bytes, never from its name or the declared content type:
   JPEG, PNG, WebP and GIF only (SVG, HTML and anything else: 415);
2. the **pixel count** is read from the header (``Image.open`` decodes nothing) and refused above
   ``CONDUIT_UPLOAD_MAX_PIXELS`` before anything is decoded (decompression bombs: 422), with Pillow
   restricted to the sniffed format's decoder;
3. the image is **decoded and re-encoded** from its pixels alone: EXIF (location included), ICC
   profiles, comments, text chunks and anything appended to the file are gone, so a polyglot comes out
   as a plain image. JPEG and WebP stay so, PNG stays PNG, a GIF becomes a PNG of its first frame;
4. the result is hashed (SHA-256) and stored under a **random key** (``images/<22 characters>.jpg``),
   never a name the client chose.

The owner's **quota** (count and bytes) is checked and moved by one conditional ``UPDATE`` in the
upload's transaction. The file is stored before the commit (its row describes it), and deleted again
if the transaction does not commit (``on_rollback``). Thumbnails of article images are made by a job
after the commit (``app/workers/media.py``); files are deleted by a job after the commit that forgets
them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import shutil
import struct
import tempfile
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from PIL import Image, ImageOps
from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import mark_changed
from app.core.config import Settings
from app.core.errors import (
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
    ValidationFailedError,
)
from app.core.outbox import Enqueue, Job, after_commit, on_rollback
from app.core.storage import CONTENT_TYPES, MEDIA_PATH, MediaLinks, Storage, content_type_of
from app.db.base import utcnow
from app.db.dialect import json_objects_agg
from app.models import Article, Role, Upload, User
from app.schemas.article import ArticleImage

logger = logging.getLogger("conduit.media")

# The jobs of app/workers/media.py.
MAKE_VARIANTS = "media.make_variants"
DELETE_FILES = "media.delete_files"

VARIANT_SIZES = (64, 256, 1024)  # thumbnails of article images: their largest side, in pixels
AVATAR_SIZE = 512  # avatars are stored at most this large a side
# Decodes running at once per process: each holds up to upload_max_pixels x 4 bytes in memory.
IMAGE_THREADS = min(4, os.cpu_count() or 1)

# The sniffed format -> what it is stored as (Pillow format, key extension).
OUTPUT_FORMATS = {
    "JPEG": ("JPEG", "jpg"),
    "PNG": ("PNG", "png"),
    "GIF": ("PNG", "png"),
    "WEBP": ("WEBP", "webp"),
}
SAVE_OPTIONS: dict[str, dict[str, Any]] = {"JPEG": {"quality": 85}, "PNG": {}, "WEBP": {"quality": 85}}
ACCEPTED = "must be a JPEG, PNG, WebP or GIF image"
# What Pillow raises on a malformed file, whatever the format.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)


@dataclass(frozen=True, slots=True)
class UploadRules:
    max_pixels: int
    quota_count: int
    quota_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadRules:
        return cls(settings.upload_max_pixels, settings.upload_quota_count, settings.upload_quota_bytes)


@dataclass(frozen=True, slots=True)
class ProcessedImage:
    path: Path  # the re-encoded file, ready to store
    extension: str
    width: int
    height: int
    size: int
    sha256: str

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.extension]


def sniff(head: bytes) -> str | None:
    """The image format the first bytes of a file announce (Pillow's name), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _too_many_pixels(max_pixels: int) -> ValidationFailedError:
    return ValidationFailedError.for_field("file", f"must have at most {max_pixels} pixels")


def _decode(source: Path, input_format: str, max_pixels: int) -> Image.Image:
    """The image's pixels, decoded only once the header's dimensions passed the limit."""
    try:
        with Image.open(source, formats=[input_format]) as opened:
            if opened.width * opened.height > max_pixels:
                raise _too_many_pixels(max_pixels)
            opened.load()
            ImageOps.exif_transpose(opened, in_place=True)  # upright, since the EXIF orientation goes
            return opened
    # Pillow's own limit, checked in Image.open: an error above twice its MAX_IMAGE_PIXELS, a warning
    # (an error where warnings are errors) above it. The setting's ceiling keeps our check the stricter.
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(max_pixels) from None
    except DECODE_ERRORS:
        raise ValidationFailedError.for_field("file", "is not a valid image") from None


def _pixels_only(image: Image.Image, output_format: str) -> Image.Image:
    """A copy with nothing but pixels (no EXIF, ICC, comments or text), in a mode the format stores."""
    alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    opaque = "L" if image.mode in ("1", "L") else "RGB"
    clean = image.convert("RGBA" if alpha and output_format != "JPEG" else opaque)
    clean.info = {}  # Pillow's encoders fall back to info for ICC profiles and comments
    return clean


def _size_and_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def process_image(source: Path, target: Path, *, max_pixels: int, max_side: int | None) -> ProcessedImage:
    """Check, decode and re-encode the upload ``source`` into ``target`` (blocking: run it in a thread)."""
    with source.open("rb") as file:
        input_format = sniff(file.read(16))
    if input_format is None:
        raise UnsupportedMediaTypeError(f"file {ACCEPTED}", fields={"file": [ACCEPTED]})
    output_format, extension = OUTPUT_FORMATS[input_format]
    image = _pixels_only(_decode(source, input_format, max_pixels), output_format)
    if max_side is not None:
        image = _fit(image, max_side)
    image.save(target, format=output_format, **SAVE_OPTIONS[output_format])
    size, sha256 = _size_and_digest(target)
    return ProcessedImage(target, extension, image.width, image.height, size, sha256)


def _fit(image: Image.Image, size: int) -> Image.Image:
    """``image`` scaled down to at most ``size`` pixels a side (never up), as a new image if it shrinks."""
    scale = size / max(image.size)
    if scale >= 1:
        return image
    width, height = (max(1, round(side * scale)) for side in image.size)
    return image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)


def make_variant_files(original: Path, directory: Path, *, max_pixels: int) -> list[tuple[int, Path]]:
    """Thumbnails of a stored image, largest first, each made from the one before (blocking)."""
    extension = original.suffix.removeprefix(".")
    output_format = next(fmt for fmt, ext in OUTPUT_FORMATS.values() if ext == extension)
    current = _decode(original, output_format, max_pixels)
    made = []
    for size in sorted(VARIANT_SIZES, reverse=True):
        current = _fit(current, size)
        path = directory / f"{size}.{extension}"
        current.save(path, format=output_format, **SAVE_OPTIONS[output_format])
        made.append((size, path))
    return made


_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def _image_limiter() -> anyio.CapacityLimiter:
    """The limiter of this event loop's image threads (Celery workers run one loop per thread)."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(IMAGE_THREADS)
    return limiter


@asynccontextmanager
async def _temporary_directory() -> AsyncIterator[Path]:
    directory = Path(await anyio.to_thread.run_sync(partial(tempfile.mkdtemp, prefix="conduit-media-")))
    try:
        yield directory
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(partial(shutil.rmtree, directory, ignore_errors=True))


@asynccontextmanager
async def _processed(
    upload: Path, rules: UploadRules, *, max_side: int | None
) -> AsyncIterator[ProcessedImage]:
    async with _temporary_directory() as directory:
        yield await anyio.to_thread.run_sync(
            partial(
                process_image, upload, directory / "image", max_pixels=rules.max_pixels, max_side=max_side
            ),
            limiter=_image_limiter(),
        )


def new_key(kind: str, extension: str) -> str:
    """A fresh storage key: 128 random bits, nothing from the client."""
    return f"{kind}/{secrets.token_urlsafe(16)}.{extension}"


def variant_key(key: str, size: int) -> str:
    stem, extension = key.rsplit(".", 1)
    return f"{stem}_{size}.{extension}"


def _files_of(upload: Upload) -> list[str]:
    """Every key an upload may have stored (its thumbnails too, made or not)."""
    if upload.article_id is None:
        return [upload.key]
    return [upload.key, *(variant_key(upload.key, size) for size in VARIANT_SIZES)]


async def delete_quietly(storage: Storage, keys: Sequence[str]) -> None:
    """Delete files whose rows are gone; a failure leaves orphans behind, never fails the caller."""
    try:
        await storage.delete(keys)
    except OSError as exc:
        logger.error("could not delete %d stored files: %s", len(keys), type(exc).__name__)


async def _store(session: AsyncSession, storage: Storage, image: ProcessedImage, kind: str) -> str:
    """Store ``image`` under a new key and return it. The file is deleted again if the session's
    transaction does not commit (whether the work fails after this or the commit itself does)."""
    key = new_key(kind, image.extension)
    # Recorded first: a put that fails halfway may still have left an object behind.
    on_rollback(session, partial(delete_quietly, storage, [key]))
    try:
        await storage.put(key, image.path, image.content_type)
    except OSError as exc:
        logger.error("could not store an upload: %s", type(exc).__name__)
        raise ServiceUnavailableError("the image could not be stored, please retry") from exc
    return key


async def _lock_owner(session: AsyncSession, user_id: int) -> None:
    """Serialise one user's uploads: a row lock on PostgreSQL (SQLite has one writer at a time)."""
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())


async def _charge(session: AsyncSession, user_id: int, count: int, size: int, rules: UploadRules) -> None:
    """Move the user's upload counters by ``count`` files and ``size`` bytes. Growth is refused, as a
    whole, if it would pass either quota: one conditional UPDATE, so concurrent uploads cannot both
    squeeze in."""
    stmt = update(User).where(User.id == user_id)
    if count > 0 or size > 0:
        stmt = stmt.where(
            User.upload_count + count <= rules.quota_count, User.upload_bytes + size <= rules.quota_bytes
        )
    stmt = stmt.values(upload_count=User.upload_count + count, upload_bytes=User.upload_bytes + size)
    if (await session.execute(stmt.returning(User.id))).first() is None:
        raise QuotaExceededError(
            f"this upload would exceed your quota of {rules.quota_count} images "
            f"and {rules.quota_bytes} bytes; delete some first"
        )


async def _forget(session: AsyncSession, uploads: Sequence[Upload]) -> None:
    """Delete upload rows, give their owners back the quota, and delete the files after the commit."""
    if not uploads:
        return
    await session.execute(delete(Upload).where(Upload.id.in_([upload.id for upload in uploads])))
    for owner_id in {upload.owner_id for upload in uploads}:
        owned = [upload for upload in uploads if upload.owner_id == owner_id]
        await session.execute(
            update(User)
            .where(User.id == owner_id)
            .values(
                upload_count=User.upload_count - len(owned),
                upload_bytes=User.upload_bytes - sum(upload.size for upload in owned),
            )
        )
    keys = [key for upload in uploads for key in _files_of(upload)]
    after_commit(session, Enqueue((Job(DELETE_FILES, {"keys": keys}),)))


def _row(image: ProcessedImage, key: str, owner_id: int, article_id: int | None) -> Upload:
    return Upload(
        owner_id=owner_id,
        article_id=article_id,
        key=key,
        content_type=image.content_type,
        width=image.width,
        height=image.height,
        size=image.size,
        sha256=image.sha256,
    )


async def _avatar_of(session: AsyncSession, user_id: int) -> Upload | None:
    return await session.scalar(select(Upload).where(Upload.owner_id == user_id, Upload.article_id.is_(None)))


async def set_avatar(
    session: AsyncSession, storage: Storage, user: User, upload: Path, rules: UploadRules
) -> None:
    """Make the uploaded file ``user``'s avatar, in place of any earlier avatar or image URL."""
    async with _processed(upload, rules, max_side=AVATAR_SIZE) as image:
        await _lock_owner(session, user.id)
        previous = await _avatar_of(session, user.id)
        if previous is not None:  # given back first, so a replacement fits where the old one did
            await _forget(session, [previous])
        await _charge(session, user.id, 1, image.size, rules)
        key = await _store(session, storage, image, "avatars")
    session.add(_row(image, key, user.id, None))
    user.avatar_key = key
    user.image = ""
    user.updated_at = utcnow()
    await session.flush()
    mark_changed(session)  # the user's profile appears in cached documents


async def remove_avatar(session: AsyncSession, user: User) -> None:
    """Remove ``user``'s uploaded avatar, if any (idempotent). Also what setting an ``image`` URL does."""
    previous = await _avatar_of(session, user.id)
    if previous is None and user.avatar_key is None:
        return
    if previous is not None:
        await _forget(session, [previous])
    user.avatar_key = None
    user.updated_at = utcnow()
    await session.flush()
    mark_changed(session)


def is_avatar_url(url: str | None, user: User) -> bool:
    """Whether ``url`` is the URL of ``user``'s uploaded avatar (under whatever base)."""
    return bool(url and user.avatar_key and url.endswith(f"{MEDIA_PATH}/{user.avatar_key}"))


async def article_for_upload(session: AsyncSession, user: User, slug: str) -> int:
    """The id of the article ``slug``, if ``user`` may add images to it: only its author may."""
    row = (await session.execute(select(Article.id, Article.author_id).where(Article.slug == slug))).first()
    if row is None:
        raise NotFoundError("article not found")
    if row.author_id != user.id:
        raise PermissionDeniedError("only the author may add images to this article")
    return int(row.id)


async def add_article_image(
    session: AsyncSession, storage: Storage, user: User, article_id: int, upload: Path, rules: UploadRules
) -> int:
    """Add the uploaded file to the article's images (``article_for_upload`` first); returns its id.
    Its thumbnails are made by a job once this commits."""
    async with _processed(upload, rules, max_side=None) as image:
        await _lock_owner(session, user.id)
        await _charge(session, user.id, 1, image.size, rules)
        key = await _store(session, storage, image, "images")
    row = _row(image, key, user.id, article_id)
    session.add(row)
    await session.flush()
    mark_changed(session)
    after_commit(session, Enqueue((Job(MAKE_VARIANTS, {"upload_id": row.id}),)))
    return row.id


async def delete_article_image(session: AsyncSession, user: User, slug: str, image_id: int) -> None:
    """Delete an image of the article ``slug``: its author or a moderator may."""
    row = (
        await session.execute(
            select(Upload, Article.author_id)
            .join(Article, Article.id == Upload.article_id)
            .where(Upload.id == image_id, Article.slug == slug)
        )
    ).first()
    if row is None:
        raise NotFoundError("image not found")
    upload, author_id = row
    # The rule of articles.can_moderate (not imported from there: articles imports this module).
    if author_id != user.id and user.role not in (Role.MODERATOR, Role.ADMIN):
        raise PermissionDeniedError("only the author may delete this image")
    await _forget(session, [upload])
    mark_changed(session)


async def forget_article_images(session: AsyncSession, article_id: int) -> None:
    """Before an article is deleted: its images' rows, quota and files go with it."""
    await _forget(session, list(await session.scalars(select(Upload).where(Upload.article_id == article_id))))


async def variants_to_make(session: AsyncSession, upload_id: int) -> str | None:
    """The key of the article image ``upload_id`` if its thumbnails are still to be made."""
    upload = await session.get(Upload, upload_id)
    if upload is None or upload.variants_ready or upload.article_id is None:
        return None
    return upload.key


async def store_variants(storage: Storage, key: str, *, max_pixels: int) -> list[str]:
    """Make and store the thumbnails of the stored image ``key``; returns their keys. No transaction
    is held meanwhile: the job records them afterwards (``variants_made``)."""
    async with _temporary_directory() as directory:
        original = directory / f"original.{key.rsplit('.', 1)[1]}"
        await storage.fetch(key, original)
        made = await anyio.to_thread.run_sync(
            partial(make_variant_files, original, directory, max_pixels=max_pixels), limiter=_image_limiter()
        )
        keys = []
        for size, path in made:
            keys.append(variant_key(key, size))
            await storage.put(keys[-1], path, content_type_of(key))
    return keys


async def variants_made(session: AsyncSession, storage: Storage, upload_id: int, keys: Sequence[str]) -> None:
    """Show the stored thumbnails; if the image was deleted meanwhile (its deletion may have run before
    they were stored), delete them instead."""
    marked = await session.execute(
        update(Upload).where(Upload.id == upload_id).values(variants_ready=True).returning(Upload.id)
    )
    if marked.first() is None:
        await delete_quietly(storage, keys)
        return
    mark_changed(session)


def images_column(session: AsyncSession) -> ColumnElement[Any]:
    """The images of ``Article`` as one JSON list (a correlated subquery of the article's statement)."""
    return (
        select(
            json_objects_agg(
                session,
                {
                    "id": Upload.id,
                    "key": Upload.key,
                    "contentType": Upload.content_type,
                    "width": Upload.width,
                    "height": Upload.height,
                    "variantsReady": Upload.variants_ready,
                },
            )
        )
        .where(Upload.article_id == Article.id)
        .scalar_subquery()
    )


def article_images(images: list[dict[str, Any]] | None, links: MediaLinks) -> list[ArticleImage]:
    """The ``images`` of an article from ``images_column``, oldest first, with absolute URLs."""
    return [
        ArticleImage(
            id=image["id"],
            url=links.url(image["key"]),
            content_type=image["contentType"],
            width=image["width"],
            height=image["height"],
            variants={str(size): links.url(variant_key(image["key"], size)) for size in VARIANT_SIZES}
            if image["variantsReady"]
            else {},
        )
        for image in sorted(images or [], key=itemgetter("id"))
    ]
