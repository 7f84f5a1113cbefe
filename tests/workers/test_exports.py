"""Exports, end to end on the embedded default: jobs run in this process, as ``conduit serve`` runs them."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.models import Article, Export, Notification
from app.services import exports as export_service
from app.services.exports import ExportInProgressError
from tests.conftest import ClientFactory, jobs_done
from tests.factories import TIMESTAMP, Api, assert_problem
from tests.smtp import SmtpServer, smtp_server  # noqa: F401
from tests.workers.support import download, run, seed_articles, user_id, wait_for_export


@pytest.fixture
async def mailing_client(make_client: ClientFactory, smtp_server: SmtpServer) -> httpx.AsyncClient:  # noqa: F811
    return await make_client(smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_starttls=False)


def _export_dir(client: httpx.AsyncClient) -> Path:
    app: FastAPI = client.app  # type: ignore[attr-defined]
    path: Path = app.state.settings.effective_export_dir
    return path


async def test_export_end_to_end(
    mailing_client: httpx.AsyncClient,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    client = mailing_client
    api = Api(client)
    jake, other = await api.register("jake"), await api.register("other")
    dragons = await api.article(jake, "How to train your dragon", tagList=["dragons", "training"])
    await api.article(jake, "Second article", body="Body *two*")
    theirs = await api.article(other, "Not mine")
    await api.comment(jake, theirs["slug"], "My comment on theirs")
    await api.comment(jake, dragons["slug"], "A note on my own")
    await api.comment(other, dragons["slug"], "Their comment, not in my export")

    response = await client.post("/exports", headers=jake.headers)
    assert response.status_code == 202, response.text
    created = response.json()["export"]
    assert set(created) == {"id", "state", "progress", "createdAt", "downloadUrl"}
    assert created["state"] == "pending"
    assert created["progress"] == 0
    assert created["downloadUrl"] is None
    assert TIMESTAMP.match(created["createdAt"])

    export, seen = await wait_for_export(client, jake, created["id"])
    assert export["state"] == "done"
    assert export["progress"] == 100
    assert seen == sorted(seen)  # progress never goes back
    assert export["downloadUrl"] == f"/exports/{created['id']}/download"
    assert export["createdAt"] == created["createdAt"]

    archive = await download(client, jake, export)
    slugs = [dragons["slug"], "second-article"]
    assert sorted(archive.namelist()) == sorted(
        ["manifest.json", "comments.md", *(f"articles/{slug}.md" for slug in slugs)]
    )
    article = archive.read(f"articles/{dragons['slug']}.md").decode()
    assert article.startswith("# How to train your dragon\n\nEver wonder how?\n\nTags: dragons, training\n")
    assert article.endswith("\n\nYou have to believe\n")
    comments = archive.read("comments.md").decode()
    assert comments.startswith("# My comments\n")
    assert "My comment on theirs" in comments and "A note on my own" in comments
    assert "Their comment" not in comments
    manifest = orjson.loads(archive.read("manifest.json"))
    assert manifest["format"] == "conduit-export/1"
    assert manifest["exportId"] == created["id"]
    assert manifest["createdAt"] == created["createdAt"]
    assert manifest["user"] == {"username": "jake", "email": "jake@example.com", "bio": "", "image": ""}
    assert [(a["slug"], a["path"], a["tags"]) for a in manifest["articles"]] == [
        (dragons["slug"], f"articles/{dragons['slug']}.md", ["dragons", "training"]),
        ("second-article", "articles/second-article.md", []),
    ]
    assert manifest["comments"] == {"path": "comments.md", "count": 2}

    # Stored owner-only, and nothing left in staging once the last step has ended (it cleans up after
    # marking the export done).
    await jobs_done(client.app)  # type: ignore[attr-defined]
    export_dir = _export_dir(client)
    stored = export_dir / f"export-{created['id']}.zip"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert not export_service.staging_dir(export_dir, created["id"]).exists()

    # The owner is notified: a notification (pushed live by the existing machinery) and an email.
    notifications = (await client.get("/notifications", headers=jake.headers)).json()["notifications"]
    exported = [n["export"] for n in notifications if n["kind"] == "export"]
    assert exported == [{"id": created["id"]}]
    (message,) = [m for m in smtp_server.messages if m["Subject"] == "Your Conduit export is ready"]
    assert message["To"] == "jake@example.com"
    assert message["Subject"] == "Your Conduit export is ready"
    assert f"/api/v1/exports/{created['id']}/download" in message.get_content()

    # Someone else's export does not exist for them; without credentials, 401.
    assert_problem(await client.get(f"/exports/{created['id']}", headers=other.headers), 404, "not_found")
    assert_problem(await client.get(export["downloadUrl"], headers=other.headers), 404, "not_found")
    assert_problem(await client.get(export["downloadUrl"]), 401, "unauthorized")
    assert_problem(await client.get(f"/exports/{created['id']}"), 401, "unauthorized")
    assert_problem(await client.post("/exports"), 401, "unauthorized")

    # Finished, it no longer blocks a new one.
    again = await client.post("/exports", headers=jake.headers)
    assert again.status_code == 202
    assert again.json()["export"]["id"] != created["id"]


async def test_a_second_export_while_one_is_unfinished_is_a_conflict(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    jake = await api.register("jake")
    # An export some worker is on: inserted as such, so no job of this test can finish it meanwhile.
    async with engine.begin() as connection:
        export_id = (
            await connection.execute(
                insert(Export)
                .values(user_id=await user_id(engine, "jake"), state="running", progress=40)
                .returning(Export.id)
            )
        ).scalar_one()
    response = await client.post("/exports", headers=jake.headers)
    problem = assert_problem(response, 409, "export_in_progress", "an export is already in progress")
    assert problem["export"]["id"] == export_id
    assert problem["export"]["state"] == "running"
    assert problem["export"]["progress"] == 40
    assert problem["export"]["downloadUrl"] is None
    # Someone else may export meanwhile.
    other = await api.register("other")
    assert (await client.post("/exports", headers=other.headers)).status_code == 202


async def test_concurrent_requests_start_one_export(app: FastAPI, api: Api, engine: AsyncEngine) -> None:
    """Two transactions insert at once: the partial unique index lets one through, the other gets the
    conflict naming it (it waits for the first to commit, on either database)."""
    await api.register("jake")
    owner = await user_id(engine, "jake")
    async with app.state.sessionmaker() as first, app.state.sessionmaker() as second:
        created = await export_service.create_export(first, owner)
        contender = asyncio.create_task(export_service.create_export(second, owner))
        await asyncio.sleep(0.2)  # let it reach the INSERT, where it waits for the first transaction
        assert not contender.done()
        await first.commit()
        with pytest.raises(ExportInProgressError) as raised:
            await contender
        await second.rollback()
    assert raised.value.extensions["export"]["id"] == created.id
    async with engine.connect() as connection:
        assert (await connection.execute(select(func.count()).select_from(Export))).scalar_one() == 1


async def test_exports_keep_starting_on_one_connection(app: FastAPI, api: Api, engine: AsyncEngine) -> None:
    """The INSERT naming the partial unique index runs again and again on one connection. On PostgreSQL
    its prepared statement gets a generic plan from the sixth execution on, which could not infer the
    index when its predicate was sent as bound parameters (found by tests/fuzz)."""
    await api.register("jake")
    owner = await user_id(engine, "jake")
    async with app.state.sessionmaker() as session:
        for _ in range(8):
            created = await export_service.create_export(session, owner)
            with pytest.raises(ExportInProgressError):
                await export_service.create_export(session, owner)
            await session.execute(update(Export).where(Export.id == created.id).values(state="done"))
        await session.commit()
    async with engine.connect() as connection:
        assert (await connection.execute(select(func.count()).select_from(Export))).scalar_one() == 8


async def test_an_export_of_1000_articles(api: Api, client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    jake = await api.register("jake")
    slugs = await seed_articles(engine, jake, 1000)
    response = await client.post("/exports", headers=jake.headers)
    assert response.status_code == 202
    export, seen = await wait_for_export(client, jake, response.json()["export"]["id"])
    assert export["state"] == "done"
    assert seen == sorted(seen)
    archive = await download(client, jake, export)
    names = set(archive.namelist())
    assert names == {"manifest.json", "comments.md", *(f"articles/{slug}.md" for slug in slugs)}
    assert len(orjson.loads(archive.read("manifest.json"))["articles"]) == 1000
    assert archive.read("articles/bulk-article-999.md").decode().startswith("# Bulk article 999\n")


async def _pending_export(engine: AsyncEngine, owner: int) -> int:
    """An export row as a request leaves it, without the jobs it would send (the test runs them)."""
    stmt = insert(Export).values(user_id=owner, state="pending").returning(Export.id)
    async with engine.begin() as connection:
        return int((await connection.execute(stmt)).scalar_one())


async def _export_row(engine: AsyncEngine, export_id: int) -> Any:
    async with engine.connect() as connection:
        return (await connection.execute(select(Export).where(Export.id == export_id))).one()


def _remove(path: Path) -> None:
    path.unlink()


def _export_subjects(server: SmtpServer) -> list[str]:
    """The subjects of the export emails received (registration also sends one)."""
    return [str(m["Subject"]) for m in server.messages if "export" in str(m["Subject"])]


async def _notification_count(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(Notification))).scalar_one())


async def test_every_step_can_run_again(
    mailing_client: httpx.AsyncClient,
    smtp_server: SmtpServer,  # noqa: F811
    engine: AsyncEngine,
) -> None:
    """A redelivered step (its worker died after doing the work, before acknowledging it) redoes its
    work harmlessly; once the export is done, steps do nothing, and its owner was notified once."""
    client = mailing_client
    app: FastAPI = client.app  # type: ignore[attr-defined]
    api = Api(client)
    jake = await api.register("jake")
    article = await api.article(jake)
    await api.comment(jake, article["slug"])
    export_id = await _pending_export(engine, await user_id(engine, "jake"))
    steps = export_service.EXPORT_STEPS
    for step in steps[:3]:  # articles, comments, manifest
        await run(app, step, export_id=export_id)
        await run(app, step, export_id=export_id)
    await run(app, export_service.EXPORT_ARTICLES, export_id=export_id)  # the chain sent again...
    row = await _export_row(engine, export_id)
    assert (row.state, row.progress) == ("running", export_service.MANIFEST_DONE)  # ...progress stays
    for step in steps[3:]:  # archive, finish
        await run(app, step, export_id=export_id)
        await run(app, step, export_id=export_id)
    for step in steps:  # a whole chain again, after the end
        await run(app, step, export_id=export_id)
    row = await _export_row(engine, export_id)
    assert (row.state, row.progress, row.file_name) == ("done", 100, f"export-{export_id}.zip")
    assert await _notification_count(engine) == 1
    assert _export_subjects(smtp_server) == ["Your Conduit export is ready"]
    export = (await client.get(f"/exports/{export_id}", headers=jake.headers)).json()["export"]
    archive = await download(client, jake, export)
    assert sorted(archive.namelist()) == sorted(
        ["manifest.json", "comments.md", f"articles/{article['slug']}.md"]
    )
    assert orjson.loads(archive.read("manifest.json"))["comments"]["count"] == 1
    # Once housekeeping has removed the file, the download is gone.
    _remove(_export_dir(client) / row.file_name)
    assert_problem(
        await client.get(export["downloadUrl"], headers=jake.headers),
        404,
        "not_found",
        "the archive is no longer available",
    )


async def test_a_failing_step_fails_the_export_and_notifies(
    mailing_client: httpx.AsyncClient,
    smtp_server: SmtpServer,  # noqa: F811
    engine: AsyncEngine,
) -> None:
    client = mailing_client
    app: FastAPI = client.app  # type: ignore[attr-defined]
    api = Api(client)
    jake = await api.register("jake")
    await api.article(jake)
    export_id = await _pending_export(engine, await user_id(engine, "jake"))
    await run(app, export_service.EXPORT_ARTICLES, export_id=export_id)
    await run(app, export_service.EXPORT_COMMENTS, export_id=export_id)
    # What the articles step left for the manifest is corrupt: the manifest step cannot go on.
    staging = export_service.staging_dir(_export_dir(client), export_id)
    (staging / export_service.ARTICLES_LISTING).write_bytes(b"{not json")
    for step in export_service.EXPORT_STEPS[2:]:  # the rest of the chain, which goes on regardless
        await run(app, step, export_id=export_id)

    export = (await client.get(f"/exports/{export_id}", headers=jake.headers)).json()["export"]
    assert (export["state"], export["downloadUrl"]) == ("failed", None)
    assert not staging.exists()
    assert not (_export_dir(client) / f"export-{export_id}.zip").exists()
    notifications = (await client.get("/notifications", headers=jake.headers)).json()["notifications"]
    assert [(n["kind"], n["export"]) for n in notifications] == [("export", {"id": export_id})]
    assert _export_subjects(smtp_server) == ["Your Conduit export failed"]
    assert_problem(
        await client.get(f"/exports/{export_id}/download", headers=jake.headers),
        409,
        "conflict",
        "the export is not finished",
    )
    # A failed export is finished: a new one may start.
    assert (await client.post("/exports", headers=jake.headers)).status_code == 202


async def test_unsafe_slugs_never_become_paths(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """Slugs are data: one that could escape the archive's folder is named after the article's id."""
    jake = await api.register("jake")
    async with engine.begin() as connection:
        article_id = (
            await connection.execute(
                insert(Article)
                .values(
                    slug="../../etc/passwd",
                    title="Sneaky",
                    description="d",
                    body="b",
                    author_id=await user_id(engine, "jake"),
                )
                .returning(Article.id)
            )
        ).scalar_one()
    response = await client.post("/exports", headers=jake.headers)
    export, _ = await wait_for_export(client, jake, response.json()["export"]["id"])
    archive = await download(client, jake, export)
    assert f"articles/article.{article_id}.md" in archive.namelist()
    for name in archive.namelist():
        assert not name.startswith("/") and ".." not in name.split("/"), name
