"""The ways Redis goes away in the fault tests, as fixtures' parameters: each a URL for the apps and
a pair of actions, ``fail()`` and ``restore()``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.faults.redis_server import RedisServer, redis_server, tcp_proxy

# cut: the network resets every connection (a crash, a firewall that rejects); blackhole: it drops
# every packet silently (only timeouts tell); restart: Redis is killed and comes back empty.
FAULTS = ["cut", "blackhole", "restart"]


@dataclass
class Fault:
    name: str
    url: str  # what the apps are configured with
    fail: Callable[[], None]
    restore: Callable[[], None]
    server: RedisServer


@contextmanager
def fault(name: str, workdir: Path) -> Iterator[Fault]:
    """A throwaway Redis, and in front of it (except for ``restart``) a proxy to cut."""
    with redis_server(workdir) as server:
        if name == "restart":
            yield Fault(name, server.url, server.stop, server.start, server)
            return
        with tcp_proxy(server.port) as proxy:
            fail = proxy.cut if name == "cut" else proxy.blackhole
            yield Fault(name, proxy.url, fail, proxy.restore, server)
