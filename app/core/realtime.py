"""One live WebSocket connection once authenticated: its bounded mailbox, delivery, heartbeat and expiry.

The pub/sub listener only appends to the connection's :class:`Mailbox`, so a slow client never holds
up the event loop or the other subscribers. Three tasks then share the socket: the reader (pongs,
disconnect), the writer (the mailbox) and the watchdog (pings, token expiry). Whichever ends first
ends the connection; the others are cancelled and awaited, so nothing outlives it. The protocol is
described in docs/realtime.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.types import Message
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from app.core.metrics import WEBSOCKET_CONNECTIONS
from app.core.pubsub import RESUBSCRIBED, PubSub, subscription

# Close codes (4000-4999 are the application's own, RFC 6455 §7.4.2).
CLOSE_UNAUTHORIZED = 4401  # no valid auth message in time, or the access token expired
CLOSE_FORBIDDEN_ORIGIN = 4403  # sent before the handshake is accepted: the client sees an HTTP 403
CLOSE_HEARTBEAT_TIMEOUT = 4408  # no pong to a ping before the next one was due

TASK_PREFIX = "conduit-ws:"  # names the tasks of each connection

READY = '{"type":"ready"}'
PING = '{"type":"ping"}'
RESYNC = b'{"type":"resync"}'
# Published on a user's channel when sessions end (logout, logout-all, password change, deactivation):
# not forwarded; it closes the sockets those sessions opened. See app/services/auth.py.
SESSIONS_ENDED = "sessions_ended"
_SESSIONS_ENDED_PREFIX = b'{"type":"sessions_ended"'


class Mailbox:
    """The messages waiting for one socket, at most ``size``. On overflow everything queued is dropped
    for a single resync: the client reloads through REST, which is bounded where the backlog is not.
    (A dropped ``RESUBSCRIBED`` is kept instead: it is a resync that also checks the session.)"""

    def __init__(self, size: int) -> None:
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(size)

    def put(self, message: bytes) -> None:
        """The pub/sub listener: never blocks, never raises."""
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            replacement = RESUBSCRIBED if message == RESUBSCRIBED else RESYNC
            while not self._queue.empty():
                if self._queue.get_nowait() == RESUBSCRIBED:
                    replacement = RESUBSCRIBED
            self._queue.put_nowait(replacement)

    async def get(self) -> bytes:
        return await self._queue.get()

    def __len__(self) -> int:
        return self._queue.qsize()


def parse(message: Message) -> dict[str, Any]:
    """A received frame (text or binary) as a JSON object; empty if it is anything else."""
    try:
        data = orjson.loads(message.get("text") or message.get("bytes") or b"")
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


class Connection:
    """Serves an accepted, authenticated socket subscribed to ``channel`` until either side ends it."""

    def __init__(
        self,
        websocket: WebSocket,
        pubsub: PubSub,
        channel: str,
        *,
        expires_at: datetime,
        issued_at: datetime,
        session_id: str | None,
        heartbeat_interval: float,
        queue_size: int,
        still_valid: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.websocket = websocket
        self.pubsub = pubsub
        self.channel = channel
        self.expires_at = expires_at
        self.issued_at = issued_at
        self.session_id = session_id
        self.heartbeat_interval = heartbeat_interval
        self.mailbox = Mailbox(queue_size)
        self.still_valid = still_valid
        self._send_lock = asyncio.Lock()  # one sender at a time: the writer and the watchdog's pings
        self._awaiting_pong = False

    async def serve(self) -> None:
        """Subscribe, announce ``ready``, deliver until the end, then close with the reason's code."""
        with (
            WEBSOCKET_CONNECTIONS.track_inprogress(),
            subscription(self.pubsub, self.channel, self.mailbox.put),
        ):
            try:
                await self.websocket.send_text(READY)  # only now: whatever is published next is delivered
            except WebSocketDisconnect:
                return
            works = (self._read(), self._write(), self._watch())
            tasks = [asyncio.create_task(work, name=f"{TASK_PREFIX}{self.channel}") for work in works]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                code = done.pop().result()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        if code is not None:
            await close(self.websocket, code)

    async def _send(self, text: str) -> None:
        async with self._send_lock:
            await self.websocket.send_text(text)

    async def _read(self) -> int | None:
        """Until the client disconnects; a pong answers the last ping, anything else is ignored."""
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return None
            if parse(message).get("type") == "pong":
                self._awaiting_pong = False

    async def _write(self) -> int | None:
        with suppress(WebSocketDisconnect):
            while True:
                message = await self.mailbox.get()
                if message == RESUBSCRIBED:
                    # A logout published while pub/sub was down never reached this process: ask the
                    # database whether the session still holds before carrying on.
                    if self.still_valid is not None and not await self.still_valid():
                        return CLOSE_UNAUTHORIZED
                    message = RESYNC
                elif message.startswith(_SESSIONS_ENDED_PREFIX):
                    if self._ended_by(orjson.loads(message)):
                        return CLOSE_UNAUTHORIZED
                    continue
                await self._send(message.decode())
        return None

    def _ended_by(self, event: dict[str, Any]) -> bool:
        """Whether a sessions-ended event covers this socket's token: its session was logged out, or
        every token issued before an instant was (``before``, in epoch milliseconds)."""
        if "session" in event:
            return event["session"] is not None and event["session"] == self.session_id
        return bool(self.issued_at.timestamp() * 1000 < event["before"])

    async def _watch(self) -> int | None:
        """Ping every interval; the close code once a ping went unanswered or the token expired."""
        loop = asyncio.get_running_loop()
        expires = loop.time() + (self.expires_at - datetime.now(UTC)).total_seconds()
        next_ping = loop.time() + self.heartbeat_interval
        while True:
            await asyncio.sleep(min(next_ping, expires) - loop.time())
            if loop.time() >= expires:
                return CLOSE_UNAUTHORIZED
            if self._awaiting_pong:
                return CLOSE_HEARTBEAT_TIMEOUT
            self._awaiting_pong = True
            next_ping += self.heartbeat_interval
            try:
                # A client that stopped reading blocks the send: it cannot answer in time either.
                async with asyncio.timeout_at(next_ping):
                    await self._send(PING)
            except TimeoutError:
                return CLOSE_HEARTBEAT_TIMEOUT
            except WebSocketDisconnect:
                return None


async def close(websocket: WebSocket, code: int) -> None:
    """Close with ``code`` unless the socket is already closed (the client may have left meanwhile)."""
    if WebSocketState.DISCONNECTED in (websocket.client_state, websocket.application_state):
        return
    with suppress(WebSocketDisconnect):
        await websocket.close(code)
