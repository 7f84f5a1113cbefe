"""The cost of the observability middleware per request, in process (no server, no network):

    uv run python -m bench.observability

A bare ASGI app answering 200 is called 100,000 times directly and through ``ObservabilityMiddleware``
(request id, metrics, access line), with the access log off (CONDUIT_LOG_LEVEL=WARNING, as the load
benchmark runs) and on (INFO, rendered as JSON into memory). The difference is the middleware's cost.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from typing import Any

from app.core.logging import configure_logging
from app.core.observability import ObservabilityMiddleware

REQUESTS = 100_000


async def bare(_scope: Any, _receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def discard(_message: Any) -> None:
    pass


def scope() -> dict[str, Any]:
    headers = [(b"host", b"localhost"), (b"accept", b"*/*"), (b"user-agent", b"wrk")]
    return {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/tags",
        "headers": headers,
        "client": ("10.0.0.1", 1),
    }


async def microseconds_per_request(app: Any) -> float:
    started = time.perf_counter()
    for _ in range(REQUESTS):
        await app(scope(), receive, discard)
    return (time.perf_counter() - started) / REQUESTS * 1e6


async def main() -> None:
    wrapped = ObservabilityMiddleware(bare, routes=[], metrics_enabled=True)
    for level in ("WARNING", "INFO"):
        configure_logging(level, io.StringIO(), log_format="json")
        logging.getLogger("conduit").setLevel(level)
        await microseconds_per_request(wrapped)  # warm-up
        plain, observed = await microseconds_per_request(bare), await microseconds_per_request(wrapped)
        cost = observed - plain
        print(f"log level {level}: {cost:.1f} µs per request ({plain:.1f} bare, {observed:.1f} wrapped)")


if __name__ == "__main__":
    asyncio.run(main())
