"""Outgoing email: through SMTP when ``CONDUIT_SMTP_HOST`` is set, else ``.eml`` files in ``var_dir/outbox``.

Emails are sent after the response (``BackgroundTasks``) through :func:`send_quietly`, so a mail
failure is logged and never reaches the request. Bodies carry single-use tokens: they are never logged.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import Protocol

import aiosmtplib
import anyio.to_thread

from app.core.config import Settings

logger = logging.getLogger("conduit.mail")


@dataclass(frozen=True, slots=True)
class EmailMessageData:
    """One plain-text email to one recipient."""

    to: str
    subject: str
    text: str


class Mailer(Protocol):
    async def send(self, message: EmailMessageData) -> None: ...


def _domain(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2]


def _build_message(message: EmailMessageData, sender: str) -> EmailMessage:
    """The MIME message; raises ``ValueError`` on a header containing a line break (no header injection)."""
    email = EmailMessage()
    email["From"] = sender
    email["To"] = message.to
    email["Subject"] = message.subject
    email["Date"] = format_datetime(datetime.now(UTC))
    # An explicit domain: without one, make_msgid resolves the host's FQDN, a blocking DNS lookup.
    email["Message-ID"] = make_msgid(domain=_domain(sender) or "localhost")
    email.set_content(message.text)
    return email


class SmtpMailer:
    """Delivers through an SMTP server. ``smtp_timeout`` bounds every step: a hung server fails the send."""

    def __init__(self, settings: Settings) -> None:
        assert settings.smtp_host
        self._settings = settings

    async def send(self, message: EmailMessageData) -> None:
        settings = self._settings
        await aiosmtplib.send(
            _build_message(message, settings.mail_from),
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            use_tls=settings.smtp_tls,
            # Implicit TLS already encrypts the connection: there is nothing to upgrade.
            start_tls=settings.smtp_starttls and not settings.smtp_tls,
            timeout=settings.smtp_timeout,
        )


class OutboxMailer:
    """Writes each email to ``var_dir/outbox`` as an ``.eml`` file named so that names sort by time sent."""

    def __init__(self, settings: Settings) -> None:
        self._sender = settings.mail_from
        self._outbox = settings.var_dir / "outbox"
        self._last_ns = 0

    def _name(self) -> str:
        # Strictly increasing even when the clock is coarse or steps back, so names keep the sending order.
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        seconds, nanos = divmod(self._last_ns, 10**9)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds))
        return f"{stamp}.{nanos:09d}Z-{secrets.token_hex(4)}.eml"

    def _write(self, path: Path, data: bytes) -> None:
        self._outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        # Owner-only (the bodies hold tokens), and renamed into place so a reader never sees half a file.
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        partial.rename(path)

    async def send(self, message: EmailMessageData) -> None:
        data = _build_message(message, self._sender).as_bytes()
        await anyio.to_thread.run_sync(self._write, self._outbox / self._name(), data)


def create_mailer(settings: Settings) -> Mailer:
    """SMTP when a host is configured, the outbox otherwise."""
    if settings.smtp_host:
        return SmtpMailer(settings)
    return OutboxMailer(settings)


async def send_quietly(mailer: Mailer, message: EmailMessageData) -> None:
    """Send, and on failure log a warning (exception type and recipient domain only) instead of raising."""
    try:
        await mailer.send(message)
    except Exception as exc:
        logger.warning("email to a recipient at %r not sent: %s", _domain(message.to), type(exc).__name__)
