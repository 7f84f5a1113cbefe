"""``app/core/serving.py`` at the moments the load test (test_shutdown_under_load.py) only hits by
chance, made to happen: a request arriving on an idle keep-alive connection as shutdown begins, and a
connection still waiting in the listen queue when the listener closes. Stock uvicorn resets both."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from uvicorn import Config, Server
from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope

from app.core.serving import GracefulHttpProtocol, new_event_loop

PATIENCE = 60.0
REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


async def _hello(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"hello", "more_body": False})


@asynccontextmanager
async def _server() -> AsyncIterator[tuple[Server, int]]:
    """A uvicorn server of ``_hello`` with Conduit's protocol, started on a free port (its listener
    made by the running loop); shut down at the end if the test has not."""
    config = Config(
        _hello, host="127.0.0.1", port=0, http=GracefulHttpProtocol, lifespan="off", log_config=None
    )
    config.load()
    server = Server(config)
    server.lifespan = config.lifespan_class(config)  # what Server.serve() does first
    await server.startup()
    try:
        yield server, server.servers[0].sockets[0].getsockname()[1]
    finally:
        if not server.should_exit:
            server.should_exit = True
            await server.shutdown()


async def _response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE)
    return head.lower(), await asyncio.wait_for(reader.readexactly(5), PATIENCE)


async def test_an_idle_connection_answers_a_request_sent_as_shutdown_begins() -> None:
    async with _server() as (server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST)
        head, _ = await _response(reader)
        assert b"connection: close" not in head  # kept alive, and now idle

        server.should_exit = True
        shutdown = asyncio.create_task(server.shutdown())
        await asyncio.sleep(0)  # shutdown begins: the listener is closed, each connection told
        refused = False
        try:
            await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            refused = True
        assert refused

        writer.write(REQUEST)  # the client did not know yet
        head, body = await _response(reader)
        assert head.startswith(b"http/1.1 200") and b"connection: close" in head and body == b"hello"
        assert await asyncio.wait_for(reader.read(), PATIENCE) == b""  # then closed cleanly, not reset
        writer.close()
        await asyncio.wait_for(shutdown, PATIENCE)


def _read_until_closed(client: socket.socket) -> bytes:
    client.settimeout(PATIENCE)
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    return data


async def _serve_a_queued_connection() -> bytes:
    async with _server() as (server, port):
        # Connected and sent without yielding to the loop: the kernel has completed the connection,
        # the server has not accepted it.
        with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as client:
            client.sendall(REQUEST)
            reading = asyncio.create_task(asyncio.to_thread(_read_until_closed, client))
            server.should_exit = True
            # Awaited directly, not as a task: it closes the listener before the loop runs again.
            await server.shutdown()
            return await reading


def test_a_connection_in_the_listen_queue_is_served_when_the_listener_closes() -> None:
    with asyncio.Runner(loop_factory=new_event_loop) as runner:  # conduit serve's loop
        response = runner.run(_serve_a_queued_connection())
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower()
    assert body == b"hello"
