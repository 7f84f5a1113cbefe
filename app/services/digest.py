"""The weekly digest: the most favorited articles of the past seven days by the people a user
follows, emailed to the users who asked for it (``users.weekly_digest``).

At most one digest per user per ISO week. A batch of users is *claimed* first, by setting their
``digest_week`` to the current week in one conditional ``UPDATE`` that is committed before any email
goes out, so concurrent or repeated runs (a redelivered job, two schedulers) never send one twice.
A send that fails on a transient error releases its claim for a retry. A crash between the claim and
the send loses that user's digest for the week: a missed digest was chosen over a duplicate.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.mail import EmailMessageData
from app.models import Article, Follow, User

# The job (app/workers/digest.py); the scheduler runs it weekly.
WEEKLY_DIGEST = "digest.weekly"
DIGEST_SIZE = 5
DIGEST_WINDOW = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Recipient:
    id: int
    username: str
    email: str
    previous_week: str | None  # restored if the send fails


@dataclass(frozen=True, slots=True)
class DigestArticle:
    slug: str
    title: str
    author: str
    favorites_count: int


def iso_week(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def _due(week: str) -> list[ColumnElement[bool]]:
    return [
        User.weekly_digest.is_(True),
        User.is_active.is_(True),
        or_(User.digest_week.is_(None), User.digest_week != week),
    ]


async def claim_batch(session: AsyncSession, week: str, limit: int) -> list[Recipient]:
    """Claim up to ``limit`` users due a digest for ``week``; returns those this call claimed."""
    rows = (
        await session.execute(
            select(User.id, User.username, User.email, User.digest_week)
            .where(*_due(week))
            .order_by(User.id)
            .limit(limit)
        )
    ).all()
    if not rows:
        return []
    claimed = set(
        await session.scalars(
            update(User)
            .where(User.id.in_([row.id for row in rows]), *_due(week))
            # Set to itself: a digest is not a change to the account, so updated_at stays.
            .values(digest_week=week, updated_at=User.updated_at)
            .returning(User.id)
        )
    )
    return [Recipient(row.id, row.username, row.email, row.digest_week) for row in rows if row.id in claimed]


async def release(session: AsyncSession, recipients: list[Recipient], week: str) -> None:
    """Give back the claims of ``recipients`` (their digest could not be sent)."""
    for recipient in recipients:
        await session.execute(
            update(User)
            .where(User.id == recipient.id, User.digest_week == week)
            .values(digest_week=recipient.previous_week, updated_at=User.updated_at)
        )


async def top_articles(
    session: AsyncSession, user_ids: list[int], *, since: datetime, size: int = DIGEST_SIZE
) -> dict[int, list[DigestArticle]]:
    """For each user, the ``size`` most favorited articles published since ``since`` by the people
    they follow: one query for the whole batch (a window function ranks each user's candidates)."""
    author = User.__table__.alias("author")
    ranked = (
        select(
            Follow.follower_id,
            Article.slug,
            Article.title,
            Article.favorites_count,
            author.c.username,
            func.row_number()
            .over(
                partition_by=Follow.follower_id,
                order_by=(Article.favorites_count.desc(), Article.created_at.desc(), Article.id.desc()),
            )
            .label("rank"),
        )
        .join(Article, Article.author_id == Follow.followee_id)
        .join(author, author.c.id == Article.author_id)
        .where(Follow.follower_id.in_(user_ids), Article.created_at >= since)
        .subquery()
    )
    rows = await session.execute(
        select(ranked).where(ranked.c.rank <= size).order_by(ranked.c.follower_id, ranked.c.rank)
    )
    picks: dict[int, list[DigestArticle]] = defaultdict(list)
    for row in rows:
        picks[row.follower_id].append(DigestArticle(row.slug, row.title, row.username, row.favorites_count))
    return picks


def digest_email(recipient: Recipient, articles: list[DigestArticle], frontend_url: str) -> EmailMessageData:
    base = frontend_url.rstrip("/")
    lines = [
        f'{rank}. "{article.title}" by {article.author} '
        f"({article.favorites_count} favorite{'' if article.favorites_count == 1 else 's'})\n"
        f"   {base}/article/{article.slug}"
        for rank, article in enumerate(articles, start=1)
    ]
    listing = "\n".join(lines)
    return EmailMessageData(
        to=recipient.email,
        subject="Your week on Conduit",
        text=(
            f"Hello {recipient.username},\n\n"
            f"The most favorited articles of the past week from people you follow:\n\n{listing}\n\n"
            f"You get this email because you subscribed to the weekly digest; "
            f"unsubscribe at {base}/settings.\n"
        ),
    )
