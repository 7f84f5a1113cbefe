"""Everything under ``/api/v1``. A ``v2`` would be a sibling package mounted beside it."""

from fastapi import APIRouter, FastAPI

from app.api.v1.endpoints import (
    admin,
    articles,
    auth,
    comments,
    exports,
    notifications,
    profiles,
    realtime,
    tags,
    uploads,
    users,
)
from app.api.v1.idempotency import install_idempotency

ROUTERS: tuple[APIRouter, ...] = tuple(
    module.router
    for module in (
        users,
        profiles,
        articles,
        comments,
        tags,
        auth,
        admin,
        notifications,
        exports,
        uploads,
        realtime,
    )
)


def include_v1(app: FastAPI, prefix: str) -> None:
    # Each resource router is included in the app directly: one level of routers to match against
    # on every request, not two.
    for router in ROUTERS:
        app.include_router(router, prefix=prefix)
    install_idempotency(app)
