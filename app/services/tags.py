"""Tags."""

from __future__ import annotations

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import Cache
from app.models import ArticleTag, Tag

POPULAR_TAGS_MAX = 200


async def popular_tags(session: AsyncSession) -> list[str]:
    """Tags in use, most used first (ties by name), at most ``POPULAR_TAGS_MAX``."""
    uses = func.count(ArticleTag.article_id)
    stmt = (
        select(Tag.name)
        .join(ArticleTag, ArticleTag.tag_id == Tag.id)
        .group_by(Tag.id, Tag.name)
        .order_by(uses.desc(), Tag.name)
        .limit(POPULAR_TAGS_MAX)
    )
    return list(await session.scalars(stmt))


async def popular_tags_json(session: AsyncSession, cache: Cache) -> bytes:
    """``popular_tags`` as a response body, from the cache."""

    async def load() -> bytes:
        return orjson.dumps({"tags": await popular_tags(session)})

    body, _ = await cache.get_or_load("tags", load)
    return body
