"""The error model: every failure is a problem document with the RealWorld errors member, and
nothing internal leaks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from app.core.errors import NotFoundError, PermissionDeniedError, install_error_handlers

SECRET = "postgresql://admin:hunter2@db/prod /srv/app/secret.py SELECT password_hash"


class DriverError(Exception):
    def __str__(self) -> str:
        return SECRET


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError(SECRET)

    @app.get("/integrity")
    async def integrity() -> None:
        raise IntegrityError(SECRET, {}, DriverError())

    @app.get("/data")
    async def data() -> None:
        raise DataError(SECRET, {}, DriverError())

    @app.get("/down")
    async def down() -> None:
        raise OperationalError(SECRET, {}, DriverError())

    @app.get("/missing")
    async def missing() -> None:
        raise NotFoundError("article not found")

    @app.get("/forbidden")
    async def forbidden() -> None:
        raise PermissionDeniedError(
            "only the author may change this article", fields={"article": ["is not yours"]}
        )

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    return app


@pytest.fixture
async def raw_client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/boom", 500, "internal_error"),
        ("/integrity", 409, "conflict"),
        ("/data", 422, "validation_failed"),
        ("/down", 503, "service_unavailable"),
        ("/missing", 404, "not_found"),
        ("/nowhere", 404, "not_found"),
        ("/items/abc", 422, "validation_failed"),
    ],
)
async def test_problem_documents_without_internals(
    raw_client: httpx.AsyncClient, path: str, status: int, code: str
) -> None:
    response = await raw_client.get(path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["code"] == code
    assert body["type"] == "about:blank" and body["instance"] == path
    assert body["errors"]["body"] == [body["detail"]]
    for leak in ("hunter2", "postgresql", "/srv/app", "SELECT", "Traceback", "DriverError", "sqlalchemy"):
        assert leak not in response.text


async def test_field_errors_are_listed_beside_body(raw_client: httpx.AsyncClient) -> None:
    response = await raw_client.get("/forbidden")
    assert response.status_code == 403
    assert response.json()["errors"] == {
        "body": ["only the author may change this article"],
        "article": ["is not yours"],
    }


async def test_method_not_allowed(raw_client: httpx.AsyncClient) -> None:
    response = await raw_client.delete("/missing")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]


async def test_unavailable_database_asks_to_retry(raw_client: httpx.AsyncClient) -> None:
    response = await raw_client.get("/down")
    assert response.headers["retry-after"] == "1"


async def test_validation_error_names_the_field(raw_client: httpx.AsyncClient) -> None:
    body = (await raw_client.get("/items/abc")).json()
    assert body["errors"]["item_id"] == ["must be an integer"]
    assert body["detail"] == "item_id must be an integer"


async def test_server_errors_carry_the_security_headers(raw_client: httpx.AsyncClient) -> None:
    response = await raw_client.get("/boom")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
