"""The caller's notifications (pushed live over ``/ws``; see docs/realtime.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.v1.dependencies import CurrentUser, MediaLinksDep, SessionDep
from app.core.errors import error_responses
from app.schemas.common import MAX_INT32
from app.schemas.notification import MarkReadRequest, NotificationListResponse, UnreadCountResponse
from app.services import notifications as notification_service

router = APIRouter(prefix="/notifications", tags=["Notifications"])


@router.get(
    "",
    response_model=NotificationListResponse,
    summary="List my notifications",
    description="Newest first. Pass `nextCursor` as `before` for the next page; `unread=true` for "
    "unread ones only. `unreadCount` counts all unread notifications.",
    responses=error_responses(401, 422),
)
async def list_notifications(
    session: SessionDep,
    user: CurrentUser,
    links: MediaLinksDep,
    unread: bool = False,
    before: Annotated[int | None, Query(ge=1, le=MAX_INT32, description="A `nextCursor`.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> NotificationListResponse:
    return await notification_service.list_notifications(
        session, user.id, links, unread=unread, before=before, limit=limit
    )


@router.post(
    "/read",
    response_model=UnreadCountResponse,
    summary="Mark notifications read",
    description="Marks notification `upTo` and every older one read. Idempotent.",
    responses=error_responses(401, 422),
)
async def mark_read(body: MarkReadRequest, session: SessionDep, user: CurrentUser) -> UnreadCountResponse:
    return UnreadCountResponse(
        unread_count=await notification_service.mark_read(session, user.id, body.up_to)
    )
