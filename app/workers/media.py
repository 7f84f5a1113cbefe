"""Upload jobs: thumbnails of a new article image, and deleting the files of forgotten uploads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from app.core.config import Settings
from app.core.storage import Storage, create_storage
from app.services import media
from app.workers.context import JobContext
from app.workers.registry import job


@asynccontextmanager
async def _storage(settings: Settings) -> AsyncIterator[Storage]:
    # Its own client: under Celery a job runs in another process than the app.
    storage = create_storage(settings)
    try:
        yield storage
    finally:
        await storage.close()


@job(media.MAKE_VARIANTS, soft_time_limit=120, time_limit=150)
async def make_variants(ctx: JobContext, upload_id: int) -> None:
    """Make the thumbnails of an article image (idempotent: recorded once, whatever the deliveries)."""
    async with _storage(ctx.settings) as storage:
        async with ctx.unit_of_work() as session:
            key = await media.variants_to_make(session, upload_id)
        if key is None:
            return
        keys = await media.store_variants(storage, key, max_pixels=ctx.settings.upload_max_pixels)
        async with ctx.unit_of_work() as session:
            await media.variants_made(session, storage, upload_id, keys)


@job(media.DELETE_FILES, soft_time_limit=60, time_limit=90)
async def delete_files(ctx: JobContext, keys: list[str]) -> None:
    """Delete stored files whose rows were deleted (idempotent: missing files are fine)."""
    async with _storage(ctx.settings) as storage:
        await storage.delete(keys)
