"""Bodies of the OAuth2 and account endpoints under /auth. Field names follow OAuth2 (snake_case)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.schemas.common import NOT_BLANK, CleanText, Strip
from app.schemas.user import Email, Password

OpaqueToken = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=NOT_BLANK),
    Strip,
    CleanText,
    Field(examples=["Yx8…"]),
]


class StrictBody(BaseModel):
    """Our own routes reject unknown fields (no mass assignment by accident)."""

    model_config = ConfigDict(extra="forbid")


class PasswordGrantForm(BaseModel):
    """The OAuth2 password grant (RFC 6749 §4.3), as a form. ``username`` may also be an email."""

    # An empty form field counts as absent, so "" is accepted like a missing grant_type.
    grant_type: Annotated[str, Field(pattern="^(password)?$")] = ""
    username: Annotated[
        str, StringConstraints(min_length=1, max_length=320, pattern=NOT_BLANK), Strip, CleanText
    ]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024), CleanText]
    scope: str = ""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"grant_type": "password", "username": "jake", "password": "correct-horse-battery-9"}
            ]
        }
    )


class TokenResponse(BaseModel):
    access_token: str = Field(
        examples=["eyJhbGciOiJIUzI1NiIsImtpZCI6IjEyMzQ1Njc4OTBhYmNkZWYiLCJ0eXAiOiJKV1QifQ..."]
    )
    token_type: str = Field(default="bearer", examples=["bearer"])
    expires_in: int = Field(description="Seconds until the access token expires.", examples=[900])
    refresh_token: str = Field(examples=["b1xvV0tQm0f7L0mJq3o4b4r8B1JxJzY7k3x3m9w2Q9c"])


class RefreshRequest(StrictBody):
    """The refresh token may come in the body or, for browsers, in the HttpOnly cookie."""

    refresh_token: OpaqueToken | None = None

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"refresh_token": "b1xvV0tQm0f7L0mJq3o4b4r8B1Jx"}]}
    )


class PasswordResetRequest(StrictBody):
    email: Email

    model_config = ConfigDict(json_schema_extra={"examples": [{"email": "jake@example.com"}]})


class PasswordResetConfirm(StrictBody):
    token: OpaqueToken
    password: Password

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"token": "kq3…", "password": "a-new-passphrase-7"}]}
    )


class VerifyEmailRequest(StrictBody):
    token: OpaqueToken

    model_config = ConfigDict(json_schema_extra={"examples": [{"token": "kq3…"}]})
