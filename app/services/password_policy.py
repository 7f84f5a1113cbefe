"""The password policy (OWASP ASVS 5, chapter 6): length, not the account's own name, not common.

Length bounds (8 to 128 characters) are enforced by the request schemas; the rules here need context
(the username and email) or data (the list of common passwords).
"""

from __future__ import annotations

import re
from functools import cache

from zxcvbn.frequency_lists import FREQUENCY_LISTS

from app.core.errors import ValidationFailedError

_LETTER = re.compile(r"[^\W\d_]")
_DIGIT = re.compile(r"\d")


@cache
def common_passwords() -> frozenset[str]:
    """The 30,000 most common passwords, as shipped with the zxcvbn package (lower-case)."""
    return frozenset(FREQUENCY_LISTS["passwords"])


def check_password(password: str, *, username: str, email: str, require_letter_and_digit: bool) -> None:
    """Raise a 422 naming the ``password`` field if ``password`` breaks the policy."""
    lowered = password.lower()
    if lowered in {username.lower(), email.lower(), email.split("@", 1)[0].lower()}:
        problem = "must not be your username or email"
    elif lowered in common_passwords():
        problem = "is too common, choose another"
    elif require_letter_and_digit and not (_LETTER.search(password) and _DIGIT.search(password)):
        problem = "must contain at least one letter and one digit"
    else:
        return
    raise ValidationFailedError.for_field("password", problem)
