"""The read cache: Redis when ``CONDUIT_REDIS_URL`` is set (shared by every worker), otherwise an
in-process LRU with a TTL (cachetools).

Entries live under a content *generation*. Every committed write that changes shared data bumps it
(``invalidate``), which makes every older entry unreachable at once; they then expire by TTL. This
trades some hit rate after each write for invalidation that is obviously complete: a read that
follows a write, by anyone on any worker, never sees the data from before it. Only shared data is
cached; per-viewer fields (``favorited``, ``following``) never are.

Redis failures never fail a request: the cache then behaves as empty (no lookups while the breaker
of app/core/redis_link.py is open). A write made meanwhile cannot bump the generation, so entries
from before it would be served again once Redis answers. Hence, in every process, any Redis failure
(a command, or the pub/sub connection dropping) makes the cache *stale*, and a stale cache bumps the
generation before its next lookup, and at once when the pub/sub listener has reconnected. Every
process holds that pub/sub connection, so every process sees an outage of Redis itself (a crash, a
restart, a network cut of the Redis host) and bumps before it reads again; an entry stored late by a
load that started before the outage lands under a generation that is no longer current. A
generation that is missing (Redis restarted empty, or the key was evicted) starts at a random
62-bit value rather than at 0, so a late store under a pre-restart generation cannot collide with a
post-restart one. The limit, documented in docs/reliability.md: a process cut off from a Redis that
the others still reach writes without invalidating, and until it reconnects (or ``CONDUIT_CACHE_TTL``
passes) the others may serve entries from before its writes.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import Protocol

from cachetools import TTLCache
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.metrics import CACHE_HITS, CACHE_MISSES
from app.core.profiling import record_cache
from app.core.redis_link import RedisLink, backoff, create_client
from app.utils.tasks import cancel_and_wait

# Set in a session's ``info`` by services whose writes change cached (shared) data; the request's
# unit of work invalidates the cache once the transaction has committed.
CHANGED = "conduit.cache.changed"

# Both scripts start a missing generation at a random value (ARGV's last): after Redis restarted empty,
# a generation handed out before the restart is never current again.
_LOOKUP = """
local g = redis.call('GET', KEYS[1])
if not g then
  g = ARGV[3]
  redis.call('SET', KEYS[1], g)
end
return {g, redis.call('GET', ARGV[1] .. ':' .. g .. ':' .. ARGV[2])}
"""
_BUMP = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
end
return redis.call('INCR', KEYS[1])
"""


def _fresh_generation() -> str:
    return str(secrets.randbelow(2**62))  # INCR has 2**63 - 1 as its ceiling: room for 2**62 bumps


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
    def __init__(self, url: str, settings: Settings) -> None:
        self._client = create_client(url, settings)
        # One round trip per lookup instead of two (the generation, then the entry). The entry's key is
        # computed in the script, so this needs a single Redis, not a cluster.
        self._lookup = self._client.register_script(_LOOKUP)
        self._bump = self._client.register_script(_BUMP)

    async def lookup(self, generation_key: str, prefix: str, name: str) -> tuple[int, bytes | None]:
        generation, value = await self._lookup(
            keys=[generation_key], args=[prefix, name, _fresh_generation()]
        )
        return int(generation), value

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        await self._client.set(key, value, ex=ttl)

    async def incr(self, key: str) -> int:
        return int(await self._bump(keys=[key], args=[_fresh_generation()]))

    async def close(self) -> None:
        await self._client.aclose()


class Cache:
    def __init__(
        self, settings: Settings, backend: Backend | None = None, link: RedisLink | None = None
    ) -> None:
        self.enabled = settings.cache_enabled
        self._ttl = settings.cache_ttl
        self._prefix = f"{settings.cache_prefix}:cache"
        self._generation_key = f"{self._prefix}:generation"
        self._backend: Backend = backend or (
            RedisBackend(settings.redis_url, settings)
            if settings.redis_url
            else MemoryBackend(settings.cache_max_entries, settings.cache_ttl)
        )
        self._link = link or RedisLink(settings.redis_backoff_max)
        self._backoff_max = settings.redis_backoff_max
        self._safe_failures = self._link.failures  # the link's failures that a bump has covered so far
        self._repair: asyncio.Task[None] | None = None
        self._loading: dict[str, asyncio.Future[bytes]] = {}
        self.hits = self.misses = self.errors = 0

    @property
    def stale(self) -> bool:
        """Whether Redis failed since the last bump: nothing cached before may be served."""
        return self._link.failures != self._safe_failures

    def _failed(self, exc: Exception) -> None:
        self.errors += 1
        self._link.failed(exc)
        self._repair_when_back()

    def _repair_when_back(self) -> None:
        """A write of this process may have missed its invalidation: bump as soon as Redis answers,
        without waiting for a read here (other processes read meanwhile)."""
        if self._repair is None or self._repair.done():
            self._repair = asyncio.get_running_loop().create_task(
                self._repair_loop(), name="conduit-cache-repair"
            )

    async def _repair_loop(self) -> None:
        attempt = 0
        while self.stale:
            await asyncio.sleep(backoff(attempt, self._backoff_max))
            attempt += 1
            try:
                await self._bump()
            except (RedisError, OSError) as exc:
                self.errors += 1
                self._link.failed(exc)

    async def _bump(self) -> None:
        """Bump the generation; this covers every failure seen before it was sent."""
        failures = self._link.failures
        await self._backend.incr(self._generation_key)
        self._safe_failures = max(self._safe_failures, failures)
        self._link.succeeded()

    async def bump_if_stale(self) -> None:
        """After Redis came back: make what was cached before the outage unreachable now, rather than
        at this process's next lookup (other processes may read before that)."""
        if not self.enabled or not self.stale:
            return
        try:
            await self._bump()
        except (RedisError, OSError) as exc:
            self._failed(exc)

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
        if not self.enabled or not self._link.available():
            return await load(), False
        try:
            if self.stale:  # after a failure: nothing cached before it may be served
                await self._bump()
            generation, value = await self._backend.lookup(self._generation_key, self._prefix, name)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return await load(), False
        self._link.succeeded()
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
        if not self._link.available():
            return value, False
        try:
            for entry_key, entry in entries.items():
                await self._backend.set(entry_key, entry, self._ttl)
        except (RedisError, OSError) as exc:
            self._failed(exc)
        return value, False

    async def invalidate(self) -> None:
        """Make every entry cached so far unreachable (after a committed write to shared data). Without
        Redis, the cache turns stale instead, and the bump happens once Redis answers."""
        if not self.enabled:
            return
        if not self._link.available():
            self._link.missed()
            self._repair_when_back()
            return
        try:
            await self._bump()
        except (RedisError, OSError) as exc:
            self._failed(exc)

    async def close(self) -> None:
        if self._repair is not None:
            await cancel_and_wait(self._repair)
        await self._backend.close()
