"""The error model: domain exceptions raised by services, rendered in one place.

Every error response is an RFC 9457 problem document (``application/problem+json``) that also
carries the RealWorld ``errors`` member, so both kinds of client understand it::

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
     "detail": "email has already been taken", "instance": "/api/v1/users", "code": "validation_failed",
     "errors": {"body": ["email has already been taken"], "email": ["has already been taken"]}}

Nothing internal (tracebacks, SQL, driver names, paths) is ever rendered.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

logger = logging.getLogger("conduit.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
REQUEST_ID = "conduit.request_id"  # the scope key of the request's id (app/core/observability.py)
RETRY_AFTER = "1"  # seconds, in every 503: outages of a dependency are usually short


class AppError(Exception):
    """Base of the domain errors. Services raise these; they never know about HTTP responses."""

    status_code: int = HTTPStatus.BAD_REQUEST
    code: str = "bad_request"
    # True when the work done before the error must be committed anyway (see get_session).
    keeps_changes: bool = False

    def __init__(
        self,
        detail: str,
        *,
        fields: Mapping[str, Sequence[str]] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fields = {name: list(messages) for name, messages in (fields or {}).items()}
        # RFC 9457 extension members (e.g. the export a conflict is about), added to the problem body.
        self.extensions = dict(extensions or {})

    def headers(self) -> dict[str, str]:
        return {}


class NotFoundError(AppError):
    status_code = HTTPStatus.NOT_FOUND
    code = "not_found"


class AuthenticationError(AppError):
    status_code = HTTPStatus.UNAUTHORIZED
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Token realm="conduit"'}


class RefreshTokenReusedError(AuthenticationError):
    """A spent refresh token was presented again. Its family is revoked, and that must persist
    although the request fails."""

    keeps_changes = True


class PermissionDeniedError(AppError):
    status_code = HTTPStatus.FORBIDDEN
    code = "forbidden"


class ConflictError(AppError):
    status_code = HTTPStatus.CONFLICT
    code = "conflict"


class ValidationFailedError(AppError):
    """Input that is well-formed but not acceptable (e.g. a taken username): 422."""

    status_code = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "validation_failed"

    @classmethod
    def for_field(cls, field: str, message: str) -> ValidationFailedError:
        return cls(f"{field} {message}", fields={field: [message]})


class PayloadTooLargeError(AppError):
    status_code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"


class UnsupportedMediaTypeError(AppError):
    status_code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_media_type"


class QuotaExceededError(AppError):
    """Storing this would take the user past their upload quota (count or bytes)."""

    status_code = HTTPStatus.FORBIDDEN
    code = "quota_exceeded"


class ServiceUnavailableError(AppError):
    """A dependency (the database, the storage) failed or took too long: worth retrying shortly."""

    status_code = HTTPStatus.SERVICE_UNAVAILABLE
    code = "service_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": RETRY_AFTER}


class RateLimitedError(AppError):
    """A rate limit is exhausted; ``retry_after`` is in whole seconds."""

    status_code = HTTPStatus.TOO_MANY_REQUESTS
    code = "rate_limited"

    def __init__(self, detail: str, *, limit: int, retry_after: int) -> None:
        super().__init__(detail)
        self.limit = limit
        self.retry_after = max(1, retry_after)

    def headers(self) -> dict[str, str]:
        seconds = str(self.retry_after)
        return {
            "Retry-After": seconds,
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": seconds,
        }


class ProblemErrors(BaseModel):
    """The RealWorld ``errors`` member: ``body`` always, plus one key per offending field."""

    model_config = ConfigDict(extra="allow")
    body: list[str]


class Problem(BaseModel):
    """An RFC 9457 problem document, extended with the RealWorld ``errors`` member."""

    type: str = Field(default="about:blank", examples=["about:blank"])
    title: str = Field(examples=["Not Found"])
    status: int = Field(examples=[404])
    detail: str = Field(examples=["article not found"])
    instance: str | None = Field(default=None, examples=["/api/v1/articles/no-such-slug"])
    code: str = Field(description="A stable, machine-readable error code.", examples=["not_found"])
    errors: ProblemErrors = Field(examples=[{"body": ["article not found"]}])


def problem_response(
    request: Request,
    status: int,
    detail: str,
    *,
    code: str,
    fields: Mapping[str, Sequence[str]] | None = None,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> Response:
    errors: dict[str, list[str]] = {"body": [detail]}
    for name, messages in (fields or {}).items():
        errors.setdefault(name, []).extend(messages)
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "code": code,
        "errors": errors,
    }
    for name, value in (extensions or {}).items():
        body.setdefault(name, value)  # never in place of a standard member
    return Response(
        orjson.dumps(body),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )


def _field_name(loc: Sequence[int | str]) -> str:
    """The name a client knows a field by: the last named element of a Pydantic location."""
    names = [part for part in loc if isinstance(part, str)]
    if len(names) > 1 and names[0] in {"body", "query", "path", "header", "cookie"}:
        names = names[1:]
    return names[-1] if names else "body"


# Human messages for the string patterns the schemas use, keyed by the pattern (filled by the schemas).
PATTERN_MESSAGES: dict[str, str] = {}

_MESSAGES = {
    "missing": "can't be blank",
    "string_too_long": "is too long (maximum is {max_length} characters)",
    "too_long": "has too many items (maximum is {max_length})",
    "extra_forbidden": "is not an accepted field",
    "string_type": "must be a string",
    "string_unicode": "must be valid Unicode",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
}


def _message(error: Mapping[str, Any]) -> str:
    """A short message in RealWorld style ("can't be blank"), the field name being the key."""
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    if kind == "string_too_short":
        min_length = ctx.get("min_length", 1)
        return "can't be blank" if min_length == 1 else f"is too short (minimum is {min_length} characters)"
    if kind == "string_pattern_mismatch":
        return PATTERN_MESSAGES.get(str(ctx.get("pattern")), "has an invalid format")
    if kind in _MESSAGES:
        return _MESSAGES[kind].format(**ctx)
    return str(error.get("msg", "is invalid")).removeprefix("Value error, ")


async def _app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    if exc.keeps_changes and (unit_of_work := getattr(request.state, "unit_of_work", None)) is not None:
        unit_of_work.keep_changes = True
    return problem_response(
        request,
        exc.status_code,
        exc.detail,
        code=exc.code,
        fields=exc.fields,
        headers=exc.headers(),
        extensions=exc.extensions,
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    fields: dict[str, list[str]] = {}
    general: list[str] = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            general.append("the request body is not valid JSON")
            continue
        fields.setdefault(_field_name(error.get("loc", ())), []).append(_message(error))
    general += [f"{name} {' and '.join(messages)}" for name, messages in fields.items()]
    return problem_response(
        request, HTTPStatus.UNPROCESSABLE_ENTITY, "; ".join(general), code="validation_failed", fields=fields
    )


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")
_TEMPLATE_PARAMETER = re.compile(r"\\\{[^/]*?\\\}")  # a "{name}" of a path template, once escaped


def _documented_methods(app: Any, path: str) -> list[str] | None:
    """The methods the OpenAPI document gives the path, by its most specific template (a literal segment
    before a parameter: ``/articles/feed`` is the feed, not the article ``feed``); None if undocumented."""
    matching = [
        (template.count("{"), item)
        for template, item in app.openapi().get("paths", {}).items()
        if re.fullmatch(_TEMPLATE_PARAMETER.sub("[^/]+", re.escape(template)), path)
    ]
    return sorted(method.upper() for method in min(matching, key=lambda m: m[0])[1]) if matching else None


def _allowed_methods(request: Request) -> str:
    """Every method of the requested resource. (Starlette's 405 names only those of the first route
    that matched the path, and the router has one route per method: GET and PUT /user are two.)"""
    documented = _documented_methods(request.app, request.url.path)
    if documented is not None:
        return ", ".join(documented)
    routes = request.app.router.routes  # outside the API (/docs, /media): ask the routes themselves
    return ", ".join(
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = HTTPStatus(exc.status_code)
    detail = (
        exc.detail if isinstance(exc.detail, str) and exc.detail != status.phrase else status.phrase.lower()
    )
    headers = dict(exc.headers or {})
    if status is HTTPStatus.METHOD_NOT_ALLOWED:
        headers["Allow"] = _allowed_methods(request)
    return problem_response(request, status, detail, code=status.name.lower(), headers=headers)


async def _integrity_error(request: Request, exc: Exception) -> Response:
    # A constraint the service did not anticipate: a conflict with existing data, never a 500.
    logger.warning(
        "integrity error on %s %s: %s",
        request.method,
        request.url.path,
        type(exc.__cause__).__name__,
    )
    return problem_response(
        request,
        HTTPStatus.CONFLICT,
        "the request conflicts with existing data",
        code="conflict",
    )


async def _data_error(request: Request, exc: Exception) -> Response:
    # The database refused a value the schemas let through (e.g. out of a column's range).
    logger.warning("data error on %s %s", request.method, request.url.path)
    return problem_response(
        request,
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "a value is out of the accepted range",
        code="validation_failed",
    )


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    # The database is down, unreachable, too slow (a statement or lock timeout), or out of connections.
    # Logged by the driver error's type (QueryCanceledError, ConnectionRefusedError, ...), never its
    # message; the request id is in the log context (app/core/observability.py).
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    logger.error(
        "database unavailable on %s %s: %s (%s)",
        request.method,
        request.url.path,
        type(exc).__name__,
        type(cause.__cause__ or cause).__name__,
    )
    return problem_response(
        request,
        HTTPStatus.SERVICE_UNAVAILABLE,
        "the service is temporarily unavailable, please retry",
        code="service_unavailable",
        headers={"Retry-After": RETRY_AFTER},
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    # Starlette answers unhandled errors outside every added middleware, so the security headers
    # are added here. (Imported late: app.core.middleware imports this module.)
    from app.core.middleware import API_CSP, SECURITY_HEADERS

    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": API_CSP}
    if (request_id := request.scope.get(REQUEST_ID)) is not None:  # set by the observability middleware
        headers["X-Request-ID"] = request_id
    return problem_response(
        request,
        HTTPStatus.INTERNAL_SERVER_ERROR,
        "internal server error",
        code="internal_error",
        headers=headers,
    )


_HANDLERS: list[tuple[type[Exception], Callable[[Request, Exception], Awaitable[Response]]]] = [
    (AppError, _app_error),
    (RequestValidationError, _validation_error),
    (StarletteHTTPException, _http_error),
    (IntegrityError, _integrity_error),
    (PoolTimeoutError, _database_unavailable),
    (OperationalError, _database_unavailable),
    (InterfaceError, _database_unavailable),
    (DataError, _data_error),
]


def install_error_handlers(app: FastAPI) -> None:
    for exception_type, handler in _HANDLERS:
        app.add_exception_handler(exception_type, handler)
    app.add_exception_handler(Exception, _unexpected_error)


async def render_exception(request: Request, exc: Exception) -> Response:
    """The response the handlers above give ``exc`` (for errors raised outside the router, such as a
    failing commit in the unit-of-work middleware)."""
    for exception_type, handler in _HANDLERS:
        if isinstance(exc, exception_type):
            return await handler(request, exc)
    return await _unexpected_error(request, exc)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting the problem documents a route can return."""
    return {
        status: {
            "model": Problem,
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
