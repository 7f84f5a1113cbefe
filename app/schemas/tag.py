from __future__ import annotations

from pydantic import BaseModel, Field


class TagListResponse(BaseModel):
    tags: list[str] = Field(examples=[["dragons", "training"]])
