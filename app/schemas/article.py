from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from app.core.errors import PATTERN_MESSAGES
from app.schemas.common import NOT_BLANK, SPACE_CHARS, CleanText, Schema, Strip, Timestamp
from app.schemas.profile import Profile

TITLE_MAX = 255
DESCRIPTION_MAX = 1024
BODY_MAX = 100_000
TAG_MAX = 64
TAGS_PER_ARTICLE_MAX = 20

# No control characters, and at least one character that is neither a control nor a space.
_TAG_CHAR = r"[^\x00-\x1f\x7f]"
TAG_PATTERN = rf"^{_TAG_CHAR}*[^\x00-\x1f\x7f{SPACE_CHARS}]{_TAG_CHAR}*$"
PATTERN_MESSAGES[TAG_PATTERN] = "must not be blank or contain control characters"

Title = Annotated[
    str,
    StringConstraints(min_length=1, max_length=TITLE_MAX, pattern=NOT_BLANK),
    Strip,
    CleanText,
]
Description = Annotated[
    str,
    StringConstraints(min_length=1, max_length=DESCRIPTION_MAX, pattern=NOT_BLANK),
    Strip,
    CleanText,
]
Body = Annotated[str, StringConstraints(min_length=1, max_length=BODY_MAX), CleanText]
TagName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=TAG_MAX, pattern=TAG_PATTERN),
    Strip,
    CleanText,
]
TagList = Annotated[list[TagName], Field(max_length=TAGS_PER_ARTICLE_MAX)]


def _dedupe(tags: list[str] | None) -> list[str] | None:
    return None if tags is None else list(dict.fromkeys(tags))


class NewArticle(Schema):
    title: Title = Field(examples=["How to train your dragon"])
    description: Description = Field(examples=["Ever wonder how?"])
    body: Body = Field(examples=["You have to believe"])
    tag_list: TagList = Field(default_factory=list, examples=[["dragons", "training"]])

    _unique_tags = field_validator("tag_list")(_dedupe)


class NewArticleRequest(BaseModel):
    article: NewArticle

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "article": {
                        "title": "How to train your dragon",
                        "description": "Ever wonder how?",
                        "body": "You have to believe",
                        "tagList": ["dragons", "training"],
                    }
                }
            ]
        }
    )


class UpdateArticle(Schema):
    """Only the fields sent are changed. ``tagList``, beyond the RealWorld contract, replaces the tags."""

    title: Title | None = None
    description: Description | None = None
    body: Body | None = None
    tag_list: TagList | None = None

    _unique_tags = field_validator("tag_list")(_dedupe)


class UpdateArticleRequest(BaseModel):
    article: UpdateArticle

    model_config = ConfigDict(json_schema_extra={"examples": [{"article": {"body": "With two hands"}}]})


class ArticleImage(Schema):
    """An image uploaded to illustrate an article (``POST /articles/{slug}/images``)."""

    id: int = Field(examples=[1])
    url: str = Field(examples=["https://api.example.com/media/images/3kTMd1Zxp2QfLq8aE0bY7w.jpg"])
    content_type: str = Field(examples=["image/jpeg"])
    width: int = Field(examples=[1600])
    height: int = Field(examples=[1200])
    variants: dict[str, str] = Field(
        description="Smaller copies, keyed by their largest side in pixels (64, 256, 1024; never larger "
        "than the image). A background job makes them right after the upload: empty until then.",
        examples=[
            {
                "64": "https://api.example.com/media/images/3kTMd1Zxp2QfLq8aE0bY7w_64.jpg",
                "256": "https://api.example.com/media/images/3kTMd1Zxp2QfLq8aE0bY7w_256.jpg",
                "1024": "https://api.example.com/media/images/3kTMd1Zxp2QfLq8aE0bY7w_1024.jpg",
            }
        ],
    )


class ArticleSummary(Schema):
    """An article as it appears in lists (no body)."""

    slug: str = Field(examples=["how-to-train-your-dragon"])
    title: str = Field(examples=["How to train your dragon"])
    description: str = Field(examples=["Ever wonder how?"])
    tag_list: list[str] = Field(examples=[["dragons", "training"]])
    created_at: Timestamp
    updated_at: Timestamp
    favorited: bool = Field(examples=[False])
    favorites_count: int = Field(examples=[0])
    author: Profile
    # Beyond the RealWorld contract, which clients ignore.
    images: list[ArticleImage] = Field(default_factory=list, description="Oldest first.")


class ArticleOut(ArticleSummary):
    body: str = Field(examples=["You have to believe"])


class ArticleResponse(BaseModel):
    article: ArticleOut


class ArticleListResponse(Schema):
    articles: list[ArticleSummary]
    articles_count: int = Field(description="Total number of matching articles, not the page length.")
