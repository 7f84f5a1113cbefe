"""Realistic demo data, created through the same services the API uses."""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.security import PasswordHasher
from app.core.storage import RELATIVE_LINKS
from app.models import User
from app.schemas.article import NewArticle
from app.services import articles as article_service
from app.services import comments as comment_service
from app.services import profiles as profile_service
from app.services import users as user_service

DEMO_PASSWORD = "conduit-demo-2026"
BATCH = 500  # rows per transaction: big enough to be fast, small enough to keep transactions short

WORDS = (
    "async python database cache queue latency schema index query token design review release "
    "garden travel coffee music dragon training ocean mountain river forest city night morning "
    "story lesson habit craft paper ink light shadow signal noise pattern system people team"
).split()


@dataclass(frozen=True, slots=True)
class SeedCounts:
    users: int
    articles: int
    tags: int = 50
    tags_per_article: int = 3
    favorites: int = 0
    follows: int = 0
    comments: int = 0


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize()


async def seed(
    sessionmaker: async_sessionmaker[AsyncSession],
    hasher: PasswordHasher,
    counts: SeedCounts,
    *,
    seed: int = 1,
) -> None:
    """Create users, articles with tags, follows, favorites and comments. Every user's password is
    ``DEMO_PASSWORD``; it is hashed once, since bcrypt per user would dominate the run time."""
    rng = random.Random(seed)
    password_hash = await hasher.hash(DEMO_PASSWORD)
    suffix = rng.randrange(16**6)
    users: list[User] = []
    async with sessionmaker() as session:
        for i in range(counts.users):
            username = f"user{i}-{suffix:06x}"
            users.append(
                await user_service.create_user(
                    session,
                    username=username,
                    email=f"{username}@example.com",
                    password_hash=password_hash,
                )
            )
        await session.commit()
    if not users:
        return
    tag_pool = [f"{rng.choice(WORDS)}-{n}" for n in range(counts.tags)]
    slugs: list[str] = []
    for start in range(0, counts.articles, BATCH):
        async with sessionmaker() as session:
            for _ in range(start, min(start + BATCH, counts.articles)):
                data = NewArticle(
                    title=_sentence(rng, 5),
                    description=_sentence(rng, 10),
                    body="\n\n".join(_sentence(rng, 40) for _ in range(4)),
                    tag_list=rng.sample(tag_pool, min(counts.tags_per_article, len(tag_pool))),
                )
                slugs.append(await article_service.publish_article(session, rng.choice(users), data))
            await session.commit()
    await _relate(sessionmaker, rng, users, slugs, counts)


async def _relate(
    sessionmaker: async_sessionmaker[AsyncSession],
    rng: random.Random,
    users: list[User],
    slugs: list[str],
    counts: SeedCounts,
) -> None:
    if len(users) > 1:
        # Distinct pairs, so the counts asked for are the counts stored.
        ordered_pairs = len(users) * (len(users) - 1)
        follows = [
            divmod(n, len(users) - 1)
            for n in rng.sample(range(ordered_pairs), min(counts.follows, ordered_pairs))
        ]
        for start in range(0, len(follows), BATCH):
            async with sessionmaker() as session:
                for follower, other in follows[start : start + BATCH]:
                    followee = other + (other >= follower)  # skip the follower themself
                    await profile_service.follow(
                        session, users[follower], users[followee].username, RELATIVE_LINKS
                    )
                await session.commit()
    if not slugs:
        return
    pairs = len(users) * len(slugs)
    favorites = [divmod(n, len(slugs)) for n in rng.sample(range(pairs), min(counts.favorites, pairs))]
    for start in range(0, len(favorites), BATCH):
        async with sessionmaker() as session:
            for user, article in favorites[start : start + BATCH]:
                await article_service.favorite(session, users[user], slugs[article], RELATIVE_LINKS)
            await session.commit()
    for start in range(0, counts.comments, BATCH):
        async with sessionmaker() as session:
            for _ in range(start, min(start + BATCH, counts.comments)):
                await comment_service.add_comment(
                    session, rng.choice(users), rng.choice(slugs), _sentence(rng, 12), RELATIVE_LINKS
                )
            await session.commit()
