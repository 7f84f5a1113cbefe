from __future__ import annotations

from typing import Annotated

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StringConstraints
from pydantic.alias_generators import to_camel

from app.core.errors import PATTERN_MESSAGES
from app.schemas.common import NOT_BLANK, CleanText, Schema, Strip

USERNAME_MAX = 64
PASSWORD_MIN = 8
PASSWORD_MAX = 128
BIO_MAX = 4096
IMAGE_MAX = 2048
USERNAME_PATTERN = r"^[A-Za-z0-9_-]+$"
PATTERN_MESSAGES[USERNAME_PATTERN] = "may contain only letters, digits, '_' and '-'"


def _any_case(word: str) -> str:
    return "".join(f"[{char.lower()}{char.upper()}]" if char.isalpha() else char for char in word)


# email_validator refuses addresses at special-use domains (RFC 6761: .test, .local, .invalid, …),
# which JSON Schema's "email" format allows: the schema excludes them with a "not" pattern (which also
# says what CleanText's would, as this one takes its place).
SPECIAL_USE = "|".join(_any_case(name) for name in SPECIAL_USE_DOMAIN_NAMES)
REFUSED_EMAIL = rf"\x00|@(?:[^@]*\.)?(?:{SPECIAL_USE})$"


def _normalise_email(value: str) -> str:
    try:
        info = validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        raise ValueError("is invalid") from None
    return info.normalized.lower()


Username = Annotated[
    str,
    StringConstraints(min_length=1, max_length=USERNAME_MAX, pattern=USERNAME_PATTERN),
    CleanText,
    Field(description="Letters, digits, `_` and `-`.", examples=["jake"]),
]
Email = Annotated[
    str,
    StringConstraints(min_length=3, max_length=320),
    Strip,
    CleanText,
    AfterValidator(_normalise_email),
    Field(
        json_schema_extra={"format": "email", "not": {"pattern": REFUSED_EMAIL}},
        examples=["jake@example.com"],
    ),
]
Password = Annotated[
    str,
    StringConstraints(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX),
    CleanText,
    Field(json_schema_extra={"format": "password"}, examples=["correct-horse-battery-9"]),
]
Bio = Annotated[
    str,
    StringConstraints(max_length=BIO_MAX),
    CleanText,
    Field(examples=["I work at statefarm"]),
]
ImageUrl = Annotated[
    str,
    StringConstraints(max_length=IMAGE_MAX),
    Strip,
    CleanText,
    Field(examples=["https://api.realworld.io/images/smiley-cyrus.jpg"]),
]


class NewUser(BaseModel):
    username: Username
    email: Email
    password: Password


class NewUserRequest(BaseModel):
    user: NewUser

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user": {
                        "username": "jake",
                        "email": "jake@example.com",
                        "password": "correct-horse-battery-9",
                    }
                }
            ]
        }
    )


class LoginUser(BaseModel):
    # No policy on login: any string is checked against the stored hash.
    email: Annotated[
        str, StringConstraints(min_length=1, max_length=320, pattern=NOT_BLANK), Strip, CleanText
    ]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024), CleanText]


class LoginUserRequest(BaseModel):
    user: LoginUser

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user": {
                        "email": "jake@example.com",
                        "password": "correct-horse-battery-9",
                    }
                }
            ]
        }
    )


class UpdateUser(BaseModel):
    """Only the fields sent are changed. ``image: null`` or ``""`` removes the image."""

    username: Username | None = None
    email: Email | None = None
    password: Password | None = None
    bio: Bio | None = None
    image: ImageUrl | None = None


class UpdateUserRequest(BaseModel):
    user: UpdateUser

    model_config = ConfigDict(json_schema_extra={"examples": [{"user": {"bio": "I like to skateboard"}}]})


class UserOut(Schema):
    email: str = Field(examples=["jake@example.com"])
    token: str = Field(examples=["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..."])
    username: str = Field(examples=["jake"])
    bio: str = Field(examples=["I work at statefarm"])
    image: str = Field(examples=[""])


class UserResponse(BaseModel):
    user: UserOut


class UserSettings(Schema):
    """What the user is emailed about (notifications are always recorded and pushed live)."""

    email_on_follow: StrictBool = Field(description="Email me when someone follows me.", examples=[True])
    email_on_comment: StrictBool = Field(
        description="Email me when someone comments on my article.", examples=[True]
    )
    weekly_digest: StrictBool = Field(
        description="Email me a weekly digest of the top articles by the people I follow.", examples=[False]
    )


class UserSettingsResponse(BaseModel):
    settings: UserSettings


class UpdateUserSettings(Schema):
    """Only the fields sent are changed."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    email_on_follow: StrictBool | None = None
    email_on_comment: StrictBool | None = None
    weekly_digest: StrictBool | None = None


class UpdateUserSettingsRequest(BaseModel):
    settings: UpdateUserSettings

    model_config = ConfigDict(json_schema_extra={"examples": [{"settings": {"weeklyDigest": True}}]})
