"""``Idempotency-Key`` (issue 8, item 3): a retried create does its work once and answers as it first did.

Every promise is checked by its effect in the database (rows, notifications), on the jobs that ran
(this process's ``conduit_jobs_total``) and on the emails written, never by the answers alone.
Concurrency is real: the first request is held inside its work (a service call that waits for an
event before doing the real work) while others are fired at it.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from types import ModuleType
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.v1.idempotency import REPLAYED, fingerprint
from app.core.config import Settings
from app.db.base import utcnow
from app.models import Article, Comment, Export, IdempotencyKey, Notification, Upload
from app.services import articles as article_service
from app.services import exports as export_service
from app.services import idempotency as idempotency_service
from app.services import media as media_service
from app.services.housekeeping import HOUSEKEEPING
from app.services.notifications import ARTICLE_PUBLISHED
from tests.conftest import JOB_GRACE, ClientFactory, jobs_done
from tests.factories import Account, Api, assert_problem
from tests.media import Media, multipart, png
from tests.workers.support import run, user_id, wait_for_export

HOLD_TIMEOUT = 60.0  # seconds: only turns a hung request into a failure, never paces the test
ARTICLE = {"article": {"title": "Retry me", "description": "Once", "body": "Only once, please"}}


def key() -> str:
    return f"key-{secrets.token_hex(8)}"


def keyed(account: Account, idempotency_key: str) -> dict[str, str]:
    return {**account.headers, "Idempotency-Key": idempotency_key}


async def count(engine: AsyncEngine, model: Any, *where: Any) -> int:
    async with engine.connect() as connection:
        stmt = select(func.count()).select_from(model).where(*where)
        return int((await connection.execute(stmt)).scalar_one())


def jobs_run(name: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "conduit_jobs_total", {"queue": "inprocess", "name": name, "outcome": "success"}
        )
        or 0.0
    )


def emails(settings: Settings) -> int:
    outbox = settings.var_dir / "outbox"
    return len(list(outbox.glob("*.eml"))) if outbox.exists() else 0


def assert_same_answer(first: httpx.Response, again: httpx.Response) -> None:
    assert again.status_code == first.status_code
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert REPLAYED not in first.headers
    assert again.headers[REPLAYED] == "true"


@dataclass
class Hold:
    """Holds the first call of a service function until ``release`` is set (later calls run freely)."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0

    async def wait_entered(self) -> None:
        await asyncio.wait_for(self.entered.wait(), HOLD_TIMEOUT)


def hold(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str) -> Hold:
    real: Callable[..., Awaitable[Any]] = getattr(module, name)
    held = Hold()

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        held.calls += 1
        if held.calls == 1:
            held.entered.set()
            await asyncio.wait_for(held.release.wait(), HOLD_TIMEOUT)
        return await real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return held


# --- replays ----------------------------------------------------------------------------------------


async def test_a_repeated_article_is_created_once(
    api: Api, client: httpx.AsyncClient, app: FastAPI, engine: AsyncEngine
) -> None:
    jake, fan = await api.register("jake"), await api.register("fan")
    await client.post("/profiles/jake/follow", headers=fan.headers)
    fanned_out = jobs_run(ARTICLE_PUBLISHED)
    k = key()

    first = await client.post("/articles", json=ARTICLE, headers=keyed(jake, k))
    assert first.status_code == 201, first.text
    for _ in range(3):
        again = await client.post("/articles", json=ARTICLE, headers=keyed(jake, k))
        assert_same_answer(first, again)
    await jobs_done(app)

    assert await count(engine, Article) == 1
    assert jobs_run(ARTICLE_PUBLISHED) == fanned_out + 1  # the followers' fan-out was sent once
    assert await count(engine, Notification, Notification.kind == "article") == 1
    # Without a key, the same request is a new article, as before.
    assert (await client.post("/articles", json=ARTICLE, headers=jake.headers)).status_code == 201
    assert await count(engine, Article) == 2


async def test_a_repeated_comment_is_posted_notified_and_emailed_once(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    author, fan = await api.register("author"), await api.register("fan")
    slug = (await api.article(author))["slug"]
    mailed = emails(settings)
    k, body = key(), {"comment": {"body": "First!"}}

    first = await client.post(f"/articles/{slug}/comments", json=body, headers=keyed(fan, k))
    assert first.status_code == 200, first.text
    again = await client.post(f"/articles/{slug}/comments", json=body, headers=keyed(fan, k))
    assert_same_answer(first, again)

    assert await count(engine, Comment) == 1
    assert await count(engine, Notification, Notification.kind == "comment") == 1
    assert emails(settings) == mailed + 1  # the author's email, after the first response only


async def test_a_repeated_export_starts_one_export(
    api: Api, client: httpx.AsyncClient, app: FastAPI, engine: AsyncEngine
) -> None:
    jake = await api.register("jake")
    await api.article(jake)
    built = jobs_run(export_service.EXPORT_FINISH)
    k = key()

    first = await client.post("/exports", headers=keyed(jake, k))
    assert first.status_code == 202, first.text
    export, _ = await wait_for_export(client, jake, first.json()["export"]["id"])
    assert export["state"] == "done"
    # Once it is done, a new export would start; the retry gets the first answer, "pending" as it was.
    again = await client.post("/exports", headers=keyed(jake, k))
    assert_same_answer(first, again)
    assert again.json()["export"]["state"] == "pending"
    await jobs_done(app)

    assert await count(engine, Export) == 1
    assert jobs_run(export_service.EXPORT_FINISH) == built + 1
    assert await count(engine, Notification, Notification.kind == "export") == 1


async def _upload(
    media: Media, account: Account, slug: str, data: bytes, k: str, boundary: str
) -> httpx.Response:
    chunks, headers = multipart([data], boundary=boundary)
    return await media.client.post(
        f"/articles/{slug}/images", content=b"".join(chunks), headers={**headers, **keyed(account, k)}
    )


async def test_a_repeated_upload_is_stored_once(media: Media, engine: AsyncEngine) -> None:
    jake = await media.api.register("jake")
    slug = (await media.api.article(jake))["slug"]
    thumbnails = jobs_run(media_service.MAKE_VARIANTS)
    image, k = png(), key()

    first = await _upload(media, jake, slug, image, k, boundary="first-attempt")
    assert first.status_code == 201, first.text
    await media.jobs_done()
    stored = await media.stored()
    # The retry frames the same file with another boundary, as clients do: still the same request.
    again = await _upload(media, jake, slug, image, k, boundary="second-attempt")
    assert_same_answer(first, again)
    await media.jobs_done()

    assert await count(engine, Upload) == 1
    assert await media.stored() == stored  # no second file, no second set of thumbnails
    assert jobs_run(media_service.MAKE_VARIANTS) == thumbnails + 1
    # Other bytes under the same key are another request.
    other = await _upload(media, jake, slug, png(32, 32), k, boundary="first-attempt")
    assert_problem(other, 422, "idempotency_key_reused")
    assert await count(engine, Upload) == 1


# --- what a key may and may not be used for ---------------------------------------------------------


async def test_a_key_reused_for_a_different_request_is_a_422(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    jake = await api.register("jake")
    slug = (await api.article(jake))["slug"]
    k = key()
    first = await client.post("/articles", json=ARTICLE, headers=keyed(jake, k))
    assert first.status_code == 201

    other_body = {"article": {**ARTICLE["article"], "body": "Something else"}}
    attempts = [
        client.post("/articles", json=other_body, headers=keyed(jake, k)),  # another body
        client.post("/exports", headers=keyed(jake, k)),  # another operation
        client.post(f"/articles/{slug}/comments", json={"comment": {"body": "x"}}, headers=keyed(jake, k)),
    ]
    for attempt in attempts:
        problem = assert_problem(
            await attempt,
            422,
            "idempotency_key_reused",
            "Idempotency-Key was already used for a different request",
        )
        assert problem["errors"]["Idempotency-Key"] == ["was already used for a different request"]
    assert await count(engine, Article) == 2  # api.article's and the keyed one
    assert await count(engine, Export) == await count(engine, Comment) == 0
    assert_same_answer(first, await client.post("/articles", json=ARTICLE, headers=keyed(jake, k)))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"", "can't be blank"),
        (b"a" * 256, "is too long (maximum is 255 characters)"),
        (b"two words", "must be visible ASCII characters, without spaces"),
        ("caf\u00e9".encode(), "must be visible ASCII characters, without spaces"),
        (b"tab\there", "must be visible ASCII characters, without spaces"),
    ],
)
async def test_a_malformed_key_is_a_422(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine, value: bytes, message: str
) -> None:
    jake = await api.register("jake")
    response = await client.post(
        "/articles", json=ARTICLE, headers=[*jake.headers.items(), ("Idempotency-Key", value)]
    )
    problem = assert_problem(response, 422, "validation_failed")
    assert problem["errors"]["Idempotency-Key"] == [message]
    assert await count(engine, Article) == await count(engine, IdempotencyKey) == 0


async def test_the_longest_key_is_accepted(api: Api, client: httpx.AsyncClient) -> None:
    jake = await api.register("jake")
    k = "~!" + "x" * 253
    first = await client.post("/articles", json=ARTICLE, headers=keyed(jake, k))
    assert first.status_code == 201
    assert_same_answer(first, await client.post("/articles", json=ARTICLE, headers=keyed(jake, k)))


async def test_keys_are_each_users_own(api: Api, client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    jake, ann = await api.register("jake"), await api.register("ann")
    k = key()
    for account in (jake, ann):
        response = await client.post("/articles", json=ARTICLE, headers=keyed(account, k))
        assert response.status_code == 201
        assert REPLAYED not in response.headers
        assert response.json()["article"]["author"]["username"] == account.username
    assert await count(engine, Article) == 2


async def test_registration_takes_no_key_and_is_safe_to_retry(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    # No user to scope a key to, and an answer made of credentials: the header is not read. A retry
    # cannot create a second account: the unique username and email answer 422.
    body = {"user": {"username": "jake", "email": "jake@example.com", "password": "correct-horse-9"}}
    headers = {"Idempotency-Key": key()}
    assert (await client.post("/users", json=body, headers=headers)).status_code == 201
    assert_problem(await client.post("/users", json=body, headers=headers), 422, "validation_failed")
    assert await count(engine, IdempotencyKey) == 0


# --- concurrency --------------------------------------------------------------------------------------


async def test_a_repeat_while_the_first_runs_is_a_409(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    jake = await api.register("jake")
    held = hold(monkeypatch, article_service, "create_article")
    k = key()

    first = asyncio.create_task(client.post("/articles", json=ARTICLE, headers=keyed(jake, k)))
    await held.wait_entered()
    busy = await client.post("/articles", json=ARTICLE, headers=keyed(jake, k))
    assert_problem(busy, 409, "idempotency_key_in_use")
    assert busy.headers["retry-after"] == "1"
    other = {"article": {**ARTICLE["article"], "title": "Another"}}
    assert_problem(
        await client.post("/articles", json=other, headers=keyed(jake, k)), 422, "idempotency_key_reused"
    )
    assert held.calls == 1  # neither reached the work
    held.release.set()

    answered = await first
    assert answered.status_code == 201
    assert_same_answer(answered, await client.post("/articles", json=ARTICLE, headers=keyed(jake, k)))
    assert await count(engine, Article) == 1


async def test_concurrent_requests_with_one_key_run_once(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    jake = await api.register("jake")
    k = key()
    responses = await asyncio.gather(
        *(client.post("/articles", json=ARTICLE, headers=keyed(jake, k)) for _ in range(20))
    )
    ran = [r for r in responses if r.status_code == 201 and REPLAYED not in r.headers]
    assert len(ran) == 1
    for response in responses:
        if response is ran[0]:
            continue
        if response.status_code == 409:
            assert_problem(response, 409, "idempotency_key_in_use")
        else:
            assert_same_answer(ran[0], response)
    assert await count(engine, Article) == 1


async def test_concurrent_exports_with_one_key_start_one(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    jake = await api.register("jake")
    held = hold(monkeypatch, export_service, "create_export")
    k = key()
    first = asyncio.create_task(client.post("/exports", headers=keyed(jake, k)))
    await held.wait_entered()
    others = await asyncio.gather(*(client.post("/exports", headers=keyed(jake, k)) for _ in range(5)))
    for response in others:
        assert_problem(response, 409, "idempotency_key_in_use")
    held.release.set()
    answered = await first
    assert answered.status_code == 202
    assert await count(engine, Export) == 1


# --- failures ---------------------------------------------------------------------------------------


@pytest.fixture
async def raw_client(app: FastAPI, engine: AsyncEngine) -> Iterator[httpx.AsyncClient]:
    """A client that sees 500s as answers (the shared one fails the test at any 5xx)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test/api/v1") as http:
        yield http


async def test_a_server_error_releases_the_key(
    api: Api, raw_client: httpx.AsyncClient, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    jake = await api.register("jake")
    real = article_service.create_article

    async def fails_after_the_work(*args: Any, **kwargs: Any) -> Any:
        await real(*args, **kwargs)
        raise RuntimeError("the process fell over after the work")

    monkeypatch.setattr(article_service, "create_article", fails_after_the_work)
    k = key()
    failed = await raw_client.post("/articles", json=ARTICLE, headers=keyed(jake, k))
    assert failed.status_code == 500
    assert await count(engine, Article) == await count(engine, IdempotencyKey) == 0  # all rolled back

    monkeypatch.setattr(article_service, "create_article", real)
    retried = await raw_client.post("/articles", json=ARTICLE, headers=keyed(jake, k))
    assert retried.status_code == 201
    assert REPLAYED not in retried.headers
    assert await count(engine, Article) == 1
    assert_same_answer(retried, await raw_client.post("/articles", json=ARTICLE, headers=keyed(jake, k)))


async def test_a_request_past_its_deadline_releases_the_key(
    make_client: ClientFactory, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await make_client(request_timeout=1.0, idempotency_lease=2)
    client.event_hooks["response"] = []  # this test expects its 503
    jake = await Api(client).register("jake")
    held = hold(monkeypatch, article_service, "create_article")  # hangs until released
    k = key()
    late = await client.post("/articles", json=ARTICLE, headers=keyed(jake, k))
    assert_problem(late, 503, "service_unavailable")
    assert held.calls == 1
    assert await count(engine, Article) == await count(engine, IdempotencyKey) == 0
    retried = await client.post("/articles", json=ARTICLE, headers=keyed(jake, k))
    assert retried.status_code == 201 and REPLAYED not in retried.headers
    assert await count(engine, Article) == 1


async def test_a_failed_store_releases_the_upload_key(
    media: Media, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    jake = await media.api.register("jake")
    slug = (await media.api.article(jake))["slug"]
    storage = media.app.state.storage
    real_put = storage.put
    puts = 0

    async def put_fails_once(*args: Any, **kwargs: Any) -> None:
        nonlocal puts
        puts += 1
        if puts == 1:
            raise OSError("the storage is down")
        await real_put(*args, **kwargs)

    monkeypatch.setattr(storage, "put", put_fails_once)
    media.client.event_hooks["response"] = []  # this test expects its 503
    k, image = key(), png()
    failed = await _upload(media, jake, slug, image, k, boundary="one")
    assert_problem(failed, 503, "service_unavailable")
    assert await count(engine, Upload) == await count(engine, IdempotencyKey) == 0
    retried = await _upload(media, jake, slug, image, k, boundary="two")
    assert retried.status_code == 201
    assert REPLAYED not in retried.headers
    assert await count(engine, Upload) == 1


async def test_a_decided_failure_is_kept_and_a_passing_one_is_not(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    jake = await api.register("jake")
    # A 404 decided by the work is the request's answer: replayed, as long as the key lives.
    k = key()
    missing = await client.post(
        "/articles/nope/comments", json={"comment": {"body": "?"}}, headers=keyed(jake, k)
    )
    assert_problem(missing, 404, "not_found")
    assert_same_answer(
        missing,
        await client.post("/articles/nope/comments", json={"comment": {"body": "?"}}, headers=keyed(jake, k)),
    )
    # A 409 says "not now": the key is released, and the same request may succeed later.
    async with engine.begin() as connection:  # an export in progress
        await connection.execute(
            insert(Export).values(user_id=await user_id(engine, "jake"), state="running")
        )
    k2 = key()
    conflict = await client.post("/exports", headers=keyed(jake, k2))
    assert_problem(conflict, 409, "export_in_progress")
    assert await count(engine, IdempotencyKey, IdempotencyKey.key == k2) == 0
    async with engine.begin() as connection:  # it ends
        await connection.execute(update(Export).values(state="failed"))
    later = await client.post("/exports", headers=keyed(jake, k2))
    assert later.status_code == 202 and REPLAYED not in later.headers
    assert await count(engine, Export) == 2


# --- leases and expiry -----------------------------------------------------------------------------


def _body_sha256(body: dict[str, Any]) -> str:
    """The SHA-256 of ``body`` as the client sends it."""
    return hashlib.sha256(httpx.Request("POST", "http://test", json=body).read()).hexdigest()


async def _claim_as_a_crashed_request(app: FastAPI, owner: int, k: str) -> None:
    """What a process that died inside the work leaves behind: a committed claim and no answer."""
    request = fingerprint("POST", "/api/v1/articles", _body_sha256(ARTICLE))
    async with app.state.sessionmaker() as session:
        claimed = await idempotency_service.claim(
            session, owner, k, request, lease=timedelta(seconds=60), ttl=timedelta(days=1)
        )
        await session.commit()
    assert isinstance(claimed, idempotency_service.Claim)


async def test_a_crashed_requests_claim_lapses(
    api: Api, client: httpx.AsyncClient, app: FastAPI, engine: AsyncEngine
) -> None:
    jake = await api.register("jake")
    k = key()
    await _claim_as_a_crashed_request(app, await user_id(engine, "jake"), k)

    assert_problem(
        await client.post("/articles", json=ARTICLE, headers=keyed(jake, k)), 409, "idempotency_key_in_use"
    )
    async with engine.begin() as connection:  # its lease runs out
        await connection.execute(update(IdempotencyKey).values(locked_until=IdempotencyKey.created_at))
    taken_over = await client.post("/articles", json=ARTICLE, headers=keyed(jake, k))
    assert taken_over.status_code == 201 and REPLAYED not in taken_over.headers
    assert_same_answer(taken_over, await client.post("/articles", json=ARTICLE, headers=keyed(jake, k)))
    assert await count(engine, Article) == 1


async def test_a_request_that_outlives_its_lease_is_undone(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    jake = await api.register("jake")
    held = hold(monkeypatch, article_service, "create_article")
    k = key()
    slow = asyncio.create_task(client.post("/articles", json=ARTICLE, headers=keyed(jake, k)))
    await held.wait_entered()
    async with engine.begin() as connection:  # it is taking longer than its lease
        await connection.execute(update(IdempotencyKey).values(locked_until=IdempotencyKey.created_at))
    retry = await client.post("/articles", json=ARTICLE, headers=keyed(jake, k))
    assert retry.status_code == 201 and REPLAYED not in retry.headers
    held.release.set()

    late = await slow  # its work is done, but the key is no longer its own: rolled back
    assert_problem(late, 409, "idempotency_key_in_use")
    assert late.headers["retry-after"] == "1"
    assert await count(engine, Article) == 1
    assert_same_answer(retry, await client.post("/articles", json=ARTICLE, headers=keyed(jake, k)))


async def test_keys_are_kept_a_day_then_purged(
    api: Api, client: httpx.AsyncClient, app: FastAPI, engine: AsyncEngine
) -> None:
    jake = await api.register("jake")
    old, recent = key(), key()
    for k in (old, recent):
        assert (
            await client.post(
                "/articles", json={"article": {**ARTICLE["article"], "title": k}}, headers=keyed(jake, k)
            )
        ).status_code == 201

    async def age(k: str, by: timedelta) -> None:
        async with engine.begin() as connection:
            await connection.execute(
                update(IdempotencyKey).where(IdempotencyKey.key == k).values(created_at=utcnow() - by)
            )

    await age(recent, timedelta(hours=23))
    await age(old, timedelta(hours=25))
    await run(app, HOUSEKEEPING)
    await app.state.jobs.drain(JOB_GRACE)
    async with engine.connect() as connection:
        kept = set((await connection.execute(select(IdempotencyKey.key))).scalars())
    assert kept == {recent}

    # The purged key is new again: the same request is done again. The kept one still replays.
    title = {"article": {**ARTICLE["article"], "title": old}}
    again = await client.post("/articles", json=title, headers=keyed(jake, old))
    assert again.status_code == 201 and REPLAYED not in again.headers
    replayed = await client.post(
        "/articles", json={"article": {**ARTICLE["article"], "title": recent}}, headers=keyed(jake, recent)
    )
    assert replayed.headers[REPLAYED] == "true"
    assert await count(engine, Article) == 3


async def test_an_expired_key_not_yet_purged_is_forgotten(
    api: Api, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    jake = await api.register("jake")
    k = key()
    assert (await client.post("/articles", json=ARTICLE, headers=keyed(jake, k))).status_code == 201
    async with engine.begin() as connection:
        await connection.execute(update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=25)))
    # Even for another request: after a day the key means nothing.
    other = {"article": {**ARTICLE["article"], "title": "Tomorrow"}}
    response = await client.post("/articles", json=other, headers=keyed(jake, k))
    assert response.status_code == 201 and REPLAYED not in response.headers
    assert_same_answer(response, await client.post("/articles", json=other, headers=keyed(jake, k)))
    assert await count(engine, Article) == 2


async def test_browsers_may_send_the_key_and_read_the_replay(api: Api, client: httpx.AsyncClient) -> None:
    origin = "http://localhost:4100"
    preflight = await client.options(
        "/articles",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )
    assert preflight.status_code == 200
    assert "idempotency-key" in preflight.headers["access-control-allow-headers"].lower()
    jake = await api.register("jake")
    answer = await client.post("/articles", json=ARTICLE, headers={**keyed(jake, key()), "Origin": origin})
    exposed = {name.strip().lower() for name in answer.headers["access-control-expose-headers"].split(",")}
    assert {"idempotent-replayed", "retry-after"} <= exposed


# --- the contract in OpenAPI -----------------------------------------------------------------------


KEYED = {
    ("/api/v1/articles", "post"): "201",
    ("/api/v1/articles/{slug}/comments", "post"): "200",
    ("/api/v1/exports", "post"): "202",
    ("/api/v1/articles/{slug}/images", "post"): "201",
}


async def test_openapi_declares_the_header_and_its_answers(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            headers = [p for p in operation.get("parameters", []) if p["in"] == "header"]
            keyed_here = [p for p in headers if p["name"] == "Idempotency-Key"]
            if (path, method) not in KEYED:
                assert not keyed_here, (path, method)
                continue
            (parameter,) = keyed_here
            assert parameter["required"] is False
            schema = parameter["schema"]["anyOf"][0]
            assert schema == {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"}
            responses = operation["responses"]
            success = responses[KEYED[(path, method)]]
            assert success["headers"]["Idempotent-Replayed"]["schema"] == {"type": "string", "enum": ["true"]}
            assert "Retry-After" in responses["409"]["headers"]
            problem = responses["422"]["content"]["application/problem+json"]["schema"]
            assert problem == {"$ref": "#/components/schemas/Problem"}
    conflict = document["paths"]["/api/v1/exports"]["post"]["responses"]["409"]
    assert conflict["content"]["application/problem+json"]["schema"] == {
        "anyOf": [{"$ref": "#/components/schemas/ExportConflict"}, {"$ref": "#/components/schemas/Problem"}]
    }
