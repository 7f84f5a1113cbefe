"""Password reset and email verification, with mail delivered to a real local SMTP server."""

from __future__ import annotations

import re
from email.message import EmailMessage

import httpx
import pytest

from tests.conftest import ClientFactory
from tests.factories import Api, assert_problem
from tests.smtp import SmtpServer, smtp_server  # noqa: F401

CODE = re.compile(r"^    ([A-Za-z0-9_-]{43})$", re.MULTILINE)


@pytest.fixture
async def mailing_client(make_client: ClientFactory, smtp_server: SmtpServer) -> httpx.AsyncClient:  # noqa: F811
    return await make_client(
        **smtp_server.settings,
        frontend_url="https://conduit.example",
    )


def _code(message: EmailMessage) -> str:
    body = message.get_content()
    match = CODE.search(body)
    assert match, body
    return match.group(1)


async def test_registration_sends_a_verification_link(
    mailing_client: httpx.AsyncClient,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    await Api(mailing_client).register("jake")
    (message,) = smtp_server.messages
    assert message["To"] == "jake@example.com"
    assert "Confirm your email" in message["Subject"]
    token = _code(message)
    assert f"https://conduit.example/verify-email?token={token}" in message.get_content()

    assert (await mailing_client.post("/auth/verify-email", json={"token": token})).status_code == 204
    again = await mailing_client.post("/auth/verify-email", json={"token": token})
    assert again.status_code == 422 and again.json()["errors"]["token"] == ["is invalid or has expired"]


async def test_publishing_can_require_a_verified_email(
    make_client: ClientFactory,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    client = await make_client(
        **smtp_server.settings,
        require_verified_email=True,
    )
    api = Api(client)
    account = await api.register("jake")
    draft = {"article": {"title": "t", "description": "d", "body": "b"}}
    blocked = await client.post("/articles", json=draft, headers=account.headers)
    assert_problem(blocked, 403, "forbidden", "verify your email address before publishing")
    await client.post("/auth/verify-email", json={"token": _code(smtp_server.messages[-1])})
    assert (await client.post("/articles", json=draft, headers=account.headers)).status_code == 201


async def test_password_reset(
    mailing_client: httpx.AsyncClient,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    api = Api(mailing_client)
    account = await api.register("jake")
    assert (
        await mailing_client.post("/auth/password-reset", json={"email": "JAKE@example.com"})
    ).status_code == 202
    message = smtp_server.messages[-1]
    assert message["Subject"] == "Reset your Conduit password"
    token = _code(message)
    assert f"https://conduit.example/reset-password?token={token}" in message.get_content()

    weak = await mailing_client.post(
        "/auth/password-reset/confirm", json={"token": token, "password": "password1"}
    )
    assert weak.status_code == 422 and weak.json()["errors"]["password"] == ["is too common, choose another"]
    done = await mailing_client.post(
        "/auth/password-reset/confirm", json={"token": token, "password": "a-fresh-secret-5"}
    )
    assert done.status_code == 204
    # Every session ended; the new password works, the old one does not; the token was single-use.
    assert (await mailing_client.get("/user", headers=account.headers)).status_code == 401
    old = {"user": {"email": account.email, "password": account.password}}
    new = {"user": {"email": account.email, "password": "a-fresh-secret-5"}}
    assert (await mailing_client.post("/users/login", json=old)).status_code == 401
    assert (await mailing_client.post("/users/login", json=new)).status_code == 200
    reuse = await mailing_client.post(
        "/auth/password-reset/confirm", json={"token": token, "password": "another-one-6"}
    )
    assert_problem(reuse, 422, "validation_failed")


async def test_no_mail_for_unknown_addresses(
    mailing_client: httpx.AsyncClient,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    response = await mailing_client.post("/auth/password-reset", json={"email": "nobody@example.com"})
    assert response.status_code == 202
    assert smtp_server.messages == []


async def test_expired_reset_tokens_are_refused(
    make_client: ClientFactory,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    client = await make_client(**smtp_server.settings, password_reset_ttl=60)
    await Api(client).register("jake")
    await client.post("/auth/password-reset", json={"email": "jake@example.com"})
    token = _code(smtp_server.messages[-1])
    engine = client.app.state.engine  # type: ignore[attr-defined]
    async with engine.begin() as connection:  # let the token age past its expiry
        await connection.exec_driver_sql("UPDATE one_time_tokens SET expires_at = created_at")
    response = await client.post(
        "/auth/password-reset/confirm", json={"token": token, "password": "a-fresh-secret-5"}
    )
    assert_problem(response, 422, "validation_failed")


async def test_a_failing_mail_server_never_fails_the_request(make_client: ClientFactory) -> None:
    client = await make_client(smtp_host="127.0.0.1", smtp_port=1, smtp_starttls=False)
    await Api(client).register("jake")  # the verification email fails after the response
    assert (await client.post("/auth/password-reset", json={"email": "jake@example.com"})).status_code == 202


async def test_outbox_is_the_embedded_default(api: Api, client: httpx.AsyncClient, settings: object) -> None:
    from app.core.config import Settings

    assert isinstance(settings, Settings) and not settings.smtp_host
    before = (
        set((settings.var_dir / "outbox").glob("*.eml")) if (settings.var_dir / "outbox").exists() else set()
    )
    await api.register("jake")
    written = set((settings.var_dir / "outbox").glob("*.eml")) - before
    assert len(written) == 1
    assert "jake@example.com" in next(iter(written)).read_text()


async def test_tokens_only_serve_their_purpose(
    mailing_client: httpx.AsyncClient,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    await Api(mailing_client).register("jake")
    verification = _code(smtp_server.messages[-1])
    wrong_use = await mailing_client.post(
        "/auth/password-reset/confirm", json={"token": verification, "password": "a-fresh-secret-5"}
    )
    assert_problem(wrong_use, 422, "validation_failed")
    await mailing_client.post("/auth/password-reset", json={"email": "jake@example.com"})
    reset = _code(smtp_server.messages[-1])
    assert_problem(
        await mailing_client.post("/auth/verify-email", json={"token": reset}), 422, "validation_failed"
    )


async def test_a_reset_kills_the_other_reset_links(
    mailing_client: httpx.AsyncClient,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    await Api(mailing_client).register("jake")
    for _ in range(2):
        await mailing_client.post("/auth/password-reset", json={"email": "jake@example.com"})
    first, second = (_code(message) for message in smtp_server.messages[-2:])
    done = await mailing_client.post(
        "/auth/password-reset/confirm", json={"token": second, "password": "a-fresh-secret-5"}
    )
    assert done.status_code == 204
    late = await mailing_client.post(
        "/auth/password-reset/confirm", json={"token": first, "password": "another-one-6x"}
    )
    assert_problem(late, 422, "validation_failed")


async def test_deactivated_accounts_get_no_reset(
    mailing_client: httpx.AsyncClient,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    await Api(mailing_client).register("jake")
    await mailing_client.post("/auth/password-reset", json={"email": "jake@example.com"})
    token = _code(smtp_server.messages[-1])
    engine = mailing_client.app.state.engine  # type: ignore[attr-defined]
    async with engine.begin() as connection:
        await connection.exec_driver_sql("UPDATE users SET is_active = false")
    sent = len(smtp_server.messages)
    assert (
        await mailing_client.post("/auth/password-reset", json={"email": "jake@example.com"})
    ).status_code == 202
    assert len(smtp_server.messages) == sent  # no new email
    confirm = await mailing_client.post(
        "/auth/password-reset/confirm", json={"token": token, "password": "a-fresh-secret-5"}
    )
    assert_problem(confirm, 422, "validation_failed")


async def test_changing_the_email_unverifies_it(
    mailing_client: httpx.AsyncClient,
    smtp_server: SmtpServer,  # noqa: F811
) -> None:
    client = mailing_client
    account = await Api(client).register("jake")
    await client.post("/auth/verify-email", json={"token": _code(smtp_server.messages[-1])})
    engine = client.app.state.engine  # type: ignore[attr-defined]

    async def verified() -> bool:
        async with engine.connect() as connection:
            value = (await connection.exec_driver_sql("SELECT email_verified_at FROM users")).scalar_one()
        return value is not None

    assert await verified()
    await client.put("/user", json={"user": {"email": "jake@example.com"}}, headers=account.headers)
    assert await verified()  # the same address: nothing changes
    await client.put("/user", json={"user": {"email": "jacob@example.com"}}, headers=account.headers)
    assert not await verified()
