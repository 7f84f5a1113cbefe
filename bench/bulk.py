"""Bulk seeding for the data-scale check (``--scale``): COPY instead of the service layer.

Same shape as ``conduit seed`` — 100 users (password ``conduit-demo-2026``), articles with 3 tags each
from a pool of 50, 20,000 favorites (``favorites_count`` kept exact), 2,000 follows, 20,000 comments —
written with ``COPY`` in batches, so a million articles take minutes, not hours.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg

from app.core.config import Settings
from app.core.security import PasswordHasher
from app.services.seed import DEMO_PASSWORD, WORDS

BATCH = 50_000


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize()


async def bulk_seed(dsn: str, settings: Settings, articles: int, *, seed: int = 1) -> None:
    rng = random.Random(seed)
    password_hash = await PasswordHasher(settings).hash(DEMO_PASSWORD)
    start = datetime.now(UTC) - timedelta(days=365)
    connection = await asyncpg.connect(dsn)
    try:
        users = [(n + 1, f"user{n}-bulk", f"user{n}-bulk@example.com", password_hash) for n in range(100)]
        await connection.copy_records_to_table(
            "users",
            records=[(*user, "", "", start, start, "user", True) for user in users],
            columns=[
                "id", "username", "email", "password_hash", "bio", "image",
                "created_at", "updated_at", "role", "is_active",
            ],
        )  # fmt: skip
        await connection.copy_records_to_table(
            "tags", records=[(n + 1, f"{rng.choice(WORDS)}-{n}") for n in range(50)], columns=["id", "name"]
        )
        favorites = rng.sample(range(100 * articles), min(20_000, 100 * articles))
        favorite_counts = Counter(n % articles + 1 for n in favorites)
        step = timedelta(days=365) / max(articles, 1)

        def article_rows(first: int, last: int) -> Iterator[tuple[object, ...]]:
            for article_id in range(first, last):
                created = start + step * article_id
                title = _sentence(rng, 5)
                yield (
                    article_id, f"bulk-{article_id}", title, _sentence(rng, 10), _sentence(rng, 60),
                    rng.randrange(100) + 1, favorite_counts.get(article_id, 0), created, created,
                )  # fmt: skip

        for first in range(1, articles + 1, BATCH):
            last = min(first + BATCH, articles + 1)
            await connection.copy_records_to_table(
                "articles",
                records=list(article_rows(first, last)),
                columns=[
                    "id", "slug", "title", "description", "body", "author_id", "favorites_count",
                    "created_at", "updated_at",
                ],
            )  # fmt: skip
            await connection.copy_records_to_table(
                "article_tags",
                records=[(a, t) for a in range(first, last) for t in rng.sample(range(1, 51), 3)],
                columns=["article_id", "tag_id"],
            )
        await connection.copy_records_to_table(
            "favorites",
            records=[(n // articles + 1, n % articles + 1, start) for n in favorites],
            columns=["user_id", "article_id", "created_at"],
        )
        await connection.execute(
            "UPDATE users SET articles_count = (SELECT count(*) FROM articles WHERE author_id = users.id)"
        )
        follows = rng.sample([(a, b) for a in range(1, 101) for b in range(1, 101) if a != b], 2000)
        await connection.copy_records_to_table(
            "follows",
            records=[(a, b, start) for a, b in follows],
            columns=["follower_id", "followee_id", "created_at"],
        )
        await connection.copy_records_to_table(
            "comments",
            records=[
                (n + 1, _sentence(rng, 12), rng.randrange(articles) + 1, rng.randrange(100) + 1, start, start)
                for n in range(20_000)
            ],
            columns=["id", "body", "article_id", "author_id", "created_at", "updated_at"],
        )
        for table in ("users", "tags", "articles", "comments"):
            await connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
            )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
