"""Housekeeping purges what is past its use, keeps the rest, and repairs exports whose jobs were lost."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.base import utcnow
from app.models import Export, Notification, RefreshToken
from app.services import exports as export_service
from app.services.housekeeping import HOUSEKEEPING
from tests.conftest import JOB_GRACE
from tests.factories import Api
from tests.workers.support import run, user_id

DAY = timedelta(days=1)


async def _insert(engine: AsyncEngine, model: Any, **values: Any) -> int:
    stmt = insert(model).values(**values).returning(model.id)
    async with engine.begin() as connection:
        return int((await connection.execute(stmt)).scalar_one())


def _make(*paths: Path, directories: bool = False) -> None:
    for path in paths:
        if directories:
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"zip")


async def _ids(engine: AsyncEngine, model: Any) -> set[int]:
    async with engine.connect() as connection:
        return set((await connection.execute(select(model.id))).scalars())


async def test_housekeeping(app: FastAPI, api: Api, engine: AsyncEngine) -> None:
    settings = app.state.settings
    now = utcnow()
    owners = {}
    for name in ("ann", "pending", "running", "abandoned", "busy"):
        await api.register(name)
        owners[name] = await user_id(engine, name)
    ann = owners["ann"]

    # Refresh tokens: a session whose every token has expired is over; a live session keeps its
    # expired (spent) tokens, whose replay must still end it.
    def token(family: str, expires_in: timedelta) -> dict[str, Any]:
        return {
            "user_id": ann,
            "family_id": family,
            "token_hash": secrets.token_hex(32),
            "expires_at": now + expires_in,
        }

    over = [await _insert(engine, RefreshToken, **token("over", -d * DAY)) for d in (1, 2)]
    live_family = [await _insert(engine, RefreshToken, **token("live", d * DAY)) for d in (-1, 1)]

    # Notifications: read and old go; unread, or read recently, stay.
    retention = timedelta(days=settings.notification_retention_days)

    async def notification(age: timedelta, *, read: bool) -> int:
        created = now - age
        read_at = created if read else None
        return await _insert(
            engine, Notification, recipient_id=ann, kind="follow", created_at=created, read_at=read_at
        )

    read_old = await notification(retention + DAY, read=True)
    unread_old = await notification(retention + DAY, read=False)
    read_recent = await notification(DAY, read=True)

    # Exports: finished past the retention go, rows and files; recent ones stay.
    export_dir: Path = settings.effective_export_dir
    expired_age = timedelta(days=settings.export_retention_days) + DAY

    async def finished(state: str, age: timedelta) -> tuple[int, Path]:
        export_id = await _insert(engine, Export, user_id=ann, state=state, finished_at=now - age)
        name = export_service.archive_name(export_id)
        if state == "done":
            async with engine.begin() as connection:
                stmt = update(Export).where(Export.id == export_id).values(file_name=name, progress=100)
                await connection.execute(stmt)
        archive = export_dir / name
        _make(archive)
        return export_id, archive

    expired_done, expired_file = await finished("done", expired_age)
    # Failed with its archive written but never recorded (the transaction recording it failed).
    expired_failed, unrecorded_file = await finished("failed", expired_age)
    recent_done, recent_file = await finished("done", DAY)

    # Unfinished exports: a lost enqueue, a lost worker, one past giving up, one being worked on.
    hour_ago = now - timedelta(hours=1)
    lost_enqueue = await _insert(
        engine, Export, user_id=owners["pending"], state="pending", created_at=hour_ago, updated_at=hour_ago
    )
    lost_worker = await _insert(
        engine, Export, user_id=owners["running"], state="running", created_at=hour_ago, updated_at=hour_ago
    )
    long_ago = now - timedelta(days=2)
    abandoned = await _insert(
        engine, Export, user_id=owners["abandoned"], state="running", created_at=long_ago, updated_at=long_ago
    )
    busy = await _insert(engine, Export, user_id=owners["busy"], state="running", progress=30, updated_at=now)

    # Staging left behind by ended exports goes; that of unfinished or newer exports stays.
    ended_staging = export_service.staging_dir(export_dir, recent_done)
    busy_staging = export_service.staging_dir(export_dir, busy)
    newer_staging = export_service.staging_dir(export_dir, busy + 1000)
    _make(ended_staging, busy_staging, newer_staging, directories=True)

    await run(app, HOUSEKEEPING)
    await app.state.jobs.drain(JOB_GRACE)  # the chains it sent again, run in this process

    tokens = await _ids(engine, RefreshToken)  # registration opened sessions too: live, kept
    assert not set(over) & tokens
    assert set(live_family) <= tokens
    assert await _ids(engine, Notification) >= {unread_old, read_recent}
    assert read_old not in await _ids(engine, Notification)
    exports = await _ids(engine, Export)
    assert expired_done not in exports and expired_failed not in exports
    assert not expired_file.exists() and not unrecorded_file.exists()
    assert recent_done in exports and recent_file.exists()
    assert not ended_staging.exists()
    assert busy_staging.exists() and newer_staging.exists()

    async with engine.connect() as connection:
        states = dict((await connection.execute(select(Export.id, Export.state))).all())
    assert states[lost_enqueue] == states[lost_worker] == "done"  # sent again, and completed
    assert states[abandoned] == "failed"
    assert states[busy] == "running"
    # Their owners heard of the outcome: the export notification, once.
    async with engine.connect() as connection:
        notified = (
            await connection.execute(
                select(Notification.recipient_id, Notification.export_id).where(Notification.kind == "export")
            )
        ).all()
    assert sorted(notified) == sorted(
        [
            (owners["pending"], lost_enqueue),
            (owners["running"], lost_worker),
            (owners["abandoned"], abandoned),
        ]
    )
