from __future__ import annotations

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from app.schemas.common import MAX_INT32, JsonInt, Schema, Timestamp
from app.schemas.profile import Profile


class NotificationArticle(Schema):
    slug: str
    title: str


class Ref(Schema):
    id: int


class NotificationOut(Schema):
    id: int
    kind: str = Field(
        description='"comment", "follow", "favorite", "article" or "export".', examples=["comment"]
    )
    actor: Profile | None = Field(description="Who caused it (null for exports).")
    article: NotificationArticle | None
    comment: Ref | None
    export: Ref | None
    created_at: Timestamp
    read_at: Timestamp | None


class NotificationListResponse(Schema):
    notifications: list[NotificationOut]
    unread_count: int
    next_cursor: int | None = Field(
        description="Pass as `before` for the next (older) page; null at the end."
    )


class MarkReadRequest(Schema):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, json_schema_extra={"examples": [{"upTo": 42}]}
    )

    up_to: JsonInt = Field(
        ge=1, le=MAX_INT32, description="This notification and every older one become read."
    )


class UnreadCountResponse(Schema):
    unread_count: int
