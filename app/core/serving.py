"""How ``conduit serve`` runs uvicorn, so that a shutdown loses no request that reached the server.

Stock uvicorn (0.54) drops requests on SIGTERM in four ways, each seen under load in
``tests/ops/test_shutdown_under_load.py``:

- It closes every idle keep-alive connection at once. A request the client has just sent on one (in
  the socket's buffer, or on the wire) is then never answered, and closing a socket with unread data
  makes the kernel answer with a reset. Here an idle connection gets ``IDLE_GRACE`` seconds: a request
  arriving in that time is served (with ``Connection: close``); then it is closed gracefully.
- It closes a connection right after its last response (``Connection: close``), or when its keep-alive
  expires, with ``close()``: anything the client sent meanwhile turns the close into a reset, which can
  also destroy the response still on its way. Here every close is graceful (a *lingering close*, as
  nginx does): send FIN, read and discard what still comes until the client closes its end or
  ``LINGER`` seconds pass, then close. A client whose request crossed the FIN sees the connection
  closed without a response, a request the server provably never started, never a reset.
- It closes the listening socket, and the kernel resets every connection it has completed but the
  server has not accepted yet (the listen queue): their clients had connected and sent a request. Here
  the listener takes those connections in just before it closes (``_Listener``), and they are served
  like any other, with ``Connection: close``.
- With ``--workers N``, the supervising process keeps its copy of the listening socket open until the
  workers have exited: the kernel keeps completing connections that no worker will ever accept, and
  resets them all at the end. Here the supervisor closes its copy first, so that connection attempts are
  refused as soon as the workers stop listening.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvloop
from uvicorn import Config, Server
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors import ChangeReload, Multiprocess

logger = logging.getLogger("uvicorn.error")  # with uvicorn's own lines about the shutdown

# Seconds an idle keep-alive connection may still bring one request once shutdown has begun. A client
# using its connection sends within milliseconds; one idle longer than this finds it closed.
IDLE_GRACE = 1.0
# Seconds a closing connection waits for the client to close its end, discarding what it receives.
LINGER = 2.0


class _CycleTransport(asyncio.Transport):
    """The transport a request's response is written to: the connection's own, except that closing it
    (after a ``Connection: close`` response, or a failed one) closes the connection gracefully."""

    def __init__(self, protocol: GracefulHttpProtocol) -> None:
        super().__init__()
        self._protocol = protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._protocol.transport.write(data)

    def is_closing(self) -> bool:
        return self._protocol.transport.is_closing()

    def close(self) -> None:
        self._protocol.close_gracefully()


class GracefulHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with graceful closes and a grace period for idle connections at
    shutdown (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shutting_down = False
        self._closing = False
        self._idle_close: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # our FIN is on its way: nothing more is answered, so nothing more is started
        if self._idle_close is not None:  # a request is coming in on an idle connection: serve it
            self._idle_close.cancel()
            self._idle_close = None
        super().data_received(data)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.cycle is not None and not self.cycle.response_started:
            self.cycle.transport = _CycleTransport(self)
            if self._shutting_down:
                self.cycle.keep_alive = False  # answered with Connection: close, then closed

    def shutdown(self) -> None:
        """Called once by the server when shutdown begins: a request in progress is answered with
        ``Connection: close``; an idle connection gets ``IDLE_GRACE`` seconds to bring one more."""
        self._shutting_down = True
        if self._closing or self.transport is None:  # not connected yet: connection_made starts the grace
            return
        if self.cycle is None or self.cycle.response_complete:
            self._idle_close = self.loop.call_later(IDLE_GRACE, self.close_gracefully)
        else:
            self.cycle.keep_alive = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._shutting_down:  # taken from the listen queue at shutdown (_Listener)
            self._idle_close = self.loop.call_later(IDLE_GRACE, self.close_gracefully)

    def on_response_complete(self) -> None:
        if self._closing:  # closing after this response: pipelined requests are not answered
            self.pipeline.clear()
        super().on_response_complete()
        if self._closing:
            self._unset_keepalive_if_required()  # armed by uvicorn for a connection that stays open

    def timeout_keep_alive_handler(self) -> None:
        self.close_gracefully()

    def close_gracefully(self) -> None:
        """Send FIN once the pending writes are out, keep reading (and discarding) until the client
        closes its end, and close after ``LINGER`` seconds at the latest: closing a socket that still
        has unread data would send a reset instead."""
        if self._closing or self.transport.is_closing():
            return
        self._closing = True
        self._unset_keepalive_if_required()
        if self._idle_close is not None:
            self._idle_close.cancel()
            self._idle_close = None
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()  # the client's FIN then makes the transport close itself (eof_received)
        self.flow.resume_reading()
        self._linger = self.loop.call_later(LINGER, self.transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._idle_close, self._linger):
            if timer is not None:
                timer.cancel()
        self._idle_close = self._linger = None
        super().connection_lost(exc)


class _Listener(asyncio.AbstractServer):
    """A listening server whose ``close()`` first accepts the connections waiting in the kernel's listen
    queue (which closing the socket would reset) and serves them as connections of a server that is
    shutting down. Only the connections completed in the microseconds between that last ``accept()``
    and the close are still reset: no listening socket can refuse new connections and keep its queue."""

    def __init__(
        self, server: asyncio.AbstractServer, protocol_factory: Callable[[], asyncio.BaseProtocol]
    ) -> None:
        self._server = server
        self._protocol_factory = protocol_factory
        self._taking_in: set[asyncio.Task[Any]] = set()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(getattr(self._server, "sockets", ()))

    def _draining_protocol(self) -> asyncio.BaseProtocol:
        protocol = self._protocol_factory()
        if isinstance(protocol, GracefulHttpProtocol):
            protocol.shutdown()
        return protocol

    def _accept_queued(self) -> list[socket.socket]:
        queued: list[socket.socket] = []
        for listening in self.sockets:
            # A descriptor of our own for the same socket: the loop's stays as it is until close().
            with socket.socket(fileno=os.dup(listening.fileno())) as sock:
                sock.setblocking(False)
                while True:
                    try:
                        connection, _ = sock.accept()
                    except ConnectionAbortedError:
                        continue  # the client gave up while queued
                    except OSError:  # BlockingIOError once the queue is empty
                        break
                    queued.append(connection)
        return queued

    def close(self) -> None:
        queued = self._accept_queued()
        self._server.close()  # at once after the last accept: the socket is closed (by its last holder)
        if queued:
            logger.info("Serving %d connection(s) taken from the listen queue", len(queued))
        loop = self._server.get_loop()
        for connection in queued:
            connection.setblocking(False)
            task = loop.create_task(loop.connect_accepted_socket(self._draining_protocol, connection))
            self._taking_in.add(task)
            task.add_done_callback(self._taken_in)

    def _taken_in(self, task: asyncio.Task[Any]) -> None:
        self._taking_in.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.debug("A connection from the listen queue was lost: %s", type(error).__name__)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._server.get_loop()

    def is_serving(self) -> bool:
        return self._server.is_serving()

    async def start_serving(self) -> None:
        await self._server.start_serving()

    async def serve_forever(self) -> None:
        await self._server.serve_forever()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()


class _Loop(uvloop.Loop):
    """uvloop, whose servers are ``_Listener`` objects."""

    async def create_server(  # type: ignore[override]
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], *args: Any, **kwargs: Any
    ) -> asyncio.AbstractServer:
        server = await super().create_server(protocol_factory, *args, **kwargs)
        return _Listener(server, protocol_factory)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The event loop factory of ``conduit serve`` (``uvicorn.Config(loop=...)``)."""
    return _Loop()


class _Supervisor(Multiprocess):
    """uvicorn's supervisor of ``--workers N``, closing its copy of the listening socket before it
    stops the workers: the socket closes when the last worker stops listening, so that later
    connection attempts are refused instead of queued for nobody and reset at exit."""

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().terminate_all()


def run(config: Config) -> None:
    """Serve ``config`` as ``uvicorn.run`` would, with the supervisor above for several workers."""
    server = Server(config)
    try:
        if config.should_reload:
            ChangeReload(config, target=server.run, sockets=[config.bind_socket()]).run()
        elif config.workers > 1:
            _Supervisor(config, sockets=[config.bind_socket()]).run()
        else:
            config.load_app()
            server.run()
    except KeyboardInterrupt:
        pass
    if not server.started and not config.should_reload and config.workers == 1:
        sys.exit(STARTUP_FAILURE)
