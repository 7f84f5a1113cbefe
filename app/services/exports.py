"""Exports of a user's own content: a zip of their articles (``articles/<slug>.md``), their comments
(``comments.md``) and a ``manifest.json``.

An export is a row (``app/models/export.py``) built by a chain of jobs (``app/workers/exports.py``),
one per step: articles, comments, manifest, archive, finish. Every step is idempotent. It starts by
checking that the export is unfinished (a finished one makes it a no-op), writes its files under the
export's own staging directory, each written whole and then renamed into place (so a step run twice,
even at the same time, leaves complete files), and records its progress. The archive is renamed into
the export directory once complete; the last step marks the export done and notifies its owner in
one transaction, so exactly once.

File work is synchronous here: the jobs run it in worker threads.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import orjson
from sqlalchemy import and_, case, delete, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import ConflictError, NotFoundError
from app.core.mail import EmailMessageData
from app.core.outbox import Enqueue, Job, after_commit
from app.db.base import utcnow
from app.db.dialect import insert_ignoring_conflicts, json_array_agg
from app.models import Article, ArticleTag, Comment, Export, ExportState, NotificationKind, Tag, User
from app.models.export import UNFINISHED_PREDICATE
from app.schemas.common import format_timestamp
from app.schemas.export import ExportOut
from app.services import notifications

# The chain of jobs that builds an export, in order (app/workers/exports.py).
EXPORT_ARTICLES = "exports.articles"
EXPORT_COMMENTS = "exports.comments"
EXPORT_MANIFEST = "exports.manifest"
EXPORT_ARCHIVE = "exports.archive"
EXPORT_FINISH = "exports.finish"
EXPORT_STEPS = (EXPORT_ARTICLES, EXPORT_COMMENTS, EXPORT_MANIFEST, EXPORT_ARCHIVE, EXPORT_FINISH)

# Progress (percent) reached at the end of each step; the articles step advances batch by batch.
ARTICLES_DONE = 70
COMMENTS_DONE = 80
MANIFEST_DONE = 85
ARCHIVE_DONE = 95

UNFINISHED = (ExportState.PENDING, ExportState.RUNNING)
UNFINISHED_WHERE = text(UNFINISHED_PREDICATE)  # the partial unique index's (see app/models/export.py)
FINISHED = (ExportState.DONE, ExportState.FAILED)
CREATE_ATTEMPTS = 3

STAGING = ".staging"  # under the export directory: one directory per export id
ARTICLES_LISTING = ".articles.json"  # what the articles step wrote, for the manifest
COMMENTS_LISTING = ".comments.json"
MANIFEST = "manifest.json"
COMMENTS_FILE = "comments.md"
MANIFEST_FORMAT = "conduit-export/1"
# Slugs become file names inside the archive: anything else (never produced by the slug rules, but
# rows are data) is named after the article id instead, with a dot no valid slug can contain.
SAFE_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,254}$")


class ExportInProgressError(ConflictError):
    """The user already has an unfinished export; the problem document carries it as ``export``."""

    code = "export_in_progress"

    def __init__(self, export: ExportOut) -> None:
        super().__init__(
            "an export is already in progress",
            extensions={"export": export.model_dump(mode="json", by_alias=True)},
        )


def export_steps(export_id: int) -> tuple[Job, ...]:
    return tuple(Job(name, {"export_id": export_id}) for name in EXPORT_STEPS)


def download_path(export_id: int) -> str:
    return f"/exports/{export_id}/download"


def _out(export: Export) -> ExportOut:
    return ExportOut(
        id=export.id,
        state=export.state,
        progress=export.progress,
        created_at=export.created_at,
        download_url=download_path(export.id) if export.state == ExportState.DONE else None,
    )


# --- requests -------------------------------------------------------------------------------------


async def _unfinished(session: AsyncSession, user_id: int) -> Export | None:
    stmt = select(Export).where(Export.user_id == user_id, Export.state.in_(UNFINISHED))
    return (await session.scalars(stmt)).one_or_none()


async def create_export(session: AsyncSession, user_id: int) -> ExportOut:
    """Start an export of the user's content; its jobs are sent once the transaction commits.

    At most one unfinished export per user, decided by the database's partial unique index, so that
    two concurrent requests cannot both start one: the second ``INSERT`` waits for the first
    transaction and then inserts nothing, and its caller gets :class:`ExportInProgressError`. (``ON
    CONFLICT DO NOTHING`` rather than catching ``IntegrityError``, which on PostgreSQL would need a
    savepoint, and a savepoint on SQLite commits on release when it opens the transaction.)
    """
    for _ in range(CREATE_ATTEMPTS):
        export_id = await session.scalar(
            insert_ignoring_conflicts(session, Export.__table__, Export.user_id, index_where=UNFINISHED_WHERE)
            .values(user_id=user_id, state=ExportState.PENDING)
            .returning(Export.id)
        )
        if export_id is not None:
            after_commit(session, Enqueue(export_steps(export_id)))
            export = await session.get(Export, export_id)
            assert export is not None
            return _out(export)
        running = await _unfinished(session, user_id)
        if running is not None:
            raise ExportInProgressError(_out(running))
        # It finished between the INSERT and the SELECT: try again.
    raise ConflictError("the export could not be started, please retry")


async def _owned(session: AsyncSession, user_id: int, export_id: int) -> Export:
    """The export, if it is the user's: someone else's is as absent as a missing one."""
    export = await session.get(Export, export_id)
    if export is None or export.user_id != user_id:
        raise NotFoundError("export not found")
    return export


async def get_export(session: AsyncSession, user_id: int, export_id: int) -> ExportOut:
    return _out(await _owned(session, user_id, export_id))


async def archive_file(session: AsyncSession, export_dir: Path, user_id: int, export_id: int) -> Path:
    """The archive of the user's finished export."""
    export = await _owned(session, user_id, export_id)
    if export.state != ExportState.DONE or export.file_name is None:
        raise ConflictError("the export is not finished")
    path = export_dir / export.file_name
    if not await anyio.Path(path).is_file():  # purged by housekeeping
        raise NotFoundError("the archive is no longer available")
    return path


# --- the steps' database work ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArticleDoc:
    id: int
    slug: str
    title: str
    description: str
    body: str
    tags: list[str]
    favorites_count: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CommentDoc:
    id: int
    body: str
    created_at: datetime
    article_slug: str
    article_title: str


async def begin_step(session: AsyncSession, export_id: int) -> int | None:
    """Mark the export running (a heartbeat too: ``updated_at`` moves) and return its owner's id;
    ``None`` if it is finished or gone, which makes the step a no-op."""
    owner: int | None = await session.scalar(
        update(Export)
        .where(Export.id == export_id, Export.state.in_(UNFINISHED))
        .values(state=ExportState.RUNNING)
        .returning(Export.user_id)
    )
    return owner


async def set_progress(session: AsyncSession, export_id: int, progress: int) -> None:
    """Record progress (and a heartbeat). It never goes back: a step run again, or a chain sent
    again, redoes work already counted, and clients polling should not see it."""
    progress = max(0, min(progress, 100))
    await session.execute(
        update(Export)
        .where(Export.id == export_id, Export.state == ExportState.RUNNING)
        .values(progress=case((Export.progress < progress, progress), else_=Export.progress))
    )


async def count_articles(session: AsyncSession, user_id: int) -> int:
    count = await session.scalar(
        select(func.count()).select_from(Article).where(Article.author_id == user_id)
    )
    return int(count or 0)


async def article_batch(
    session: AsyncSession, user_id: int, *, after_id: int, limit: int
) -> list[ArticleDoc]:
    """The user's articles with an id above ``after_id``, in id order (keyset pagination)."""
    tags = (
        select(json_array_agg(session, Tag.name))
        .join(ArticleTag, ArticleTag.tag_id == Tag.id)
        .where(ArticleTag.article_id == Article.id)
        .scalar_subquery()
    )
    rows = await session.execute(
        select(
            Article.id,
            Article.slug,
            Article.title,
            Article.description,
            Article.body,
            Article.favorites_count,
            Article.created_at,
            Article.updated_at,
            tags.label("tags"),
        )
        .where(Article.author_id == user_id, Article.id > after_id)
        .order_by(Article.id)
        .limit(limit)
    )
    return [
        ArticleDoc(
            id=row.id,
            slug=row.slug,
            title=row.title,
            description=row.description,
            body=row.body,
            tags=sorted(tag for tag in row.tags or [] if tag is not None),
            favorites_count=row.favorites_count,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        for row in rows
    ]


async def comment_batch(
    session: AsyncSession, user_id: int, *, after_id: int, limit: int
) -> list[CommentDoc]:
    """The comments the user wrote with an id above ``after_id``, in id order."""
    rows = await session.execute(
        select(Comment.id, Comment.body, Comment.created_at, Article.slug, Article.title)
        .join(Article, Article.id == Comment.article_id)
        .where(Comment.author_id == user_id, Comment.id > after_id)
        .order_by(Comment.id)
        .limit(limit)
    )
    return [CommentDoc(row.id, row.body, row.created_at, row.slug, row.title) for row in rows]


async def manifest_header(session: AsyncSession, export_id: int) -> dict[str, Any]:
    """The manifest's description of the export and its owner, as of now."""
    row = (
        await session.execute(
            select(Export.created_at, User.username, User.email, User.bio, User.image)
            .join(User, User.id == Export.user_id)
            .where(Export.id == export_id)
        )
    ).one()
    return {
        "format": MANIFEST_FORMAT,
        "exportId": export_id,
        "createdAt": format_timestamp(row.created_at),
        "generatedAt": format_timestamp(utcnow()),
        "user": {"username": row.username, "email": row.email, "bio": row.bio, "image": row.image},
    }


async def set_archive(session: AsyncSession, export_id: int, file_name: str) -> None:
    await session.execute(
        update(Export)
        .where(Export.id == export_id, Export.state == ExportState.RUNNING)
        .values(file_name=file_name, progress=ARCHIVE_DONE)
    )


async def _conclude(
    session: AsyncSession, export_id: int, state: ExportState, frontend_url: str, *, require_archive: bool
) -> EmailMessageData | None:
    """Move an unfinished export to ``state``, notify its owner and return the email to send after
    the commit; ``None`` if it had already been concluded (a redelivered step notifies nobody)."""
    stmt = update(Export).where(Export.id == export_id, Export.state.in_(UNFINISHED))
    if require_archive:
        stmt = stmt.where(Export.file_name.is_not(None))
    values: dict[str, Any] = {"state": state, "finished_at": utcnow()}
    if state == ExportState.DONE:
        values["progress"] = 100
    owner = await session.scalar(stmt.values(**values).returning(Export.user_id))
    if owner is None:
        return None
    await notifications.notify(session, recipient_id=owner, kind=NotificationKind.EXPORT, export_id=export_id)
    user = (await session.execute(select(User.username, User.email).where(User.id == owner))).one()
    return _export_email(export_id, state, user.username, user.email, frontend_url)


async def finish(session: AsyncSession, export_id: int, frontend_url: str) -> EmailMessageData | None:
    """Mark the export done (once its archive is stored) and notify its owner."""
    return await _conclude(session, export_id, ExportState.DONE, frontend_url, require_archive=True)


async def fail(session: AsyncSession, export_id: int, frontend_url: str) -> EmailMessageData | None:
    """Mark the export failed and notify its owner."""
    return await _conclude(session, export_id, ExportState.FAILED, frontend_url, require_archive=False)


def _export_email(
    export_id: int, state: ExportState, username: str, email: str, frontend_url: str
) -> EmailMessageData:
    base = frontend_url.rstrip("/")
    if state == ExportState.DONE:
        subject = "Your Conduit export is ready"
        what = (
            f"the export of your data you asked for (#{export_id}) is ready. Download it while signed in,\n"
            f"from {base}/settings or at GET /api/v1{download_path(export_id)}."
        )
    else:
        subject = "Your Conduit export failed"
        what = (
            f"the export of your data you asked for (#{export_id}) could not be completed.\n"
            f"Please ask for a new one at {base}/settings."
        )
    return EmailMessageData(to=email, subject=subject, text=f"Hello {username},\n\n{what}\n")


# --- housekeeping ---------------------------------------------------------------------------------


async def requeue_stale(
    session: AsyncSession,
    *,
    pending_after: timedelta,
    running_after: timedelta,
    give_up_after: timedelta,
    frontend_url: str,
) -> tuple[int, list[EmailMessageData]]:
    """Repair exports whose jobs were lost. Those unfinished for longer than ``give_up_after`` fail
    (their owners are notified: the emails are returned, to send after the commit). The chain is sent
    again for those pending longer than ``pending_after`` (a lost enqueue) or running without progress
    for longer than ``running_after`` (a worker or process gone for good); their ``updated_at`` moves,
    so each is sent once per run. Returns how many were sent again, and the emails."""
    now = utcnow()
    given_up = await session.scalars(
        select(Export.id).where(Export.state.in_(UNFINISHED), Export.created_at < now - give_up_after)
    )
    emails = []
    for export_id in list(given_up):
        email = await _conclude(session, export_id, ExportState.FAILED, frontend_url, require_archive=False)
        if email is not None:
            emails.append(email)
    stale = list(
        await session.scalars(
            update(Export)
            .where(
                or_(
                    and_(Export.state == ExportState.PENDING, Export.updated_at < now - pending_after),
                    and_(Export.state == ExportState.RUNNING, Export.updated_at < now - running_after),
                )
            )
            .values(updated_at=now)
            .returning(Export.id)
        )
    )
    for export_id in stale:
        after_commit(session, Enqueue(export_steps(export_id)))
    return len(stale), emails


async def expired_exports(session: AsyncSession, *, older_than: timedelta, limit: int) -> list[int]:
    """The ids of up to ``limit`` finished exports that ended more than ``older_than`` ago."""
    return list(
        await session.scalars(
            select(Export.id)
            .where(Export.state.in_(FINISHED), Export.finished_at < utcnow() - older_than)
            .order_by(Export.id)
            .limit(limit)
        )
    )


async def delete_exports(session: AsyncSession, export_ids: list[int]) -> int:
    """Delete these finished exports (their notifications go with them)."""
    result = await session.execute(
        delete(Export).where(Export.id.in_(export_ids), Export.state.in_(FINISHED)).returning(Export.id)
    )
    return len(result.all())


async def staging_in_use(session: AsyncSession) -> tuple[set[int], int]:
    """The ids of the unfinished exports, and the highest export id: staging directories of higher
    ids belong to exports created since, which must be left alone too."""
    unfinished = set(await session.scalars(select(Export.id).where(Export.state.in_(UNFINISHED))))
    newest = await session.scalar(select(func.max(Export.id)))
    return unfinished, int(newest or 0)


# --- files ----------------------------------------------------------------------------------------


def staging_dir(export_dir: Path, export_id: int) -> Path:
    return export_dir / STAGING / str(export_id)


def archive_name(export_id: int) -> str:
    return f"export-{export_id}.zip"


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _temporary(path: Path) -> Path:
    """A name beside ``path`` unique to this writer, so concurrent runs of a step never share one."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` owner-only and atomically: readers see the old file or the new one."""
    _private_dir(path.parent)
    temporary = _temporary(path)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


def article_file(article: ArticleDoc) -> str:
    name = article.slug if SAFE_SLUG.match(article.slug) else f"article.{article.id}"
    return f"articles/{name}.md"


def render_article(article: ArticleDoc) -> str:
    tags = ", ".join(article.tags) if article.tags else "(none)"
    return (
        f"# {article.title}\n\n"
        f"{article.description}\n\n"
        f"Tags: {tags}\n"
        f"Published: {format_timestamp(article.created_at)}\n"
        f"Updated: {format_timestamp(article.updated_at)}\n\n"
        f"{article.body}\n"
    )


def write_articles(staging: Path, articles: Iterable[ArticleDoc]) -> list[dict[str, Any]]:
    """Render each article to its file; returns their manifest entries."""
    entries = []
    for article in articles:
        path = article_file(article)
        write_file(staging / path, render_article(article).encode())
        entries.append(
            {
                "slug": article.slug,
                "title": article.title,
                "path": path,
                "tags": article.tags,
                "favoritesCount": article.favorites_count,
                "createdAt": format_timestamp(article.created_at),
                "updatedAt": format_timestamp(article.updated_at),
            }
        )
    return entries


def render_comments(comments: Iterable[CommentDoc]) -> str:
    return "".join(
        f'## On "{comment.article_title}" ({comment.article_slug}), '
        f"{format_timestamp(comment.created_at)}\n\n{comment.body}\n\n"
        for comment in comments
    )


class CommentsWriter:
    """``comments.md``, appended batch by batch to a file of this run's own, renamed into place at
    the end with the listing the manifest reads."""

    def __init__(self, staging: Path) -> None:
        self._path = staging / COMMENTS_FILE
        self._staging = staging
        self._temporary = _temporary(self._path)
        self.count = 0

    def open(self) -> None:
        _private_dir(self._staging)
        fd = os.open(self._temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write("# My comments\n\n")

    def append(self, comments: list[CommentDoc]) -> None:
        with self._temporary.open("a", encoding="utf-8") as file:
            file.write(render_comments(comments))
        self.count += len(comments)

    def close(self) -> None:
        if self.count == 0:
            with self._temporary.open("a", encoding="utf-8") as file:
                file.write("(none)\n")
        os.replace(self._temporary, self._path)
        write_file(
            self._staging / COMMENTS_LISTING, orjson.dumps({"path": COMMENTS_FILE, "count": self.count})
        )


def write_articles_listing(staging: Path, entries: list[dict[str, Any]]) -> None:
    write_file(staging / ARTICLES_LISTING, orjson.dumps(entries))


def write_manifest(staging: Path, header: dict[str, Any]) -> None:
    """The manifest: ``header`` plus what the articles and comments steps wrote."""
    manifest = {
        **header,
        "articles": orjson.loads((staging / ARTICLES_LISTING).read_bytes()),
        "comments": orjson.loads((staging / COMMENTS_LISTING).read_bytes()),
    }
    write_file(staging / MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))


def build_archive(staging: Path, target: Path) -> None:
    """Zip the manifest and the files it lists into ``target``, owner-only, renamed into place whole."""
    manifest = orjson.loads((staging / MANIFEST).read_bytes())
    members = [MANIFEST, manifest["comments"]["path"], *(entry["path"] for entry in manifest["articles"])]
    _private_dir(target.parent)
    temporary = _temporary(target)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file, zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED) as archive:
            for member in members:
                archive.write(staging / member, arcname=member)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def remove_staging(export_dir: Path, export_id: int) -> None:
    shutil.rmtree(staging_dir(export_dir, export_id), ignore_errors=True)


def remove_files(export_dir: Path, export_ids: list[int]) -> None:
    """Remove everything of these exports on disk: the staging directory, and the archive whether it
    was recorded or not. (The archive step writes it before the transaction that records it, which
    may fail: a failed export can have an archive that its row does not name.)"""
    for export_id in export_ids:
        (export_dir / archive_name(export_id)).unlink(missing_ok=True)
        remove_staging(export_dir, export_id)


def remove_orphan_staging(export_dir: Path, unfinished: set[int], newest: int) -> int:
    """Remove the staging directories of exports that have ended (left by a step that ran again after
    its export ended, or by a crash) or no longer exist. Returns how many."""
    root = export_dir / STAGING
    if not root.is_dir():
        return 0
    removed = 0
    for entry in root.iterdir():
        in_use = entry.name.isdigit() and (int(entry.name) in unfinished or int(entry.name) > newest)
        if entry.is_dir() and not in_use:
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed
