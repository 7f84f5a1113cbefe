"""Rate limiting: the limiter against its real backends (memory; Redis too when CONDUIT_TEST_REDIS_URL
is set), its behaviour when Redis is down, and the global per-IP middleware."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from app.core.config import Settings
from app.core.errors import RateLimitedError, ServiceUnavailableError
from app.core.ratelimit import RateLimiter
from app.main import create_app
from tests.conftest import make_settings
from tests.factories import assert_problem

TEST_REDIS_URL = os.environ.get("CONDUIT_TEST_REDIS_URL")
# A real refused connection: nothing listens on port 1.
UNREACHABLE_REDIS_URL = "redis://:not-a-real-password@127.0.0.1:1/0"
BACKENDS = [None, TEST_REDIS_URL] if TEST_REDIS_URL else [None]


def limiter_settings(
    tmp_path: Path, database_url: str = "sqlite+aiosqlite://", **overrides: object
) -> Settings:
    """Settings with a prefix of their own, so no two tests (or runs) share counters."""
    values: dict[str, object] = {"rate_limit_prefix": f"test-{uuid.uuid4().hex}"}
    values.update(overrides)
    return make_settings(database_url, tmp_path, **values)


@pytest.fixture(params=BACKENDS, ids=lambda url: "redis" if url else "memory")
def redis_url(request: pytest.FixtureRequest) -> str | None:
    url: str | None = request.param
    return url


@pytest.fixture
async def limiter(redis_url: str | None, tmp_path: Path) -> AsyncIterator[RateLimiter]:
    rate_limiter = RateLimiter(limiter_settings(tmp_path, redis_url=redis_url))
    yield rate_limiter
    await rate_limiter.close()


async def test_the_hit_beyond_the_limit_is_refused(limiter: RateLimiter) -> None:
    for _ in range(3):
        await limiter.hit("3/minute", "login-ip", "10.0.0.1")
    with pytest.raises(RateLimitedError) as caught:
        await limiter.hit("3/minute", "login-ip", "10.0.0.1")

    error = caught.value
    assert (error.status_code, error.code) == (429, "rate_limited")
    headers = error.headers()
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert headers["RateLimit-Limit"] == "3"
    assert headers["RateLimit-Remaining"] == "0"
    assert headers["RateLimit-Reset"] == headers["Retry-After"]
    assert limiter.storage_errors == 0


async def test_identifiers_have_separate_budgets(limiter: RateLimiter) -> None:
    await limiter.hit("1/minute", "login-account", "alice@example.com")
    with pytest.raises(RateLimitedError):
        await limiter.hit("1/minute", "login-account", "alice@example.com")

    await limiter.hit("1/minute", "login-account", "bob@example.com")
    await limiter.hit("1/minute", "register-ip", "alice@example.com")


async def test_prefixes_have_separate_budgets(redis_url: str | None, tmp_path: Path) -> None:
    first = RateLimiter(limiter_settings(tmp_path, redis_url=redis_url))
    second = RateLimiter(limiter_settings(tmp_path, redis_url=redis_url))
    try:
        await first.hit("1/minute", "login-ip", "10.0.0.1")
        await second.hit("1/minute", "login-ip", "10.0.0.1")
    finally:
        await first.close()
        await second.close()


async def test_the_default_login_limit(redis_url: str | None, tmp_path: Path) -> None:
    # The shared test settings raise every limit, so take the rule from the field's default.
    rule = Settings.model_fields["rate_limit_login_account"].default
    limiter = RateLimiter(limiter_settings(tmp_path, redis_url=redis_url))
    try:
        for _ in range(5):
            await limiter.hit(rule, "login-account", "alice@example.com")
        with pytest.raises(RateLimitedError):
            await limiter.hit(rule, "login-account", "alice@example.com")
    finally:
        await limiter.close()


async def test_a_disabled_limiter_never_refuses(redis_url: str | None, tmp_path: Path) -> None:
    limiter = RateLimiter(limiter_settings(tmp_path, redis_url=redis_url, rate_limit_enabled=False))
    try:
        for _ in range(5):
            await limiter.hit("1/minute", "login-ip", "10.0.0.1")
    finally:
        await limiter.close()


async def test_fails_open_when_redis_is_unreachable(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimiter(limiter_settings(tmp_path, redis_url=UNREACHABLE_REDIS_URL))
    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="conduit.ratelimit"):
            await limiter.hit("1/minute", "login-ip", "10.0.0.1")
            await limiter.hit("1/minute", "login-ip", "10.0.0.1")
        assert time.monotonic() - started < 2
    finally:
        await limiter.close()

    assert limiter.storage_errors == 2
    # The outage once, the failure once: the second hit skipped Redis (the breaker is open) unlogged.
    assert sorted(record.name for record in caplog.records) == ["conduit.ratelimit", "conduit.redis"]
    assert "not-a-real-password" not in caplog.text
    assert "10.0.0.1" not in caplog.text


async def test_fails_closed_when_configured(tmp_path: Path) -> None:
    settings = limiter_settings(tmp_path, redis_url=UNREACHABLE_REDIS_URL, rate_limit_fail_open=False)
    limiter = RateLimiter(settings)
    try:
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError):
            await limiter.hit("1/minute", "login-ip", "10.0.0.1")
        assert time.monotonic() - started < 2
    finally:
        await limiter.close()
    assert limiter.storage_errors == 1


def test_default_rules() -> None:
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    assert defaults["rate_limit_enabled"] is True
    assert defaults["rate_limit_fail_open"] is True
    assert defaults["rate_limit_prefix"] == "conduit"
    assert defaults["rate_limit_default_ip"] == "600/minute"
    assert defaults["rate_limit_login_account"] == "5/minute"
    assert defaults["rate_limit_login_ip"] == "20/minute"
    assert defaults["rate_limit_register_ip"] == "10/minute"
    assert defaults["rate_limit_refresh_family"] == "30/minute"
    assert defaults["rate_limit_writes_user"] == "60/minute"


@pytest.mark.parametrize("rule", ["5/fortnight", "five per minute", "5/minute;100/hour", ""])
def test_an_invalid_rule_fails_at_startup(rule: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="rate_limit_login_ip") as caught:
        limiter_settings(tmp_path, rate_limit_login_ip=rule)
    assert "is not a rate limit such as '5/minute'" in str(caught.value)


@pytest.fixture
async def limited_app(database_url: str, tmp_path: Path) -> AsyncIterator[FastAPI]:
    """The application with a global limit of 3 requests a minute per client IP."""
    settings = limiter_settings(
        tmp_path, database_url=database_url, redis_url=TEST_REDIS_URL, rate_limit_default_ip="3/minute"
    )
    app = create_app(settings)
    yield app
    await app.state.limiter.close()
    await app.state.engine.dispose()


def client_from(app: FastAPI, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_the_global_limit_per_client_ip(limited_app: FastAPI) -> None:
    async with client_from(limited_app, "10.0.0.1") as client, client_from(limited_app, "10.0.0.2") as other:
        for _ in range(3):
            assert (await client.get("/api/v1/tags")).status_code == 200
        response = await client.get("/api/v1/tags", headers={"Origin": "http://localhost:3000"})
        assert (await other.get("/api/v1/tags")).status_code == 200

    assert_problem(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["RateLimit-Limit"] == "3"
    assert response.headers["RateLimit-Remaining"] == "0"
    # CORS stays outside the limiter: a browser can read the 429.
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


async def test_preflights_and_health_checks_are_not_counted(limited_app: FastAPI) -> None:
    preflight = {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"}
    async with client_from(limited_app, "10.0.0.1") as client:
        for _ in range(5):
            assert (await client.options("/api/v1/tags", headers=preflight)).status_code == 200
            assert (await client.options("/api/v1/tags")).status_code == 405
            assert (await client.get("/health")).status_code != 429
        for _ in range(3):
            assert (await client.get("/api/v1/tags")).status_code == 200
