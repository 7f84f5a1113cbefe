"""The OpenAPI document: what FastAPI derives from the routes, completed with the answers that layers
outside the routes give, so that it declares every status an operation can return.

Each route declares its own errors (``error_responses(...)``). What the middleware and the error
handlers add to every route is declared here, once, by the rules that decide it:

- every operation: 400 (a ``Host`` that ``CONDUIT_ALLOWED_HOSTS`` does not allow), 429 (the global
  per-IP rate limit) and 503 (the database unavailable, or the rate limiter's Redis with
  ``CONDUIT_RATE_LIMIT_FAIL_OPEN=false``);
- operations with a request body: also 400 for a body that cannot be decoded, 413 past
  ``CONDUIT_MAX_BODY_BYTES`` and 422 for a body that is not valid;
- writes: 409, the answer to a constraint violation no service anticipated (e.g. a concurrent change);
- JSON reads that get an ETag (``app/core/http_cache.py``): 304 for a current ``If-None-Match``.

It also adds the links from the responses that create something to the operations on it (``LINKS``).

The schemathesis run in ``tests/fuzz`` holds the document to this: a status an operation answers
that is not declared fails it.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI

from app.core.errors import error_responses
from app.core.middleware import carries_credentials

EVERY_OPERATION = {
    HTTPStatus.BAD_REQUEST: "The request could not be read: an undecodable or malformed body, or a Host "
    "header that is not allowed.",
    HTTPStatus.TOO_MANY_REQUESTS: "A rate limit is exhausted; `Retry-After` says when to retry.",
    HTTPStatus.SERVICE_UNAVAILABLE: "A dependency (the database) is unavailable; retry later.",
}
WITH_BODY = {
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "The request body exceeds CONDUIT_MAX_BODY_BYTES.",
    HTTPStatus.UNPROCESSABLE_ENTITY: "The request body is not valid.",
}
WRITES = {HTTPStatus.CONFLICT: "The request conflicts with existing data (e.g. a concurrent change)."}
NOT_MODIFIED = {"description": "Not Modified: the ETag sent in `If-None-Match` is still current."}
WRITE_METHODS = frozenset({"post", "put", "patch", "delete"})


# OpenAPI links: what a response's values can be passed to. (Clients and schemathesis' stateful tests
# follow them: create an article, then read, change, favorite, comment on and delete it by its slug.)
ARTICLE = "/api/v1/articles/{slug}"
COMMENTS = f"{ARTICLE}/comments"
EXPORT = "/api/v1/exports/{export_id}"
PROFILE = "/api/v1/profiles/{username}"
NEW_SLUG = {"slug": "$response.body#/article/slug"}
SAME_SLUG = {"slug": "$request.path.slug"}
LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str, dict[str, str]]]] = {
    ("/api/v1/articles", "post", "201"): {
        "GetArticle": (ARTICLE, "get", NEW_SLUG),
        "UpdateArticle": (ARTICLE, "put", NEW_SLUG),
        "DeleteArticle": (ARTICLE, "delete", NEW_SLUG),
        "FavoriteArticle": (f"{ARTICLE}/favorite", "post", NEW_SLUG),
        "UnfavoriteArticle": (f"{ARTICLE}/favorite", "delete", NEW_SLUG),
        "ListComments": (COMMENTS, "get", NEW_SLUG),
        "AddComment": (COMMENTS, "post", NEW_SLUG),
        "AddImage": (f"{ARTICLE}/images", "post", NEW_SLUG),
    },
    (COMMENTS, "post", "200"): {
        "DeleteComment": (
            f"{COMMENTS}/{{comment_id}}",
            "delete",
            {**SAME_SLUG, "comment_id": "$response.body#/comment/id"},
        ),
    },
    (f"{ARTICLE}/images", "post", "201"): {
        "DeleteImage": (
            f"{ARTICLE}/images/{{image_id}}",
            "delete",
            {**SAME_SLUG, "image_id": "$response.body#/article/images/0/id"},
        ),
    },
    ("/api/v1/exports", "post", "202"): {
        "GetExport": (EXPORT, "get", {"export_id": "$response.body#/export/id"}),
        "DownloadExport": (f"{EXPORT}/download", "get", {"export_id": "$response.body#/export/id"}),
    },
    ("/api/v1/users", "post", "201"): {
        "GetProfile": (PROFILE, "get", {"username": "$response.body#/user/username"}),
        "Follow": (f"{PROFILE}/follow", "post", {"username": "$response.body#/user/username"}),
        "Unfollow": (f"{PROFILE}/follow", "delete", {"username": "$response.body#/user/username"}),
    },
}


def _operation_ref(path: str, method: str) -> str:
    escaped = path.replace("~", "~0").replace("/", "~1")
    return f"#/paths/{escaped}/{method}"


def _problem(status: HTTPStatus, description: str) -> dict[str, Any]:
    # The same entry as error_responses(), as FastAPI renders it, with a description of the cause.
    (entry,) = error_responses(status).values()
    return {"description": description, "content": entry["content"]}


def _is_json_read(method: str, path: str, operation: dict[str, Any]) -> bool:
    success = operation["responses"].get("200", {})
    return (
        method == "get" and not carries_credentials(path) and "application/json" in success.get("content", {})
    )


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Add the statuses that the layers around the routes answer to each operation of ``document``."""
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            responses: dict[str, Any] = operation["responses"]
            added = dict(EVERY_OPERATION)
            if "requestBody" in operation:
                added.update(WITH_BODY)
            if method in WRITE_METHODS:
                added.update(WRITES)
            for status, description in added.items():
                responses.setdefault(str(int(status)), _problem(status, description))
            if _is_json_read(method, path, operation):
                responses.setdefault(str(int(HTTPStatus.NOT_MODIFIED)), NOT_MODIFIED)
            operation["responses"] = dict(sorted(responses.items()))
    for (path, method, code), links in LINKS.items():
        response = document["paths"][path][method]["responses"][code]
        response["links"] = {
            name: {"operationRef": _operation_ref(target, target_method), "parameters": parameters}
            for name, (target, target_method, parameters) in links.items()
        }
    return document


def install_openapi(app: FastAPI) -> None:
    """Serve ``complete(...)`` of FastAPI's document (built once, on first use, as FastAPI does)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
