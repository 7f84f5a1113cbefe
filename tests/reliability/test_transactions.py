"""Every write that touches several rows is one transaction: a failure in the middle leaves nothing
half-written, nothing announced, and the retry succeeds (docs/reliability.md, "Transactions").

Each test injects one failure into the app's own engine, with SQLAlchemy events (nothing of the
database is mocked), in one of two places (the ``mode`` every test runs in):

- ``statement``: a statement late in the unit of work raises as it is about to run, after the unit's
  earlier rows were written; an unexpected bug, so the client gets a 500 problem document;
- ``commit``: every statement ran and the COMMIT of the transaction that ran that statement raises;
  the database refusing it, so the client gets a 503 problem document.

Then: the whole database (every row of every table) and the stored files are exactly as before, no
push, job or email went out, and the same request (or job) run again succeeds. Units of a single
statement run in ``commit`` mode only: in ``statement`` mode nothing would have been written yet.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import event, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from typer.testing import CliRunner

from app.cli import cli
from app.core.mail import EmailMessageData
from app.core.outbox import Job
from app.core.security import PasswordHasher
from app.db.base import Base, utcnow
from app.models import Export, ExportState, Role, User
from app.schemas.article import NewArticle
from app.services import articles as article_service
from app.services import digest, exports, housekeeping
from app.services.notifications import ARTICLE_PUBLISHED
from tests.conftest import ClientFactory, jobs_done
from tests.factories import PASSWORD, Account, Api, assert_problem
from tests.media import Media, MediaFactory, png
from tests.workers.support import run, user_id

Mode = Literal["statement", "commit"]
runner = CliRunner()
FAULT_PENDING = "tests.fault_pending"  # on a connection whose transaction must fail to commit
# What a problem document must never show of the failure.
INTERNALS = re.compile(r"Injected|Traceback|sqlalchemy|aiosqlite|asyncpg|INSERT|UPDATE|DELETE|COMMIT|\.py\b")


class InjectedError(RuntimeError):
    """The failure these tests inject (as itself: a bug; or as the cause of an ``OperationalError``)."""


def database_error() -> OperationalError:
    return OperationalError("COMMIT", None, InjectedError("the database refused"))


class Faults:
    """One-shot failures injected into an engine (or every engine: ``Engine``), armed for the next
    statement matching a pattern."""

    def __init__(self, engine: Engine | type[Engine]) -> None:
        self._engine = engine
        self._pattern: re.Pattern[str] | None = None
        self._mode: Mode = "statement"
        self._error: Callable[[], Exception] = InjectedError
        self.fired = 0
        event.listen(self._engine, "before_cursor_execute", self._before_execute)
        event.listen(self._engine, "commit", self._commit)
        event.listen(self._engine, "rollback", self._rollback)

    def arm(self, pattern: str, mode: Mode, error: Callable[[], Exception]) -> None:
        self._pattern, self._mode, self._error, self.fired = re.compile(pattern, re.S), mode, error, 0

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._before_execute)
        event.remove(self._engine, "commit", self._commit)
        event.remove(self._engine, "rollback", self._rollback)

    def _before_execute(
        self, conn: Connection, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool
    ) -> None:
        if self._pattern is None or not self._pattern.search(statement):
            return
        self._pattern = None
        if self._mode == "commit":
            conn.info[FAULT_PENDING] = True  # let it run; fail the commit of its transaction
            return
        self.fired += 1
        raise self._error()

    def _commit(self, conn: Connection) -> None:
        if conn.info.pop(FAULT_PENDING, False):
            self.fired += 1
            raise self._error()

    def _rollback(self, conn: Connection) -> None:
        conn.info.pop(FAULT_PENDING, None)


@dataclass
class Effects:
    """What went out of the app, recorded as it went (then delivered as usual)."""

    pushes: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    emails: list[EmailMessageData] = field(default_factory=list)

    def clear(self) -> None:
        self.pushes.clear()
        self.jobs.clear()
        self.emails.clear()

    def __bool__(self) -> bool:
        return bool(self.pushes or self.jobs or self.emails)


def record_effects(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> Effects:
    effects = Effects()
    pubsub, queue, mailer = app.state.pubsub, app.state.dispatcher.queue, app.state.mailer
    publish, enqueue, send = pubsub.publish, queue.enqueue, mailer.send

    async def recorded_publish(channel: str, message: bytes) -> None:
        effects.pushes.append(orjson.loads(message))
        await publish(channel, message)

    async def recorded_enqueue(steps: tuple[Job, ...]) -> None:
        effects.jobs += [step.name for step in steps]
        await enqueue(steps)

    async def recorded_send(message: EmailMessageData) -> None:
        effects.emails.append(message)
        await send(message)

    monkeypatch.setattr(pubsub, "publish", recorded_publish)
    monkeypatch.setattr(queue, "enqueue", recorded_enqueue)
    monkeypatch.setattr(mailer, "send", recorded_send)
    return effects


Ignored = frozenset[tuple[str, str]]  # (table, column) pairs left out of a snapshot


async def snapshot(engine: AsyncEngine, ignore: Ignored = frozenset()) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table."""
    tables: dict[str, list[dict[str, Any]]] = {}
    async with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows = await connection.execute(select(table).order_by(*table.primary_key.columns))
            tables[table.name] = [
                {name: value for name, value in row._mapping.items() if (table.name, name) not in ignore}
                for row in rows
            ]
    return tables


State = tuple[dict[str, list[dict[str, Any]]], Any]  # every table's rows, and the stored files


def assert_unchanged(before: State, after: State, what: str) -> None:
    tables = [name for name in before[0] if before[0][name] != after[0][name]]
    assert not tables, f"{what} left changes in the tables {tables}"
    assert before[1] == after[1], f"{what} left stored files behind, or deleted some"


def assert_clean_problem(response: httpx.Response, mode: Mode) -> None:
    if mode == "statement":
        assert_problem(response, 500, "internal_error", "internal server error")
    else:
        assert_problem(
            response, 503, "service_unavailable", "the service is temporarily unavailable, please retry"
        )
        assert response.headers["retry-after"] == "1"
    assert not INTERNALS.search(response.text), response.text


@dataclass
class Transactions:
    """An app, a client of it without the suite's fail-on-5xx hook, and the failures to inject."""

    app: FastAPI
    client: httpx.AsyncClient
    mode: Mode
    faults: Faults
    effects: Effects
    files: Callable[[], Awaitable[Any]]

    @property
    def api(self) -> Api:
        return Api(self.client)

    @property
    def engine(self) -> AsyncEngine:
        engine: AsyncEngine = self.app.state.engine
        return engine

    async def _state(self, ignore: Ignored) -> State:
        await jobs_done(self.app)  # nothing still running, so the snapshot holds still
        return await snapshot(self.engine, ignore), await self.files()

    async def request(
        self, call: Callable[[], Awaitable[httpx.Response]], *, at: str, ok: int
    ) -> httpx.Response:
        """Fail ``call`` at the statement matching ``at`` (or its commit), check that it left nothing
        behind, then run it again: it succeeds with ``ok``. Returns that response; ``effects`` then
        holds what the successful one sent out."""
        before = await self._state(frozenset())
        self.effects.clear()
        self.faults.arm(at, self.mode, InjectedError if self.mode == "statement" else database_error)
        failed = await call()
        assert self.faults.fired == 1, f"no statement matched {at!r}: nothing was injected"
        assert_clean_problem(failed, self.mode)
        assert_unchanged(before, await self._state(frozenset()), "the failed request")
        assert not self.effects, f"the failed request sent {self.effects}"
        retried = await call()
        assert retried.status_code == ok, retried.text
        assert await self._state(frozenset()) != before
        return retried

    async def job(self, name: str, *, at: str, ignore: Ignored = frozenset(), **kwargs: Any) -> None:
        """The same for a job run by hand (as a queue runs it): it fails with a database error, which
        the queues retry, and leaves nothing (but the ``ignore``d columns) behind; run again, it works."""
        before = await self._state(ignore)
        self.effects.clear()
        self.faults.arm(at, self.mode, database_error)
        with pytest.raises(OperationalError):
            await run(self.app, name, **kwargs)
        assert self.faults.fired == 1, f"no statement matched {at!r}: nothing was injected"
        assert_unchanged(before, await self._state(ignore), "the failed job")
        assert not self.effects, f"the failed job sent {self.effects}"
        await run(self.app, name, **kwargs)
        assert await self._state(ignore) != before


@pytest.fixture(params=["statement", "commit"])
def mode(request: pytest.FixtureRequest) -> Mode:
    value: Mode = request.param
    return value


@pytest.fixture
def faults(engine: AsyncEngine) -> Iterator[Faults]:
    injected = Faults(engine.sync_engine)
    yield injected
    injected.close()


async def _local_files(app: FastAPI) -> set[str]:
    root = app.state.settings.effective_media_dir
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}


def _client(app: FastAPI) -> httpx.AsyncClient:
    """A client without the suite's fail-on-5xx hook: the failures injected here are 5xx on purpose.
    (An unhandled error is also re-raised by Starlette after its 500 response, for the server's log.)"""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test/api/v1")


@asynccontextmanager
async def _transactions(
    app: FastAPI,
    mode: Mode,
    faults: Faults,
    monkeypatch: pytest.MonkeyPatch,
    files: Callable[[], Awaitable[Any]],
) -> AsyncIterator[Transactions]:
    async with _client(app) as client:
        yield Transactions(app, client, mode, faults, record_effects(app, monkeypatch), files)


@pytest.fixture
async def tx(
    app: FastAPI, faults: Faults, mode: Mode, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Transactions]:
    """The suite's app."""
    async with _transactions(app, mode, faults, monkeypatch, lambda: _local_files(app)) as transactions:
        yield transactions


@pytest.fixture
async def own_tx(
    make_client: ClientFactory, mode: Mode, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Transactions]:
    """An app of its own, whose files (var_dir) no other test has touched."""
    app: FastAPI = (await make_client()).app  # type: ignore[attr-defined]
    faults = Faults(app.state.engine.sync_engine)
    async with _transactions(app, mode, faults, monkeypatch, lambda: _local_files(app)) as transactions:
        yield transactions
    faults.close()


@pytest.fixture
async def media_tx(
    make_media: MediaFactory, mode: Mode, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Transactions]:
    """An app of its own for uploads, on the local disk or S3 (moto), with its stored files."""
    media: Media = await make_media()
    faults = Faults(media.app.state.engine.sync_engine)
    async with _transactions(media.app, mode, faults, monkeypatch, media.stored) as transactions:
        yield transactions
    faults.close()


commit_only = pytest.mark.parametrize("mode", ["commit"], indirect=True)


def _kinds(effects: Effects) -> list[str]:
    return [
        push["type"] if push["type"] != "notification" else push["data"]["kind"] for push in effects.pushes
    ]


# --- accounts and sessions ----------------------------------------------------------------------------


async def test_registration(tx: Transactions) -> None:
    """The user, the email-verification token and the refresh token; the verification email after."""
    body = {"user": {"username": "bob", "email": "bob@example.com", "password": PASSWORD}}
    retried = await tx.request(
        lambda: tx.client.post("/users", json=body), at=r"^INSERT INTO refresh_tokens", ok=201
    )
    assert retried.json()["user"]["username"] == "bob"
    assert [email.to for email in tx.effects.emails] == ["bob@example.com"]


async def test_login_that_upgrades_the_password_hash(tx: Transactions) -> None:
    """The rehashed password and the new session's refresh token."""
    jake = await tx.api.register("jake")
    stronger = PasswordHasher(tx.app.state.settings.model_copy(update={"bcrypt_rounds": 5}))
    outdated = await stronger.hash(PASSWORD)
    async with tx.engine.begin() as connection:
        await connection.execute(update(User).where(User.username == "jake").values(password_hash=outdated))
    body = {"user": {"email": jake.email, "password": PASSWORD}}
    await tx.request(
        lambda: tx.client.post("/users/login", json=body), at=r"^INSERT INTO refresh_tokens", ok=200
    )
    async with tx.engine.connect() as connection:
        stored = (
            await connection.execute(select(User.password_hash).where(User.username == "jake"))
        ).scalar_one()
    assert stored != outdated and not tx.app.state.hasher.needs_rehash(stored)


async def _refresh_token(tx: Transactions, account: Account) -> str:
    response = await tx.client.post("/auth/token", data={"username": account.username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    token: str = response.json()["refresh_token"]
    return token


async def test_refresh_token_rotation(tx: Transactions) -> None:
    """The presented token spent and the next one issued: after a failure the token is not spent, so
    the client's retry is a plain rotation, not mistaken for a replay that would end the session."""
    jake = await tx.api.register("jake")
    token = await _refresh_token(tx, jake)
    await tx.request(
        lambda: tx.client.post("/auth/refresh", json={"refresh_token": token}),
        at=r"^INSERT INTO refresh_tokens",
        ok=200,
    )


@commit_only
async def test_refresh_token_reuse_detection(tx: Transactions) -> None:
    """Revoking the family of a replayed token is kept although the request fails with 401, but only if
    it commits: a failed commit revokes nothing and is not a 401."""
    jake = await tx.api.register("jake")
    spent = await _refresh_token(tx, jake)
    assert (await tx.client.post("/auth/refresh", json={"refresh_token": spent})).status_code == 200
    retried = await tx.request(
        lambda: tx.client.post("/auth/refresh", json={"refresh_token": spent}),
        at=r"^UPDATE refresh_tokens SET revoked_at",
        ok=401,
    )
    assert retried.json()["detail"] == "this refresh token was already used; the session has been ended"
    assert _kinds(tx.effects) == ["sessions_ended"]


@commit_only
async def test_logout(tx: Transactions) -> None:
    jake = await tx.api.register("jake")
    token = await _refresh_token(tx, jake)
    await tx.request(
        lambda: tx.client.post("/auth/logout", json={"refresh_token": token}),
        at=r"^UPDATE refresh_tokens SET revoked_at",
        ok=204,
    )
    assert _kinds(tx.effects) == ["sessions_ended"]


async def test_logout_everywhere(tx: Transactions) -> None:
    """Every refresh token revoked and the user's sessions cut off."""
    jake = await tx.api.register("jake")
    await _refresh_token(tx, jake)
    await tx.request(
        lambda: tx.client.post("/auth/logout-all", headers=jake.headers),
        at=r"^UPDATE users SET sessions_valid_after",
        ok=204,
    )
    assert _kinds(tx.effects) == ["sessions_ended"]


async def test_password_change(tx: Transactions) -> None:
    """The new hash, and the other sessions revoked and cut off; the old password is refused only once
    it succeeds."""
    jake = await tx.api.register("jake")
    await _refresh_token(tx, jake)
    body = {"user": {"password": "another-horse-7"}}
    await tx.request(
        lambda: tx.client.put("/user", json=body, headers=jake.headers),
        at=r"^UPDATE users SET password_hash",
        ok=200,
    )
    old = await tx.client.post("/users/login", json={"user": {"email": jake.email, "password": PASSWORD}})
    assert old.status_code == 401


def _token_in(email: EmailMessageData) -> str:
    match = re.search(r"^    ([A-Za-z0-9_-]{43})$", email.text, re.MULTILINE)
    assert match, email.text
    return match.group(1)


@commit_only
async def test_password_reset_request(tx: Transactions) -> None:
    """One row, but an email: it must not go out for a token that was not kept."""
    jake = await tx.api.register("jake")
    await tx.request(
        lambda: tx.client.post("/auth/password-reset", json={"email": jake.email}),
        at=r"^INSERT INTO one_time_tokens",
        ok=202,
    )
    assert [email.subject for email in tx.effects.emails] == ["Reset your Conduit password"]


async def test_password_reset(tx: Transactions) -> None:
    """The token spent, the user's other reset tokens voided, the new hash and every session ended:
    after a failure the same token still works."""
    jake = await tx.api.register("jake")
    await tx.client.post("/auth/password-reset", json={"email": jake.email})
    await jobs_done(tx.app)
    token = _token_in(tx.effects.emails[-1])
    body = {"token": token, "password": "another-horse-7"}
    await tx.request(
        lambda: tx.client.post("/auth/password-reset/confirm", json=body),
        at=r"^UPDATE users SET password_hash",
        ok=204,
    )
    assert _kinds(tx.effects) == ["sessions_ended"]


async def test_email_verification(tx: Transactions) -> None:
    """The token spent and the address marked verified."""
    await tx.api.register("jake")
    token = _token_in(tx.effects.emails[-1])
    await tx.request(
        lambda: tx.client.post("/auth/verify-email", json={"token": token}),
        at=r"^UPDATE users SET email_verified_at",
        ok=204,
    )


async def test_deactivation(tx: Transactions, engine: AsyncEngine) -> None:
    """The account deactivated and every session of it ended."""
    root = await tx.api.register("root")
    async with engine.begin() as connection:
        await connection.execute(update(User).where(User.username == "root").values(role=Role.ADMIN))
    jake = await tx.api.register("jake")
    await _refresh_token(tx, jake)
    await tx.request(
        lambda: tx.client.post("/admin/users/jake/deactivate", headers=root.headers),
        at=r"^UPDATE users SET is_active",
        ok=200,
    )
    assert _kinds(tx.effects) == ["sessions_ended"]


# --- articles, comments, favorites, follows -------------------------------------------------------------


async def test_article_creation(tx: Transactions) -> None:
    """The article, new tags, its tag links and the author's count; the followers' fan-out job after.
    The retry gets the title's own slug: the failed attempt kept none."""
    jake, anna = await tx.api.register("jake"), await tx.api.register("anna")
    await tx.client.post("/profiles/jake/follow", headers=anna.headers)
    body = {"article": {"title": "Dragons", "description": "d", "body": "b", "tagList": ["new", "newer"]}}
    retried = await tx.request(
        lambda: tx.client.post("/articles", json=body, headers=jake.headers),
        at=r"^UPDATE users SET articles_count",
        ok=201,
    )
    assert retried.json()["article"]["slug"] == "dragons"
    assert tx.effects.jobs == [ARTICLE_PUBLISHED]
    assert _kinds(tx.effects) == ["article"]  # the job ran and pushed to the follower


async def test_article_update(tx: Transactions) -> None:
    """The fields, new tags and the replaced tag links."""
    jake = await tx.api.register("jake")
    slug = (await tx.api.article(jake, tagList=["old", "kept"]))["slug"]
    body = {"article": {"title": "New title", "tagList": ["kept", "new"]}}
    retried = await tx.request(
        lambda: tx.client.put(f"/articles/{slug}", json=body, headers=jake.headers),
        at=r"^INSERT INTO article_tags",
        ok=200,
    )
    assert retried.json()["article"]["tagList"] == ["kept", "new"]


async def test_favorite(tx: Transactions) -> None:
    """The favorite, the article's count and the author's notification; its push after."""
    jake, anna = await tx.api.register("jake"), await tx.api.register("anna")
    slug = (await tx.api.article(jake))["slug"]
    retried = await tx.request(
        lambda: tx.client.post(f"/articles/{slug}/favorite", headers=anna.headers),
        at=r"^INSERT INTO notifications",
        ok=200,
    )
    assert retried.json()["article"]["favoritesCount"] == 1
    assert _kinds(tx.effects) == ["favorite"]


async def test_unfavorite(tx: Transactions) -> None:
    jake, anna = await tx.api.register("jake"), await tx.api.register("anna")
    slug = (await tx.api.article(jake))["slug"]
    await tx.client.post(f"/articles/{slug}/favorite", headers=anna.headers)
    retried = await tx.request(
        lambda: tx.client.delete(f"/articles/{slug}/favorite", headers=anna.headers),
        at=r"^UPDATE articles SET favorites_count",
        ok=200,
    )
    assert retried.json()["article"]["favoritesCount"] == 0


async def test_follow(tx: Transactions) -> None:
    """The follow and the notification; its push and email after."""
    await tx.api.register("jake")
    anna = await tx.api.register("anna")
    await tx.request(
        lambda: tx.client.post("/profiles/jake/follow", headers=anna.headers),
        at=r"^INSERT INTO notifications",
        ok=200,
    )
    assert _kinds(tx.effects) == ["follow"]
    assert [email.subject for email in tx.effects.emails] == ["anna now follows you"]


async def test_comment(tx: Transactions) -> None:
    """The comment and the notification; its push and email after."""
    jake, anna = await tx.api.register("jake"), await tx.api.register("anna")
    slug = (await tx.api.article(jake))["slug"]
    body = {"comment": {"body": "Nice"}}
    await tx.request(
        lambda: tx.client.post(f"/articles/{slug}/comments", json=body, headers=anna.headers),
        at=r"^INSERT INTO notifications",
        ok=200,
    )
    assert _kinds(tx.effects) == ["comment"]
    assert len(tx.effects.emails) == 1


@commit_only
async def test_comment_deletion(tx: Transactions) -> None:
    """One statement, whose cascade deletes the comment's notification too."""
    jake, anna = await tx.api.register("jake"), await tx.api.register("anna")
    slug = (await tx.api.article(jake))["slug"]
    comment = await tx.api.comment(anna, slug)
    await tx.request(
        lambda: tx.client.delete(f"/articles/{slug}/comments/{comment['id']}", headers=anna.headers),
        at=r"^DELETE FROM comments",
        ok=204,
    )


@commit_only
async def test_marking_notifications_read(tx: Transactions) -> None:
    jake, anna = await tx.api.register("jake"), await tx.api.register("anna")
    slug = (await tx.api.article(jake))["slug"]
    for _ in range(2):
        await tx.api.comment(anna, slug)
    newest = (await tx.client.get("/notifications", headers=jake.headers)).json()["notifications"][0]["id"]
    retried = await tx.request(
        lambda: tx.client.post("/notifications/read", json={"upTo": newest}, headers=jake.headers),
        at=r"^UPDATE notifications SET read_at",
        ok=200,
    )
    assert retried.json()["unreadCount"] == 0


@commit_only
async def test_export_request(tx: Transactions) -> None:
    """One row, and the chain of jobs that builds it: never sent for an export that was not kept."""
    jake = await tx.api.register("jake")
    await tx.request(
        lambda: tx.client.post("/exports", headers=jake.headers), at=r"^INSERT INTO exports", ok=202
    )
    assert tx.effects.jobs == list(exports.EXPORT_STEPS)


# --- uploads: rows, quota and files ----------------------------------------------------------------------


async def test_article_deletion(media_tx: Transactions) -> None:
    """The article, its comments, favorites, tag links, notifications and images (rows and quota), the
    author's count; the job deleting the image files after."""
    tx, media = media_tx, Api(media_tx.client)
    jake, anna = await media.register("jake"), await media.register("anna")
    slug = (await media.article(jake, tagList=["dragons"]))["slug"]
    await media.comment(anna, slug)
    await tx.client.post(f"/articles/{slug}/favorite", headers=anna.headers)
    upload = await tx.client.post(
        f"/articles/{slug}/images", files={"file": ("a.png", png())}, headers=jake.headers
    )
    assert upload.status_code == 201, upload.text
    await tx.request(
        lambda: tx.client.delete(f"/articles/{slug}", headers=jake.headers),
        at=r"^DELETE FROM articles",
        ok=204,
    )
    assert tx.effects.jobs == ["media.delete_files"]
    assert await tx.files() == {}


async def test_avatar_upload(media_tx: Transactions) -> None:
    """The previous avatar forgotten (row and quota), the new file stored, its row, the quota and the
    user: after a failure the new file is deleted again and the previous avatar is intact."""
    tx = media_tx
    jake = await tx.api.register("jake")
    first = await tx.client.put("/user/avatar", files={"file": ("a.png", png())}, headers=jake.headers)
    assert first.status_code == 201, first.text
    retried = await tx.request(
        lambda: tx.client.put("/user/avatar", files={"file": ("b.png", png(32, 32))}, headers=jake.headers),
        at=r"^UPDATE users SET .*avatar_key",
        ok=201,
    )
    assert retried.json()["user"]["image"] != first.json()["user"]["image"]
    assert tx.effects.jobs == ["media.delete_files"]  # the previous avatar's file
    assert len(await tx.files()) == 1


async def test_article_image_upload(media_tx: Transactions) -> None:
    """The file stored, its row and the quota; the thumbnail job after."""
    tx = media_tx
    jake = await tx.api.register("jake")
    slug = (await tx.api.article(jake))["slug"]
    retried = await tx.request(
        lambda: tx.client.post(
            f"/articles/{slug}/images", files={"file": ("a.png", png())}, headers=jake.headers
        ),
        at=r"^INSERT INTO uploads",
        ok=201,
    )
    assert len(retried.json()["article"]["images"]) == 1
    assert tx.effects.jobs == ["media.make_variants"]


async def test_article_image_deletion(media_tx: Transactions) -> None:
    """The row and the quota given back; the job deleting the files after."""
    tx = media_tx
    jake = await tx.api.register("jake")
    slug = (await tx.api.article(jake))["slug"]
    upload = await tx.client.post(
        f"/articles/{slug}/images", files={"file": ("a.png", png())}, headers=jake.headers
    )
    image_id = upload.json()["article"]["images"][0]["id"]
    await tx.request(
        lambda: tx.client.delete(f"/articles/{slug}/images/{image_id}", headers=jake.headers),
        at=r"^UPDATE users SET upload_count",
        ok=200,
    )
    assert tx.effects.jobs == ["media.delete_files"]


async def test_avatar_removal(media_tx: Transactions) -> None:
    """The row, the quota and the user's avatar; the job deleting the file after."""
    tx = media_tx
    jake = await tx.api.register("jake")
    await tx.client.put("/user/avatar", files={"file": ("a.png", png())}, headers=jake.headers)
    retried = await tx.request(
        lambda: tx.client.delete("/user/avatar", headers=jake.headers),
        at=r"^UPDATE users SET avatar_key",
        ok=200,
    )
    assert retried.json()["user"]["image"] == ""
    assert tx.effects.jobs == ["media.delete_files"]


async def test_image_url_replacing_the_avatar(media_tx: Transactions) -> None:
    """``PUT /user`` with an image URL: the profile change and the uploaded avatar forgotten (row and
    quota); the job deleting its file after."""
    tx = media_tx
    jake = await tx.api.register("jake")
    await tx.client.put("/user/avatar", files={"file": ("a.png", png())}, headers=jake.headers)
    body = {"user": {"bio": "I like dragons", "image": "https://example.com/jake.png"}}
    retried = await tx.request(
        lambda: tx.client.put("/user", json=body, headers=jake.headers), at=r"^UPDATE users SET bio", ok=200
    )
    assert retried.json()["user"]["image"] == "https://example.com/jake.png"
    assert tx.effects.jobs == ["media.delete_files"]


# --- jobs ------------------------------------------------------------------------------------------------


async def test_article_fan_out_job(tx: Transactions, session: AsyncSession) -> None:
    """Every follower's notification and their pushes."""
    jake = await tx.api.register("jake")
    for name in ("anna", "bob"):
        follower = await tx.api.register(name)
        await tx.client.post("/profiles/jake/follow", headers=follower.headers)
    author = await session.get(User, await user_id(tx.engine, jake.username))
    assert author is not None
    slug = await article_service.publish_article(
        session, author, NewArticle(title="t", description="d", body="b")
    )
    await session.commit()  # its job is left to this test (the session's deferred work is not sent)
    article_id = await article_service.article_id_by_slug(session, slug)
    await tx.job(
        ARTICLE_PUBLISHED, at=r"^SELECT notifications\.id.*WHERE notifications\.id IN", article_id=article_id
    )
    assert _kinds(tx.effects) == ["article", "article"]


async def _export(engine: AsyncEngine, username: str, **values: Any) -> int:
    owner = await user_id(engine, username)
    async with engine.begin() as connection:
        export_id: int = (
            await connection.execute(insert(Export).values(user_id=owner, **values).returning(Export.id))
        ).scalar_one()
    return export_id


async def test_export_finish_job(tx: Transactions) -> None:
    """The export done and its owner's notification; the push and email after. (The step's heartbeat,
    ``updated_at``, is committed before the step's work, by design.)"""
    await tx.api.register("jake")
    export_id = await _export(
        tx.engine, "jake", state=ExportState.RUNNING, progress=exports.ARCHIVE_DONE, file_name="export-1.zip"
    )
    await tx.job(
        exports.EXPORT_FINISH,
        at=r"^SELECT users\.username, users\.email",
        ignore=frozenset({("exports", "updated_at")}),
        export_id=export_id,
    )
    assert _kinds(tx.effects) == ["export"]
    assert [email.subject for email in tx.effects.emails] == ["Your Conduit export is ready"]


async def test_housekeeping_gives_up_stale_exports(tx: Transactions) -> None:
    """Each export unfinished for too long failed and its owner notified, in one transaction; the
    pushes and emails after."""
    long_ago = utcnow() - timedelta(hours=7)
    for name in ("jake", "anna"):
        await tx.api.register(name)
        await _export(tx.engine, name, created_at=long_ago, updated_at=long_ago)
    await tx.job(housekeeping.HOUSEKEEPING, at=r"^UPDATE exports SET updated_at")
    assert _kinds(tx.effects) == ["export", "export"]
    assert len(tx.effects.emails) == 2


@commit_only
async def test_weekly_digest_claims(tx: Transactions) -> None:
    """A batch of users claimed in one statement; their emails only after it commits."""
    jake = await tx.api.register("jake")
    await tx.api.article(jake)
    for name in ("anna", "bob"):
        reader = await tx.api.register(name)
        await tx.client.post("/profiles/jake/follow", headers=reader.headers)
        await tx.client.put(
            "/user/settings", json={"settings": {"weeklyDigest": True}}, headers=reader.headers
        )
    await tx.job(digest.WEEKLY_DIGEST, at=r"^UPDATE users SET digest_week")
    assert sorted(email.to for email in tx.effects.emails) == ["anna@example.com", "bob@example.com"]


async def test_export_archive_step(own_tx: Transactions) -> None:
    """The archive is written before the transaction that records it. If that transaction fails for
    good (not a transient error, which the queue retries), the export fails, its owner is told, and
    the archive goes with it: nothing is left on disk. A new export then succeeds."""
    tx = own_tx
    jake = await tx.api.register("jake")
    await tx.api.article(jake)
    export_id = await _export(tx.engine, "jake")  # pending: its chain is run by hand here
    for step in exports.EXPORT_STEPS[:3]:
        await run(tx.app, step, export_id=export_id)
    tx.effects.clear()
    tx.faults.arm(r"^UPDATE exports SET progress=\S+, file_name=", tx.mode, InjectedError)
    await run(tx.app, exports.EXPORT_ARCHIVE, export_id=export_id)
    assert tx.faults.fired == 1
    export_dir = tx.app.state.settings.effective_export_dir
    assert [path.name for path in export_dir.rglob("*") if path.is_file()] == []
    async with tx.engine.connect() as connection:
        row = (await connection.execute(select(Export.state, Export.file_name))).one()
    assert tuple(row) == (ExportState.FAILED, None)
    assert _kinds(tx.effects) == ["export"]
    assert [email.subject for email in tx.effects.emails] == ["Your Conduit export failed"]

    again = await tx.client.post("/exports", headers=jake.headers)
    assert again.status_code == 202, again.text
    await jobs_done(tx.app)
    done = await tx.client.get(f"/exports/{again.json()['export']['id']}", headers=jake.headers)
    assert done.json()["export"]["state"] == "done"


# --- the command line ----------------------------------------------------------------------------------


def test_create_admin_command(mode: Mode, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``conduit create-admin``: the user and their role, in the command's one transaction."""
    monkeypatch.setenv("CONDUIT_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("CONDUIT_BCRYPT_ROUNDS", "4")
    monkeypatch.delenv("CONDUIT_DATABASE_URL", raising=False)
    args = ["create-admin", "root", "--email", "root@example.com"]
    passwords = "admin-passphrase-1\nadmin-passphrase-1\n"
    assert runner.invoke(cli, ["migrate"]).exit_code == 0
    faults = Faults(Engine)  # the command makes its own engine
    try:
        faults.arm(r"^UPDATE users SET role", mode, database_error)
        failed = runner.invoke(cli, args, input=passwords)
        assert faults.fired == 1
    finally:
        faults.close()
    assert failed.exit_code != 0 and isinstance(failed.exception, OperationalError)
    with sqlite3.connect(tmp_path / "conduit.db") as db:
        assert db.execute("SELECT count(*) FROM users").fetchone() == (0,)
    created = runner.invoke(cli, args, input=passwords)
    assert created.exit_code == 0, created.output
    with sqlite3.connect(tmp_path / "conduit.db") as db:
        assert db.execute("SELECT username, role FROM users").fetchall() == [("root", "admin")]
