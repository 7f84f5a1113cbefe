"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, on a free port, stopped at teardown.

conftest.py does not provide it: a test module that needs it imports the fixture::

    from tests.smtp import smtp_server  # noqa: F401

    async def test_sends(smtp_server: SmtpServer) -> None:
        ...  # point the mailer at smtp_server.host / smtp_server.port, then read smtp_server.messages

The server offers neither STARTTLS nor AUTH: build the settings with ``smtp_starttls=False``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

HOST = "127.0.0.1"


@dataclass
class SmtpServer:
    """Where the server listens, and the envelopes it has received (it is its own aiosmtpd handler)."""

    host: str
    port: int
    envelopes: list[Envelope] = field(default_factory=list)

    @property
    def messages(self) -> list[EmailMessage]:
        """The received messages, their CRLF line endings (as on the wire) read as ``\\n``."""
        raw = [envelope.original_content or b"" for envelope in self.envelopes]
        return [message_from_bytes(data.replace(b"\r\n", b"\n"), policy=policy.default) for data in raw]

    @property
    def settings(self) -> dict[str, object]:
        """Settings that send mail here (the server offers no STARTTLS)."""
        return {"smtp_host": self.host, "smtp_port": self.port, "smtp_starttls": False}

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.envelopes.append(envelope)
        return "250 OK"


def _free_port() -> int:
    # aiosmtpd's Controller cannot listen on port 0, so ask the OS for a free port first.
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer(HOST, _free_port())
    controller = Controller(server, hostname=server.host, port=server.port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()
