"""Application settings, read from the environment (prefix ``CONDUIT_``) and an optional ``.env``."""

from __future__ import annotations

import json
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_SECRET_LENGTH = 32

DEV_CORS_ORIGINS = [
    "http://localhost:3000",
    "http://localhost:4100",
    "http://localhost:4200",
    "http://localhost:5173",
    "http://localhost:8080",
]


# List-valued settings, which accept "a,b,c" as well as a JSON list (declare them NoDecode).
LIST_SETTINGS = ("cors_origins",)


def _split_csv(value: object) -> object:
    """Accept ``a,b,c`` as well as a JSON list for list-valued settings."""
    if isinstance(value, str) and not value.lstrip().startswith("["):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, str):
        return json.loads(value)
    return value


class Settings(BaseSettings):
    """Every knob of the service. See the configuration table in the README."""

    model_config = SettingsConfigDict(
        env_prefix="CONDUIT_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    env: Literal["development", "test", "production"] = "development"
    var_dir: Path = Path("var")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    database_url: str = ""
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_timeout: float = Field(default=10.0, gt=0)
    db_pool_recycle: int = Field(default=1800, ge=-1)
    db_echo: bool = False

    redis_url: str | None = None

    secret_key: SecretStr | None = None
    password_pepper: SecretStr | None = None
    access_token_ttl: int = Field(default=24 * 3600, ge=60, description="seconds")
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEV_CORS_ORIGINS))

    # --- HTTP surface (app/core/middleware.py) ---

    # --- rate limiting (app/core/ratelimit.py) ---

    # --- mail (app/core/mail.py) ---

    @model_validator(mode="before")
    @classmethod
    def _parse_lists(cls, data: object) -> object:
        if isinstance(data, dict):
            for name in LIST_SETTINGS:
                if name in data:
                    data[name] = _split_csv(data[name])
        return data

    @model_validator(mode="after")
    def _fill_defaults(self) -> Self:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.var_dir / 'conduit.db'}"
        self.secret_key = self._secret("secret_key", self.secret_key)
        self.password_pepper = self._secret("password_pepper", self.password_pepper)
        return self

    def _secret(self, name: str, value: SecretStr | None) -> SecretStr:
        """Use the configured secret; outside production, generate one once and keep it in ``var_dir``."""
        env_name = f"CONDUIT_{name.upper()}"
        if value is not None and value.get_secret_value():
            if self.env == "production" and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
                raise ValueError(f"{env_name} must be at least {MIN_SECRET_LENGTH} characters in production")
            return value
        if self.env == "production":
            raise ValueError(
                f"{env_name} is required in production (at least {MIN_SECRET_LENGTH} random characters); "
                f"generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        path = self.var_dir / name
        if not path.exists():
            self.var_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(48))
        return SecretStr(path.read_text().strip())

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
