"""A real ``conduit serve`` in a subprocess on a free port, for the tests that need a real server:
signals and shutdown, a browser."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from click.testing import Result
from pydantic import SecretStr
from typer.testing import CliRunner

from app.cli import cli
from app.core.config import Settings
from tests.factories import PASSWORD

# Bounds every wait, so that a server that never comes up or never exits fails the test instead of
# hanging it. Nothing is timed.
PATIENCE = 60.0
CONDUIT = Path(sys.executable).with_name("conduit")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _env_value(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list):
        return json.dumps([_env_value(item) for item in value])
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def server_env(settings: Settings) -> dict[str, str]:
    """This environment without its own CONDUIT_ variables, plus one for every value of ``settings``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONDUIT_")}
    for name, value in settings:
        if value is not None:
            env[f"CONDUIT_{name.upper()}"] = _env_value(value)
    return env


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def wait(self) -> int:
        """The exit code, once the process has exited."""
        return self.process.wait(timeout=PATIENCE)


@contextmanager
def serve(settings: Settings, workdir: Path, *options: str, patience: float = PATIENCE) -> Iterator[Server]:
    """``conduit serve --no-migrate *options`` with ``settings`` (in the environment), ready once
    ``/health/live`` answers (within ``patience`` seconds); stopped at the end if the test has not
    stopped it."""
    port = free_port()
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [CONDUIT, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-migrate", *options],
            cwd=workdir,  # no .env of the developer's
            env=server_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, port, log_path)
    try:
        _wait_until_live(server, patience)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=PATIENCE)


def _wait_until_live(server: Server, patience: float) -> None:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"conduit serve exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/health/live", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"conduit serve did not come up:\n{server.log()}")


def register(server: Server, username: str) -> dict[str, str]:
    """Register ``username`` (password ``PASSWORD``); the user object, its token included."""
    user = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
    response = httpx.post(f"{server.url}/api/v1/users", json={"user": user}, timeout=PATIENCE)
    assert response.status_code == 201, response.text
    registered: dict[str, str] = response.json()["user"]
    return registered


def closed_port() -> int:
    """A port nothing listens on: connections are refused."""
    return free_port()


@contextmanager
def silent_port() -> Iterator[int]:
    """A port whose connections are accepted by the kernel but never answered (a hung service)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)  # never accept()ed: clients connect, then wait for an answer forever
        yield sock.getsockname()[1]


def invoke_serve(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[Result, list[uvicorn.Config]]:
    """Run ``conduit serve *args`` in this process with the server's run (``app.core.serving.run``)
    replaced by a recorder: the command's result, and the configurations it would have served."""
    served: list[uvicorn.Config] = []
    monkeypatch.setattr("app.cli.serving.run", served.append)
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        result = CliRunner().invoke(cli, ["serve", *args])
    finally:
        signal.signal(signal.SIGTERM, sigterm)  # serve sets its own, for the server's process
    return result, served
