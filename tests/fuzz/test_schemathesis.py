"""Property-based fuzzing of the whole API with schemathesis, against our own ``/api/v1/openapi.json``.

The app runs in process (ASGI) on the test database, with the rate limits of ``make_settings`` (far
out of reach). Schemathesis' engine runs every phase of ``st run`` over every operation of the
document: the schema's examples, coverage (boundary values, every missing or wrong parameter, unknown
methods), fuzzing (schema-valid and schema-violating requests) and stateful sequences along the
document's links and those it infers from the responses (create an article, then read, change,
favorite, comment on and delete it by its real slug). Every response goes through every default
check: no server error, a declared status, content type and headers, a body matching its schema,
schema-valid input accepted and schema-violating input rejected, authentication enforced where it is
required, 405 with ``Allow`` for unknown methods, resources available after their creation and gone
after their deletion. One failure fails the test.

Requests carry ``Authorization: Token <jwt>`` of a user registered through the API for the purpose
(``Identity``: the same user all along, logging in again after "log out everywhere"); requests to the
admin operations, that of a registered user promoted to admin.

A schema-valid request may still be refused with a 422 where the rule cannot be written in JSON
Schema: a username or email already taken (the RealWorld contract says 422), the password policy
(common passwords, not the username; its letter-and-digit rule is a setting), an unknown or expired
emailed token, following yourself, an admin changing their own role, an ``Idempotency-Key`` already
used for a different request (the fuzzing draws keys again and again). ``SEMANTIC_422`` lists them, per
operation and field, and ``semantic_rejections_only`` holds every such 422 to that list: any other 422
for schema-valid input still fails.

Left out, because they are not in the OpenAPI document: the WebSocket ``/api/v1/ws`` (tests/realtime),
``/media/{key}`` (tests/api/test_uploads.py), ``/health/*`` and ``/metrics`` (tests/ops) and the docs
pages (tests/ops/test_docs_page.py, tests/api/test_openapi.py).

Examples per operation and phase: ``CONDUIT_FUZZ_EXAMPLES`` (default 10: one to two minutes).
The seed is fixed, so a run in CI is reproducible; ``CONDUIT_FUZZ_SEED`` picks another. A longer run:

    CONDUIT_FUZZ_EXAMPLES=200 CONDUIT_FUZZ_SEED=$RANDOM uv run pytest tests/fuzz -p no:cacheprovider
"""

from __future__ import annotations

import io
import os
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import strategies as st
from PIL import Image
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema
from schemathesis.engine.run import PhaseName
from schemathesis.python import asgi
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.models import Role, User
from tests.conftest import make_settings
from tests.factories import Account, Api

EXAMPLES = int(os.environ.get("CONDUIT_FUZZ_EXAMPLES", "10"))
SEED = int(os.environ.get("CONDUIT_FUZZ_SEED", "8"))
OPENAPI = "/api/v1/openapi.json"
PASSWORD = "fuzz-password-9x"

TAKEN = "has already been taken"
POLICY = (
    "must not be your username or email",
    "is too common, choose another",
    "must contain at least one letter and one digit",
)
EMAILED_TOKEN = "is invalid or has expired"
KEY_REUSED = "was already used for a different request"
KEYED = (
    "POST /api/v1/articles",
    "POST /api/v1/articles/{slug}/comments",
    "POST /api/v1/articles/{slug}/images",
    "POST /api/v1/exports",
)
# Operation -> field -> the messages a 422 may give for schema-valid input (see the module docstring).
SEMANTIC_422: dict[str, dict[str, tuple[str, ...]]] = {
    "POST /api/v1/users": {"username": (TAKEN,), "email": (TAKEN,), "password": POLICY},
    "PUT /api/v1/user": {"username": (TAKEN,), "email": (TAKEN,), "password": POLICY},
    "POST /api/v1/auth/password-reset/confirm": {"token": (EMAILED_TOKEN,), "password": POLICY},
    "POST /api/v1/auth/verify-email": {"token": (EMAILED_TOKEN,)},
    "POST /api/v1/profiles/{username}/follow": {"username": ("cannot be followed by yourself",)},
    "PUT /api/v1/admin/users/{username}/role": {"username": ("cannot change your own role",)},
    "POST /api/v1/admin/users/{username}/deactivate": {"username": ("cannot deactivate yourself",)},
    **{operation: {"Idempotency-Key": (KEY_REUSED,)} for operation in KEYED},
}
# positive_data_acceptance's defaults, with 422 for those operations only (then policed as above).
ACCEPTING_422 = {"expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]}


@schemathesis.check
def semantic_rejections_only(ctx: Any, response: Any, case: schemathesis.Case) -> None:
    """A 422 to a schema-valid request names only fields, and reasons, that JSON Schema cannot express."""
    if response.status_code != 422 or case.meta is None or not case.meta.generation.mode.is_positive:
        return
    allowed = SEMANTIC_422.get(case.operation.label, {})
    problem = response.json()
    reasons = {field: messages for field, messages in problem["errors"].items() if field != "body"}
    unexpected = {
        field: messages
        for field, messages in reasons.items()
        if field not in allowed or any(message not in allowed[field] for message in messages)
    }
    if unexpected or not reasons:
        raise AssertionError(f"schema-valid input refused with a 422: {problem['detail']}")


def _images(image_format: str) -> st.SearchStrategy[bytes]:
    """Small valid images, which is what the upload operations' ``encoding`` says the file must be."""

    @st.composite
    def draw(draw: st.DrawFn) -> bytes:
        size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
        colour = draw(st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)))
        buffer = io.BytesIO()
        Image.new("RGB", size, colour).save(buffer, format=image_format)
        return buffer.getvalue()

    return draw()


for _media_type, _format in (
    ("image/jpeg", "JPEG"),
    ("image/png", "PNG"),
    ("image/webp", "WEBP"),
    ("image/gif", "GIF"),
):
    schemathesis.openapi.media_type(_media_type, _images(_format))


@pytest.fixture
async def admin(api: Api, engine: AsyncEngine) -> Account:
    """A registered user promoted to admin, as ``conduit set-role`` would (emptied after the test)."""
    account = await api.register(f"fuzz-admin-{uuid.uuid4().hex[:8]}", password=PASSWORD)
    async with engine.begin() as connection:
        await connection.execute(
            update(User).where(User.username == account.username).values(role=Role.ADMIN)
        )
    return account


@pytest.fixture
def fuzz_app(database_url: str, tmp_path: Path, engine: AsyncEngine) -> Iterator[FastAPI]:
    """A fresh app on the test database: schemathesis runs it (and its lifespan) in a thread of its own.

    Depends on ``engine`` so that the tables are emptied after the test, like after any other.
    """
    yield create_app(make_settings(database_url, tmp_path))
    # The app's shutdown (jobs drained, connections closed). Schemathesis' pytest plugin does it too,
    # before the fixtures are torn down; this covers a run without the plugin.
    asgi.shutdown_lifespans()


class Identity:
    """The registered user the requests are made as, kept across the run so that what one request
    creates, the next can change or delete. When its token stops working (logged out everywhere), it logs
    in again, with the email and password it last set; only if that fails too (deactivated by the admin)
    is another user registered."""

    def __init__(self, schema: Any) -> None:
        self.register = schema["/api/v1/users"]["POST"]
        self.login = schema["/api/v1/users/login"]["POST"]
        self.token: str | None = None
        self.email = self.password = ""
        self.users = 0

    def _call(self, operation: Any, user: dict[str, str]) -> Any:
        return operation.Case(body={"user": user}, media_type="application/json").call()

    def current(self) -> str:
        if self.token is None and self.email:
            response = self._call(self.login, {"email": self.email, "password": self.password})
            self.token = response.json()["user"]["token"] if response.status_code == 200 else None
        if self.token is None:
            name = f"fuzz-{uuid.uuid4().hex[:12]}"
            self.email, self.password = f"{name}@example.com", PASSWORD
            response = self._call(
                self.register, {"username": name, "email": self.email, "password": PASSWORD}
            )
            assert response.status_code == 201, response.text
            self.token = response.json()["user"]["token"]
            self.users += 1
        return self.token

    def after_call(self, context: Any, case: schemathesis.Case, response: schemathesis.Response) -> None:
        if (case.headers or {}).get("Authorization") != f"Token {self.token}":
            return  # not sent as this user (a check's probe without credentials, a generated header)
        if not case.operation.definition.raw.get("security"):
            return  # the token was not what was checked (a 401 from login is about the password)
        if case.operation.label == "PUT /api/v1/user" and response.status_code == 200:
            user = response.json()["user"]
            self.token, self.email = user["token"], user["email"]  # a new password keeps this token
            sent = case.body["user"] if isinstance(case.body, dict) else {}
            if isinstance(sent, dict) and isinstance(sent.get("password"), str):
                self.password = sent["password"]
        elif response.status_code == 401 or (
            case.operation.label == "POST /api/v1/auth/logout-all" and response.status_code == 204
        ):
            self.token = None


def _token_auth(token: Callable[[], str]) -> type:
    class TokenAuth:
        def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
            return token()

        def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Token {data}"}

    return TokenAuth


def _load(app: FastAPI, admin: Account) -> tuple[Any, Identity]:
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": EXAMPLES, "database": "none"},
            "operations": [
                {"include-name": name, "checks": {"positive_data_acceptance": ACCEPTING_422}}
                for name in SEMANTIC_422
            ],
        }
    )
    schema = schemathesis.openapi.from_asgi(OPENAPI, app, config=config)
    user = Identity(schema)
    # Not cached by schemathesis: each request asks, and gets the current token.
    schema.auth(refresh_interval=None).apply_to(tag="Admin")(_token_auth(lambda: admin.token))
    schema.auth(refresh_interval=None).skip_for(tag="Admin")(_token_auth(user.current))
    schema.hooks.register_hook_with_name(user.after_call, "after_call")
    return schema, user


def _report(failures: list[str], statuses: dict[str, Counter[int]]) -> str:
    seen = "\n".join(f"  {label}: {dict(sorted(seen.items()))}" for label, seen in sorted(statuses.items()))
    return "\n\n".join([*failures, f"statuses seen per operation:\n{seen}"])


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")  # schemathesis' own
def test_every_operation_conforms(fuzz_app: FastAPI, admin: Account) -> None:
    schema, user = _load(fuzz_app, admin)
    operations = {result.ok().label for result in schema.get_all_operations()}
    failures: list[str] = []
    statuses: dict[str, Counter[int]] = defaultdict(Counter)
    stateful_scenarios = 0
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            stateful_scenarios += event.phase == PhaseName.STATEFUL_TESTING
            for case_id, node in recorder.cases.items():
                interaction = recorder.interactions.get(case_id)
                if interaction is not None and interaction.response is not None:
                    statuses[node.value.operation.label][int(interaction.response.status_code)] += 1
            for checks in recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.append(
                            f"[{check.name}] {failure.operation}: {failure.title}\n{failure.message}\n"
                            f"{check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError):
            failures.append(f"[error] {event.label}: {event.info.title}\n{event.info.message}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    assert not failures, _report(failures, statuses)
    assert operations <= set(statuses), f"never called: {sorted(operations - set(statuses))}"
    assert stateful_scenarios, "the stateful phase ran no scenario (no links between the operations?)"
    print(f"\n{len(operations)} operations, {user.users} users\n{_report([], statuses)}")
