"""The request deadline: no request is worked on for longer than ``CONDUIT_REQUEST_TIMEOUT``.

Every dependency has a bound of its own (database statement, lock and connect timeouts, SMTP, S3,
Redis socket timeouts), and each fails its request with a 503 first. This is the last line: whatever
hangs, the client gets a 503 problem (with ``Retry-After``) once the deadline passes, and the work is
cancelled, so the unit of work rolls it back.

What it does not count, or cover:

- time spent waiting for the client's body (a slow upload): the clock stops while ``receive`` waits, so
  the deadline bounds the server's work, not the client's network;
- a response that has started (a file download, an export archive): from its first byte on, it is
  never cut, as it could no longer be turned into an error;
- WebSockets, which live as long as the client stays (they have heartbeats of their own).
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import RETRY_AFTER, problem_response

logger = logging.getLogger("conduit.errors")


class _Clock:
    """One request's deadline: a timer that, when it fires, cancels the request's task, unless the
    response has started, or time went to waiting for the client's body (then it fires again later,
    once the server's own work has used the whole budget). One timer per request, whatever happens:
    pausing the clock while the body arrives costs two clock readings, not a timer each."""

    __slots__ = (
        "_handle",
        "_loop",
        "_receive",
        "_send",
        "_started_at",
        "_task",
        "_waited",
        "_waiting_since",
        "body_received",
        "fired",
        "responded",
        "timeout",
    )

    def __init__(self, timeout: float, receive: Receive, send: Send) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._receive = receive
        self._send = send
        self.timeout = timeout
        self._started_at = self._loop.time()
        self._waited = 0.0  # seconds spent waiting for the body, so far
        self._waiting_since: float | None = None
        self.body_received = self.responded = self.fired = False
        self._handle = self._loop.call_at(self._started_at + timeout, self._expire)

    def _expire(self) -> None:
        if self.responded:
            return
        now = self._loop.time()
        waiting = 0.0 if self._waiting_since is None else now - self._waiting_since
        left = self.timeout - (now - self._started_at - self._waited - waiting)
        if left > 0:
            self._handle = self._loop.call_at(now + left, self._expire)
            return
        self.fired = True
        self._task.cancel()

    def uncancel(self) -> int:
        """Withdraw this clock's cancellation of the task: how many others remain (asyncio's count)."""
        return self._task.uncancel()

    def stop(self) -> None:
        self._handle.cancel()

    async def receive(self) -> Message:
        if self.body_received:  # any later receive() waits for a disconnect: the clock runs
            return await self._receive()
        self._waiting_since = self._loop.time()
        try:
            message = await self._receive()
        finally:
            self._waited += self._loop.time() - self._waiting_since
            self._waiting_since = None
        self.body_received = not message.get("more_body", False)
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.responded = True  # a response under way is never cut
        await self._send(message)


class RequestDeadlineMiddleware:
    def __init__(self, app: ASGIApp, *, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        clock = _Clock(self.timeout, receive, send)
        try:
            await self.app(scope, clock.receive, clock.send)
        except (asyncio.CancelledError, Exception):
            # A CancelledError, or whatever the cancelled work raised on its way out (a failed rollback).
            # Re-raised unless this clock cancelled the request, nothing else did too, and no response
            # has started (which only work that swallowed the cancellation could have done).
            if not clock.fired:
                raise
            if clock.uncancel() > 0 or clock.responded:
                raise
        else:
            if clock.fired:  # the work swallowed the cancellation and finished anyway
                clock.uncancel()
            return
        finally:
            clock.stop()
        logger.error("request deadline (%g s) passed on %s %s", self.timeout, scope["method"], scope["path"])
        response = problem_response(
            Request(scope),
            HTTPStatus.SERVICE_UNAVAILABLE,
            "the request took too long, please retry",
            code="service_unavailable",
            headers={"Retry-After": RETRY_AFTER},
        )
        await response(scope, receive, send)
