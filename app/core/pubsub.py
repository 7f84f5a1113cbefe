"""Fan-out of live messages to the connections subscribed to a channel, in this process or in all.

Without ``CONDUIT_REDIS_URL`` messages stay in the process (one worker, the embedded default). With
it, every process holds one Redis connection pattern-subscribed to all of this deployment's channels
(subscribed once at start-up, so a local subscription is live the moment it is registered) and hands
each message to its local subscribers. Every process therefore sees every message: simple, and right
for the size of this service; sharding channels across connections is the next step if it is not.
Redis pub/sub is fire-and-forget: a message published while a process is disconnected is lost to it,
which clients absorb by reloading through REST after a reconnect (see docs/realtime.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Protocol

import redis.asyncio
from redis.exceptions import RedisError

from app.core.config import Settings

logger = logging.getLogger("conduit.pubsub")

Listener = Callable[[bytes], None]  # called on the event loop; must not block


class PubSub(Protocol):
    async def start(self) -> None: ...
    async def publish(self, channel: str, message: bytes) -> None: ...
    def subscribe(self, channel: str, listener: Listener) -> Callable[[], None]:
        """Register ``listener`` for ``channel``; returns the function that unregisters it."""
        ...

    async def close(self) -> None: ...


class _Local:
    """The subscribers of this process, by channel."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[Listener]] = {}

    def subscribe(self, channel: str, listener: Listener) -> Callable[[], None]:
        self._listeners.setdefault(channel, set()).add(listener)

        def unsubscribe() -> None:
            listeners = self._listeners.get(channel)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._listeners[channel]

        return unsubscribe

    def deliver(self, channel: str, message: bytes) -> None:
        for listener in tuple(self._listeners.get(channel, ())):
            try:
                listener(message)
            except Exception:  # one broken subscriber must not starve the others
                logger.exception("pub/sub listener failed")

    def count(self) -> int:
        return sum(len(listeners) for listeners in self._listeners.values())


class MemoryPubSub(_Local):
    async def start(self) -> None:
        return None

    async def publish(self, channel: str, message: bytes) -> None:
        self.deliver(channel, message)

    async def close(self) -> None:
        self._listeners.clear()


class RedisPubSub(_Local):
    RECONNECT_DELAY = 1.0  # seconds between attempts while Redis is away

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__()
        self._client = redis.asyncio.Redis.from_url(url)
        self._prefix = f"{prefix}:events:"
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Subscribe (waiting for Redis to confirm), then keep reading in the background."""
        self._reader = asyncio.create_task(self._read_forever(), name="conduit-pubsub-reader")
        waiter = asyncio.create_task(self._subscribed.wait())
        done, _ = await asyncio.wait({waiter, self._reader}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            logger.error("pub/sub: no subscription confirmed by Redis yet; retrying in the background")

    async def _read_forever(self) -> None:
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.psubscribe(f"{self._prefix}*")
                async for message in pubsub.listen():
                    kind = message["type"]
                    if kind == "psubscribe":
                        self._subscribed.set()
                    elif kind == "pmessage":
                        channel = message["channel"].decode()[len(self._prefix) :]
                        self.deliver(channel, message["data"])
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                logger.warning("pub/sub connection lost (%s); reconnecting", type(exc).__name__)
            finally:
                with suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(self.RECONNECT_DELAY)

    async def publish(self, channel: str, message: bytes) -> None:
        await self._client.publish(self._prefix + channel, message)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with suppress(asyncio.CancelledError):
                await self._reader
        await self._client.aclose()


def create_pubsub(settings: Settings) -> PubSub:
    if settings.redis_url:
        return RedisPubSub(settings.redis_url, settings.cache_prefix)
    return MemoryPubSub()


@contextmanager
def subscription(pubsub: PubSub, channel: str, listener: Listener) -> Iterator[None]:
    unsubscribe = pubsub.subscribe(channel, listener)
    try:
        yield
    finally:
        unsubscribe()
