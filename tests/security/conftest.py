"""Fixtures for the security tests: apps built with other settings, on the same test database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.main import create_app
from tests.conftest import _no_server_errors, make_settings

ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def make_client(database_url: str, tmp_path: Path, engine: AsyncEngine) -> AsyncIterator[ClientFactory]:
    """``await make_client(**settings_overrides)``: a client of a fresh app built with those settings.

    Depends on ``engine`` so that the tables are emptied after the test like everywhere else.
    """
    opened: list[tuple[httpx.AsyncClient, Settings]] = []

    async def make(*, client_ip: str = "127.0.0.1", **overrides: object) -> httpx.AsyncClient:
        settings = make_settings(database_url, tmp_path, **overrides)
        app = create_app(settings)
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(client_ip, 50000)),
            base_url="http://test/api/v1",
            event_hooks={"response": [_no_server_errors]},
        )
        http.app = app  # type: ignore[attr-defined]
        opened.append((http, settings))
        return http

    yield make
    for http, _ in opened:
        await http.aclose()
        await http.app.state.limiter.close()  # type: ignore[attr-defined]
        await http.app.state.engine.dispose()  # type: ignore[attr-defined]
