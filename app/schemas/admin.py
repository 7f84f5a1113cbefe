from __future__ import annotations

from pydantic import ConfigDict, Field

from app.models import Role
from app.schemas.auth import StrictBody
from app.schemas.common import Schema, Timestamp


class AdminUser(Schema):
    id: int = Field(examples=[1])
    username: str = Field(examples=["jake"])
    email: str = Field(examples=["jake@example.com"])
    role: Role = Field(examples=["user"])
    is_active: bool = Field(examples=[True])
    email_verified: bool = Field(examples=[False])
    created_at: Timestamp


class AdminUserResponse(Schema):
    user: AdminUser


class AdminUserList(Schema):
    users: list[AdminUser]
    users_count: int = Field(examples=[1])


class RoleUpdate(StrictBody):
    role: Role

    model_config = ConfigDict(json_schema_extra={"examples": [{"role": "moderator"}]})
