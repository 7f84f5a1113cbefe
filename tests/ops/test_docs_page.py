"""The self-hosted docs in a real browser: headless Chromium (Debian's package) driven by Playwright
(``playwright-core`` in ./.tools) through tests/browser/docs_page.mjs, against a real ``conduit serve``.

Skipped when Node.js, Chromium or playwright-core is missing, unless CONDUIT_BROWSER_TESTS=required
(as .ci/run sets it, after installing them), which turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import make_settings
from tests.factories import PASSWORD
from tests.ops.server import PATIENCE, register, serve

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "browser" / "docs_page.mjs"
CHROMIUM = os.environ.get("CONDUIT_CHROMIUM", "/usr/bin/chromium")
NODE = shutil.which("node")


def _missing() -> str | None:
    if NODE is None:
        return "Node.js is not installed"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if not (ROOT / ".tools" / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed (npm install --prefix .tools playwright-core@1.65)"
    return None


@pytest.fixture(scope="module")
def browser() -> str:
    missing = _missing()
    if missing is None:
        assert NODE
        return NODE
    if os.environ.get("CONDUIT_BROWSER_TESTS") == "required":
        pytest.fail(f"browser tests are required here, but {missing}")
    pytest.skip(missing)


def test_docs_work_offline_and_authorize_with_the_password_flow(
    browser: str, database_url: str, tmp_path: Path, engine: AsyncEngine
) -> None:
    with serve(make_settings(database_url, tmp_path / "var"), tmp_path) as server:
        register(server, "swagger")
        run = subprocess.run(
            [browser, str(SCRIPT), server.url, "swagger", PASSWORD],
            capture_output=True,
            text=True,
            timeout=4 * PATIENCE,
            env={**os.environ, "CONDUIT_CHROMIUM": CHROMIUM},
            check=False,
        )
    assert run.returncode == 0, run.stderr
    report: dict[str, Any] = json.loads(run.stdout)
    assert "error" not in report, report
    # Not one request left for another origin, and the pages ran without errors.
    assert report["foreignRequests"] == []
    assert report["pageErrors"] == []
    assert report["consoleErrors"]["docs"] == []
    # ReDoc's sidebar shows Redocly's logo from their CDN, unconditionally: the policy refuses it, so
    # it never reaches the network. Nothing else may be refused (no script, style, font or connection).
    for error in report["consoleErrors"]["redoc"]:
        assert error.startswith("Loading the image 'https://cdn.redoc.ly/"), error
        assert 'violates the following Content Security Policy directive: "img-src' in error, error
    assert report["swaggerTitle"].startswith("Conduit")
    assert report["redocTitle"] == "Conduit (1.0.0)"
    # The Authorize dialog got a token from /api/v1/auth/token; Try it out sent it as a Bearer token.
    assert report["tokenStatus"] == 200
    assert report["authorizationScheme"] == "Bearer"
    assert (report["userStatus"], report["shownStatus"], report["username"]) == (200, "200", "swagger")
