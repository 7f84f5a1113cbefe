"""HTTP caching for reads: weak ETags, ``If-None-Match`` → 304, and ``Cache-Control`` for anonymous reads.

A pure ASGI middleware over successful GET/HEAD responses under the API. It hashes the body the
endpoint produced (for cached documents, bytes taken straight from the cache), so a client holding
the current version gets a bodiless 304. Responses that carry an ETag of their own (files, streamed
rather than held in memory) pass through untouched. Authenticated responses are ``private, no-cache``
(set by the security headers middleware, outside this one): the browser may keep them but must
revalidate, which the ETag makes cheap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

READ_METHODS = frozenset({"GET", "HEAD"})


def weak_etag(body: bytes) -> str:
    return f'W/"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison against any listed tag, or ``*``."""
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in candidates or etag.removeprefix("W/") in candidates


class HttpCacheMiddleware:
    def __init__(
        self, app: ASGIApp, *, prefix: str, public_max_age: int, is_credential: Callable[[str], bool]
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.is_credential = is_credential  # responses carrying tokens: never cached, never tagged
        self.public_cache_control = f"public, max-age={public_max_age}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in READ_METHODS
            or not scope["path"].startswith(self.prefix)
            or self.is_credential(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        request_headers = Headers(scope=scope)
        anonymous = "authorization" not in request_headers
        if_none_match = request_headers.get("if-none-match")
        start: Message | None = None
        chunks: list[bytes] = []

        async def send_with_etag(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                # A response with a validator of its own (a file download) streams through unbuffered.
                if message["status"] != 200 or "etag" in Headers(raw=message.get("headers", [])):
                    await send(message)
                    return
                start = message
                return
            if start is None:  # not a response we handle: pass through
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            headers = MutableHeaders(scope=start)
            etag = weak_etag(body)
            headers["ETag"] = etag
            if anonymous and "cache-control" not in headers:
                headers["Cache-Control"] = self.public_cache_control
            if if_none_match and etag_matches(if_none_match, etag):
                del headers["content-length"]
                if "content-type" in headers:
                    del headers["content-type"]
                await send({**start, "status": 304})
                await send({"type": "http.response.body", "body": b""})
                return
            await send(start)
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, send_with_etag)
