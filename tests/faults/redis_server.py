"""A throwaway Redis server for fault tests, and a TCP proxy in front of it that a test can cut.

The Redis fault tests stop, restart and partition *this* server, never the machine's shared one on
6379: ``redis-server`` on a free port of 127.0.0.1, with no persistence (``--save ''``, no AOF), so
a restart comes back empty. The proxy runs its own event loop in a thread, so it keeps forwarding
(or refusing) whatever the test's loop is doing, and the apps under test reach Redis only through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from enum import Enum
from pathlib import Path
from typing import Any

import redis

# Bounds every wait for a server, so that one that never comes up fails the test instead of hanging it.
PATIENCE = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """``redis-server`` on a port of its own; ``stop()`` and ``start()`` again (same port, empty)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self._workdir / f"redis-{self.port}.log").open("ab")
        with log:
            self._process = subprocess.Popen(
                # Empty --save and no AOF: nothing survives a restart. Only loopback.
                [
                    *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", str(self._workdir), "--daemonize", "no"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + PATIENCE
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        with contextlib.closing(client):
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self._process.returncode}")
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Kill it (as a crash would): every client connection breaks, and all data is gone."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=PATIENCE)
        self._process = None

    def client(self) -> redis.Redis:
        """A direct client (not through any proxy), for the test to look at what is stored."""
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=5)


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Mode(Enum):
    OPEN = "open"  # forwards both ways
    CUT = "cut"  # live connections are reset; new ones are accepted and reset at once
    BLACKHOLE = "blackhole"  # connections are accepted, but nothing moves either way until restored


class TcpProxy:
    """127.0.0.1:``port`` forwarding to 127.0.0.1:``target_port``, with the network faults of ``Mode``.

    A blackhole holds the bytes back rather than dropping them, as TCP does across a network that
    silently loses packets: restored in time, the connections carry on where they were.
    ``accepted`` counts the connections clients opened, so a test can see how often they retried.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepted = 0
        self.mode = Mode.OPEN
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="redis-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()  # set while OPEN; only touched on the proxy's own loop
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()  # one per client connection

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._thread.start()
        self._call(self._start())

    def close(self) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=PATIENCE)
        self._loop.close()

    def cut(self) -> None:
        """Reset every connection and every new one (as a Redis that died, or a network that refuses)."""
        self._call(self._set(Mode.CUT))

    def blackhole(self) -> None:
        """Move nothing from now on and close nothing (as a network that silently drops packets)."""
        self._call(self._set(Mode.BLACKHOLE))

    def restore(self) -> None:
        self._call(self._set(Mode.OPEN))

    def _call(self, work: Coroutine[Any, Any, None]) -> None:
        future: Future[None] = asyncio.run_coroutine_threadsafe(work, self._loop)
        future.result(timeout=PATIENCE)

    async def _start(self) -> None:
        self._flowing.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._set(Mode.CUT)
        self._flowing.set()  # wakes what was held: each finds its connection reset, and ends
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=PATIENCE)
        await self._server.wait_closed()

    async def _set(self, mode: Mode) -> None:
        self.mode = mode
        if mode is Mode.OPEN:
            self._flowing.set()
            return
        self._flowing.clear()
        if mode is Mode.CUT:
            self._reset_all()

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            await self._forward(reader, writer)
        finally:
            self._handlers.discard(handler)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode is Mode.CUT:
            _reset(writer)
            return
        self._writers.add(writer)
        if self.mode is Mode.BLACKHOLE:
            # Its SYN would have been lost: the connection never forms. Held (the client times out)
            # until the network is back, then reset, never forwarded.
            await self._flowing.wait()
            self._writers.discard(writer)
            _reset(writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:  # the server is down: so is the connection
            self._writers.discard(writer)
            _reset(writer)
            return
        self._writers.add(upstream_writer)
        await asyncio.gather(
            self._pump(reader, upstream_writer), self._pump(upstream_reader, writer), return_exceptions=True
        )
        for end in (writer, upstream_writer):
            self._writers.discard(end)
            _reset(end)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy until the sender closes, then pass the close on after the data, as TCP does (a command
        sent just before its client gave up still arrives), holding everything back while the proxy
        is not open. A broken end resets the other."""
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                if writer.is_closing():
                    return
                writer.write(data)
                await writer.drain()
            await self._flowing.wait()
            if not writer.is_closing() and writer.can_write_eof():
                writer.write_eof()
        except OSError:
            _reset(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with an RST: no graceful goodbye."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextlib.contextmanager
def tcp_proxy(target_port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(target_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()
