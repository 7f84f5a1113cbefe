"""The read cache: Redis when ``CONDUIT_REDIS_URL`` is set (shared by every worker), otherwise an
in-process LRU with a TTL (cachetools).

Entries live under a content *generation*. Every committed write that changes shared data bumps it
(``invalidate``), which makes every older entry unreachable at once; they then expire by TTL. This
trades some hit rate after each write for invalidation that is obviously complete: a read that
follows a write, by anyone on any worker, never sees the data from before it. Only shared data is
cached; per-viewer fields (``favorited``, ``following``) never are.

Redis failures never fail a request: the cache then behaves as empty, and the generation is bumped
once Redis answers again, so nothing cached before the outage is served after it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import redis.asyncio
from cachetools import TTLCache
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.metrics import CACHE_HITS, CACHE_MISSES
from app.core.profiling import record_cache

logger = logging.getLogger("conduit.cache")

# Set in a session's ``info`` by services whose writes change cached (shared) data; the request's
# unit of work invalidates the cache once the transaction has committed.
CHANGED = "conduit.cache.changed"

REDIS_TIMEOUT = 0.5  # seconds: a hung Redis must not hang the reads it is meant to speed up


def mark_changed(session: AsyncSession) -> None:
    """Note that this unit of work changes shared, cached data (invalidated after its commit)."""
    session.info[CHANGED] = True


class Backend(Protocol):
    async def lookup(self, generation_key: str, prefix: str, name: str) -> tuple[int, bytes | None]:
        """The current generation and the entry ``{prefix}:{generation}:{name}`` (or ``None``)."""
        ...

    async def set(self, key: str, value: bytes, ttl: int) -> None: ...
    async def incr(self, key: str) -> int: ...
    async def close(self) -> None: ...


class MemoryBackend:
    def __init__(self, max_entries: int, ttl: int) -> None:
        self._entries: TTLCache[str, bytes] = TTLCache(maxsize=max_entries, ttl=ttl)
        self._counters: dict[str, int] = {}

    async def lookup(self, generation_key: str, prefix: str, name: str) -> tuple[int, bytes | None]:
        generation = self._counters.get(generation_key, 0)  # counters never expire, as INCR in Redis
        return generation, self._entries.get(f"{prefix}:{generation}:{name}")

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        self._entries[key] = value  # one TTL for all entries, fixed at construction

    async def incr(self, key: str) -> int:
        self._counters[key] = self._counters.get(key, 0) + 1
        return self._counters[key]

    async def close(self) -> None:
        self._entries.clear()


class RedisBackend:
    def __init__(self, url: str) -> None:
        self._client = redis.asyncio.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT, retry_on_timeout=False
        )
        # One round trip per lookup instead of two (the generation, then the entry). The entry's key is
        # computed in the script, so this needs a single Redis, not a cluster.
        self._lookup = self._client.register_script(
            "local g = redis.call('GET', KEYS[1]) or '0' "
            "return {g, redis.call('GET', ARGV[1] .. ':' .. g .. ':' .. ARGV[2])}"
        )

    async def lookup(self, generation_key: str, prefix: str, name: str) -> tuple[int, bytes | None]:
        generation, value = await self._lookup(keys=[generation_key], args=[prefix, name])
        return int(generation), value

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        await self._client.set(key, value, ex=ttl)

    async def incr(self, key: str) -> int:
        return int(await self._client.incr(key))

    async def close(self) -> None:
        await self._client.aclose()


class Cache:
    def __init__(self, settings: Settings, backend: Backend | None = None) -> None:
        self.enabled = settings.cache_enabled
        self._ttl = settings.cache_ttl
        self._prefix = f"{settings.cache_prefix}:cache"
        self._backend: Backend = backend or (
            RedisBackend(settings.redis_url)
            if settings.redis_url
            else MemoryBackend(settings.cache_max_entries, settings.cache_ttl)
        )
        self._loading: dict[str, asyncio.Future[bytes]] = {}
        self._stale = False  # set by a failure: bump the generation before trusting the cache again
        self.hits = self.misses = self.errors = 0

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        self._stale = True
        logger.warning("cache backend unavailable (%s); serving without cache", type(exc).__name__)

    async def get_or_load(
        self,
        name: str,
        load: Callable[[], Awaitable[bytes]],
        siblings: Callable[[], dict[str, bytes]] | None = None,
    ) -> tuple[bytes, bool]:
        """The cached value of ``name``, or ``load()``'s (stored for next time). Also says whether it hit.

        Concurrent misses of one key in this process share a single ``load()`` (no stampede). After a
        load, ``siblings()`` may name more entries derived from the same data; they are stored under
        the same generation (one looked up later could be newer than the data they came from).
        """
        if not self.enabled:
            return await load(), False
        generation_key = f"{self._prefix}:generation"
        try:
            if self._stale:  # after a failure: nothing cached before it may be served
                await self._backend.incr(generation_key)
                self._stale = False
            generation, value = await self._backend.lookup(generation_key, self._prefix, name)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return await load(), False
        key = f"{self._prefix}:{generation}:{name}"
        if value is not None:
            self.hits += 1
            CACHE_HITS.inc()
            record_cache(hit=True)
            return value, True
        self.misses += 1
        CACHE_MISSES.inc()
        record_cache(hit=False)
        if (pending := self._loading.get(key)) is not None:
            try:
                return await asyncio.shield(pending), False
            except asyncio.CancelledError:
                if not pending.cancelled():  # this request itself was cancelled
                    raise
            except Exception:
                pass
            return await load(), False  # the request that was loading failed: load for ourselves
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
            future.set_result(value)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: nobody logs it as lost
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._loading[key]
        entries = {key: value}
        if siblings is not None:
            entries.update({f"{self._prefix}:{generation}:{n}": v for n, v in siblings().items()})
        try:
            for entry_key, entry in entries.items():
                await self._backend.set(entry_key, entry, self._ttl)
        except (RedisError, OSError) as exc:
            self._failed(exc)
        return value, False

    async def invalidate(self) -> None:
        """Make every entry cached so far unreachable (after a committed write to shared data)."""
        if not self.enabled:
            return
        try:
            await self._backend.incr(f"{self._prefix}:generation")
        except (RedisError, OSError) as exc:
            self._failed(exc)

    async def close(self) -> None:
        await self._backend.close()
