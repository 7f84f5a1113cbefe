"""Fault tests' helpers: a throwaway PostgreSQL server, a TCP proxy in front of it that a test can
cut, an app run as a server runs it, the 503 every outage must look like, and the logs as JSON.

The fault tests stop, restart and partition *this* server, never the machine's shared one. It is a
cluster of its own (``initdb`` into a temporary directory), listening on a free port of 127.0.0.1 and
on a Unix socket in that directory. PostgreSQL refuses to run as root: when the tests run as root,
its commands run as the ``postgres`` OS user (``runuser``), which owns the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from app.core.config import Settings
from app.core.logging import configure_logging
from app.db import migrations
from app.main import create_app
from tests.conftest import jobs_done
from tests.ops.server import free_port

PG_BIN = Path(os.environ.get("CONDUIT_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"  # the OS user that runs the server when the tests run as root
PATIENCE = 60.0  # seconds: bounds every start and stop, so a server that never comes up fails the test


def pg_available() -> bool:
    return (PG_BIN / "initdb").exists() and (os.geteuid() != 0 or _has_user(PG_USER))


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class PostgresServer:
    """One cluster in ``root``; ``start`` and ``stop`` it as often as a test likes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = free_port()
        self.running = False

    def _run(self, *command: str) -> None:
        argv = [str(PG_BIN / command[0]), *command[1:]]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", PG_USER, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=PATIENCE, check=False)
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{command[0]} failed: {result.stdout}{result.stderr}\n{log}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        """Start, and return once the server accepts connections (``pg_ctl -w``)."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=60 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        timeout = str(int(PATIENCE))
        self._run(
            "pg_ctl", "start", "-w", "-t", timeout, "-D", str(self.data), "-l", str(self.log), "-o", options
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``fast``: sessions are terminated (FATAL 57P01 admin_shutdown) and the server shuts down
        cleanly; ``immediate``: every server process is killed at once, as in a crash."""
        self.running = False
        self._run("pg_ctl", "stop", "-w", "-t", str(int(PATIENCE)), "-D", str(self.data), "-m", mode)

    def url(self, database: str = "postgres", *, port: int | None = None) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{port or self.port}/{database}"

    async def connect(self, database: str = "postgres") -> asyncpg.Connection:
        return await asyncpg.connect(host="127.0.0.1", port=self.port, user="postgres", database=database)

    def createdb(self, name: str, template: str = "template1") -> None:
        self._run(
            "createdb", "-h", str(self.root), "-p", str(self.port), "-U", "postgres", "-T", template, name
        )

    def create_database(self) -> str:
        """A new database, a copy of the migrated template (``migrated_template``): its name."""
        name = f"conduit_{uuid.uuid4().hex[:12]}"
        self.createdb(name, TEMPLATE)
        return name


TEMPLATE = "conduit_template"


def migrated_template(server: PostgresServer) -> None:
    """Create and migrate the template that ``create_database`` copies."""
    server.createdb(TEMPLATE)
    migrations.upgrade(server.url(TEMPLATE), configure_logging=False)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A new cluster, started; stopped and deleted at the end."""
    root = Path(tempfile.mkdtemp(prefix="conduit-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, PG_USER, PG_USER)
    server = PostgresServer(root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port``. ``stall()`` turns it into a black hole, as a
    network partition does: connections stay open but nothing gets through either way, and new ones
    are accepted and never answered. ``resume()`` drops every connection (the sessions behind a
    partition are lost) and forwards again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        writers = {client_writer}
        self._writers.add(client_writer)
        try:
            if not self._flowing.is_set():
                await client_reader.read()  # accepted, never answered: until either side closes
                return
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            writers.add(upstream_writer)
            self._writers.add(upstream_writer)
            # When either direction ends (a side closed, or resume() dropped them), both close.
            await asyncio.gather(
                self._pipe(client_reader, upstream_writer),
                self._pipe(upstream_reader, client_writer),
                return_exceptions=True,
            )
        except OSError:
            pass  # the server is down: the client's connection is closed below
        finally:
            for writer in writers:
                writer.close()
            self._writers -= writers

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()  # held while stalled; dropped if resume() closed the writer
                if writer.is_closing():
                    return
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        self._flowing.set()

    async def close(self) -> None:
        self.resume()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a new app with ``settings``, run as a server runs it (lifespan). Unlike the suite's
    usual client, it lets 503s through for the test to check; an unhandled error (a 500) still raises."""
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test/api/v1") as client,
    ):
        client.app = app  # type: ignore[attr-defined]
        yield client
        await jobs_done(app)


# What a 503 must never show: the driver, the database, SQL, internals.
LEAKS = ("asyncpg", "sqlalchemy", "psycopg", "postgres", "sqlite", "SELECT", "UPDATE", "INSERT", "Traceback",
         "Error", "refused", "127.0.0.1")  # fmt: skip


def assert_unavailable(response: httpx.Response) -> dict[str, Any]:
    """``response`` is the 503 problem document: RFC 9457 and RealWorld ``errors``, ``Retry-After``,
    and nothing internal. Its body."""
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1
    problem: dict[str, Any] = response.json()
    assert problem["status"] == 503 and problem["code"] == "service_unavailable"
    assert problem["title"] == "Service Unavailable"
    assert problem["errors"] == {"body": [problem["detail"]]}
    for leak in LEAKS:
        assert leak not in response.text
    return problem


class JsonLogs:
    """Every line logged while entered, rendered as in production (JSON, with the request id bound to
    lines logged during a request) and parsed."""

    def __init__(self) -> None:
        self._stream = io.StringIO()
        self._saved: tuple[list[logging.Handler], int] | None = None

    def __enter__(self) -> JsonLogs:
        root = logging.getLogger()
        self._saved = (root.handlers[:], root.level)
        configure_logging("INFO", self._stream, log_format="json")
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._saved is not None
        root = logging.getLogger()
        root.handlers[:], level = self._saved
        root.setLevel(level)

    def lines(self, event: str = "") -> list[dict[str, Any]]:
        """The lines whose message contains ``event``."""
        parsed = [orjson.loads(line) for line in self._stream.getvalue().splitlines()]
        return [line for line in parsed if event in str(line.get("event", ""))]
