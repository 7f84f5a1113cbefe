"""Rate limits that need more than one key: login attempts count per client IP and per account."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.config import Settings
from app.core.ratelimit import RateLimiter
from app.models import User
from app.services import users as user_service
from app.services.auth import ClientInfo


async def check_login_limits(
    session: AsyncSession, limiter: RateLimiter, settings: Settings, client: ClientInfo, login: str
) -> User | None:
    """Count a login attempt against the client IP and the account; return the account (if any).

    The account budget is keyed by the user's id, so trying its username and its email draws on one
    budget; unknown logins are keyed by what was typed.
    """
    await limiter.hit(settings.rate_limit_login_ip, "login-ip", client.ip or "unknown")
    user = await user_service.find_by_login(session, login)
    account = f"user-{user.id}" if user else f"login-{login.strip().lower()}"
    await limiter.hit(settings.rate_limit_login_account, "login-account", account)
    return user
