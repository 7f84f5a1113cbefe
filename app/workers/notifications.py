"""Notification jobs: the fan-out of a new article to its author's followers."""

from __future__ import annotations

from app.core.storage import links_for
from app.services import notifications
from app.services.notifications import ARTICLE_PUBLISHED
from app.workers.context import JobContext
from app.workers.registry import job


@job(ARTICLE_PUBLISHED, soft_time_limit=120, time_limit=150)
async def article_published(ctx: JobContext, article_id: int) -> None:
    """Notify the author's followers (idempotent: a redelivered job notifies nobody twice)."""
    async with ctx.unit_of_work() as session:
        await notifications.notify_followers_of_article(session, article_id, links_for(ctx.settings))
