"""Query budget: every read issues a small, constant number of SQL statements, whatever the page size.

Statements are counted at the engine (every statement of the request: the caller's user lookup,
the page, the total), so an N+1 anywhere shows up as a failure here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.factories import Account, Api


class StatementCounter:
    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(statement)


@contextmanager
def count_statements(engine: AsyncEngine) -> Iterator[StatementCounter]:
    counter = StatementCounter()
    event.listen(engine.sync_engine, "before_cursor_execute", counter)
    try:
        yield counter
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", counter)


@pytest.fixture
async def world(api: Api) -> dict[str, Any]:
    """25 articles by 5 authors, with tags, favorites, follows and comments."""
    authors = [await api.register(f"author{n}") for n in range(5)]
    reader = await api.register("reader")
    slugs = []
    for n in range(25):
        article = await api.article(authors[n % 5], f"Article {n}", tagList=[f"tag{n % 3}", "common"])
        slugs.append(article["slug"])
    for author in authors[:3]:
        await api.client.post(f"/profiles/{author.username}/follow", headers=reader.headers)
    for slug in slugs[:10]:
        await api.client.post(f"/articles/{slug}/favorite", headers=reader.headers)
        await api.comment(authors[0], slug)
    return {"authors": authors, "reader": reader, "slugs": slugs}


async def _statements(
    engine: AsyncEngine, client: httpx.AsyncClient, url: str, account: Account | None
) -> int:
    headers = account.headers if account else {}
    with count_statements(engine) as counter:
        response = await client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return len(counter.statements)


BUDGETS = [
    # (url, authenticated, cold budget, warm budget): cold is a cache miss, warm a hit. A list costs
    # its page, then a count unless the page shows the total; signed in, the caller's lookup first.
    # Warm, nothing at all: the verdict on the caller's token and the viewer's flags are cached too
    # (per viewer), and so is the feed.
    ("/articles?limit={n}", False, 2, 0),
    ("/articles?limit={n}", True, 3, 0),
    ("/articles?tag=common&limit={n}", True, 3, 0),
    ("/articles?favorited=reader&limit={n}", True, 3, 0),
    ("/articles?author=author1&limit={n}", True, 3, 0),
    ("/articles/feed?limit={n}", True, 3, 0),
    ("/articles/{slug}", False, 1, 0),
    ("/articles/{slug}", True, 2, 0),
    ("/profiles/author1", False, 1, 0),
    ("/profiles/author1", True, 2, 0),
    ("/articles/{slug}/comments", False, 2, 0),
    ("/articles/{slug}/comments", True, 3, 0),
    ("/tags", False, 1, 0),
]


@pytest.mark.parametrize(("url", "authenticated", "cold", "warm"), BUDGETS)
async def test_statement_budget(
    world: dict[str, Any],
    app: FastAPI,
    engine: AsyncEngine,
    client: httpx.AsyncClient,
    url: str,
    authenticated: bool,
    cold: int,
    warm: int,
) -> None:
    account = world["reader"] if authenticated else None
    seen = []
    for n in (1, 5, 20, 100):  # the page size must not matter (an N+1 would show at 20 and 100)
        target = url.format(n=n, slug=world["slugs"][0])
        await app.state.cache.invalidate()
        seen.append(await _statements(engine, client, target, account))
        assert seen[-1] <= cold, f"cold {target}: {seen[-1]} statements"
        assert await _statements(engine, client, target, account) <= warm, f"warm {target}"
    assert max(seen) == cold  # the budget is tight: a cheaper plan would lower it here
