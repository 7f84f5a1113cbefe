"""The mailers: SMTP against a real local server, the outbox on disk, and quiet sending."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from email import message_from_bytes, policy
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import anyio
import pytest

from app.core.config import Settings
from app.core.mail import EmailMessageData, OutboxMailer, SmtpMailer, create_mailer, send_quietly
from tests.smtp import SmtpServer, smtp_server  # noqa: F401

SENDER = "Conduit <no-reply@conduit.example>"
MESSAGE = EmailMessageData(
    to="jake@example.com",
    subject="Reset your password",
    text="Grüße! Open https://conduit.example/reset?token=s3cr3t-t0ken within 30 minutes.\n",
)


def make(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(_env_file=None, env="test", var_dir=tmp_path, mail_from=SENDER, **overrides)


def test_create_mailer_uses_smtp_only_when_a_host_is_set(tmp_path: Path) -> None:
    assert isinstance(create_mailer(make(tmp_path, smtp_host="smtp.example.com")), SmtpMailer)
    assert isinstance(create_mailer(make(tmp_path)), OutboxMailer)
    assert isinstance(create_mailer(make(tmp_path, smtp_host="")), OutboxMailer)


async def test_smtp_delivers_to_a_real_server(tmp_path: Path, smtp_server: SmtpServer) -> None:  # noqa: F811
    settings = make(tmp_path, smtp_host=smtp_server.host, smtp_port=smtp_server.port, smtp_starttls=False)
    await SmtpMailer(settings).send(MESSAGE)

    [envelope] = smtp_server.envelopes
    assert envelope.mail_from == "no-reply@conduit.example"
    assert envelope.rcpt_tos == ["jake@example.com"]
    [received] = smtp_server.messages
    assert received["From"] == SENDER
    assert received["To"] == MESSAGE.to
    assert received["Subject"] == MESSAGE.subject
    assert received["Message-ID"].endswith("@conduit.example>")
    assert parsedate_to_datetime(received["Date"]).tzinfo is not None
    assert received.get_content_type() == "text/plain"
    assert received.get_content() == MESSAGE.text


async def test_smtp_never_sends_in_clear_when_starttls_is_required(
    tmp_path: Path,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    settings = make(tmp_path, smtp_host=smtp_server.host, smtp_port=smtp_server.port)
    assert settings.smtp_starttls
    with pytest.raises(aiosmtplib.SMTPException, match="STARTTLS"):
        await SmtpMailer(settings).send(MESSAGE)
    assert smtp_server.envelopes == []


async def test_outbox_writes_parseable_eml_files_in_sending_order(tmp_path: Path) -> None:
    mailer = OutboxMailer(make(tmp_path))
    subjects = [f"message {i}" for i in range(5)]
    for subject in subjects:
        await mailer.send(EmailMessageData(to=MESSAGE.to, subject=subject, text=MESSAGE.text))

    files = sorted((tmp_path / "outbox").iterdir())
    assert [path.suffix for path in files] == [".eml"] * 5
    assert all(path.stat().st_mode & 0o077 == 0 for path in files)  # the bodies hold tokens
    parsed = [message_from_bytes(path.read_bytes(), policy=policy.default) for path in files]
    assert [email["Subject"] for email in parsed] == subjects
    first = parsed[0]
    assert first["From"] == SENDER
    assert first["To"] == MESSAGE.to
    assert first["Date"] and first["Message-ID"]
    assert first.get_content() == MESSAGE.text
    assert len({email["Message-ID"] for email in parsed}) == 5


async def test_a_line_break_in_a_header_is_refused(tmp_path: Path) -> None:
    forged = EmailMessageData(to=MESSAGE.to, subject="hi\r\nBcc: victim@example.com", text="")
    with pytest.raises(ValueError, match="linefeed or carriage return"):
        await OutboxMailer(make(tmp_path)).send(forged)
    assert not (tmp_path / "outbox").exists()


async def test_send_quietly_logs_a_refused_connection_without_the_address_or_body(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="conduit.mail")
    # Bound but not listening: a real connection refused, and no other process can take the port.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        settings = make(tmp_path, smtp_host="127.0.0.1", smtp_port=closed.getsockname()[1])
        started = time.monotonic()
        await send_quietly(SmtpMailer(settings), MESSAGE)
        elapsed = time.monotonic() - started

    assert elapsed < settings.smtp_timeout / 5
    [record] = [r for r in caplog.records if r.name == "conduit.mail"]
    assert record.levelno == logging.WARNING
    logged = caplog.text
    assert "example.com" in logged
    assert "SMTPConnectError" in logged
    assert "jake" not in logged
    assert "s3cr3t-t0ken" not in logged


async def test_send_quietly_swallows_an_outbox_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="conduit.mail")
    (tmp_path / "outbox").write_text("a file where the outbox directory should be")
    await send_quietly(OutboxMailer(make(tmp_path)), MESSAGE)
    assert "FileExistsError" in caplog.text


async def test_send_quietly_logs_nothing_on_success(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="conduit.mail")
    await send_quietly(OutboxMailer(make(tmp_path)), MESSAGE)
    assert len(list((tmp_path / "outbox").iterdir())) == 1
    assert not [r for r in caplog.records if r.name == "conduit.mail"]


async def test_smtp_gives_up_on_a_server_that_never_answers(tmp_path: Path) -> None:
    async def accept_and_stay_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client hangs up
        writer.close()

    server = await asyncio.start_server(accept_and_stay_silent, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        settings = make(tmp_path, smtp_host="127.0.0.1", smtp_port=port, smtp_timeout=0.5)
        started = time.monotonic()
        with anyio.fail_after(5), pytest.raises(aiosmtplib.SMTPTimeoutError):
            await SmtpMailer(settings).send(MESSAGE)
        elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 1.5
