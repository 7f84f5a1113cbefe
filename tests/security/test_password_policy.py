"""The password policy: length, not the account's own name, not common, letters and digits."""

from __future__ import annotations

import httpx
import pytest

from app.core.errors import ValidationFailedError
from app.services.password_policy import check_password
from tests.conftest import ClientFactory
from tests.factories import Api


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("jake-the-dog", "must not be your username or email"),
        ("JAKE-THE-DOG", "must not be your username or email"),
        ("jake@example.com", "must not be your username or email"),
        ("password1", "is too common, choose another"),
        ("Password1", "is too common, choose another"),
        ("qwertyuiop", "is too common, choose another"),
        ("no-digits-here", "must contain at least one letter and one digit"),
        ("1234-5678-9012", "must contain at least one letter and one digit"),
    ],
)
def test_rejected(password: str, message: str) -> None:
    with pytest.raises(ValidationFailedError) as info:
        check_password(
            password, username="jake-the-dog", email="jake@example.com", require_letter_and_digit=True
        )
    assert info.value.fields == {"password": [message]}


@pytest.mark.parametrize("password", ["correct-horse-9", "ünïcødé-pässwörd-1", "x" * 127 + "1"])
def test_accepted(password: str) -> None:
    check_password(password, username="jake", email="jake@example.com", require_letter_and_digit=True)


def test_composition_rules_can_be_turned_off() -> None:
    check_password(
        "a long passphrase without digits", username="jake", email="j@x.io", require_letter_and_digit=False
    )
    with pytest.raises(ValidationFailedError):  # the other rules still apply
        check_password("password", username="jake", email="j@x.io", require_letter_and_digit=False)


async def test_policy_on_registration_and_password_changes(api: Api, client: httpx.AsyncClient) -> None:
    weak = await client.post(
        "/users", json={"user": {"username": "jake", "email": "jake@example.com", "password": "password1"}}
    )
    assert weak.status_code == 422 and weak.json()["errors"]["password"] == ["is too common, choose another"]
    account = await api.register("jake")
    change = await client.put(
        "/user", json={"user": {"password": "jake@example.com"}}, headers=account.headers
    )
    assert change.status_code == 422 and change.json()["errors"]["password"] == [
        "must not be your username or email"
    ]


async def test_rehash_on_login_when_the_cost_changes(make_client: ClientFactory) -> None:
    cheap = await make_client(bcrypt_rounds=4)
    account = await Api(cheap).register("jake")
    dearer = await make_client(bcrypt_rounds=5)
    login = {"user": {"email": account.email, "password": account.password}}
    assert (await dearer.post("/users/login", json=login)).status_code == 200
    engine = dearer.app.state.engine  # type: ignore[attr-defined]
    async with engine.connect() as connection:
        stored = (await connection.exec_driver_sql("SELECT password_hash FROM users")).scalar_one()
    assert stored.startswith("$2b$05$")
    assert (await dearer.post("/users/login", json=login)).status_code == 200  # and it still verifies
