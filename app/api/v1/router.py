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
from app.core.errors import error_responses

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
    # on every request, not two. Any operation can answer 503: the database is down or too slow, or
    # the request deadline passed (docs/reliability.md).
    for router in ROUTERS:
        app.include_router(router, prefix=prefix, responses=error_responses(503))
    install_idempotency(app)
