"""``/ws``: the caller's notifications, live. The handshake only; see app/core/realtime.py for the
connection and docs/realtime.md for the protocol.

The token travels in the first message, never in the URL (URLs end up in access logs and proxies).
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, WebSocket
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.api.v1.dependencies import session_user
from app.core.config import Settings
from app.core.outbox import user_channel
from app.core.realtime import CLOSE_FORBIDDEN_ORIGIN, CLOSE_UNAUTHORIZED, Connection, close, parse
from app.core.security import InvalidTokenError, TokenClaims, TokenService

logger = logging.getLogger("conduit.realtime")

router = APIRouter(tags=["Notifications"])


def _origin_allowed(origin: str | None, allowed: list[str]) -> bool:
    """Browsers always send ``Origin`` on a WebSocket handshake and never enforce CORS on it: without
    this check any site could open a socket (with a token it got hold of). Other clients send none."""
    return origin is None or "*" in allowed or origin in allowed


async def _session_holds(sessionmaker: async_sessionmaker[AsyncSession], claims: TokenClaims) -> bool:
    """Whether the token's user and session are still good. A session of its own, closed at once: the
    socket may live for hours, its connection must not."""
    async with sessionmaker() as session:
        return await session_user(session, claims) is not None


async def _authenticate(websocket: WebSocket, settings: Settings) -> TokenClaims | None:
    """The claims of the token in the first message, if it arrives in time and is valid now."""
    try:
        async with asyncio.timeout(settings.ws_auth_timeout):
            message = await websocket.receive()
    except TimeoutError:
        return None
    if message["type"] != "websocket.receive":  # the client left
        return None
    data = parse(message)
    token = data.get("token")
    if data.get("type") != "auth" or not isinstance(token, str) or not token:
        return None
    tokens: TokenService = websocket.app.state.tokens
    try:
        claims = tokens.verify(token)
    except InvalidTokenError:
        return None
    holds = await _session_holds(websocket.app.state.sessionmaker, claims)
    return claims if holds else None


@router.websocket("/ws", name="notifications_live")
async def live(websocket: WebSocket) -> None:
    settings: Settings = websocket.app.state.settings
    if not _origin_allowed(websocket.headers.get("origin"), settings.cors_origins):
        await websocket.close(CLOSE_FORBIDDEN_ORIGIN)  # before accepting: the handshake gets a 403
        return
    await websocket.accept()
    claims = await _authenticate(websocket, settings)
    if claims is None:
        await close(websocket, CLOSE_UNAUTHORIZED)
        return
    sessionmaker: async_sessionmaker[AsyncSession] = websocket.app.state.sessionmaker

    async def still_valid() -> bool:
        """Asked after pub/sub lost messages (a logout among them?). A database that fails cannot say
        no: the socket stays, and the next check or the token's expiry decides."""
        try:
            return await _session_holds(sessionmaker, claims)
        except (SQLAlchemyError, OSError) as exc:
            logger.warning("could not recheck a live socket's session (%s)", type(exc).__name__)
            return True

    connection = Connection(
        websocket,
        websocket.app.state.pubsub,
        user_channel(claims.user_id),
        expires_at=claims.expires_at,
        issued_at=claims.issued_at,
        session_id=claims.session_id,
        heartbeat_interval=settings.ws_heartbeat_interval,
        queue_size=settings.ws_queue_size,
        still_valid=still_valid,
    )
    await connection.serve()
