"""Settings: secrets, production checks, list parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import Settings


def test_development_generates_secrets_once_and_keeps_them(tmp_path: Path) -> None:
    first = Settings(_env_file=None, env="development", var_dir=tmp_path)  # type: ignore[call-arg]
    second = Settings(_env_file=None, env="development", var_dir=tmp_path)  # type: ignore[call-arg]
    assert first.secret_key is not None and first.password_pepper is not None
    assert first.secret_key.get_secret_value() == second.secret_key.get_secret_value()  # type: ignore[union-attr]
    assert first.secret_key.get_secret_value() != first.password_pepper.get_secret_value()
    assert len(first.secret_key.get_secret_value()) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0  # readable by the owner only


def test_default_database_is_sqlite_under_var(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, var_dir=tmp_path)  # type: ignore[call-arg]
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'conduit.db'}"


@pytest.mark.parametrize("secret_key", [None, "too-short"])
def test_production_refuses_a_missing_or_short_key(tmp_path: Path, secret_key: str | None) -> None:
    with pytest.raises(ValidationError, match="CONDUIT_SECRET_KEY"):
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            env="production",
            var_dir=tmp_path,
            secret_key=secret_key,
            password_pepper="p" * 40,
        )
    assert not (tmp_path / "secret_key").exists()


def test_production_requires_a_pepper(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="CONDUIT_PASSWORD_PEPPER"):
        Settings(_env_file=None, env="production", var_dir=tmp_path, secret_key="k" * 40)  # type: ignore[call-arg]


def test_cors_origins_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONDUIT_CORS_ORIGINS", "https://a.example, https://b.example")
    assert Settings(_env_file=None, var_dir=tmp_path).cors_origins == [
        "https://a.example",
        "https://b.example",
    ]  # type: ignore[call-arg]
    monkeypatch.setenv("CONDUIT_CORS_ORIGINS", '["https://c.example"]')
    assert Settings(_env_file=None, var_dir=tmp_path).cors_origins == ["https://c.example"]  # type: ignore[call-arg]


def test_uploads_are_stored_under_var_by_default(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, var_dir=tmp_path)  # type: ignore[call-arg]
    assert settings.storage_backend == "local"
    assert settings.effective_media_dir == tmp_path / "media"
    assert settings.upload_max_bytes == 5 * 1024 * 1024


def test_an_idempotency_lease_outlasts_the_request_deadline(tmp_path: Path) -> None:
    # Otherwise a request still working could lose its key to a retry (docs/reliability.md).
    with pytest.raises(ValidationError, match="CONDUIT_IDEMPOTENCY_LEASE"):
        Settings(_env_file=None, var_dir=tmp_path, idempotency_lease=30, request_timeout=30)  # type: ignore[call-arg]


def test_s3_storage_needs_a_bucket(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="CONDUIT_S3_BUCKET"):
        Settings(_env_file=None, var_dir=tmp_path, storage_backend="s3")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://api.example.com/", "https://api.example.com"),
        ("http://host:8443/conduit", "http://host:8443/conduit"),
        ("", None),
    ],
)
def test_public_url(tmp_path: Path, value: str, expected: str | None) -> None:
    assert Settings(_env_file=None, var_dir=tmp_path, public_url=value).public_url == expected  # type: ignore[call-arg]


@pytest.mark.parametrize("value", ["api.example.com", "javascript:alert(1)", "https://api.example.com/?x=1"])
def test_public_url_must_be_a_plain_http_url(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValidationError, match="is not an http"):
        Settings(_env_file=None, var_dir=tmp_path, public_url=value)  # type: ignore[call-arg]


def test_the_pixel_limit_stays_within_pillows(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="upload_max_pixels"):
        Settings(_env_file=None, var_dir=tmp_path, upload_max_pixels=100_000_000)  # type: ignore[call-arg]
