"""The weekly digest job (``app/services/digest.py``): one batch of users per run, then the next."""

from __future__ import annotations

import logging

from app.core.outbox import Job
from app.db.base import utcnow
from app.services import digest
from app.workers.context import JobContext
from app.workers.queue import TRANSIENT_ERRORS
from app.workers.registry import job

logger = logging.getLogger("conduit.jobs")

BATCH = 200


@job(digest.WEEKLY_DIGEST, soft_time_limit=300, time_limit=360)
async def weekly_digest(ctx: JobContext, week: str | None = None) -> None:
    """Send this week's digest to the next batch of users due one, then enqueue the next batch.

    If a send fails on a transient error, the claims of the users not served are released and the
    error raised: the queue retries the job with backoff, and the retry picks them up again.
    """
    now = utcnow()
    week = week or digest.iso_week(now)
    async with ctx.unit_of_work() as session:
        recipients = await digest.claim_batch(session, week, BATCH)
    if not recipients:
        return
    async with ctx.unit_of_work() as session:
        since = now - digest.DIGEST_WINDOW
        picks = await digest.top_articles(session, [r.id for r in recipients], since=since)
    unserved: list[digest.Recipient] = []
    error: BaseException | None = None
    for recipient in recipients:
        articles = picks.get(recipient.id)
        if not articles:  # nothing new from the people they follow: no email this week
            continue
        message = digest.digest_email(recipient, articles, ctx.settings.frontend_url)
        try:
            await ctx.mailer.send(message)
        except TRANSIENT_ERRORS as exc:
            unserved.append(recipient)
            error = exc
        except Exception as exc:  # refused for good (e.g. the address): not retried this week
            logger.warning("weekly digest not sent to user %d: %s", recipient.id, type(exc).__name__)
    if error is not None:
        async with ctx.unit_of_work() as session:
            await digest.release(session, unserved, week)
        raise error
    if len(recipients) == BATCH:  # maybe more: the next run claims the next batch
        await ctx.dispatcher.queue.enqueue((Job(digest.WEEKLY_DIGEST, {"week": week}),))
