"""The conduit command."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli

runner = CliRunner()


def test_serve_refuses_several_workers_without_redis(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONDUIT_VAR_DIR", str(tmp_path))
    monkeypatch.delenv("CONDUIT_REDIS_URL", raising=False)
    result = runner.invoke(cli, ["serve", "--workers", "2"])
    assert result.exit_code == 2
    assert "CONDUIT_REDIS_URL" in result.output
    assert not (tmp_path / "conduit.db").exists()  # refused before touching the database


def test_configuration_errors_are_reported_plainly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONDUIT_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("CONDUIT_ENV", "production")
    monkeypatch.delenv("CONDUIT_SECRET_KEY", raising=False)
    result = runner.invoke(cli, ["migrate"])
    assert result.exit_code == 2
    assert "CONDUIT_SECRET_KEY is required in production" in result.output
    assert "Traceback" not in result.output


def test_migrate_and_seed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONDUIT_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("CONDUIT_BCRYPT_ROUNDS", "4")
    monkeypatch.delenv("CONDUIT_DATABASE_URL", raising=False)
    assert runner.invoke(cli, ["migrate"]).exit_code == 0
    result = runner.invoke(
        cli,
        [
            "seed",
            "--users",
            "3",
            "--articles",
            "12",
            "--favorites",
            "10",
            "--follows",
            "3",
            "--comments",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Seeded 3 users, 12 articles" in result.output
    with sqlite3.connect(tmp_path / "conduit.db") as db:
        assert db.execute("SELECT count(*) FROM users").fetchone() == (3,)
        assert db.execute("SELECT count(*) FROM articles").fetchone() == (12,)
        assert db.execute("SELECT count(*) FROM comments").fetchone() == (5,)
        # The denormalised counter agrees with the rows it counts.
        favorites = db.execute("SELECT count(*) FROM favorites").fetchone()
        assert db.execute("SELECT sum(favorites_count) FROM articles").fetchone() == favorites
        assert db.execute("SELECT count(*) FROM article_tags").fetchone() == (36,)
        assert db.execute("SELECT sum(articles_count) FROM users").fetchone() == (12,)


def test_create_admin_and_set_role(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONDUIT_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("CONDUIT_BCRYPT_ROUNDS", "4")
    monkeypatch.delenv("CONDUIT_DATABASE_URL", raising=False)
    weak = runner.invoke(
        cli, ["create-admin", "root", "--email", "root@example.com", "--password", "password1"]
    )
    assert weak.exit_code == 1 and "too common" in weak.output
    created = runner.invoke(
        cli,
        ["create-admin", "root", "--email", "root@example.com"],
        input="admin-passphrase-1\nadmin-passphrase-1\n",
    )
    assert created.exit_code == 0, created.output
    assert "Created admin root." in created.output
    assert runner.invoke(cli, ["seed", "--users", "1", "--articles", "0"]).exit_code == 0
    with sqlite3.connect(tmp_path / "conduit.db") as db:
        assert db.execute("SELECT role FROM users WHERE username = 'root'").fetchone() == ("admin",)
        seeded = db.execute("SELECT username FROM users WHERE username != 'root'").fetchone()[0]
    promoted = runner.invoke(cli, ["set-role", seeded, "moderator"])
    assert promoted.exit_code == 0 and f"{seeded} is now moderator." in promoted.output
    assert runner.invoke(cli, ["set-role", seeded, "emperor"]).exit_code == 1
    assert runner.invoke(cli, ["set-role", "nobody", "admin"]).exit_code == 1
    with sqlite3.connect(tmp_path / "conduit.db") as db:
        assert db.execute("SELECT role FROM users WHERE username = ?", (seeded,)).fetchone() == ("moderator",)
