"""Fan-out of live messages to the connections subscribed to a channel, in this process or in all.

Without ``CONDUIT_REDIS_URL`` messages stay in the process (one worker, the embedded default). With
it, every process holds one Redis connection pattern-subscribed to all of this deployment's channels
(subscribed once at start-up, so a local subscription is live the moment it is registered) and hands
each message to its local subscribers. Every process therefore sees every message: simple, and right
for the size of this service; sharding channels across connections is the next step if it is not.

Redis pub/sub is fire-and-forget: a message published while a process is disconnected is lost to it.
So while Redis is away, a publish is delivered to this process's own subscribers directly (same-process
fan-out keeps working); the listener reconnects with backoff, and once Redis has confirmed the new
subscription, every local subscriber gets :data:`RESUBSCRIBED` (a ``resync`` for its client, which
reloads through REST: see docs/realtime.md). A connection that has gone silent is pinged, and given
up when the answer does not come within the same interval (a network that drops packets closes nothing).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Protocol

import redis.asyncio
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.core.config import Settings
from app.core.redis_link import RedisLink, backoff, create_client
from app.utils.tasks import cancel_and_wait

logger = logging.getLogger("conduit.pubsub")

Listener = Callable[[bytes], None]  # called on the event loop; must not block

# Handed to every local subscriber once a lost Redis subscription is back: whatever other processes
# published in between never arrived. Never published, never sent to a client as it is.
RESUBSCRIBED = b'{"type":"resubscribed"}'

DIRECT_MEMORY = 1024  # messages remembered as delivered directly (see RedisPubSub._delivered_directly)


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

    def deliver_to_all(self, message: bytes) -> None:
        for channel in tuple(self._listeners):
            self.deliver(channel, message)

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
    def __init__(
        self,
        url: str,
        settings: Settings,
        link: RedisLink,
        on_resubscribed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self._publisher = create_client(url, settings)
        # The listener's client retries nothing by itself: redis-py would silently reconnect and
        # resubscribe, hiding from us (and from the clients) that messages were lost.
        self._listener: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
            url, socket_timeout=settings.redis_timeout, socket_connect_timeout=settings.redis_timeout
        )
        self._link = link
        self._on_resubscribed = on_resubscribed
        self._health_interval = settings.redis_health_check_interval
        self._backoff_max = settings.redis_backoff_max
        self._prefix = f"{settings.cache_prefix}:events:"
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._tried = asyncio.Event()  # the first attempt to subscribe has ended, either way
        # Messages delivered here directly, not through the listener. One may still come back through it
        # (a PUBLISH that timed out but reached Redis late, or went through while the subscription was
        # being confirmed): dropped then, so that local sockets get it once. Messages are unique (ids,
        # timestamps), so equality is enough.
        self._delivered_directly: OrderedDict[bytes, None] = OrderedDict()
        self.reconnections = 0  # subscriptions confirmed after the first

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    async def start(self) -> None:
        """Subscribe and keep reading in the background. Waits for the first attempt only: with Redis
        away, the process starts anyway (live events reach its own sockets until Redis is back)."""
        self._reader = asyncio.create_task(self._read_forever(), name="conduit-pubsub-reader")
        waiter = asyncio.create_task(self._tried.wait())
        await asyncio.wait({waiter, self._reader}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not self.subscribed:
            logger.error("pub/sub: Redis did not confirm the subscription; retrying in the background")

    async def _read_forever(self) -> None:
        attempt = 0
        while True:
            pubsub = self._listener.pubsub()
            try:
                await pubsub.psubscribe(f"{self._prefix}*")
                await self._listen(pubsub)
            except (RedisError, OSError) as exc:
                if self.subscribed:
                    attempt = 0
                    logger.warning("pub/sub connection lost (%s); reconnecting", type(exc).__name__)
                else:
                    attempt += 1
                self._subscribed.clear()
                self._link.failed(exc)
            finally:
                self._tried.set()
                with suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
            await asyncio.sleep(backoff(attempt, self._backoff_max))

    async def _listen(self, pubsub: redis.asyncio.client.PubSub) -> None:
        """Deliver until the connection fails. Silence is broken by a ping; an unanswered ping, or a
        subscription not confirmed, within the health-check interval ends the connection."""
        loop = asyncio.get_running_loop()
        heard = loop.time()
        waiting_since: float | None = heard  # for the subscription's confirmation first
        while True:
            now = loop.time()
            if waiting_since is None and now - heard >= self._health_interval:
                await pubsub.ping()
                waiting_since = now
            deadline = (heard if waiting_since is None else waiting_since) + self._health_interval
            if waiting_since is not None and now >= deadline:
                raise RedisTimeoutError("no answer from Redis within the health-check interval")
            message = await pubsub.get_message(timeout=max(deadline - now, 0.001))
            if message is None:
                continue
            heard, waiting_since = loop.time(), None
            kind = message["type"]
            if kind == "pmessage":
                data: bytes = message["data"]
                if self._delivered_directly and data in self._delivered_directly:
                    del self._delivered_directly[data]
                    continue
                self.deliver(message["channel"].decode()[len(self._prefix) :], data)
            elif kind == "psubscribe":
                await self._resubscribed()

    async def _resubscribed(self) -> None:
        """The subscription is (again) live: Redis works. First make the cache safe (a write may have
        missed its invalidation meanwhile), then count as subscribed, then tell the local subscribers
        they may have missed messages (none exist at start-up)."""
        if self._tried.is_set():
            self.reconnections += 1
        self._link.succeeded()
        if self._on_resubscribed is not None:
            await self._on_resubscribed()
        self._subscribed.set()
        self._tried.set()
        self.deliver_to_all(RESUBSCRIBED)

    async def publish(self, channel: str, message: bytes) -> None:
        """Through Redis to every process; while Redis is away (or this process is not subscribed), to
        this process's own subscribers directly. Never raises."""
        if self.subscribed or self._link.available():
            try:
                await self._publisher.publish(self._prefix + channel, message)
            except (RedisError, OSError) as exc:
                self._link.failed(exc)
            else:
                self._link.succeeded()
                if self.subscribed:
                    return  # our listener hands it to our subscribers
        self._delivered_directly[message] = None
        if len(self._delivered_directly) > DIRECT_MEMORY:
            self._delivered_directly.popitem(last=False)
        self.deliver(channel, message)

    async def close(self) -> None:
        if self._reader is not None:
            await cancel_and_wait(self._reader)
        await self._listener.aclose()
        await self._publisher.aclose()


def create_pubsub(
    settings: Settings,
    link: RedisLink | None = None,
    on_resubscribed: Callable[[], Awaitable[None]] | None = None,
) -> PubSub:
    """``on_resubscribed`` runs each time the Redis subscription is confirmed (the cache's bump)."""
    if settings.redis_url:
        return RedisPubSub(
            settings.redis_url, settings, link or RedisLink(settings.redis_backoff_max), on_resubscribed
        )
    return MemoryPubSub()


@contextmanager
def subscription(pubsub: PubSub, channel: str, listener: Listener) -> Iterator[None]:
    unsubscribe = pubsub.subscribe(channel, listener)
    try:
        yield
    finally:
        unsubscribe()
