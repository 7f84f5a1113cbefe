"""Alembic environment: async engine, URL from Conduit's settings, batch mode on SQLite."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

import app.models  # noqa: F401  (registers the tables)
from app.core.config import Settings
from app.db.base import Base
from app.db.session import create_engine

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _settings() -> Settings:
    url = config.attributes.get("database_url")
    return Settings(database_url=url) if url else Settings()


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=_settings().database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


@contextmanager
def _sqlite_expression_index_warnings_expected(dialect: str) -> Iterator[None]:
    """SQLite cannot reflect expression indexes (``lower(username)``): SQLAlchemy skips them when it
    reads the schema, and Alembic leaves them out of the comparison, each with a warning. Expected
    there; ``python -m scripts.check_migrations`` checks those indexes by name and definition instead.
    PostgreSQL reflects and compares them like any other index."""
    with warnings.catch_warnings():
        if dialect == "sqlite":
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")
            warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression-based")
        yield


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    with _sqlite_expression_index_warnings_expected(connection.dialect.name), context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_engine(_settings(), bounded=False)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
