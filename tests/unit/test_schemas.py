"""Request and response schemas."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from app.schemas.article import NewArticle, UpdateArticle
from app.schemas.common import SPACE_CHARS, format_timestamp
from app.schemas.notification import MarkReadRequest
from app.schemas.user import NewUser, UpdateUser


def test_timestamps_are_utc_milliseconds_with_z() -> None:
    moment = datetime(2026, 1, 2, 4, 4, 5, 678999, tzinfo=timezone(timedelta(hours=1)))
    assert format_timestamp(moment) == "2026-01-02T03:04:05.678Z"
    assert format_timestamp(datetime(2026, 1, 2, tzinfo=UTC)) == "2026-01-02T00:00:00.000Z"


def test_tags_are_stripped_and_deduplicated_in_order() -> None:
    article = NewArticle(title="t", description="d", body="b", tag_list=[" dragons ", "training", "dragons"])
    assert article.tag_list == ["dragons", "training"]


def test_camel_case_on_the_wire() -> None:
    article = NewArticle.model_validate({"title": "t", "description": "d", "body": "b", "tagList": ["x"]})
    assert article.tag_list == ["x"]


@pytest.mark.parametrize("tags", [["a"] * 0 + [f"t{i}" for i in range(21)], ["bad\ttag"], [""], ["x" * 65]])
def test_bad_tag_lists(tags: list[str]) -> None:
    with pytest.raises(ValidationError):
        NewArticle(title="t", description="d", body="b", tag_list=tags)


@pytest.mark.parametrize("title", ["   ", "\u2003", "\x85", "\t\n"])
def test_blank_titles(title: str) -> None:
    with pytest.raises(ValidationError, match="should match pattern"):
        NewArticle(title=title, description="d", body="b")


@pytest.mark.parametrize("tag", ["\x85", " \u3000 "])
def test_blank_tags(tag: str) -> None:
    with pytest.raises(ValidationError, match="should match pattern"):
        NewArticle(title="t", description="d", body="b", tag_list=[tag])


def test_lengths_apply_to_the_value_as_sent() -> None:
    # As the OpenAPI document says (maxLength on the JSON string), not to the value once stripped.
    with pytest.raises(ValidationError, match="at most 255 characters"):
        NewArticle(title=" " + "t" * 255, description="d", body="b")
    assert NewArticle(title=" " + "t" * 254, description="d", body="b").title == "t" * 254


def test_space_chars_are_what_strip_removes() -> None:
    # The pattern spells out str.isspace(), so that Python and JSON Schema agree on what is blank.
    space = re.compile(f"[{SPACE_CHARS}]")
    assert [c for c in range(sys.maxunicode + 1) if chr(c).isspace()] == [
        c for c in range(sys.maxunicode + 1) if space.fullmatch(chr(c))
    ]


def test_integral_json_numbers_are_integers() -> None:
    assert MarkReadRequest.model_validate_json('{"upTo": 42.0}').up_to == 42
    for bad in ('{"upTo": 42.5}', '{"upTo": "42"}', '{"upTo": true}'):
        with pytest.raises(ValidationError):
            MarkReadRequest.model_validate_json(bad)


def test_update_article_distinguishes_absent_from_given() -> None:
    assert UpdateArticle.model_validate({"body": "x"}).model_fields_set == {"body"}
    assert UpdateArticle.model_validate({}).tag_list is None


def test_email_is_normalised() -> None:
    user = NewUser(username="jake", email="  Jake@Example.COM ", password="correct-horse-9")
    assert user.email == "jake@example.com"


@pytest.mark.parametrize("email", ["plain", "a@b", "a@@example.com", "a@example..com", "a b@example.com"])
def test_invalid_emails(email: str) -> None:
    with pytest.raises(ValidationError):
        NewUser(username="jake", email=email, password="correct-horse-9")


def test_lone_surrogates_are_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        UpdateUser(bio="broken \ud800 text")
    assert info.value.errors()[0]["type"] == "string_unicode"


def test_update_user_image_may_be_null() -> None:
    update = UpdateUser.model_validate({"image": None})
    assert update.image is None and "image" in update.model_fields_set
