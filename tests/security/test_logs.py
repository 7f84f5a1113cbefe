"""Logs never contain passwords, tokens, hashes, credential headers or cookies."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from app.core.logging import configure_logging, redact
from app.core.security import digest
from tests.conftest import ClientFactory
from tests.factories import Api

PASSWORD = "very-secret-passphrase-42"


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("DEBUG", stream)
    yield stream
    root.handlers[:], _ = saved
    root.setLevel(saved[1])
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)


async def test_a_full_session_leaves_no_secret_in_the_logs(
    make_client: ClientFactory, log_stream: io.StringIO
) -> None:
    client = await make_client(db_echo=True, log_level="DEBUG")
    account = await Api(client).register("jake", password=PASSWORD)
    pair = (await client.post("/auth/token", data={"username": "jake", "password": PASSWORD})).json()
    client.cookies.clear()
    refreshed = (await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})).json()
    await client.get("/user", headers=account.headers)
    logging.getLogger("conduit.test").warning(
        "request headers: %s", {"authorization": f"Token {account.token}", "cookie": "conduit_refresh=abc"}
    )
    engine = client.app.state.engine  # type: ignore[attr-defined]
    async with engine.connect() as connection:
        password_hash = (await connection.exec_driver_sql("SELECT password_hash FROM users")).scalar_one()

    text = log_stream.getvalue()
    assert "INSERT INTO users" in text  # the SQL was logged: this test saw real log lines
    assert "INSERT INTO refresh_tokens" in text
    # Bound parameters are hidden (hide_parameters): not even a token's digest reaches the log.
    assert digest(pair["refresh_token"]) not in text and "jake@example.com" not in text
    for secret in (
        PASSWORD,
        account.token,
        pair["access_token"],
        pair["refresh_token"],
        refreshed["refresh_token"],
        password_hash,
        "conduit_refresh=abc",
    ):
        assert secret not in text


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ('{"user": {"email": "a@b.c", "password": "hunter2hunter2"}}', "hunter2hunter2"),
        ("password=hunter2&user=jake", "hunter2"),
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_nature-x", "eyJhbGciOiJIUzI1NiJ9"),
        ("hash $2b$12$" + "a" * 53, "a" * 53),
        ("{'refresh_token': 'Yx8QAbcDEF'}", "Yx8QAbcDEF"),
    ],
)
def test_redaction_patterns(line: str, secret: str) -> None:
    assert secret not in redact(line)
    assert "[redacted" in redact(line)


def test_ordinary_lines_are_untouched() -> None:
    line = 'GET /api/v1/articles?tag=dragons HTTP/1.1" 200'
    assert redact(line) == line
