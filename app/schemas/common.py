"""Building blocks shared by the schemas: timestamps, text rules and the camelCase base model."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    StrictInt,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from app.core.errors import PATTERN_MESSAGES

# The largest id: ids are 32-bit integer columns, and a bound in the schema keeps a larger number from
# reaching the database (where PostgreSQL would refuse it as out of range).
MAX_INT32 = 2**31 - 1


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


class _NoNul:
    """Refuses NUL, and says so in the JSON schema (``not`` a string containing one)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(_clean_text, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["not"] = {"pattern": r"\x00"}
        return json_schema


# Put after any StringConstraints, so that length and pattern errors keep their string messages.
CleanText = _NoNul()

# The characters str.strip() removes (those for which str.isspace() is true), spelled out: patterns
# must mean the same in Python and in JSON Schema (ECMA-262), whose ``\s`` is another set.
SPACE_CHARS = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Unanchored, as JSON Schema patterns are: at least one character that is not a space.
NOT_BLANK = rf"[^{SPACE_CHARS}]"
PATTERN_MESSAGES[NOT_BLANK] = "can't be blank"


def _strip(value: str) -> str:
    return value.strip()


# Surrounding spaces are dropped *after* the length and pattern checks, which therefore apply to the
# value as sent, as the OpenAPI document says (put after StringConstraints).
Strip = AfterValidator(_strip)


def _integral(value: object) -> object:
    # JSON has one kind of number: 42.0 is the integer 42, as JSON Schema's "integer" says. Strings,
    # booleans and 42.5 still fail the strict check.
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[StrictInt, BeforeValidator(_integral)]


class Schema(BaseModel):
    """Base of the API models: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)
