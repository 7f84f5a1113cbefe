"""Cached read documents: the shared part of a response, cached as JSON, plus the viewer's flags.

A cached entry is the anonymous response body (every ``favorited`` and ``following`` false) preceded
by one JSON line naming the ids those flags depend on::

    [[article_id, author_id], ...]\\n{"articles": [...], "articlesCount": 42}

Anonymous readers get the body bytes as they are (no parsing, no validation, no serialisation).
Signed-in readers get them with their flags patched in, from one small query (``viewer_flags``)
whose answer is itself cached, per viewer and document, under the same generation: every favorite,
unfavorite, follow and unfollow bumps it, so a viewer's flags are never older than their last write,
and never shared with anyone else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
from sqlalchemy import literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import Cache
from app.models import Favorite, Follow

# (article id or None, author id) for each place in a document that carries viewer flags.
Refs = list[tuple[int | None, int]]


def pack(refs: Refs, document: bytes) -> bytes:
    return orjson.dumps(refs) + b"\n" + document


def unpack(entry: bytes) -> tuple[Refs, bytes]:
    head, _, document = entry.partition(b"\n")
    return [(article_id, author_id) for article_id, author_id in orjson.loads(head)], document


async def viewer_flags(session: AsyncSession, viewer_id: int, refs: Refs) -> tuple[set[int], set[int]]:
    """The article ids the viewer favorited and the author ids they follow, among ``refs``: one query."""
    article_ids = {article_id for article_id, _ in refs if article_id is not None}
    author_ids = {author_id for _, author_id in refs}
    parts = []
    if article_ids:
        parts.append(
            select(literal("f").label("kind"), Favorite.article_id.label("id")).where(
                Favorite.user_id == viewer_id, Favorite.article_id.in_(article_ids)
            )
        )
    if author_ids:
        parts.append(
            select(literal("u").label("kind"), Follow.followee_id.label("id")).where(
                Follow.follower_id == viewer_id, Follow.followee_id.in_(author_ids)
            )
        )
    if not parts:
        return set(), set()
    rows = (await session.execute(union_all(*parts))).all()
    return {row.id for row in rows if row.kind == "f"}, {row.id for row in rows if row.kind == "u"}


def flag_slots(document: dict[str, Any]) -> Iterator[tuple[dict[str, Any] | None, dict[str, Any]]]:
    """(the object holding ``favorited`` or None, the profile holding ``following``), in ``refs`` order."""
    if "article" in document:
        yield document["article"], document["article"]["author"]
    for article in document.get("articles", ()):
        yield article, article["author"]
    if "profile" in document:
        yield None, document["profile"]
    for comment in document.get("comments", ()):
        yield None, comment["author"]


async def cached_document(
    session: AsyncSession,
    cache: Cache,
    name: str,
    viewer_id: int | None,
    load: Callable[[], Awaitable[tuple[Refs, dict[str, Any]]]],
) -> bytes:
    """The JSON body for ``viewer_id``: from the cache entry ``name``, or from ``load`` on a miss.

    ``load`` returns the refs and the document with the viewer's flags already set (one query). The
    entry stored is the same document with every flag cleared.
    """
    flags_name = f"flags:{viewer_id}:{name}"
    viewer_document: bytes | None = None
    loaded_flags: dict[str, bytes] = {}

    async def load_entry() -> bytes:
        nonlocal viewer_document
        refs, document = await load()
        viewer_document = orjson.dumps(document)
        favorited: set[int] = set()
        following: set[int] = set()
        for (article_id, author_id), (holder, profile) in zip(refs, flag_slots(document), strict=True):
            if holder is not None and article_id is not None:
                if holder["favorited"]:
                    favorited.add(article_id)
                holder["favorited"] = False
            if profile["following"]:
                following.add(author_id)
            profile["following"] = False
        if viewer_id is not None:
            loaded_flags[flags_name] = _encode_flags(favorited, following)
        return pack(refs, orjson.dumps(document))

    entry, _ = await cache.get_or_load(name, load_entry, lambda: loaded_flags)
    if viewer_document is not None:  # this request loaded it, with its own flags
        return viewer_document
    refs, document = unpack(entry)
    if viewer_id is None or not refs:
        return document

    async def load_flags() -> bytes:
        return _encode_flags(*await viewer_flags(session, viewer_id, refs))

    flags, _ = await cache.get_or_load(flags_name, load_flags)
    favorited_ids, following_ids = orjson.loads(flags)
    favorited, following = set(favorited_ids), set(following_ids)
    parsed = orjson.loads(document)
    for (article_id, author_id), (holder, profile) in zip(refs, flag_slots(parsed), strict=True):
        if holder is not None:
            holder["favorited"] = article_id in favorited
        profile["following"] = author_id in following
    return orjson.dumps(parsed)


def _encode_flags(favorited: set[int], following: set[int]) -> bytes:
    return orjson.dumps([sorted(favorited), sorted(following)])
