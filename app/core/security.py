"""Passwords and access tokens.

Passwords are pre-hashed with HMAC-SHA256 keyed by a dedicated pepper, then hashed with bcrypt.
The pre-hash makes every password up to any length count in full (bcrypt alone silently ignores
everything past 72 bytes) and its base64 form contains no NUL byte, which bcrypt would also cut at.
bcrypt is deliberately slow, so it always runs in a worker thread, never on the event loop, and at
most one per CPU core at a time (``CONDUIT_PASSWORD_HASH_THREADS``): more would not finish sooner, they
would all finish late together (64 logins at once each taking the time of 64), and they would fill the
thread pool that the rest of the application shares.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio
import anyio.to_thread
import bcrypt
import jwt
from cachetools import LRUCache

from app.core.config import Settings

JWT_ALGORITHM = "HS256"
ACCESS_TOKEN_TYPE = "at+jwt"


class InvalidTokenError(Exception):
    """The token is malformed, forged, expired or otherwise unusable."""


class PasswordHasher:
    def __init__(self, settings: Settings) -> None:
        assert settings.password_pepper is not None
        self._pepper = settings.password_pepper.get_secret_value().encode()
        self._rounds = settings.bcrypt_rounds
        self._threads = settings.password_hash_threads or os.cpu_count() or 1
        self._limiter: anyio.CapacityLimiter | None = None  # made on first use, inside the event loop
        # Verified against when the user does not exist, so that a login with an unknown
        # email costs the same time as one with a wrong password (no user enumeration).
        self._dummy_hash = bcrypt.hashpw(b"dummy-password", bcrypt.gensalt(self._rounds))

    def _prehash(self, password: str) -> bytes:
        digest = hmac.new(self._pepper, password.encode("utf-8"), hashlib.sha256).digest()
        return base64.b64encode(digest)

    def _hash_sync(self, password: str) -> str:
        return bcrypt.hashpw(self._prehash(password), bcrypt.gensalt(self._rounds)).decode()

    def _verify_sync(self, password: str, password_hash: str | None) -> bool:
        hashed = password_hash.encode() if password_hash else self._dummy_hash
        try:
            ok = bcrypt.checkpw(self._prehash(password), hashed)
        except ValueError:  # a corrupt stored hash: treat as a mismatch, never crash
            return False
        return ok and password_hash is not None

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether a stored hash was made with other parameters than the configured ones."""
        return not password_hash.startswith(f"$2b${self._rounds:02d}$")

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._threads)
        return self._limiter

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hash_sync, password, limiter=self.limiter)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Check ``password`` against ``password_hash``; with ``None`` burn the same time and fail."""
        return await anyio.to_thread.run_sync(
            self._verify_sync, password, password_hash, limiter=self.limiter
        )


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    token_id: str
    issued_at: datetime
    expires_at: datetime
    session_id: str | None  # the refresh-token family the token was issued with, if any


def key_id(key: str) -> str:
    """A public, stable name for a signing key (``kid``): a digest prefix, never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class TokenService:
    """Issues and verifies JWT access tokens (RFC 8725 practices).

    ``sub`` is the user's immutable id; algorithm, issuer, audience and type are pinned on decode.
    Tokens name their key (``kid``), so the signing key can rotate: keys listed in
    ``CONDUIT_PREVIOUS_SECRET_KEYS`` still verify the tokens they signed until those expire.
    """

    def __init__(self, settings: Settings) -> None:
        assert settings.secret_key is not None
        self._signing_key = settings.secret_key.get_secret_value()
        self._kid = key_id(self._signing_key)
        keys = [self._signing_key, *(key.get_secret_value() for key in settings.previous_secret_keys)]
        self._verification_keys = {key_id(key): key for key in keys}
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        # Tokens already verified, by their exact text. A client sends the same token with every
        # request until it expires, and PyJWT's decode was a fifth of a cached signed-in read (see
        # bench/RESULTS.md). Only a successful verification is kept, so nothing an attacker sends can
        # enter it; expiry is still checked on every use. The keys and claims it was checked against
        # are fixed for this object's life. Revocation is not a property of the token: callers check
        # the user's sessions after ``verify`` either way.
        self._verified: LRUCache[str, TokenClaims] = LRUCache(maxsize=settings.jwt_verified_cache_size)

    def issue(
        self, user_id: int, ttl: int, *, session_id: str | None = None, now: datetime | None = None
    ) -> str:
        issued_at = now or datetime.now(UTC)
        # Millisecond "iat" (NumericDate may be fractional): a session cut-off stored with millisecond
        # precision then rejects exactly the tokens issued before it.
        iat = int(issued_at.timestamp() * 1000) / 1000
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user_id),
            "iat": iat,
            "nbf": iat,
            "exp": issued_at + timedelta(seconds=ttl),
            "jti": uuid.uuid4().hex,
        }
        if session_id is not None:
            claims["sid"] = session_id
        # "typ: at+jwt" (RFC 9068, RFC 8725 §3.11): an access token, never confused with another JWT.
        headers = {"kid": self._kid, "typ": ACCESS_TOKEN_TYPE}
        return jwt.encode(claims, self._signing_key, algorithm=JWT_ALGORITHM, headers=headers)

    def verify(self, token: str) -> TokenClaims:
        claims = self._verified.get(token)
        if claims is None:
            claims = self._decode(token)
            if self._verified.maxsize:
                self._verified[token] = claims
        elif claims.expires_at.timestamp() <= time.time():  # PyJWT's own rule: expired at ``exp``
            del self._verified[token]
            raise InvalidTokenError("ExpiredSignatureError")
        return claims

    def _decode(self, token: str) -> TokenClaims:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("typ") != ACCESS_TOKEN_TYPE:
                raise InvalidTokenError("not an access token")
            key = self._verification_keys.get(str(header.get("kid")))
            if key is None:
                raise InvalidTokenError("unknown signing key")
            claims = jwt.decode(
                token,
                key,
                algorithms=[JWT_ALGORITHM],  # pinned: never trust the token's own "alg"
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["iss", "aud", "sub", "exp", "iat", "nbf", "jti"]},
            )
            user_id = int(claims["sub"])
            issued_at = datetime.fromtimestamp(claims["iat"], UTC)
            expires_at = datetime.fromtimestamp(claims["exp"], UTC)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            raise InvalidTokenError(type(exc).__name__) from exc
        if not 0 < user_id < 2**31:
            raise InvalidTokenError("subject out of range")
        session_id = claims.get("sid")
        return TokenClaims(
            user_id, str(claims["jti"]), issued_at, expires_at, str(session_id) if session_id else None
        )


def new_opaque_token() -> str:
    """A bearer secret with 256 bits of randomness (refresh, reset and verification tokens)."""
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """What we store instead of an opaque token: its SHA-256, so a leaked table leaks no tokens."""
    return hashlib.sha256(token.encode()).hexdigest()
