"""Timeouts everywhere: a hung or blocked dependency never holds a request for longer than its bound.

- PostgreSQL (a throwaway cluster): a statement waiting for a row lock ends at ``db_lock_timeout`` or
  ``db_statement_timeout``, whichever comes first; SQLite: at its busy timeout. Each a 503.
- The request deadline (``request_timeout``) ends a request stuck on a database that stopped
  answering (a network partition, made with a TCP proxy), but not a slow client's upload, a response
  already under way, or a WebSocket.
- A mail server that accepts and never answers: the response does not wait for it, and the send gives
  up at ``smtp_timeout``, logged.
- An S3 endpoint that accepts and never answers: the upload ends with a 503 within the S3 timeouts,
  and nothing of it is kept (no row, no quota used).

The lower bounds show that the configured timeout, and nothing sooner, ended the wait; the upper
bounds are generous (the tests share a loaded machine), and far below "forever".
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import orjson
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Message, Receive, Scope, Send

from app.core.deadline import RequestDeadlineMiddleware
from app.db import migrations
from app.models import Upload, User
from tests.conftest import ClientFactory, make_settings
from tests.factories import Api
from tests.faults.pg_server import JsonLogs, PostgresServer, TcpProxy, assert_unavailable, running_app
from tests.media import S3_CREDENTIALS, png
from tests.ops.server import silent_port

PATIENCE = 60.0  # bounds every wait, so that a hang fails the test instead of stalling it
BOUND = 20.0  # seconds past its timeout by which every wait below must have ended


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    """The response to ``request`` and the seconds it took (failing after PATIENCE)."""
    started = time.monotonic()
    with anyio.fail_after(PATIENCE):
        response = await request
    return response, time.monotonic() - started


# PostgreSQL's setting -> ours.
BOUNDS = {"lock_timeout": "db_lock_timeout", "statement_timeout": "db_statement_timeout"}


@pytest.mark.parametrize(
    ("overrides", "cause"),
    [
        ({"db_lock_timeout": 1.0, "db_statement_timeout": 60.0}, "LockNotAvailableError"),
        ({"db_lock_timeout": 60.0, "db_statement_timeout": 1.0}, "QueryCanceledError"),
    ],
    ids=["lock_timeout", "statement_timeout"],
)
async def test_a_request_blocked_by_a_row_lock_ends_with_503_at_the_timeout(
    pg: PostgresServer, tmp_path: Path, overrides: dict[str, float], cause: str
) -> None:
    name = await anyio.to_thread.run_sync(pg.create_database)
    settings = make_settings(pg.url(name), tmp_path, cache_enabled=False, **overrides)
    timeout = min(overrides.values())
    with JsonLogs() as logs:
        async with running_app(settings) as client:
            engine: AsyncEngine = client.app.state.engine  # type: ignore[attr-defined]
            async with engine.connect() as connection:  # the bounds, as the server applies them
                rows = await connection.execute(text("SELECT name, setting FROM pg_settings"))
                applied = {row.name: int(row.setting) for row in rows if row.name in BOUNDS}
            assert applied == {bound: overrides[setting] * 1000 for bound, setting in BOUNDS.items()}  # ms
            jake = await Api(client).register("jake")
            holder = await pg.connect(name)  # another client, holding jake's row
            try:
                async with holder.transaction():
                    await holder.execute("SELECT 1 FROM users WHERE username = 'jake' FOR UPDATE")
                    headers = {**jake.headers, "X-Request-ID": "blocked-1"}
                    response, seconds = await timed(
                        client.put("/user", json={"user": {"bio": "blocked"}}, headers=headers)
                    )
            finally:
                await holder.close()
            assert_unavailable(response)
            assert timeout <= seconds < timeout + BOUND

            # The lock released, the same request succeeds: nothing was left broken.
            response = await client.put("/user", json={"user": {"bio": "free"}}, headers=jake.headers)
            assert response.status_code == 200 and response.json()["user"]["bio"] == "free"
    [line] = logs.lines("database unavailable")
    assert line["request_id"] == "blocked-1"
    assert cause in line["event"]  # which bound ended the wait


async def test_on_sqlite_a_request_blocked_by_another_writer_ends_with_503_at_the_busy_timeout(
    tmp_path: Path,
) -> None:
    path = tmp_path / "busy.db"
    url = f"sqlite+aiosqlite:///{path}"
    await anyio.to_thread.run_sync(lambda: migrations.upgrade(url, configure_logging=False))
    settings = make_settings(url, tmp_path, cache_enabled=False, db_lock_timeout=1.0)
    async with running_app(settings) as client:
        engine: AsyncEngine = client.app.state.engine  # type: ignore[attr-defined]
        async with engine.connect() as connection:
            assert (await connection.execute(text("PRAGMA busy_timeout"))).scalar() == 1000
        jake = await Api(client).register("jake")
        writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            writer.execute("BEGIN IMMEDIATE")  # another process's write transaction, holding the lock
            response, seconds = await timed(
                client.put("/user", json={"user": {"bio": "blocked"}}, headers=jake.headers)
            )
            writer.execute("ROLLBACK")
        finally:
            writer.close()
        assert_unavailable(response)
        assert 1.0 <= seconds < 1.0 + BOUND
        response = await client.put("/user", json={"user": {"bio": "free"}}, headers=jake.headers)
        assert response.status_code == 200


async def test_the_request_deadline_ends_a_request_stuck_on_a_database_that_stopped_answering(
    pg: PostgresServer, tmp_path: Path
) -> None:
    """A partition: the connection stays open, nothing comes back, and the database's own timeouts
    (set far away here) cannot fire. The deadline does; the connection is dropped, and once the
    network is back, requests succeed."""
    proxy = TcpProxy(pg.port)
    await proxy.start()
    name = await anyio.to_thread.run_sync(pg.create_database)
    far = {"db_statement_timeout": 120.0, "db_lock_timeout": 120.0, "db_connect_timeout": 120.0}
    settings = make_settings(
        pg.url(name, port=proxy.port), tmp_path, cache_enabled=False, request_timeout=1.0, **far
    )
    try:
        with JsonLogs() as logs:
            async with running_app(settings) as client:
                jake = await Api(client).register("jake")
                proxy.stall()
                headers = {**jake.headers, "X-Request-ID": "stuck-1"}
                response, seconds = await timed(client.get("/user", headers=headers))
                assert_unavailable(response)
                assert response.json()["detail"] == "the request took too long, please retry"
                assert 1.0 <= seconds < 1.0 + BOUND

                proxy.resume()
                assert (await client.get("/user", headers=jake.headers)).status_code == 200
                engine: AsyncEngine = client.app.state.engine  # type: ignore[attr-defined]
                assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await proxy.close()
    [line] = logs.lines("request deadline")
    assert line["request_id"] == "stuck-1"


async def test_the_request_deadline_does_not_count_a_slow_clients_upload(
    make_client: ClientFactory,
) -> None:
    """The body arrives over twice the deadline; the server's own work takes far less: a 201."""
    client = await make_client(request_timeout=3.0)
    jake = await Api(client).register("jake")
    boundary = "conduit-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="me.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    image = png()
    parts = [head, *(image[i : i + 64] for i in range(0, len(image), 64)), f"\r\n--{boundary}--\r\n".encode()]

    async def trickle() -> AsyncIterator[bytes]:
        for part in parts:
            await anyio.sleep(6.0 / len(parts))  # a slow network, not an assertion
            yield part

    headers = {**jake.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    response, seconds = await timed(client.put("/user/avatar", content=trickle(), headers=headers))
    assert response.status_code == 201, response.text
    assert seconds >= 6.0  # the body did take longer than the deadline


async def _call(app: RequestDeadlineMiddleware, scope: Scope) -> list[Message]:
    """Run ``app`` on ``scope`` with an empty request; every message it sends."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(PATIENCE):
        await app(scope, receive, send)
    return sent


HTTP_SCOPE: Scope = {"type": "http", "method": "GET", "path": "/slow", "headers": [], "query_string": b""}


async def test_the_deadline_cuts_work_that_has_not_answered_and_rolls_it_back() -> None:
    cancelled = asyncio.Event()

    async def hung(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await asyncio.Event().wait()  # a dependency that never answers
        except asyncio.CancelledError:
            cancelled.set()  # what the unit of work does here: roll back
            raise

    sent = await _call(RequestDeadlineMiddleware(hung, timeout=0.2), HTTP_SCOPE)
    assert cancelled.is_set()
    start, body = sent
    assert start["status"] == 503
    assert (b"retry-after", b"1") in start["headers"]
    assert b"the request took too long" in body["body"]


async def test_the_deadline_never_cuts_a_response_under_way() -> None:
    """A download whose body takes longer than the deadline arrives whole."""

    async def slow_body(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await anyio.sleep(0.6)  # three deadlines: a slow disk or a large file
        await send({"type": "http.response.body", "body": b"all of it"})

    sent = await _call(RequestDeadlineMiddleware(slow_body, timeout=0.2), HTTP_SCOPE)
    assert [message.get("status") or message.get("body") for message in sent] == [200, b"all of it"]


async def test_websockets_have_no_deadline() -> None:
    finished = asyncio.Event()

    async def long_socket(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep(0.6)  # a socket open three deadlines long
        finished.set()

    await _call(RequestDeadlineMiddleware(long_socket, timeout=0.2), {"type": "websocket", "path": "/ws"})
    assert finished.is_set()


SMTP_TIMEOUT = 5.0


async def test_a_hung_mail_server_delays_no_response_and_the_send_gives_up_at_its_timeout(
    make_client: ClientFactory,
) -> None:
    """The app is called as a server calls it, so that the moment the response is complete shows
    (an HTTP client sees it then; BackgroundTasks run after it, within the same call)."""
    with silent_port() as smtp_port:
        client = await make_client(
            smtp_host="127.0.0.1", smtp_port=smtp_port, smtp_starttls=False, smtp_timeout=SMTP_TIMEOUT
        )
        user = {"username": "jake", "email": "jake@example.com", "password": "correct-horse-9"}
        body = orjson.dumps({"user": user})
        scope: Scope = {
            "type": "http",
            "method": "POST",
            "path": "/api/v1/users",
            "raw_path": b"/api/v1/users",
            "root_path": "",
            "scheme": "http",
            "query_string": b"",
            "headers": [
                (b"host", b"test"),
                (b"content-type", b"application/json"),
                (b"x-request-id", b"register-1"),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("test", 80),
        }
        messages: list[tuple[float, Message]] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            messages.append((time.monotonic(), message))

        started = time.monotonic()
        with JsonLogs() as logs:
            with anyio.fail_after(PATIENCE):
                await client.app(scope, receive, send)  # type: ignore[attr-defined]
            finished = time.monotonic() - started
    (_, start), (answered_at, last) = messages[0], messages[-1]
    assert start["status"] == 201 and not last.get("more_body", False)
    assert answered_at - started < SMTP_TIMEOUT  # the response did not wait for the mail server
    assert SMTP_TIMEOUT <= finished < SMTP_TIMEOUT + BOUND  # the send gave up at its timeout
    [line] = logs.lines("not sent")  # aiosmtplib's SMTPConnectTimeoutError, an SMTPTimeoutError
    assert "TimeoutError" in line["event"] and line["request_id"] == "register-1"
    assert (await client.get("/tags")).status_code == 200  # the app still serves


async def test_a_hung_s3_fails_the_upload_with_503_and_keeps_nothing(
    make_client: ClientFactory, engine: AsyncEngine
) -> None:
    with silent_port() as s3_port:
        client = await make_client(
            storage_backend="s3",
            s3_bucket="conduit-hung",
            s3_endpoint_url=f"http://127.0.0.1:{s3_port}",
            s3_connect_timeout=1.0,
            s3_read_timeout=1.0,
            s3_max_attempts=2,
            **S3_CREDENTIALS,
        )
        client.event_hooks = {"response": []}  # the 503 is the answer under test
        try:
            jake = await Api(client).register("jake")
            response, seconds = await timed(
                client.put(
                    "/user/avatar", files={"file": ("me.png", png(), "image/png")}, headers=jake.headers
                )
            )
            user = (await client.get("/user", headers=jake.headers)).json()["user"]
        finally:
            await client.app.state.storage.close()  # type: ignore[attr-defined]
    problem = assert_unavailable(response)
    assert problem["detail"] == "the image could not be stored, please retry"
    assert 1.0 <= seconds < 2 * 2.0 + BOUND  # attempts x (connect + read), plus backoff
    assert user["image"] == ""
    async with engine.connect() as connection:
        used = (await connection.execute(select(User.upload_count, User.upload_bytes))).one()
        rows = await connection.scalar(select(func.count()).select_from(Upload))
    assert tuple(used) == (0, 0) and rows == 0  # the quota charged in its transaction was rolled back
