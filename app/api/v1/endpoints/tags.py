"""Tags (RealWorld ``/tags``)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.v1.dependencies import SessionDep
from app.core.errors import error_responses
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
async def list_tags(session: SessionDep) -> TagListResponse:
    return TagListResponse(tags=await tag_service.popular_tags(session))
