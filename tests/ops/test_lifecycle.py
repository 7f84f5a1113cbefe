"""Shutdown of a real ``conduit serve`` on SIGTERM: it stops accepting, lets the requests in flight
finish, says goodbye to WebSockets, closes everything and exits 0; and ``serve --no-migrate``."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from tests.conftest import make_settings
from tests.factories import PASSWORD
from tests.ops.server import PATIENCE, Server, invoke_serve, register, serve

CLOSE_SERVICE_RESTART = 1012  # RFC 6455: "the server is restarting", so reconnect


def _hold_request(server: Server, path: str, body: bytes) -> socket.socket:
    """Send a request's head with ``Expect: 100-continue`` and wait for the ``100 Continue``: the
    server has then started the request and its endpoint is waiting for the body (a slow client)."""
    held = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)
    held.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        chunk = held.recv(1)
        assert chunk, "the server closed the connection"
        head += chunk
    assert head.startswith(b"HTTP/1.1 100 Continue"), head
    return held


def _login_body(email: str) -> bytes:
    return json.dumps({"user": {"email": email, "password": PASSWORD}}).encode()


def test_sigterm_finishes_requests_in_flight_and_closes_websockets(
    database_url: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    settings = make_settings(database_url, tmp_path / "var", log_level="INFO")
    with serve(settings, tmp_path) as server:
        user = register(server, "drained")
        with connect(f"ws://127.0.0.1:{server.port}/api/v1/ws", open_timeout=PATIENCE) as ws:
            ws.send(json.dumps({"type": "auth", "token": user["token"]}))
            assert json.loads(ws.recv(timeout=PATIENCE)) == {"type": "ready"}

            body = _login_body(user["email"])
            with _hold_request(server, "/api/v1/users/login", body) as held:
                server.process.send_signal(signal.SIGTERM)
                # Open sockets are told the server is restarting (uvicorn's goodbye; the realtime
                # connection ends on that disconnect), so that clients reconnect elsewhere.
                with pytest.raises(ConnectionClosedError) as goodbye:
                    ws.recv(timeout=PATIENCE)
                assert goodbye.value.rcvd is not None
                assert goodbye.value.rcvd.code == CLOSE_SERVICE_RESTART
                # The listening socket is closed by now: nothing new is accepted.
                with pytest.raises(ConnectionRefusedError):
                    socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)

                held.sendall(body)  # the slow client finally sends its body
                response = http.client.HTTPResponse(held)
                response.begin()
                answer: dict[str, Any] = json.loads(response.read())

        assert response.status == 200, answer
        assert answer["user"]["username"] == "drained"
        assert response.getheader("Connection") == "close"
        assert server.wait() == 0
    log = server.log()
    assert "method=POST path=/api/v1/users/login" in log and "status=200" in log  # its access line
    assert "Application shutdown complete" in log
    assert "Traceback" not in log and "ERROR" not in log, log
    # Probes are not logged at INFO (the start-up wait polled /health/live).
    assert "/health/" not in log


def test_requests_past_the_graceful_timeout_are_cancelled(
    database_url: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    settings = make_settings(database_url, tmp_path / "var", log_level="INFO", graceful_shutdown_timeout=1)
    with serve(settings, tmp_path) as server:
        user = register(server, "abandoned")
        with _hold_request(server, "/api/v1/users/login", _login_body(user["email"])):
            server.process.send_signal(signal.SIGTERM)
            assert server.wait() == 0  # the body never comes: the request is cancelled
    log = server.log()
    assert "timeout graceful shutdown exceeded" in log
    assert "Application shutdown complete" in log


def _served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> uvicorn.Config:
    """Run ``conduit serve *args`` with the server replaced by a recorder; the configuration it got."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONDUIT_VAR_DIR", str(tmp_path))
    monkeypatch.delenv("CONDUIT_DATABASE_URL", raising=False)
    monkeypatch.setenv("CONDUIT_GRACEFUL_SHUTDOWN_TIMEOUT", "7")
    monkeypatch.setenv("CONDUIT_WORKER_HEALTHCHECK_TIMEOUT", "45")
    result, calls = invoke_serve(monkeypatch, *args)
    assert result.exit_code == 0, result.output
    (config,) = calls
    return config


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_serve_migrates_first_unless_told_not_to(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = _served(monkeypatch, tmp_path, "--no-migrate")
    assert config.timeout_graceful_shutdown == 7
    assert config.timeout_worker_healthcheck == 45
    assert not (tmp_path / "conduit.db").exists()  # the migration job's work, not this replica's

    _served(monkeypatch, tmp_path)
    assert {"users", "articles", "alembic_version"} <= _tables(tmp_path / "conduit.db")
