"""Password hashing and access tokens."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import jwt
import pytest

from app.core.config import Settings
from app.core.security import InvalidTokenError, PasswordHasher, TokenService
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def unit_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings("sqlite+aiosqlite://", tmp_path_factory.mktemp("unit"))


async def test_hash_and_verify(unit_settings: Settings) -> None:
    hasher = PasswordHasher(unit_settings)
    hashed = await hasher.hash("correct-horse-9")
    assert hashed.startswith("$2b$04$")
    assert await hasher.verify("correct-horse-9", hashed)
    assert not await hasher.verify("correct-horse-8", hashed)


async def test_unknown_user_never_verifies(unit_settings: Settings) -> None:
    hasher = PasswordHasher(unit_settings)
    assert not await hasher.verify("dummy-password", None)


async def test_corrupt_hash_is_a_mismatch_not_a_crash(unit_settings: Settings) -> None:
    assert not await PasswordHasher(unit_settings).verify("whatever-1", "not-a-bcrypt-hash")


async def test_long_passwords_are_not_truncated(unit_settings: Settings) -> None:
    hasher = PasswordHasher(unit_settings)
    base = "é" * 40  # 80 bytes: plain bcrypt would only see the first 72
    hashed = await hasher.hash(base + "a")
    assert not await hasher.verify(base + "b", hashed)
    # Plain bcrypt would have accepted it: this is the bug the pre-hash prevents.
    plain = bcrypt.hashpw((base + "a").encode()[:72], bcrypt.gensalt(4))
    assert bcrypt.checkpw((base + "b").encode()[:72], plain)


async def test_pepper_is_part_of_the_hash(unit_settings: Settings, tmp_path: Path) -> None:
    hashed = await PasswordHasher(unit_settings).hash("correct-horse-9")
    other = make_settings("sqlite+aiosqlite://", tmp_path, password_pepper="another-pepper-" + "x" * 32)
    assert not await PasswordHasher(other).verify("correct-horse-9", hashed)


async def test_bcrypt_runs_at_most_the_configured_number_at_once(tmp_path: Path) -> None:
    hasher = PasswordHasher(
        make_settings("sqlite+aiosqlite://", tmp_path, bcrypt_rounds=10, password_hash_threads=2)
    )
    hashed = await hasher.hash("correct-horse-9")
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, int(hasher.limiter.borrowed_tokens))
            await asyncio.sleep(0.005)

    async with asyncio.TaskGroup() as group:
        watcher = group.create_task(watch())
        results = await asyncio.gather(*(hasher.verify("correct-horse-9", hashed) for _ in range(6)))
        watcher.cancel()
    assert results == [True] * 6
    assert peak == 2  # reached, never exceeded: the other four waited their turn


def test_token_round_trip(unit_settings: Settings) -> None:
    tokens = TokenService(unit_settings)
    claims = tokens.verify(tokens.issue(42, 900))
    assert claims.user_id == 42
    assert len(claims.token_id) == 32
    assert claims.expires_at > datetime.now(UTC)


def test_tokens_have_unique_ids(unit_settings: Settings) -> None:
    tokens = TokenService(unit_settings)
    assert tokens.verify(tokens.issue(1, 900)).token_id != tokens.verify(tokens.issue(1, 900)).token_id


def test_expired_token(unit_settings: Settings) -> None:
    tokens = TokenService(unit_settings)
    old = tokens.issue(1, 3600, now=datetime.now(UTC) - timedelta(days=2))
    with pytest.raises(InvalidTokenError):
        tokens.verify(old)


def test_a_remembered_token_still_expires(unit_settings: Settings) -> None:
    """The verified-token memo checks expiry on every use: a token verified while valid is refused
    once its ``exp`` has passed."""
    tokens = TokenService(unit_settings)
    token = tokens.issue(1, 2)  # ``exp`` is whole seconds: it comes in one to two seconds
    expires_at = tokens.verify(token).expires_at.timestamp()
    assert tokens.verify(token).user_id == 1  # from the memo
    time.sleep(max(0.0, expires_at - time.time()) + 0.05)
    with pytest.raises(InvalidTokenError):
        tokens.verify(token)


@pytest.mark.parametrize("size", [4096, 0])
def test_verified_tokens_are_decoded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    tokens = TokenService(make_settings("sqlite+aiosqlite://", tmp_path, jwt_verified_cache_size=size))
    token = tokens.issue(7, 900)
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(text: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(text)
        return real_decode(text, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    for _ in range(3):
        assert tokens.verify(token).user_id == 7
    assert len(decoded) == (1 if size else 3)


def test_a_refused_token_is_not_remembered(unit_settings: Settings) -> None:
    tokens = TokenService(unit_settings)
    token = tokens.issue(1, 900)
    forged = _resign(unit_settings, token, sub="2")[:-2] + "AA"  # a bad signature
    for _ in range(2):
        with pytest.raises(InvalidTokenError):
            tokens.verify(forged)
    assert tokens.verify(token).user_id == 1


def _resign(settings: Settings, token: str, *, algorithm: str = "HS256", **changes: object) -> str:
    """``token`` with ``changes`` to its claims, signed again with the real key, kid and typ."""
    assert settings.secret_key is not None
    claims = {**jwt.decode(token, options={"verify_signature": False}), **changes}
    claims = {name: value for name, value in claims.items() if value is not None}
    # Without "alg": PyJWT would let a header's "alg" override the algorithm asked for.
    headers = {k: v for k, v in jwt.get_unverified_header(token).items() if k != "alg"}
    return jwt.encode(
        claims,
        settings.secret_key.get_secret_value(),
        algorithm=algorithm,
        headers=headers,
    )


def test_resigning_alone_keeps_a_token_valid(unit_settings: Settings) -> None:
    tokens = TokenService(unit_settings)
    assert tokens.verify(_resign(unit_settings, tokens.issue(7, 900))).user_id == 7


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": None},
        {"jti": None},
        {"iss": None},
        {"sub": "abc"},
        {"sub": "0"},
        {"sub": str(2**40)},
        {"iss": "someone-else"},
        {"aud": "another-api"},
    ],
)
def test_malformed_claims(unit_settings: Settings, changes: dict[str, object]) -> None:
    tokens = TokenService(unit_settings)
    with pytest.raises(InvalidTokenError):
        tokens.verify(_resign(unit_settings, tokens.issue(1, 900), **changes))


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_algorithm_is_pinned(unit_settings: Settings, algorithm: str) -> None:
    """Same key, kid and claims: only the algorithm differs, and that alone is refused."""
    tokens = TokenService(unit_settings)
    with pytest.raises(InvalidTokenError):
        tokens.verify(_resign(unit_settings, tokens.issue(1, 900), algorithm=algorithm))
