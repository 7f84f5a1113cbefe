"""Registration, login and the current user (RealWorld ``/users`` and ``/user``)."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request, Response, status

from app.api.v1.cookies import set_refresh_cookie
from app.api.v1.dependencies import (
    ClientDep,
    CurrentCaller,
    HasherDep,
    LimiterDep,
    MailerDep,
    MediaLinksDep,
    SessionDep,
    SettingsDep,
    TokensDep,
)
from app.api.v1.limits import check_login_limits
from app.core.errors import error_responses
from app.core.mail import send_quietly
from app.core.storage import MediaLinks
from app.models import User
from app.schemas.user import (
    LoginUserRequest,
    NewUserRequest,
    UpdateUserRequest,
    UpdateUserSettingsRequest,
    UserOut,
    UserResponse,
    UserSettingsResponse,
)
from app.services import accounts as account_service
from app.services import auth as auth_service
from app.services import users as user_service

router = APIRouter(tags=["Users"])


def user_response(user: User, token: str, links: MediaLinks) -> UserResponse:
    return UserResponse(
        user=UserOut(
            email=user.email,
            token=token,
            username=user.username,
            bio=user.bio,
            image=links.avatar(user.image, user.avatar_key),
        )
    )


async def _start_session(
    request: Request,
    response: Response,
    session: SessionDep,
    tokens: TokensDep,
    settings: SettingsDep,
    client: ClientDep,
    links: MediaLinks,
    user: User,
) -> UserResponse:
    """Open a session for a RealWorld client: a long-lived access token in the body (RealWorld front
    ends never refresh) and a refresh token in the HttpOnly cookie for those that can."""
    issued = await auth_service.open_session(
        session,
        tokens,
        user,
        access_ttl=settings.realworld_token_ttl,
        refresh_ttl=settings.refresh_token_ttl,
        client=client,
    )
    set_refresh_cookie(response, request, issued.refresh_token, settings.refresh_token_ttl)
    return user_response(user, issued.access_token, links)


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    response_model=UserResponse,
    summary="Register",
    description="Create an account and receive an access token. A taken username or email answers 422. "
    "A link to confirm the email address is emailed.",
    responses=error_responses(422, 429),
)
async def register(
    body: NewUserRequest,
    request: Request,
    response: Response,
    background: BackgroundTasks,
    session: SessionDep,
    hasher: HasherDep,
    tokens: TokensDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    mailer: MailerDep,
    client: ClientDep,
    links: MediaLinksDep,
) -> UserResponse:
    await limiter.hit(settings.rate_limit_register_ip, "register-ip", client.ip or "unknown")
    data = body.user
    user = await user_service.register(
        session,
        hasher,
        username=data.username,
        email=data.email,
        password=data.password,
        require_letter_and_digit=settings.password_require_letter_and_digit,
    )
    message = await account_service.verification_email(
        session, user, ttl=settings.email_verification_ttl, frontend_url=settings.frontend_url
    )
    background.add_task(send_quietly, mailer, message)
    return await _start_session(request, response, session, tokens, settings, client, links, user)


@router.post(
    "/users/login",
    response_model=UserResponse,
    summary="Log in",
    description="Exchange email and password for an access token. Wrong credentials answer 401.",
    responses=error_responses(401, 403, 422, 429),
)
async def login(
    body: LoginUserRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    hasher: HasherDep,
    tokens: TokensDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    client: ClientDep,
    links: MediaLinksDep,
) -> UserResponse:
    user = await check_login_limits(session, limiter, settings, client, body.user.email)
    user = await user_service.authenticate(session, hasher, user, body.user.password)
    return await _start_session(request, response, session, tokens, settings, client, links, user)


@router.get(
    "/user",
    response_model=UserResponse,
    summary="Current user",
    description="The authenticated user, with the token they presented.",
    responses=error_responses(401),
)
async def current_user(caller: CurrentCaller, links: MediaLinksDep) -> UserResponse:
    return user_response(caller.user, caller.token, links)


@router.put(
    "/user",
    response_model=UserResponse,
    summary="Update current user",
    description="Change any of email, username, password, bio and image. Sending unchanged values is "
    "fine. A new password ends every other session and returns a new token. Sending `image` replaces an "
    "uploaded avatar.",
    responses=error_responses(401, 422, 429),
)
async def update_current_user(
    body: UpdateUserRequest,
    request: Request,
    caller: CurrentCaller,
    session: SessionDep,
    hasher: HasherDep,
    tokens: TokensDep,
    settings: SettingsDep,
    links: MediaLinksDep,
) -> UserResponse:
    user = await user_service.update_user(
        session,
        hasher,
        caller.user,
        body.user,
        require_letter_and_digit=settings.password_require_letter_and_digit,
        keep_family=caller.session_id,
    )
    # A new password ended every session before now, the caller's token included: issue a new one.
    token = (
        caller.token
        if body.user.password is None
        else tokens.issue(user.id, settings.realworld_token_ttl, session_id=caller.session_id)
    )
    return user_response(user, token, links)


@router.get(
    "/user/settings",
    response_model=UserSettingsResponse,
    summary="My notification settings",
    description="What the caller is emailed about. Notifications themselves are always recorded "
    "(`/notifications`) and pushed live (`/ws`).",
    responses=error_responses(401),
)
async def get_settings(caller: CurrentCaller) -> UserSettingsResponse:
    return UserSettingsResponse(settings=user_service.settings_of(caller.user))


@router.put(
    "/user/settings",
    response_model=UserSettingsResponse,
    summary="Change my notification settings",
    description="Only the fields sent change. Values must be JSON booleans.",
    responses=error_responses(401, 422),
)
async def update_settings(
    body: UpdateUserSettingsRequest, caller: CurrentCaller, session: SessionDep
) -> UserSettingsResponse:
    return UserSettingsResponse(
        settings=await user_service.update_settings(session, caller.user, body.settings)
    )
