"""Typed dependencies: the session (the request's unit of work), the caller, settings and paging."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.errors import AuthenticationError
from app.core.security import InvalidTokenError, PasswordHasher, TokenService
from app.models import User
from app.services import users as user_service

MAX_INT32 = 2**31 - 1


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: commit once if the endpoint succeeded, roll back otherwise.

    Declared with ``scope="function"`` so that the commit happens before the response is sent:
    a failing commit becomes an error response, never a success the database did not keep.
    """
    async with request.app.state.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_hasher(request: Request) -> PasswordHasher:
    hasher: PasswordHasher = request.app.state.hasher
    return hasher


def get_tokens(request: Request) -> TokenService:
    tokens: TokenService = request.app.state.tokens
    return tokens


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
HasherDep = Annotated[PasswordHasher, Depends(get_hasher)]
TokensDep = Annotated[TokenService, Depends(get_tokens)]

_authorization = APIKeyHeader(
    name="Authorization",
    scheme_name="Token",
    description="`Token <jwt>` (RealWorld) or `Bearer <jwt>`.",
    auto_error=False,
)


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated user and the token they presented."""

    user: User
    token: str


def _parse_authorization(header: str) -> str:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() not in {"token", "bearer"} or not token.strip():
        raise AuthenticationError("the Authorization header must be 'Token <jwt>' or 'Bearer <jwt>'")
    return token.strip()


async def get_optional_caller(
    session: SessionDep,
    tokens: TokensDep,
    authorization: Annotated[str | None, Depends(_authorization)],
) -> Caller | None:
    """The caller if credentials were sent; 401 if they were sent but are not valid."""
    if authorization is None:
        return None
    token = _parse_authorization(authorization)
    try:
        claims = tokens.verify(token)
    except InvalidTokenError:
        raise AuthenticationError("the access token is invalid or expired") from None
    user = await user_service.get_user(session, claims.user_id)
    if user is None:
        raise AuthenticationError("the access token is invalid or expired")
    return Caller(user, token)


async def get_caller(
    caller: Annotated[Caller | None, Depends(get_optional_caller)],
) -> Caller:
    if caller is None:
        raise AuthenticationError("authentication required")
    return caller


OptionalCaller = Annotated[Caller | None, Depends(get_optional_caller)]
CurrentCaller = Annotated[Caller, Depends(get_caller)]


async def get_current_user(caller: CurrentCaller) -> User:
    return caller.user


async def get_optional_user_id(caller: OptionalCaller) -> int | None:
    return caller.user.id if caller else None


CurrentUser = Annotated[User, Depends(get_current_user)]
ViewerId = Annotated[int | None, Depends(get_optional_user_id)]


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    offset: int


def get_page(
    limit: Annotated[int, Query(ge=1, le=100, description="Page size, 1 to 100.")] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_INT32, description="Number of items to skip.")] = 0,
) -> Page:
    return Page(limit, offset)


Pagination = Annotated[Page, Depends(get_page)]
