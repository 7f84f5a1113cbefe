"""Profiles and follows (RealWorld ``/profiles``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Path, Response

from app.api.v1.dependencies import (
    OPTIONAL_AUTH,
    CacheDep,
    CurrentUser,
    MailerDep,
    MediaLinksDep,
    SessionDep,
    SettingsDep,
    ViewerId,
)
from app.core.errors import error_responses
from app.core.mail import send_quietly
from app.core.responses import JSONBytes
from app.schemas.profile import ProfileResponse
from app.services import profiles as profile_service

router = APIRouter(prefix="/profiles", tags=["Profiles"])

UsernamePath = Annotated[str, Path(max_length=64, description="The username of the profile.")]


@router.get(
    "/{username}",
    response_model=ProfileResponse,
    summary="Get a profile",
    description="A user's public profile; `following` tells whether the caller follows them.",
    responses=error_responses(401, 404, 422),
    openapi_extra=OPTIONAL_AUTH,
)
async def get_profile(
    username: UsernamePath, session: SessionDep, cache: CacheDep, viewer_id: ViewerId, links: MediaLinksDep
) -> Response:
    return JSONBytes(await profile_service.profile_json(session, cache, username, viewer_id, links))


@router.post(
    "/{username}/follow",
    response_model=ProfileResponse,
    summary="Follow a user",
    description="Follow a user. Idempotent: following again changes nothing. The followed user is "
    "notified the first time (and emailed, if their settings say so).",
    responses=error_responses(401, 404, 422),
)
async def follow(
    username: UsernamePath,
    session: SessionDep,
    user: CurrentUser,
    settings: SettingsDep,
    mailer: MailerDep,
    background: BackgroundTasks,
    links: MediaLinksDep,
) -> ProfileResponse:
    profile, email = await profile_service.follow(
        session, user, username, links, frontend_url=settings.frontend_url
    )
    if email is not None:  # after the response, so after the commit; failures are only logged
        background.add_task(send_quietly, mailer, email)
    return ProfileResponse(profile=profile)


@router.delete(
    "/{username}/follow",
    response_model=ProfileResponse,
    summary="Unfollow a user",
    description="Stop following a user. Idempotent.",
    responses=error_responses(401, 404, 422),
)
async def unfollow(
    username: UsernamePath, session: SessionDep, user: CurrentUser, links: MediaLinksDep
) -> ProfileResponse:
    return ProfileResponse(profile=await profile_service.unfollow(session, user, username, links))
