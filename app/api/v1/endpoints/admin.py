"""Administration (admins only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.api.v1.dependencies import AdminUser, Pagination, SessionDep
from app.core.errors import error_responses
from app.models import User
from app.schemas.admin import AdminUser as AdminUserOut
from app.schemas.admin import AdminUserList, AdminUserResponse, RoleUpdate
from app.services import admin as admin_service

router = APIRouter(prefix="/admin", tags=["Admin"])

UsernamePath = Annotated[str, Path(max_length=64, description="The user's username.")]


def _out(user: User) -> AdminUserOut:
    return AdminUserOut(
        id=user.id,
        username=user.username,
        email=user.email,
        role=user.role,
        is_active=user.is_active,
        email_verified=user.email_verified_at is not None,
        created_at=user.created_at,
    )


@router.get(
    "/users",
    response_model=AdminUserList,
    summary="List users",
    description="Every account, oldest first, with role and status.",
    responses=error_responses(401, 403, 422),
)
async def list_users(session: SessionDep, _admin: AdminUser, page: Pagination) -> AdminUserList:
    users, total = await admin_service.list_users(session, limit=page.limit, offset=page.offset)
    return AdminUserList(users=[_out(user) for user in users], users_count=total)


@router.put(
    "/users/{username}/role",
    response_model=AdminUserResponse,
    summary="Set a user's role",
    description="`user`, `moderator` (may delete any article or comment) or `admin`.",
    responses=error_responses(401, 403, 404, 422),
)
async def set_role(
    username: UsernamePath, body: RoleUpdate, session: SessionDep, admin: AdminUser
) -> AdminUserResponse:
    return AdminUserResponse(user=_out(await admin_service.set_role(session, admin, username, body.role)))


@router.post(
    "/users/{username}/deactivate",
    response_model=AdminUserResponse,
    summary="Deactivate a user",
    description="The account can no longer log in and every one of its tokens stops working at once.",
    responses=error_responses(401, 403, 404, 422),
)
async def deactivate(username: UsernamePath, session: SessionDep, admin: AdminUser) -> AdminUserResponse:
    return AdminUserResponse(user=_out(await admin_service.deactivate(session, admin, username)))
