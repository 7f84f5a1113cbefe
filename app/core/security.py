"""Passwords and access tokens.

Passwords are pre-hashed with HMAC-SHA256 keyed by a dedicated pepper, then hashed with bcrypt.
The pre-hash makes every password up to any length count in full (bcrypt alone silently ignores
everything past 72 bytes) and its base64 form contains no NUL byte, which bcrypt would also cut at.
bcrypt is deliberately slow, so it always runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio.to_thread
import bcrypt
import jwt

from app.core.config import Settings

JWT_ALGORITHM = "HS256"


class InvalidTokenError(Exception):
    """The token is malformed, forged, expired or otherwise unusable."""


class PasswordHasher:
    def __init__(self, settings: Settings) -> None:
        assert settings.password_pepper is not None
        self._pepper = settings.password_pepper.get_secret_value().encode()
        self._rounds = settings.bcrypt_rounds
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

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hash_sync, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Check ``password`` against ``password_hash``; with ``None`` burn the same time and fail."""
        return await anyio.to_thread.run_sync(self._verify_sync, password, password_hash)


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    token_id: str
    expires_at: datetime


class TokenService:
    """Issues and verifies the JWT access tokens. ``sub`` is the user's immutable id."""

    def __init__(self, settings: Settings) -> None:
        assert settings.secret_key is not None
        self._key = settings.secret_key.get_secret_value()
        self._ttl = timedelta(seconds=settings.access_token_ttl)

    def issue(self, user_id: int, *, now: datetime | None = None) -> str:
        issued_at = now or datetime.now(UTC)
        claims = {
            "sub": str(user_id),
            "iat": issued_at,
            "exp": issued_at + self._ttl,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm=JWT_ALGORITHM)

    def verify(self, token: str) -> TokenClaims:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[JWT_ALGORITHM],  # pinned: never trust the token's own "alg"
                options={"require": ["sub", "exp", "iat", "jti"]},
            )
            user_id = int(claims["sub"])
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise InvalidTokenError(str(exc)) from exc
        if not 0 < user_id < 2**31:
            raise InvalidTokenError("subject out of range")
        return TokenClaims(user_id, str(claims["jti"]), datetime.fromtimestamp(claims["exp"], UTC))
