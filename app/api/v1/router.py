"""Everything under ``/api/v1``. A ``v2`` would be a sibling package mounted beside it."""

from fastapi import APIRouter

from app.api.v1.endpoints import admin, articles, auth, comments, profiles, tags, users

api_router = APIRouter()
for module in (users, profiles, articles, comments, tags, auth, admin):
    api_router.include_router(module.router)
