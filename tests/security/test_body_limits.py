"""The request body size limit (CONDUIT_MAX_BODY_BYTES) and hostile bodies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import Message, Receive, Scope, Send

from app.core.middleware import BodyLimitMiddleware
from tests.conftest import ClientFactory
from tests.factories import PASSWORD, Api, assert_problem

LIMIT = 1024 * 1024  # the default
TOO_LARGE = f"the request body exceeds {LIMIT} bytes"
JSON = {"Content-Type": "application/json"}


def padded(user: dict[str, str], size: int) -> bytes:
    """``{"user": user}`` as JSON, padded with whitespace to ``size`` bytes."""
    return json.dumps({"user": user}).encode().ljust(size)


def registration(size: int) -> bytes:
    return padded({"username": "jake", "email": "jake@example.com", "password": PASSWORD}, size)


async def test_a_body_at_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/users", content=registration(LIMIT), headers=JSON)
    assert response.status_code == 201, response.text


async def test_an_oversize_body_is_refused_and_the_endpoint_never_runs(
    client: httpx.AsyncClient, api: Api
) -> None:
    response = await client.post("/users", content=registration(LIMIT + 1), headers=JSON)
    assert_problem(response, 413, "payload_too_large", TOO_LARGE)
    assert response.headers["x-content-type-options"] == "nosniff"
    await api.register("jake")  # not taken: the refused registration never happened


async def test_an_oversize_form_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/users", data={"user": "x" * LIMIT})
    assert_problem(response, 413, "payload_too_large", TOO_LARGE)


async def test_an_oversize_chunked_body_is_refused(client: httpx.AsyncClient, api: Api) -> None:
    body = registration(LIMIT + 1)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = await client.post("/users", content=chunks(), headers=JSON)
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload_too_large", TOO_LARGE)
    await api.register("jake")


async def test_a_chunked_body_within_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    body = registration(LIMIT)

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:100]
        yield body[100:]

    response = await client.post("/users", content=chunks(), headers=JSON)
    assert response.status_code == 201, response.text


def _scope(content_length: int | None = None) -> Scope:
    headers = [(b"host", b"test")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    return {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "server": ("test", 80),
        "path": "/api/v1/users",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
    }


async def _call(app: BodyLimitMiddleware, scope: Scope, receive: Receive) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_a_declared_oversize_body_is_never_read() -> None:
    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("the app must not be called")

    async def receive() -> Message:
        raise AssertionError("the body must not be read")

    sent = await _call(BodyLimitMiddleware(endpoint, max_bytes=10), _scope(content_length=11), receive)
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["code"] == "payload_too_large"


@pytest.mark.parametrize("app_answers", [True, False], ids=["app-answers", "app-raises"])
async def test_the_app_never_receives_more_than_the_limit(app_answers: bool) -> None:
    received: list[bytes] = []

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            async for chunk in request.stream():
                received.append(chunk)
        except Exception:
            if not app_answers:
                raise
            # What FastAPI does with an error while reading the body: a 400, which the 413 replaces.
            await PlainTextResponse("bad body", status_code=400)(scope, receive, send)
            return
        await PlainTextResponse("ok")(scope, receive, send)

    chunks = iter([b"abcd", b"efgh", b"ijkl", b"mnop"])

    async def receive() -> Message:
        return {"type": "http.request", "body": next(chunks), "more_body": True}

    sent = await _call(BodyLimitMiddleware(endpoint, max_bytes=10), _scope(), receive)
    assert b"".join(received) == b"abcdefgh"  # the third chunk would cross the limit
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 413


async def test_exempt_prefixes_are_not_limited(make_client: ClientFactory) -> None:
    http = await make_client(max_body_bytes=200, body_limit_exempt_prefixes="/api/v1/users/login")
    credentials = padded({"email": "jake@example.com", "password": PASSWORD}, 300)
    login = await http.post("/users/login", content=credentials, headers=JSON)
    register = await http.post("/users", content=registration(300), headers=JSON)
    assert_problem(login, 401, "unauthorized")  # reached the endpoint: no such account
    assert_problem(register, 413, "payload_too_large", "the request body exceeds 200 bytes")


async def test_deeply_nested_json_is_a_client_error(client: httpx.AsyncClient) -> None:
    depth = 100_000
    response = await client.post("/users", content=b"[" * depth + b"]" * depth, headers=JSON)
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == response.status_code
