"""Helpers shared by the job tests: fast seeding, polling an export, running one job by hand."""

from __future__ import annotations

import asyncio
import io
import time
import zipfile
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.base import utcnow
from app.models import Article, User
from app.workers.context import JobContext
from app.workers.registry import run_job
from tests.factories import Account

FINISHED = ("done", "failed")


def job_context(app: FastAPI) -> JobContext:
    """What the app's own in-process queue gives its jobs."""
    state = app.state
    return JobContext(state.settings, state.sessionmaker, state.mailer, state.cache, state.dispatcher)


async def run(app: FastAPI, name: str, **kwargs: Any) -> None:
    """Run one job to completion in this task, as a queue would (a redelivery is running it again)."""
    await run_job(job_context(app), name, kwargs)


async def user_id(engine: AsyncEngine, username: str) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(select(User.id).where(User.username == username))).scalar_one())


async def seed_articles(engine: AsyncEngine, author: Account, count: int) -> list[str]:
    """``count`` articles by ``author`` in one multi-row INSERT (the API would take a request each)."""
    author_id = await user_id(engine, author.username)
    now = utcnow()
    rows = [
        {
            "slug": f"bulk-article-{n}",
            "title": f"Bulk article {n}",
            "description": f"Description {n}",
            "body": f"Body of article {n}. " * 20,
            "author_id": author_id,
            "created_at": now,
            "updated_at": now,
        }
        for n in range(count)
    ]
    async with engine.begin() as connection:
        await connection.execute(insert(Article), rows)
        await connection.execute(
            update(User).where(User.id == author_id).values(articles_count=User.articles_count + count)
        )
    return [row["slug"] for row in rows]


STUCK_AFTER = 120.0  # seconds: only turns a stuck export into a failure instead of a hung run


async def wait_for_export(
    client: httpx.AsyncClient, account: Account, export_id: int
) -> tuple[dict[str, Any], list[int]]:
    """Poll the export until it is finished; returns it and every progress value seen on the way."""
    seen: list[int] = []
    deadline = time.monotonic() + STUCK_AFTER
    while True:
        response = await client.get(f"/exports/{export_id}", headers=account.headers)
        assert response.status_code == 200, response.text
        export: dict[str, Any] = response.json()["export"]
        seen.append(export["progress"])
        if export["state"] in FINISHED:
            return export, seen
        assert time.monotonic() < deadline, f"export still {export['state']} at {export['progress']}%"
        await asyncio.sleep(0.05)


async def download(client: httpx.AsyncClient, account: Account, export: dict[str, Any]) -> zipfile.ZipFile:
    response = await client.get(export["downloadUrl"], headers=account.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="conduit-export-{export["id"]}.zip"'
    )
    # The file's own validator: streamed as it is, not buffered to hash it (app/core/http_cache.py).
    assert not response.headers["etag"].startswith("W/")
    assert response.headers["cache-control"] == "private, no-store"
    return zipfile.ZipFile(io.BytesIO(response.content))
