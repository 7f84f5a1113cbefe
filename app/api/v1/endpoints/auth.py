"""OAuth2 password flow, refresh-token rotation, logout, password reset and email verification."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Form, Request, Response, status

from app.api.v1.cookies import clear_refresh_cookie, refresh_cookie, set_refresh_cookie
from app.api.v1.dependencies import (
    ClientDep,
    CurrentUser,
    HasherDep,
    LimiterDep,
    MailerDep,
    SessionDep,
    SettingsDep,
    TokensDep,
)
from app.api.v1.limits import check_login_limits
from app.core.errors import AuthenticationError, error_responses
from app.core.mail import send_quietly
from app.schemas.auth import (
    PasswordGrantForm,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    TokenResponse,
    VerifyEmailRequest,
)
from app.services import accounts as account_service
from app.services import auth as auth_service
from app.services import users as user_service

router = APIRouter(prefix="/auth", tags=["Auth"])


def _token_response(
    request: Request, response: Response, issued: auth_service.SessionTokens, refresh_ttl: int
) -> TokenResponse:
    set_refresh_cookie(response, request, issued.refresh_token, refresh_ttl)
    return TokenResponse(
        access_token=issued.access_token, expires_in=issued.expires_in, refresh_token=issued.refresh_token
    )


@router.post(
    "/token",
    response_model=TokenResponse,
    summary="Log in (OAuth2 password flow)",
    description="Form fields `username` (a username or an email) and `password`. Returns a short-lived "
    "access token and a refresh token (also set as an HttpOnly cookie scoped to /api/v1/auth).",
    responses=error_responses(401, 403, 422, 429),
)
async def token(
    form: Annotated[PasswordGrantForm, Form()],
    request: Request,
    response: Response,
    session: SessionDep,
    hasher: HasherDep,
    tokens: TokensDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    client: ClientDep,
) -> TokenResponse:
    user = await check_login_limits(session, limiter, settings, client, form.username)
    user = await user_service.authenticate(session, hasher, user, form.password)
    issued = await auth_service.open_session(
        session,
        tokens,
        user,
        access_ttl=settings.access_token_ttl,
        refresh_ttl=settings.refresh_token_ttl,
        client=client,
    )
    return _token_response(request, response, issued, settings.refresh_token_ttl)


@router.post(
    "/refresh",
    response_model=TokenResponse,
    summary="Rotate a refresh token",
    description="Spends the refresh token (from the body, or the cookie) and returns a new pair. "
    "A token presented twice ends its whole session family (reuse detection).",
    responses=error_responses(401, 422, 429),
)
async def refresh(
    request: Request,
    response: Response,
    session: SessionDep,
    tokens: TokensDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    client: ClientDep,
    body: RefreshRequest | None = None,
) -> TokenResponse:
    presented = (body.refresh_token if body else None) or refresh_cookie(request)
    if presented is None:
        raise AuthenticationError("a refresh token is required")
    family = await auth_service.family_of(session, presented)
    await limiter.hit(settings.rate_limit_refresh_family, "refresh-family", family or "unknown")
    _, issued = await auth_service.rotate(
        session,
        tokens,
        presented,
        access_ttl=settings.access_token_ttl,
        refresh_ttl=settings.refresh_token_ttl,
        client=client,
    )
    return _token_response(request, response, issued, settings.refresh_token_ttl)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Log out this session",
    description="Revokes the refresh token's family (body or cookie) and clears the cookie. Idempotent.",
    responses=error_responses(422),
)
async def logout(request: Request, session: SessionDep, body: RefreshRequest | None = None) -> Response:
    presented = (body.refresh_token if body else None) or refresh_cookie(request)
    family = await auth_service.family_of(session, presented) if presented else None
    if family is not None:
        await auth_service.revoke_family(session, family)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    clear_refresh_cookie(response, request)
    return response


@router.post(
    "/logout-all",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Log out everywhere",
    description="Revokes every refresh token and every access token issued so far to the caller.",
    responses=error_responses(401),
)
async def logout_all(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    await auth_service.end_sessions(session, user)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    clear_refresh_cookie(response, request)
    return response


@router.post(
    "/password-reset",
    status_code=status.HTTP_202_ACCEPTED,
    response_class=Response,
    summary="Ask for a password reset",
    description="Always 202, whether or not the email belongs to an account. If it does, a single-use "
    "link (valid 30 minutes by default) is emailed.",
    responses=error_responses(422, 429),
)
async def password_reset(
    body: PasswordResetRequest,
    background: BackgroundTasks,
    session: SessionDep,
    settings: SettingsDep,
    mailer: MailerDep,
    limiter: LimiterDep,
    client: ClientDep,
) -> Response:
    await limiter.hit(settings.rate_limit_login_ip, "reset-ip", client.ip or "unknown")
    await limiter.hit(settings.rate_limit_login_account, "reset-account", body.email)
    message = await account_service.request_password_reset(
        session, body.email, ttl=settings.password_reset_ttl, frontend_url=settings.frontend_url
    )
    if message is not None:
        background.add_task(send_quietly, mailer, message)
    return Response(status_code=status.HTTP_202_ACCEPTED)


@router.post(
    "/password-reset/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Set a new password with a reset token",
    description="The new password must satisfy the password policy. Every session of the account ends.",
    responses=error_responses(422, 429),
)
async def password_reset_confirm(
    body: PasswordResetConfirm,
    session: SessionDep,
    hasher: HasherDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    client: ClientDep,
) -> None:
    await limiter.hit(settings.rate_limit_login_ip, "reset-confirm-ip", client.ip or "unknown")
    await account_service.reset_password(
        session,
        hasher,
        body.token,
        body.password,
        require_letter_and_digit=settings.password_require_letter_and_digit,
    )


@router.post(
    "/verify-email",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Confirm an email address",
    description="With the token from the email sent at registration.",
    responses=error_responses(422, 429),
)
async def verify_email(
    body: VerifyEmailRequest,
    session: SessionDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    client: ClientDep,
) -> None:
    await limiter.hit(settings.rate_limit_login_ip, "verify-ip", client.ip or "unknown")
    await account_service.verify_email(session, body.token)
