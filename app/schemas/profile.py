from __future__ import annotations

from pydantic import BaseModel, Field

from app.schemas.common import Schema


class Profile(Schema):
    username: str = Field(examples=["jake"])
    bio: str = Field(examples=["I work at statefarm"])
    image: str = Field(examples=["https://api.realworld.io/images/smiley-cyrus.jpg"])
    following: bool = Field(examples=[False])


class ProfileResponse(BaseModel):
    profile: Profile
