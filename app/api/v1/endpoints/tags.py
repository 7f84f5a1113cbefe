"""Tags (RealWorld ``/tags``)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.v1.dependencies import CacheDep, SessionDep
from app.core.errors import error_responses
from app.core.responses import JSONBytes
from app.schemas.tag import TagListResponse
from app.services import tags as tag_service

router = APIRouter(prefix="/tags", tags=["Tags"])


@router.get(
    "",
    response_model=TagListResponse,
    summary="Popular tags",
    description="Tags in use, most used first.",
    responses=error_responses(422),
)
async def list_tags(session: SessionDep, cache: CacheDep) -> Response:
    return JSONBytes(await tag_service.popular_tags_json(session, cache))
