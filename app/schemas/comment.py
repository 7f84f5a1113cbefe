from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.schemas.common import CleanText, Schema, Timestamp
from app.schemas.profile import Profile

COMMENT_MAX = 10_000


class NewComment(BaseModel):
    body: Annotated[
        str,
        StringConstraints(min_length=1, max_length=COMMENT_MAX),
        CleanText,
        Field(examples=["Thank you so much!"]),
    ]


class NewCommentRequest(BaseModel):
    comment: NewComment

    model_config = ConfigDict(json_schema_extra={"examples": [{"comment": {"body": "Thank you so much!"}}]})


class CommentOut(Schema):
    id: int = Field(examples=[1])
    created_at: Timestamp
    updated_at: Timestamp
    body: str = Field(examples=["Thank you so much!"])
    author: Profile


class CommentResponse(BaseModel):
    comment: CommentOut


class CommentListResponse(BaseModel):
    comments: list[CommentOut]
