"""The refresh-token cookie, for browser clients: HttpOnly (no script reads it), SameSite=Strict
(never sent cross-site), scoped to /api/v1/auth (never sent to anything else), Secure over HTTPS."""

from __future__ import annotations

from fastapi import Request, Response

REFRESH_COOKIE = "conduit_refresh"
REFRESH_COOKIE_PATH = "/api/v1/auth"


def set_refresh_cookie(response: Response, request: Request, refresh_token: str, max_age: int) -> None:
    response.set_cookie(
        REFRESH_COOKIE,
        refresh_token,
        max_age=max_age,
        path=REFRESH_COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def clear_refresh_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        REFRESH_COOKIE,
        path=REFRESH_COOKIE_PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def refresh_cookie(request: Request) -> str | None:
    return request.cookies.get(REFRESH_COOKIE) or None
