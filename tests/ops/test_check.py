"""``conduit check``: the configuration is validated and described without secrets, each configured
service is reached with a timeout, and any failure makes the exit status non-zero."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from app.cli import cli
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL
from tests.ops.server import closed_port, silent_port
from tests.smtp import SmtpServer, smtp_server  # noqa: F401  (fixture)

TEST_AMQP_URL = os.environ.get("CONDUIT_TEST_AMQP_URL")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean CONDUIT_ environment in an empty working directory (no .env), with a SQLite database."""
    for name in list(os.environ):
        if name.startswith("CONDUIT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONDUIT_VAR_DIR", str(tmp_path / "var"))
    return monkeypatch


def check(*args: str) -> Result:
    return CliRunner().invoke(cli, ["check", *args])


def _rows(text: str) -> dict[str, str]:
    return {line[2:18].strip(): line[18:].strip() for line in text.splitlines() if line.startswith("  ")}


def report(result: Result) -> tuple[dict[str, str], dict[str, str]]:
    """The two sections of the output, each as {name: value}: configuration, connectivity."""
    configuration, _, connectivity = result.output.partition("Connectivity")
    return _rows(configuration), _rows(connectivity)


def test_the_embedded_defaults_pass(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    result = check()
    assert result.exit_code == 0, result.output
    configuration, reached = report(result)
    var = tmp_path / "var"
    assert configuration["environment"] == "development"
    assert configuration["database"] == f"sqlite (aiosqlite), file {var / 'conduit.db'}"
    assert configuration["cache"] == configuration["rate limits"] == "in process"
    assert configuration["tasks"] == "in process (periodic jobs: in process)"
    assert configuration["mail"] == f".eml files in {var / 'outbox'}"
    # Development secrets are generated once into var/; said so, never shown.
    assert configuration["secret key"] == f"generated, kept in {var / 'secret_key'}"
    assert configuration["password pepper"] == f"generated, kept in {var / 'password_pepper'}"
    assert reached == {
        "database": "ok",
        "redis": "not configured",
        "broker": "not configured",
        "smtp": "not configured",
    }
    for secret in ("secret_key", "password_pepper"):
        assert (var / secret).read_text().strip() not in result.output
    assert result.output.rstrip().endswith("All checks passed.")


def test_configured_secrets_are_reported_as_set(env: pytest.MonkeyPatch) -> None:
    env.setenv("CONDUIT_ENV", "production")
    env.setenv("CONDUIT_SECRET_KEY", "k" * 40)
    env.setenv("CONDUIT_PASSWORD_PEPPER", "p" * 40)
    env.setenv("CONDUIT_PREVIOUS_SECRET_KEYS", "old-key-one,old-key-two")
    result = check()
    assert result.exit_code == 0, result.output
    configuration, _ = report(result)
    assert configuration["secret key"] == configuration["password pepper"] == "set"
    assert configuration["previous keys"] == "2"
    for value in ("k" * 40, "p" * 40, "old-key-one"):
        assert value not in result.output


def test_configuration_errors_are_reported_readably(env: pytest.MonkeyPatch) -> None:
    env.setenv("CONDUIT_RATE_LIMIT_LOGIN_IP", "lots")
    env.setenv("CONDUIT_BCRYPT_ROUNDS", "99")
    result = check()
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "Configuration error:",
        "  - CONDUIT_BCRYPT_ROUNDS: Input should be less than or equal to 16",
        "  - CONDUIT_RATE_LIMIT_LOGIN_IP: 'lots' is not a rate limit such as '5/minute' or '100 per hour'",
    ]

    env.delenv("CONDUIT_RATE_LIMIT_LOGIN_IP")
    env.delenv("CONDUIT_BCRYPT_ROUNDS")
    env.setenv("CONDUIT_ENV", "production")
    result = check()
    assert result.exit_code == 2
    assert "CONDUIT_SECRET_KEY is required in production" in result.output
    assert "Traceback" not in result.output


def test_unreachable_services_fail_without_showing_credentials(env: pytest.MonkeyPatch) -> None:
    env.setenv("CONDUIT_DATABASE_URL", f"postgresql+asyncpg://conduit:db-pass-1@127.0.0.1:{closed_port()}/c")
    env.setenv("CONDUIT_REDIS_URL", f"redis://:redis-pass-2@127.0.0.1:{closed_port()}/3")
    env.setenv("CONDUIT_BROKER_URL", f"amqp://guest:amqp-pass-3@127.0.0.1:{closed_port()}//")
    env.setenv("CONDUIT_SMTP_HOST", "127.0.0.1")
    env.setenv("CONDUIT_SMTP_PORT", str(closed_port()))
    env.setenv("CONDUIT_SMTP_USERNAME", "mailer")
    env.setenv("CONDUIT_SMTP_PASSWORD", "smtp-pass-4")
    result = check()
    assert result.exit_code == 1
    configuration, reached = report(result)
    assert configuration["database"].startswith("postgresql (asyncpg) at 127.0.0.1:")
    assert configuration["cache"].startswith("Redis at redis://127.0.0.1:")
    assert configuration["tasks"].startswith("Celery via amqp://127.0.0.1:")
    assert configuration["mail"].endswith("(STARTTLS), login with a password")
    assert list(reached) == ["database", "redis", "broker", "smtp"]
    assert all(state.startswith("FAILED: ") for state in reached.values()), reached
    assert "4 check(s) failed." in result.output
    for secret in ("db-pass-1", "redis-pass-2", "amqp-pass-3", "smtp-pass-4"):
        assert secret not in result.output


def test_a_service_that_never_answers_fails_at_the_timeout(env: pytest.MonkeyPatch) -> None:
    with silent_port() as port:
        env.setenv("CONDUIT_REDIS_URL", f"redis://127.0.0.1:{port}/0")
        env.setenv("CONDUIT_TASK_BACKEND", "inprocess")
        result = check("--timeout", "0.3")
    assert result.exit_code == 1
    _, reached = report(result)
    assert reached["redis"] == "FAILED: no answer within 0.3 s"
    assert reached["broker"] == "not configured"


def test_smtp_is_reached_when_configured(env: pytest.MonkeyPatch, smtp_server: SmtpServer) -> None:  # noqa: F811
    env.setenv("CONDUIT_SMTP_HOST", smtp_server.host)
    env.setenv("CONDUIT_SMTP_PORT", str(smtp_server.port))
    env.setenv("CONDUIT_SMTP_STARTTLS", "false")
    result = check()
    assert result.exit_code == 0, result.output
    configuration, reached = report(result)
    assert configuration["mail"] == f"SMTP {smtp_server.host}:{smtp_server.port} (no TLS)"
    assert reached["smtp"] == "ok"
    assert smtp_server.envelopes == []  # connected and left: nothing was sent


@pytest.mark.skipif(not (TEST_DATABASE_URL and TEST_REDIS_URL), reason="needs PostgreSQL and Redis")
def test_postgresql_redis_and_a_redis_broker(env: pytest.MonkeyPatch) -> None:
    env.setenv("CONDUIT_DATABASE_URL", str(TEST_DATABASE_URL))
    env.setenv("CONDUIT_REDIS_URL", str(TEST_REDIS_URL))
    result = check()
    assert result.exit_code == 0, result.output
    configuration, reached = report(result)
    assert configuration["tasks"] == f"Celery via {TEST_REDIS_URL}, queue conduit"
    assert reached == {"database": "ok", "redis": "ok", "broker": "ok", "smtp": "not configured"}


@pytest.mark.skipif(not TEST_AMQP_URL, reason="needs RabbitMQ (CONDUIT_TEST_AMQP_URL)")
def test_a_rabbitmq_broker(env: pytest.MonkeyPatch) -> None:
    env.setenv("CONDUIT_BROKER_URL", str(TEST_AMQP_URL))
    result = check()
    assert result.exit_code == 0, result.output
    assert report(result)[1]["broker"] == "ok"
