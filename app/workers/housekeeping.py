"""Housekeeping, hourly: purge what is past its use and repair exports whose jobs were lost."""

from __future__ import annotations

import logging
from datetime import timedelta

import anyio.to_thread

from app.core.mail import send_quietly
from app.services import exports, housekeeping
from app.workers.context import JobContext
from app.workers.queue import visibility_timeout
from app.workers.registry import job, longest_time_limit

logger = logging.getLogger("conduit.jobs")

EXPORT_PURGE_BATCH = 500
# A pending export is normally picked up within seconds; after this its enqueue is taken as lost.
# (Behind a long queue it may be sent twice, which its idempotent steps make harmless.)
STALE_PENDING = timedelta(minutes=5)
# An unfinished export this old has had its chances (retries, re-enqueues): it fails.
GIVE_UP = timedelta(hours=6)


@job(housekeeping.HOUSEKEEPING, soft_time_limit=300, time_limit=360)
async def run(ctx: JobContext) -> None:
    settings = ctx.settings
    export_dir = settings.effective_export_dir
    async with ctx.unit_of_work() as session:
        tokens = await housekeeping.purge_refresh_tokens(session)
    async with ctx.unit_of_work() as session:
        read = await housekeeping.purge_read_notifications(
            session, older_than=timedelta(days=settings.notification_retention_days)
        )
    async with ctx.unit_of_work() as session:
        keys = await housekeeping.purge_idempotency_keys(
            session, older_than=timedelta(seconds=settings.idempotency_ttl)
        )
    purged = 0
    while True:
        # Files first, then rows: a crash in between leaves rows without files (their downloads answer
        # 404 and the next run deletes them), never files no row points to.
        async with ctx.unit_of_work() as session:
            expired = await exports.expired_exports(
                session, older_than=timedelta(days=settings.export_retention_days), limit=EXPORT_PURGE_BATCH
            )
        if not expired:
            break
        await anyio.to_thread.run_sync(exports.remove_files, export_dir, expired)
        async with ctx.unit_of_work() as session:
            purged += await exports.delete_exports(session, expired)
        if len(expired) < EXPORT_PURGE_BATCH:
            break
    # Running without progress for longer than the broker takes to hand a lost job to another worker,
    # plus that job's time: nobody is working on it.
    running_stale = timedelta(seconds=visibility_timeout(settings) + longest_time_limit())
    async with ctx.unit_of_work() as session:
        requeued, emails = await exports.requeue_stale(
            session,
            pending_after=STALE_PENDING,
            running_after=running_stale,
            give_up_after=GIVE_UP,
            frontend_url=settings.frontend_url,
        )
    for email in emails:
        await send_quietly(ctx.mailer, email)
    async with ctx.unit_of_work() as session:
        unfinished, newest = await exports.staging_in_use(session)
    await anyio.to_thread.run_sync(exports.remove_orphan_staging, export_dir, unfinished, newest)
    logger.info(
        "housekeeping: %d refresh tokens, %d read notifications, %d idempotency keys, %d exports "
        "purged; %d exports sent again, %d given up",
        tokens,
        read,
        keys,
        purged,
        requeued,
        len(emails),
    )
