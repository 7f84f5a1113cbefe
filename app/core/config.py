"""Application settings, read from the environment (prefix ``CONDUIT_``) and an optional ``.env``."""

from __future__ import annotations

import json
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
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
LIST_SETTINGS = (
    "cors_origins",
    "previous_secret_keys",
    "allowed_hosts",
    "trusted_proxies",
    "body_limit_exempt_prefixes",
)


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
    # Bounds on every database wait (docs/reliability.md), so a hung or unreachable database fails a
    # request with a 503 instead of holding it. Migrations run without the statement and lock bounds.
    db_connect_timeout: float = Field(default=5.0, gt=0, description="seconds to open a connection")
    db_statement_timeout: float = Field(
        default=15.0, gt=0, description="seconds a statement may run (PostgreSQL statement_timeout)"
    )
    db_lock_timeout: float = Field(
        default=5.0, gt=0, description="seconds a statement waits for a lock (SQLite: the busy timeout)"
    )

    redis_url: str | None = None
    # Redis is optional for every request (app/core/redis_link.py): a dead one must fail fast, not hang.
    redis_timeout: float = Field(
        default=0.5, gt=0, le=30, description="seconds to connect to Redis and for each of its replies"
    )
    redis_backoff_max: float = Field(
        default=5.0, gt=0, le=300, description="longest pause between attempts to reach Redis again"
    )
    redis_health_check_interval: float = Field(
        default=5.0, gt=0, le=300, description="seconds of silence before the pub/sub connection is pinged"
    )

    secret_key: SecretStr | None = None
    # Keys that tokens signed before a key rotation were signed with: still accepted, never used to sign.
    previous_secret_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    password_pepper: SecretStr | None = None
    jwt_issuer: str = "conduit"
    jwt_audience: str = "conduit-api"
    jwt_verified_cache_size: int = Field(
        default=4096, ge=0, le=1_000_000, description="access tokens kept verified per process; 0: none"
    )
    access_token_ttl: int = Field(default=15 * 60, ge=60, description="seconds, with a refresh token")
    # RealWorld front ends never refresh, so the tokens of POST /users and /users/login live longer.
    realworld_token_ttl: int = Field(default=24 * 3600, ge=60, description="seconds")
    refresh_token_ttl: int = Field(default=14 * 24 * 3600, ge=300, description="seconds")
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    password_hash_threads: int = Field(
        default=0, ge=0, le=256, description="concurrent bcrypt computations per worker; 0: one per CPU core"
    )
    # OWASP ASVS 5 advises against composition rules; on by default for RealWorld-era clients.
    password_require_letter_and_digit: bool = True
    password_reset_ttl: int = Field(default=30 * 60, ge=60, description="seconds")
    email_verification_ttl: int = Field(default=2 * 24 * 3600, ge=60, description="seconds")
    require_verified_email: bool = False

    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEV_CORS_ORIGINS))

    # --- read cache (app/core/cache.py) ---
    cache_enabled: bool = True
    cache_ttl: int = Field(default=300, ge=1, description="seconds; invalidation does not depend on it")
    cache_max_entries: int = Field(default=10_000, ge=1, description="in-process cache only")
    cache_prefix: str = "conduit"  # Redis key prefix, so deployments (and test runs) never share entries
    public_max_age: int = Field(default=5, ge=0, description="Cache-Control max-age of anonymous reads")

    # --- profiling (app/core/profiling.py) ---
    # Server-Timing on every response; in development also a pyinstrument profile for ?profile=1.
    profiling_enabled: bool = False
    slow_request_ms: float = Field(default=500, gt=0, description="log requests slower than this")

    # --- observability (docs/observability.md) ---
    log_format: Literal["json", "console"] | None = None  # default: json in production, console otherwise
    metrics_enabled: bool = True  # Prometheus exposition at /metrics (or on metrics_port)
    metrics_token: SecretStr | None = None  # if set, /metrics requires "Authorization: Bearer <token>"
    # Serve the metrics on this port (conduit serve and conduit worker) instead of the API's /metrics.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    otel_endpoint: str | None = None  # OTLP/HTTP collector base URL (http://collector:4318); off if unset
    otel_service_name: str = "conduit"

    # --- HTTP surface (app/core/middleware.py) ---
    # Host header values accepted: exact names, "*.example.com" for subdomains, "*" for any.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    # Proxies (IPs or CIDRs) whose X-Forwarded-For/-Proto are believed; empty: those headers are ignored.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    https_redirect: bool = False  # redirect plain-HTTP requests to HTTPS (307)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0, description="larger request bodies get a 413")
    # Path prefixes exempt from max_body_bytes, for routes that enforce a limit of their own (uploads).
    body_limit_exempt_prefixes: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- rate limiting (app/core/ratelimit.py) ---
    rate_limit_enabled: bool = True
    # When the limit storage (Redis) fails: allow the request and log (true), or answer 503 (false).
    rate_limit_fail_open: bool = True
    # Namespaces the counters, so deployments (and test runs) sharing a Redis never share budgets.
    rate_limit_prefix: str = Field(default="conduit", min_length=1)
    rate_limit_default_ip: str = "600/minute"
    rate_limit_login_account: str = "5/minute"
    rate_limit_login_ip: str = "20/minute"
    rate_limit_register_ip: str = "10/minute"
    rate_limit_refresh_family: str = "30/minute"
    rate_limit_writes_user: str = "60/minute"
    rate_limit_uploads_user: str = "60/hour"

    @field_validator(
        "rate_limit_default_ip",
        "rate_limit_login_account",
        "rate_limit_login_ip",
        "rate_limit_register_ip",
        "rate_limit_refresh_family",
        "rate_limit_writes_user",
        "rate_limit_uploads_user",
    )
    @classmethod
    def _one_rate_limit(cls, value: str) -> str:
        try:
            rules = parse_many(value)
        except ValueError:
            rules = []
        if len(rules) != 1:
            raise ValueError(f"{value!r} is not a rate limit such as '5/minute' or '100 per hour'")
        return value

    # --- idempotency keys (app/api/v1/idempotency.py, app/services/idempotency.py) ---
    # Seconds a key is kept (with its answer) from its first use; housekeeping purges older ones.
    idempotency_ttl: int = Field(default=24 * 3600, ge=3600)
    # Seconds a request holds its key while it works: past that, a retry with the key may take it
    # over (a crashed holder's claim lapses) and the late holder's work is rolled back. Longer than
    # request_timeout, which ends any request's work first, so only a dead holder ever loses its key
    # (and at most an hour, never longer than a key is kept).
    idempotency_lease: int = Field(default=60, ge=1, le=3600)

    # --- operations (app/core/health.py, app/cli.py) ---
    # Seconds the server may work on a request before answering 503 in its place (time spent waiting
    # for the client's body does not count; WebSockets and a response already started are exempt).
    request_timeout: float = Field(default=30.0, gt=0)
    health_timeout: float = Field(default=1.5, gt=0, description="seconds for each readiness check")
    # Seconds uvicorn lets in-flight requests finish after SIGTERM before cancelling them.
    graceful_shutdown_timeout: int = Field(default=15, ge=1)
    # Seconds a worker of `conduit serve --workers N` may take to answer its supervisor's health check,
    # start-up included (a fresh process imports the whole app first); one that does not is killed and
    # replaced. uvicorn's own 5 s killed every worker, over and over, on a busy or CPU-throttled host.
    worker_healthcheck_timeout: int = Field(default=30, ge=1)

    # --- mail (app/core/mail.py) ---
    # Without an SMTP host, emails are written as .eml files to var_dir/outbox instead.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True  # require the STARTTLS upgrade (ignored with smtp_tls)
    smtp_tls: bool = False  # implicit TLS from the first byte, usually port 465
    smtp_timeout: float = Field(default=10.0, gt=0, description="seconds, per SMTP step")
    mail_from: str = "Conduit <no-reply@localhost>"
    frontend_url: str = "http://localhost:4100"  # base URL of the links in emails (e.g. password reset)

    # --- real time and background work (app/core/pubsub.py, app/workers/) ---
    # Celery's broker (Redis or RabbitMQ); defaults to redis_url. Without either, jobs run in-process.
    broker_url: str | None = None
    # "auto": Celery when a broker is configured, in-process otherwise.
    task_backend: Literal["auto", "celery", "inprocess"] = "auto"
    # Without Celery: run the periodic jobs (housekeeping, digest) in this process. With Celery, beat does.
    in_process_schedule: bool = True
    task_queue: str = "conduit"  # Celery queue name, so deployments (and test runs) never share jobs
    broker_timeout: float = Field(
        default=1.0, gt=0, le=60, description="seconds to connect to a Redis broker and for each reply"
    )
    # Seconds before Redis hands an unacknowledged job (its worker died) to another worker; default:
    # the longest job time limit + 60 s. Shorter than a job's run time means running it twice.
    task_visibility_timeout: int | None = Field(default=None, ge=1)
    export_dir: Path | None = None  # finished exports; default var_dir/exports
    export_retention_days: int = Field(default=7, ge=1)
    notification_retention_days: int = Field(
        default=90, ge=1, description="read notifications are purged after"
    )
    ws_auth_timeout: float = Field(default=10.0, gt=0, description="seconds to send the auth message")
    ws_heartbeat_interval: float = Field(default=30.0, gt=0, description="seconds between pings")
    ws_queue_size: int = Field(default=100, ge=1, description="messages queued per socket before a resync")

    # --- uploads (app/services/media.py) and their storage (app/core/storage.py) ---
    upload_max_bytes: int = Field(default=5 * 1024 * 1024, gt=0, description="largest accepted file")
    # Checked from the image header before decoding. At most Pillow's own MAX_IMAGE_PIXELS, above which
    # Pillow itself warns (and refuses at twice as many).
    upload_max_pixels: int = Field(default=40_000_000, gt=0, le=89_478_485)
    upload_quota_count: int = Field(default=200, ge=0, description="images stored per user")
    upload_quota_bytes: int = Field(default=200 * 1024 * 1024, ge=0, description="bytes stored per user")
    storage_backend: Literal["local", "s3"] = "local"
    media_dir: Path | None = None  # the local backend's files; default var_dir/media
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None  # MinIO or another S3-compatible service; unset: AWS
    s3_region: str = "us-east-1"
    # Unset: boto3's default credential chain (environment, shared files, instance roles).
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_presign_ttl: int = Field(default=3600, ge=60, le=7 * 24 * 3600, description="seconds")
    # A hung S3 fails an upload after at most attempts x (connect + read timeout) plus retry backoff.
    s3_connect_timeout: float = Field(default=5.0, gt=0, description="seconds")
    s3_read_timeout: float = Field(default=10.0, gt=0, description="seconds without a byte from S3")
    s3_max_attempts: int = Field(default=2, ge=1, le=10, description="tries of each S3 request")
    # Base of the URLs of uploaded images (e.g. https://api.example.com); unset: the request's own
    # scheme and host, so they work behind any port or proxy.
    public_url: str | None = None

    @field_validator("public_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("http://", "https://")) or "?" in value or "#" in value:
            raise ValueError(f"{value!r} is not an http(s) URL such as 'https://api.example.com'")
        return value.rstrip("/")

    @property
    def effective_media_dir(self) -> Path:
        return self.media_dir or self.var_dir / "media"

    @property
    def effective_broker_url(self) -> str | None:
        return self.broker_url or self.redis_url

    @property
    def uses_celery(self) -> bool:
        if self.task_backend == "auto":
            return self.effective_broker_url is not None
        return self.task_backend == "celery"

    @property
    def effective_export_dir(self) -> Path:
        return self.export_dir or self.var_dir / "exports"

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
        if self.task_backend == "celery" and not self.effective_broker_url:
            raise ValueError("CONDUIT_TASK_BACKEND=celery needs CONDUIT_BROKER_URL or CONDUIT_REDIS_URL")
        if self.storage_backend == "s3" and not self.s3_bucket:
            raise ValueError("CONDUIT_STORAGE_BACKEND=s3 needs CONDUIT_S3_BUCKET")
        if self.idempotency_lease <= self.request_timeout:
            raise ValueError("CONDUIT_IDEMPOTENCY_LEASE must be longer than CONDUIT_REQUEST_TIMEOUT")
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
    def effective_log_format(self) -> Literal["json", "console"]:
        return self.log_format or ("json" if self.env == "production" else "console")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
