"""The export chain (``app/services/exports.py``): articles, comments, manifest, archive, finish.

Each step is its own job, so a worker lost mid-export costs one step, done again. Blocking file work
(writing files, zipping) runs in worker threads: the event loop never waits on the disk. A step that
fails on anything but a transient error (those are retried by the queue) fails the export and
notifies its owner; the steps after it then find the export finished and do nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio.to_thread

from app.core.mail import send_quietly
from app.services import exports
from app.workers.context import JobContext
from app.workers.queue import TRANSIENT_ERRORS
from app.workers.registry import job

logger = logging.getLogger("conduit.jobs")

ARTICLE_BATCH = 200
COMMENT_BATCH = 500


async def _step(ctx: JobContext, export_id: int, name: str, work: Callable[[int], Awaitable[None]]) -> None:
    """Run ``work(owner_id)`` if the export is unfinished; fail the export if it raises."""
    async with ctx.unit_of_work() as session:
        owner_id = await exports.begin_step(session, export_id)
    if owner_id is None:  # finished, or deleted with its owner: a redelivered step does nothing
        return
    try:
        await work(owner_id)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        logger.error("export %d failed in %s: %s", export_id, name, type(exc).__name__)
        await _fail(ctx, export_id)


async def _fail(ctx: JobContext, export_id: int) -> None:
    async with ctx.unit_of_work() as session:
        email = await exports.fail(session, export_id, ctx.settings.frontend_url)
    if email is None:  # concluded meanwhile by another run of its chain, which owns its files
        return
    await send_quietly(ctx.mailer, email)
    # Its staging files, and its archive if the archive step wrote one but failed to record it.
    await anyio.to_thread.run_sync(exports.remove_files, ctx.settings.effective_export_dir, [export_id])


async def _set_progress(ctx: JobContext, export_id: int, progress: int) -> None:
    async with ctx.unit_of_work() as session:
        await exports.set_progress(session, export_id, progress)


@job(exports.EXPORT_ARTICLES, soft_time_limit=600, time_limit=660)
async def render_articles(ctx: JobContext, export_id: int) -> None:
    """``articles/<slug>.md`` for each of the owner's articles, batch by batch, progress after each."""
    staging = exports.staging_dir(ctx.settings.effective_export_dir, export_id)

    async def work(owner_id: int) -> None:
        async with ctx.unit_of_work() as session:
            total = await exports.count_articles(session, owner_id)
        entries: list[dict[str, object]] = []
        after_id = 0
        while True:
            async with ctx.unit_of_work() as session:
                batch = await exports.article_batch(session, owner_id, after_id=after_id, limit=ARTICLE_BATCH)
            if not batch:
                break
            entries += await anyio.to_thread.run_sync(exports.write_articles, staging, batch)
            after_id = batch[-1].id
            # Articles written since the count was taken may exceed it: progress stays within the step.
            done = min(len(entries), total)
            await _set_progress(ctx, export_id, exports.ARTICLES_DONE * done // max(total, 1))
        await anyio.to_thread.run_sync(exports.write_articles_listing, staging, entries)
        await _set_progress(ctx, export_id, exports.ARTICLES_DONE)

    await _step(ctx, export_id, exports.EXPORT_ARTICLES, work)


@job(exports.EXPORT_COMMENTS, soft_time_limit=300, time_limit=360)
async def render_comments(ctx: JobContext, export_id: int) -> None:
    """``comments.md``: every comment the owner wrote, oldest first."""
    staging = exports.staging_dir(ctx.settings.effective_export_dir, export_id)

    async def work(owner_id: int) -> None:
        writer = exports.CommentsWriter(staging)
        await anyio.to_thread.run_sync(writer.open)
        after_id = 0
        while True:
            async with ctx.unit_of_work() as session:
                batch = await exports.comment_batch(session, owner_id, after_id=after_id, limit=COMMENT_BATCH)
            if not batch:
                break
            await anyio.to_thread.run_sync(writer.append, batch)
            after_id = batch[-1].id
        await anyio.to_thread.run_sync(writer.close)
        await _set_progress(ctx, export_id, exports.COMMENTS_DONE)

    await _step(ctx, export_id, exports.EXPORT_COMMENTS, work)


@job(exports.EXPORT_MANIFEST, soft_time_limit=120, time_limit=150)
async def write_manifest(ctx: JobContext, export_id: int) -> None:
    """``manifest.json``: the export, its owner, and the files the previous steps wrote."""
    staging = exports.staging_dir(ctx.settings.effective_export_dir, export_id)

    async def work(_owner_id: int) -> None:
        async with ctx.unit_of_work() as session:
            header = await exports.manifest_header(session, export_id)
        await anyio.to_thread.run_sync(exports.write_manifest, staging, header)
        await _set_progress(ctx, export_id, exports.MANIFEST_DONE)

    await _step(ctx, export_id, exports.EXPORT_MANIFEST, work)


@job(exports.EXPORT_ARCHIVE, soft_time_limit=600, time_limit=660)
async def build_archive(ctx: JobContext, export_id: int) -> None:
    """Zip what the manifest lists into the export directory (renamed into place when complete)."""
    export_dir = ctx.settings.effective_export_dir
    staging = exports.staging_dir(export_dir, export_id)

    async def work(_owner_id: int) -> None:
        file_name = exports.archive_name(export_id)
        await anyio.to_thread.run_sync(exports.build_archive, staging, export_dir / file_name)
        async with ctx.unit_of_work() as session:
            await exports.set_archive(session, export_id, file_name)

    await _step(ctx, export_id, exports.EXPORT_ARCHIVE, work)


@job(exports.EXPORT_FINISH, soft_time_limit=60, time_limit=90)
async def finish(ctx: JobContext, export_id: int) -> None:
    """Mark the export done and notify its owner (a notification, pushed live, and an email)."""

    async def work(_owner_id: int) -> None:
        async with ctx.unit_of_work() as session:
            email = await exports.finish(session, export_id, ctx.settings.frontend_url)
        if email is not None:
            await send_quietly(ctx.mailer, email)
        await anyio.to_thread.run_sync(exports.remove_staging, ctx.settings.effective_export_dir, export_id)

    await _step(ctx, export_id, exports.EXPORT_FINISH, work)
