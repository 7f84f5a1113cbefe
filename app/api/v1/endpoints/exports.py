"""Exports of the caller's own content (built in the background: app/workers/exports.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse

from app.api.v1.dependencies import CurrentUser, SessionDep, SettingsDep
from app.api.v1.idempotency import IdempotencyDep, idempotent_responses
from app.core.errors import PROBLEM_MEDIA_TYPE, error_responses
from app.schemas.common import MAX_INT32
from app.schemas.export import ExportConflict, ExportResponse
from app.services import exports as export_service

router = APIRouter(prefix="/exports", tags=["Exports"])

ExportId = Annotated[int, Path(ge=1, le=MAX_INT32, description="The export's id.")]

_CONFLICT: dict[str, Any] = {
    "model": ExportConflict,
    "description": "An export is already in progress; it is the problem's `export` member.",
    "content": {
        PROBLEM_MEDIA_TYPE: {
            "schema": {
                "anyOf": [
                    {"$ref": "#/components/schemas/ExportConflict"},
                    {"$ref": "#/components/schemas/Problem"},
                ]
            }
        }
    },
}


@router.post(
    "",
    status_code=202,
    response_model=ExportResponse,
    summary="Export my data",
    description="Starts building a zip of my articles (`articles/<slug>.md`), my comments "
    "(`comments.md`) and a `manifest.json`. Poll `GET /exports/{id}` for its progress; when it is done, "
    "`downloadUrl` is set and I get a notification and an email. One unfinished export at a time: "
    "another request meanwhile gets a 409 naming it. Safe to retry with an `Idempotency-Key`.",
    responses={**error_responses(401, 429), **idempotent_responses(202, conflict=_CONFLICT)},
)
async def create_export(
    session: SessionDep, user: CurrentUser, idempotency: IdempotencyDep
) -> ExportResponse:
    await idempotency.claim(user.id)
    return ExportResponse(export=await export_service.create_export(session, user.id))


@router.get(
    "/{export_id}",
    response_model=ExportResponse,
    summary="Get an export",
    description="One of my exports, with its state and live progress (0 to 100).",
    responses=error_responses(401, 404, 422),
)
async def get_export(export_id: ExportId, session: SessionDep, user: CurrentUser) -> ExportResponse:
    return ExportResponse(export=await export_service.get_export(session, user.id, export_id))


@router.get(
    "/{export_id}/download",
    response_class=FileResponse,
    summary="Download an export",
    description="The zip of one of my finished exports, as an attachment. 409 while it is not "
    "finished; 404 once it has been purged (after `CONDUIT_EXPORT_RETENTION_DAYS`).",
    responses={
        200: {"content": {"application/zip": {}}, "description": "The archive."},
        **error_responses(401, 404, 409, 422),
    },
)
async def download_export(
    export_id: ExportId, session: SessionDep, user: CurrentUser, settings: SettingsDep
) -> FileResponse:
    path = await export_service.archive_file(session, settings.effective_export_dir, user.id, export_id)
    return FileResponse(
        path,
        media_type="application/zip",
        filename=f"conduit-export-{export_id}.zip",
        headers={"Cache-Control": "private, no-store"},
    )
