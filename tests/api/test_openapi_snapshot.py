"""The OpenAPI document is exactly the committed snapshot, so that every change to the API's contract
shows up in review as a change to tests/api/openapi_snapshot.json.

After an intended change, regenerate the snapshot and commit it with the change:

    CONDUIT_UPDATE_OPENAPI_SNAPSHOT=1 uv run pytest tests/api/test_openapi_snapshot.py
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

import pytest
from fastapi import FastAPI

SNAPSHOT = Path(__file__).with_name("openapi_snapshot.json")
MAX_DIFF_LINES = 300


def _render(app: FastAPI) -> str:
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"


def test_the_openapi_document_matches_the_snapshot(app: FastAPI) -> None:
    current = _render(app)
    if os.environ.get("CONDUIT_UPDATE_OPENAPI_SNAPSHOT") == "1":
        SNAPSHOT.write_text(current)
        pytest.skip(f"rewrote {SNAPSHOT.name}: review and commit it")
    committed = SNAPSHOT.read_text() if SNAPSHOT.exists() else ""
    if current == committed:
        return
    diff = list(
        difflib.unified_diff(
            committed.splitlines(),
            current.splitlines(),
            f"{SNAPSHOT.name} (committed)",
            "the app's OpenAPI document",
            lineterm="",
        )
    )
    shown = "\n".join(diff[:MAX_DIFF_LINES])
    more = f"\n... and {len(diff) - MAX_DIFF_LINES} more lines" if len(diff) > MAX_DIFF_LINES else ""
    pytest.fail(
        f"The OpenAPI document changed:\n{shown}{more}\n\nIf the change is intended, regenerate the "
        "snapshot with CONDUIT_UPDATE_OPENAPI_SNAPSHOT=1 uv run pytest tests/api/test_openapi_snapshot.py "
        "and commit it.",
        pytrace=False,
    )
