from __future__ import annotations

from pydantic import Field

from app.core.errors import Problem
from app.schemas.common import Schema, Timestamp


class ExportOut(Schema):
    id: int
    state: str = Field(description='"pending", "running", "done" or "failed".', examples=["running"])
    progress: int = Field(ge=0, le=100, description="Percent done.", examples=[40])
    created_at: Timestamp
    download_url: str | None = Field(
        description="Where to download the archive, relative to the API root; null until done.",
        examples=["/exports/7/download"],
    )


class ExportResponse(Schema):
    export: ExportOut


class ExportConflict(Problem):
    """The 409 of a second export while one is unfinished: a problem document naming that export."""

    export: ExportOut
