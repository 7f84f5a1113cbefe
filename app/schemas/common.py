"""Building blocks shared by the schemas: timestamps, text rules and the camelCase base model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel


def format_timestamp(value: datetime) -> str:
    """``2026-01-02T03:04:05.678Z``: UTC, milliseconds, trailing ``Z``, on every database."""
    value = value.astimezone(UTC)
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"


Timestamp = Annotated[
    datetime,
    PlainSerializer(format_timestamp, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "examples": ["2026-01-02T03:04:05.678Z"],
        }
    ),
]


def _clean_text(value: str) -> str:
    # PostgreSQL cannot store NUL. (Lone surrogates are already refused by Pydantic: string_unicode.)
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Put after any StringConstraints, so that length and pattern errors keep their string messages.
CleanText = AfterValidator(_clean_text)


class Schema(BaseModel):
    """Base of the API models: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)
