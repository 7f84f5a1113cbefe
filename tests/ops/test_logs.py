"""The access log (one line per request), debug-level lines for probes and scrapes, the format chosen
by the environment, and redaction in JSON lines."""

from __future__ import annotations

import logging

import pytest
import structlog

from app.core.config import Settings
from app.core.logging import logging_config
from tests.conftest import ClientFactory, make_settings
from tests.factories import Api
from tests.ops.conftest import LogLines, access_lines


async def test_one_access_line_per_request(make_client: ClientFactory, log_lines: LogLines) -> None:
    client = await make_client(log_level="INFO")
    author = await Api(client).register("author")
    slug = (await Api(client).article(author))["slug"]
    before = len(access_lines(log_lines()))
    response = await client.get(f"/articles/{slug}", headers={"X-Request-ID": "read-1"})
    await client.get("/articles/no-such-article")

    read, missing = access_lines(log_lines())[before:]
    assert read["request_id"] == response.headers["x-request-id"] == "read-1"
    assert read["level"] == "info" and read["event"] == "request"
    assert (read["method"], read["route"], read["path"], read["status"]) == (
        "GET",
        "/api/v1/articles/{slug}",
        f"/api/v1/articles/{slug}",
        200,
    )
    assert read["duration_ms"] > 0 and read["statements"] == 1
    assert (missing["route"], missing["status"]) == ("/api/v1/articles/{slug}", 404)
    assert missing["request_id"] != read["request_id"]


async def test_lines_logged_during_a_request_carry_its_id(
    make_client: ClientFactory, log_lines: LogLines
) -> None:
    client = await make_client(log_level="INFO", profiling_enabled=True, slow_request_ms=0.001)
    await client.get("/tags", headers={"X-Request-ID": "slow-one"})
    (slow,) = [line for line in log_lines() if line["logger"] == "conduit.profiling"]
    assert slow["event"].startswith("slow request: GET /api/v1/tags")
    assert slow["request_id"] == "slow-one" and slow["level"] == "warning"


async def test_scrapes_and_probes_are_logged_at_debug_level(
    make_client: ClientFactory, log_lines: LogLines
) -> None:
    client = await make_client(log_level="DEBUG")
    for path in ("http://test/metrics", "http://test/health/live", "/tags"):
        await client.get(path)
    levels = {line["path"]: line["level"] for line in access_lines(log_lines())}
    assert levels == {"/metrics": "debug", "/health/live": "debug", "/api/v1/tags": "info"}


async def test_at_info_level_scrapes_and_probes_are_not_logged(
    make_client: ClientFactory, log_lines: LogLines
) -> None:
    client = await make_client(log_level="INFO")
    for path in ("http://test/metrics", "http://test/health/ready", "/tags"):
        await client.get(path)
    assert [line["path"] for line in access_lines(log_lines())] == ["/api/v1/tags"]


@pytest.mark.parametrize(
    ("env", "log_format", "expected"),
    [
        ("production", None, "json"),
        ("development", None, "console"),
        ("test", None, "console"),
        ("production", "console", "console"),
        ("development", "json", "json"),
    ],
)
def test_the_format_follows_the_environment(
    tmp_path: object, env: str, log_format: str | None, expected: str
) -> None:
    settings: Settings = make_settings("sqlite+aiosqlite://", tmp_path, env=env, log_format=log_format)  # type: ignore[arg-type]
    assert settings.effective_log_format == expected
    formatter = logging_config("INFO", log_format=settings.effective_log_format)["formatters"]["structlog"]
    assert formatter["log_format"] == expected


def test_json_lines_are_redacted_and_stay_json(log_lines: LogLines) -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    stdlib = logging.getLogger("conduit.test")
    stdlib.warning('body: {"user": {"email": "a@b.c", "password": "hunter2hunter2"}}')
    stdlib.warning("headers: %s", {"authorization": f"Token {jwt}", "cookie": "conduit_refresh=abc123"})
    structlog.stdlib.get_logger("conduit.test").warning(
        "fields", password="hunter2hunter2", token=None, refresh_token=12345, user="jake"
    )
    try:
        raise ValueError("password=hunter2hunter2")
    except ValueError:
        stdlib.exception("failed")

    lines = log_lines()  # each line parses as JSON
    text = repr(lines)
    for secret in ("hunter2hunter2", jwt, "eyJhbGciOiJIUzI1NiJ9", "abc123", "12345"):
        assert secret not in text
    assert [line["event"].split(":")[0] for line in lines] == ["body", "headers", "fields", "failed"]
    assert lines[2]["user"] == "jake" and lines[2]["password"] == lines[2]["token"] == "[redacted]"
    assert "ValueError" in lines[3]["exception"]
