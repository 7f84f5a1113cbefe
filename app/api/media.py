"""``GET /media/{key}``: stored uploads, outside the versioned API (their URLs are in its responses).

Local storage: the file, with its exact ``Content-Type``, an inline ``Content-Disposition``, a year of
immutable caching and an ETag (``If-None-Match`` gets a 304); ``X-Content-Type-Options: nosniff`` and
``Content-Security-Policy: default-src 'none'`` come with every response (app/core/middleware.py).
S3: a redirect to a presigned GET URL, cacheable for half its lifetime. The key must have the one
shape keys are generated with, so no path outside the storage can be named.
"""

from __future__ import annotations

import hashlib
import os
import stat
from http import HTTPStatus

import anyio.to_thread
from fastapi import APIRouter, Request
from starlette.responses import FileResponse, RedirectResponse, Response

from app.api.v1.dependencies import StorageDep
from app.core.errors import NotFoundError
from app.core.http_cache import etag_matches
from app.core.storage import (
    IMMUTABLE,
    MEDIA_PATH,
    LocalFile,
    content_disposition_of,
    content_type_of,
    is_key,
)

router = APIRouter(include_in_schema=False)


def _etag(key: str, status_result: os.stat_result) -> str:
    # A key's file never changes; size and mtime still tell a restored or rewritten file apart.
    tag = f"{key}:{status_result.st_size}:{status_result.st_mtime_ns}".encode()
    return f'"{hashlib.blake2b(tag, digest_size=16).hexdigest()}"'


@router.api_route(f"{MEDIA_PATH}/{{key:path}}", methods=["GET", "HEAD"])
async def serve_media(key: str, request: Request, storage: StorageDep) -> Response:
    if not is_key(key):
        raise NotFoundError("file not found")
    location = await storage.locate(key)
    if not isinstance(location, LocalFile):
        return RedirectResponse(
            location.url,
            status_code=HTTPStatus.TEMPORARY_REDIRECT,
            headers={"Cache-Control": f"public, max-age={location.max_age}"},
        )
    try:
        status_result = await anyio.to_thread.run_sync(os.stat, location.path)
    except FileNotFoundError:
        raise NotFoundError("file not found") from None
    if not stat.S_ISREG(status_result.st_mode):
        raise NotFoundError("file not found")
    headers = {
        "Cache-Control": IMMUTABLE,
        "Content-Disposition": content_disposition_of(key),
        "ETag": _etag(key, status_result),
    }
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and etag_matches(if_none_match, headers["ETag"]):
        return Response(status_code=HTTPStatus.NOT_MODIFIED, headers=headers)
    return FileResponse(
        location.path, headers=headers, media_type=content_type_of(key), stat_result=status_result
    )
