"""Typed dependencies: the session (the request's unit of work), the caller, settings and paging."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import Cache
from app.core.config import Settings
from app.core.errors import AuthenticationError, PermissionDeniedError
from app.core.mail import Mailer
from app.core.ratelimit import RateLimiter
from app.core.security import InvalidTokenError, PasswordHasher, TokenClaims, TokenService
from app.core.storage import MediaLinks, Storage
from app.models import Role, User
from app.schemas.common import MAX_INT32
from app.services import users as user_service
from app.services.auth import ClientInfo


async def get_session(request: Request) -> AsyncSession:
    """The request's session; ``app.db.unit_of_work`` commits or rolls it back, in one place."""
    session: AsyncSession = request.state.unit_of_work.session
    return session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


# Every dependency is ``async def``: FastAPI runs plain ``def`` dependencies in a worker thread, a
# thread hop per dependency per request for what is only an attribute lookup.
async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_hasher(request: Request) -> PasswordHasher:
    hasher: PasswordHasher = request.app.state.hasher
    return hasher


async def get_tokens(request: Request) -> TokenService:
    tokens: TokenService = request.app.state.tokens
    return tokens


async def get_mailer(request: Request) -> Mailer:
    mailer: Mailer = request.app.state.mailer
    return mailer


async def get_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.limiter
    return limiter


async def get_cache(request: Request) -> Cache:
    cache: Cache = request.app.state.cache
    return cache


async def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


async def get_media_links(request: Request) -> MediaLinks:
    """URLs of stored files for this request: under ``CONDUIT_PUBLIC_URL``, or else the request's own
    scheme, host and root path (the scheme as a trusted proxy reports it)."""
    settings: Settings = request.app.state.settings
    return MediaLinks(settings.public_url or str(request.base_url).rstrip("/"))


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
CacheDep = Annotated[Cache, Depends(get_cache)]
HasherDep = Annotated[PasswordHasher, Depends(get_hasher)]
TokensDep = Annotated[TokenService, Depends(get_tokens)]
MailerDep = Annotated[Mailer, Depends(get_mailer)]
LimiterDep = Annotated[RateLimiter, Depends(get_limiter)]
StorageDep = Annotated[Storage, Depends(get_storage)]
MediaLinksDep = Annotated[MediaLinks, Depends(get_media_links)]

# Declared for OpenAPI, so Swagger's "Authorize" button runs the OAuth2 password flow; the header
# itself is read once, through _authorization below.
_oauth2 = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", scheme_name="OAuth2", auto_error=False)
_authorization = APIKeyHeader(
    name="Authorization",
    scheme_name="Token",
    description="`Token <jwt>` (RealWorld) or `Bearer <jwt>`.",
    auto_error=False,
)


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated user, the token they presented and its session (refresh family), if any."""

    user: User
    token: str
    session_id: str | None = None


def _parse_authorization(header: str) -> str:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() not in {"token", "bearer"} or not token.strip():
        raise AuthenticationError("the Authorization header must be 'Token <jwt>' or 'Bearer <jwt>'")
    return token.strip()


def _claims(request: Request, authorization: str) -> tuple[str, TokenClaims]:
    """The token of an ``Authorization`` header and its verified claims (401 if not valid)."""
    tokens: TokenService = request.app.state.tokens
    token = _parse_authorization(authorization)
    try:
        return token, tokens.verify(token)
    except InvalidTokenError:
        raise AuthenticationError("the access token is invalid or expired") from None


def _still_valid(claims: TokenClaims, user: User | None) -> bool:
    """An existing, active user, and a token issued after their last "end all sessions" (password
    change, logout-all, deactivation). (A logged-out session has no user: see get_session_user.)"""
    return (
        user is not None
        and user.is_active
        and (user.sessions_valid_after is None or claims.issued_at >= user.sessions_valid_after)
    )


async def session_user(session: AsyncSession, claims: TokenClaims) -> User | None:
    """The user whose verified ``claims`` are still good (see ``_still_valid``), else ``None``."""
    user = await user_service.get_session_user(session, claims.user_id, claims.session_id)
    return user if _still_valid(claims, user) else None


async def get_optional_caller(
    request: Request,
    authorization: Annotated[str | None, Depends(_authorization)],
    _bearer: Annotated[str | None, Depends(_oauth2)],
) -> Caller | None:
    """The caller if credentials were sent; 401 if they were sent but are not valid.

    Valid means: a good signature and claims, a user that still exists and is active, a session
    (refresh family) not logged out, and a token issued after the user's last "end all sessions".
    The token service and the session are taken here rather than injected: every route resolves
    this dependency, and for anonymous callers they would be resolved for nothing.
    """
    if authorization is None:
        return None
    token, claims = _claims(request, authorization)
    session: AsyncSession = request.state.unit_of_work.session
    user = await session_user(session, claims)
    if user is None:
        raise AuthenticationError("the access token is invalid or expired")
    return Caller(user, token, claims.session_id)


async def get_viewer_id(
    request: Request,
    authorization: Annotated[str | None, Depends(_authorization)],
    _bearer: Annotated[str | None, Depends(_oauth2)],
) -> int | None:
    """For reads: the caller's id, checked like ``get_optional_caller`` but through the read cache.

    Reads need only the id, not a user loaded into the request's session, so the verdict on a token's
    session is cached (as the cut-off instant, or ``-`` for "ended") under the cache generation, which
    every logout, password change and deactivation bumps: those still take effect at once.
    """
    if authorization is None:
        return None
    _, claims = _claims(request, authorization)

    async def load() -> bytes:
        session: AsyncSession = request.state.unit_of_work.session
        user = await user_service.get_session_user(session, claims.user_id, claims.session_id)
        if user is None or not user.is_active:
            return b"-"
        return str(user.sessions_valid_after.timestamp() if user.sessions_valid_after else 0).encode()

    cache: Cache = request.app.state.cache
    verdict, _ = await cache.get_or_load(f"caller:{claims.user_id}:{claims.session_id}", load)
    if verdict == b"-" or claims.issued_at.timestamp() < float(verdict):
        raise AuthenticationError("the access token is invalid or expired")
    return claims.user_id


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_caller(
    request: Request,
    caller: Annotated[Caller | None, Depends(get_optional_caller)],
    limiter: LimiterDep,
    settings: SettingsDep,
) -> Caller:
    """The authenticated caller (401 otherwise). Their writes count against a per-user rate limit."""
    if caller is None:
        raise AuthenticationError("authentication required")
    if request.method not in SAFE_METHODS:
        await limiter.hit(settings.rate_limit_writes_user, "writes-user", str(caller.user.id))
    return caller


OptionalCaller = Annotated[Caller | None, Depends(get_optional_caller)]
CurrentCaller = Annotated[Caller, Depends(get_caller)]


async def get_current_user(caller: CurrentCaller) -> User:
    return caller.user


CurrentUser = Annotated[User, Depends(get_current_user)]


def require_role(*roles: Role) -> Any:
    """A dependency admitting only users with one of ``roles`` (403 for anyone else)."""

    async def check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise PermissionDeniedError("you are not allowed to do this")
        return user

    return Depends(check)


AdminUser = Annotated[User, require_role(Role.ADMIN)]


async def get_publishing_user(user: CurrentUser, settings: SettingsDep) -> User:
    """The caller, who must have verified their email if the settings require it to publish."""
    if settings.require_verified_email and user.email_verified_at is None:
        raise PermissionDeniedError("verify your email address before publishing")
    return user


PublishingUser = Annotated[User, Depends(get_publishing_user)]


async def get_client_info(request: Request) -> ClientInfo:
    return ClientInfo(
        ip=request.client.host if request.client else None, user_agent=request.headers.get("user-agent")
    )


ClientDep = Annotated[ClientInfo, Depends(get_client_info)]
ViewerId = Annotated[int | None, Depends(get_viewer_id)]
# ``openapi_extra`` of the routes that take ViewerId: FastAPI lists the credentials a route reads as its
# security requirements, and appending the empty one says that calling without any is fine too.
OPTIONAL_AUTH: dict[str, Any] = {"security": [{}]}


async def get_reader_id(viewer_id: ViewerId) -> int:
    """For reads that need a signed-in caller (the feed): their id, or 401."""
    if viewer_id is None:
        raise AuthenticationError("authentication required")
    return viewer_id


ReaderId = Annotated[int, Depends(get_reader_id)]


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    offset: int


async def get_page(
    limit: Annotated[int, Query(ge=1, le=100, description="Page size, 1 to 100.")] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_INT32, description="Number of items to skip.")] = 0,
) -> Page:
    return Page(limit, offset)


Pagination = Annotated[Page, Depends(get_page)]
