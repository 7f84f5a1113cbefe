"""The hardened HTTP surface, as pure ASGI middleware: proxy headers, trusted hosts, HTTPS redirect,
security and caching headers, and the request body size limit (see ``install_http_middleware``)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from http import HTTPStatus

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.httpsredirect import HTTPSRedirectMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.core.config import Settings
from app.core.docs import DOCS_PAGES
from app.core.errors import problem_response
from app.core.health import is_probe
from app.core.http_cache import HttpCacheMiddleware
from app.core.profiling import ProfilingMiddleware

API_PREFIX = "/api/v1"
# Responses that carry tokens or credentials, whatever the method: never stored by any cache.
CREDENTIAL_PATHS = frozenset(
    {f"{API_PREFIX}/users", f"{API_PREFIX}/users/login", f"{API_PREFIX}/user", f"{API_PREFIX}/user/avatar"}
)
CREDENTIAL_PREFIX = f"{API_PREFIX}/auth/"
# Upload routes cap their multipart bodies themselves while streaming them (app/api/v1/multipart.py).
UPLOAD_PATHS = re.compile(rf"{API_PREFIX}/(?:user/avatar|articles/[^/]+/images)")
MEDIA_PREFIX = "/media/"  # stored uploads (app/api/media.py)
SAFE_METHODS = frozenset({"GET", "HEAD"})
BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def carries_credentials(path: str) -> bool:
    return path in CREDENTIAL_PATHS or path.startswith(CREDENTIAL_PREFIX)


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": (
        "accelerometer=(), autoplay=(), camera=(), display-capture=(), geolocation=(), gyroscope=(), "
        "magnetometer=(), microphone=(), midi=(), payment=(), usb=()"
    ),
}
HSTS = "max-age=63072000; includeSubDomains"
API_CSP = "default-src 'none'; frame-ancestors 'none'"
# What the Swagger UI and ReDoc pages load (app/core/docs.py): scripts, styles and the favicon from this
# origin, the OpenAPI document and the token endpoint (fetch), images inlined as data: URIs by the
# bundles, and ReDoc's search worker (a blob:). Both inject inline styles, so styles need
# 'unsafe-inline'; inline scripts are allowed only by their hashes.
DOCS_CSP = (
    "default-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'; "
    "script-src 'self'{script_hashes}; "
    "style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; "
    "connect-src 'self'; "
    "worker-src blob:"
)
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def _docs_csp(page: bytes) -> str:
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(page)
    )
    return DOCS_CSP.format(script_hashes=hashes)


def _add_vary(headers: MutableHeaders, name: str) -> None:
    """Add ``name`` to Vary, merging all existing Vary headers into one."""
    values = [item.strip() for value in headers.getlist("vary") for item in value.split(",") if item.strip()]
    if "*" in values or name.lower() in {value.lower() for value in values}:
        return
    headers["Vary"] = ", ".join([*values, name])


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


# Encoded once: appended as they are to every response (this runs on every request).
_RAW_SECURITY_HEADERS = _raw(SECURITY_HEADERS)
# Uploaded images are embedded by front ends on other origins: the one header that differs.
_RAW_MEDIA_SECURITY_HEADERS = _raw({**SECURITY_HEADERS, "Cross-Origin-Resource-Policy": "cross-origin"})
_RAW_HSTS = _raw({"Strict-Transport-Security": HSTS})


def _add_headers(scope: Scope, message: Message, csp: str) -> None:
    raw = message.setdefault("headers", [])
    path, method = scope["path"], scope["method"]
    raw[:] = [header for header in raw if header[0].lower() != b"server"]
    raw.extend(_RAW_MEDIA_SECURITY_HEADERS if path.startswith(MEDIA_PREFIX) else _RAW_SECURITY_HEADERS)
    raw.append((b"content-security-policy", csp.encode("latin-1")))
    if scope["scheme"] == "https":
        raw.extend(_RAW_HSTS)
    headers = MutableHeaders(scope=message)

    authorized = "authorization" in Headers(scope=scope)
    if carries_credentials(path):
        headers["Cache-Control"] = "no-store"
    elif method in SAFE_METHODS and authorized and "cache-control" not in headers:
        headers["Cache-Control"] = "private, no-cache"
    if method in SAFE_METHODS and f"{path}/".startswith(f"{API_PREFIX}/"):
        _add_vary(headers, "Authorization")


class SecurityHeaders:
    """Adds the security and caching headers to the response sent through ``wrap(scope, send)``."""

    def __init__(self, docs_paths: Iterable[str]) -> None:
        self.docs_paths = frozenset(docs_paths)

    def wrap(self, scope: Scope, send: Send) -> Send:
        if scope["path"] in self.docs_paths:
            return self._wrap_docs_page(scope, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                _add_headers(scope, message, API_CSP)
            await send(message)

        return send_with_headers

    @staticmethod
    def _wrap_docs_page(scope: Scope, send: Send) -> Send:
        """Holds a (small) docs page back until complete, to allow its inline scripts by their hashes."""
        start: Message = {}
        body = bytearray()

        async def send_docs_page(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    _add_headers(scope, start, _docs_csp(bytes(body)))
                    await send(start)
                    await send({"type": "http.response.body", "body": bytes(body)})
            else:
                await send(message)

        return send_docs_page


class SecurityHeadersMiddleware:
    """Security headers on every response; Cache-Control and Vary on the ones that need them."""

    def __init__(self, app: ASGIApp, headers: SecurityHeaders) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, self.headers.wrap(scope, send))


class RequestBodyTooLargeError(Exception):
    """Raised from ``receive`` once a body crosses the limit; ``BodyLimitMiddleware`` answers 413."""


class BodyLimitMiddleware:
    """Answers 413 to request bodies over ``max_bytes``; the app never receives more than that.

    Paths starting with one of ``exempt_prefixes``, or matching ``exempt_paths`` as a whole, are left
    to routes that enforce a limit of their own.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        exempt_prefixes: Iterable[str] = (),
        exempt_paths: re.Pattern[str] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt_prefixes = tuple(exempt_prefixes)
        self.exempt_paths = exempt_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in BODILESS_METHODS  # their routes never read a body
            or scope["path"].startswith(self.exempt_prefixes)
            or (self.exempt_paths is not None and self.exempt_paths.fullmatch(scope["path"]))
        ):
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return

        received = 0
        exceeded = started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise RequestBodyTooLargeError
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise RequestBodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app's own answer to RequestBodyTooLargeError (FastAPI turns it into a 400)
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except RequestBodyTooLargeError:
            if started:
                raise
        if exceeded and not started:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            Request(scope),
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"the request body exceeds {self.max_bytes} bytes",
            code="payload_too_large",
        )
        await response(scope, receive, send)


_TRUSTED_HOST = "conduit.trusted_host"


def _is_health_probe(scope: Scope) -> bool:
    """Probes come by IP (no allowed Host) over plain HTTP, from inside: neither check applies."""
    return scope["type"] == "http" and is_probe(scope["path"])


async def _mark_trusted(scope: Scope, receive: Receive, send: Send) -> None:
    scope[_TRUSTED_HOST] = True


async def _discard(message: Message) -> None:
    pass


class TrustedHostProblemMiddleware:
    """Starlette's ``TrustedHostMiddleware`` check, answering a bad Host with a 400 problem document."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str], headers: SecurityHeaders) -> None:
        self.app = app
        self.headers = headers
        self.check = TrustedHostMiddleware(_mark_trusted, allowed_hosts=allowed_hosts, www_redirect=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _is_health_probe(scope):
            await self.app(scope, receive, send)
            return
        probe = dict(scope)
        await self.check(probe, receive, _discard)  # Starlette's plain-text 400 goes nowhere
        if probe.get(_TRUSTED_HOST):
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            response = problem_response(
                Request(scope), HTTPStatus.BAD_REQUEST, "invalid host header", code="invalid_host"
            )
            await response(scope, receive, self.headers.wrap(scope, send))
        else:
            await send({"type": "websocket.close", "code": 1008})


class SecureHTTPSRedirectMiddleware(HTTPSRedirectMiddleware):
    """Starlette's redirect to HTTPS, whose own 307 carries the security headers too."""

    def __init__(self, app: ASGIApp, headers: SecurityHeaders) -> None:
        super().__init__(app)
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _is_health_probe(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and scope["scheme"] == "http":  # the requests Starlette answers itself
            send = self.headers.wrap(scope, send)
        await super().__call__(scope, receive, send)


def install_http_middleware(app: FastAPI, settings: Settings) -> None:
    """Add the hardening middleware around what is already added (CORS: add it before calling this).

    From the outside in: proxy headers (only with trusted proxies, so that the scheme and client address
    are known to all the rest), trusted hosts, HTTPS redirect (if enabled), security headers, body limit,
    HTTP caching (ETags).
    """
    headers = SecurityHeaders(DOCS_PAGES)
    # The middleware added last is the outermost.
    app.add_middleware(
        HttpCacheMiddleware,
        prefix=API_PREFIX,
        public_max_age=settings.public_max_age,
        is_credential=carries_credentials,
    )
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        exempt_prefixes=settings.body_limit_exempt_prefixes,
        exempt_paths=UPLOAD_PATHS,
    )
    app.add_middleware(SecurityHeadersMiddleware, headers=headers)
    if settings.https_redirect:
        app.add_middleware(SecureHTTPSRedirectMiddleware, headers=headers)
    if "*" not in settings.allowed_hosts:  # with "*" every host passes: no layer needed
        app.add_middleware(
            TrustedHostProblemMiddleware, allowed_hosts=settings.allowed_hosts, headers=headers
        )
    if settings.trusted_proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    if settings.profiling_enabled:  # outermost, to time everything
        app.add_middleware(
            ProfilingMiddleware,
            slow_ms=settings.slow_request_ms,
            profile_requests=settings.env == "development",  # never in production
        )
