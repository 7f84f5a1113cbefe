"""No user enumeration (OWASP API2): unknown accounts and wrong passwords look the same."""

from __future__ import annotations

import statistics
import time

import httpx

from tests.conftest import ClientFactory
from tests.factories import Api


async def _timed_login(client: httpx.AsyncClient, email: str) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = await client.post(
        "/users/login", json={"user": {"email": email, "password": "wrong-password-1"}}
    )
    return time.perf_counter() - started, response


async def test_unknown_email_and_wrong_password_cost_the_same(make_client: ClientFactory) -> None:
    """Without the dummy-hash verification an unknown email would answer ~1000x faster."""
    client = await make_client(bcrypt_rounds=10)  # ~60 ms per hash: large against the noise
    await Api(client).register("jake")
    known, unknown = [], []
    for _ in range(5):
        elapsed, wrong_password = await _timed_login(client, "jake@example.com")
        known.append(elapsed)
        elapsed, no_account = await _timed_login(client, "nobody@example.com")
        unknown.append(elapsed)
        assert wrong_password.status_code == no_account.status_code == 401
        assert wrong_password.json() == {**no_account.json(), "instance": wrong_password.json()["instance"]}
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.3 < ratio < 3, ratio  # generous: other processes share the CPU in CI


async def test_password_reset_answers_alike(api: Api, client: httpx.AsyncClient) -> None:
    await api.register("jake")
    known = await client.post("/auth/password-reset", json={"email": "jake@example.com"})
    unknown = await client.post("/auth/password-reset", json={"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 202
    assert known.content == unknown.content == b""
