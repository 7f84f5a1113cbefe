"""Run Alembic migrations from code (the CLI, ``conduit serve`` and the tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def alembic_config(database_url: str | None = None, *, configure_logging: bool = True) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = configure_logging
    return config


def upgrade(database_url: str | None = None, *, configure_logging: bool = True) -> None:
    """Bring the database schema to the newest revision. Safe to run on every start."""
    command.upgrade(alembic_config(database_url, configure_logging=configure_logging), "head")
