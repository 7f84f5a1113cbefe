"""Uploads: the caller's avatar and the images of their articles (rules in ``app/services/media.py``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, status

from app.api.v1.dependencies import (
    CurrentCaller,
    CurrentUser,
    LimiterDep,
    MediaLinksDep,
    SessionDep,
    SettingsDep,
    StorageDep,
)
from app.api.v1.endpoints.users import user_response
from app.api.v1.idempotency import IdempotencyDep, idempotent_responses
from app.api.v1.multipart import FIELD, receive_file
from app.core.errors import error_responses
from app.schemas.article import ArticleResponse
from app.schemas.common import MAX_INT32
from app.schemas.user import UserResponse
from app.services import articles as article_service
from app.services import media as media_service
from app.services.media import UploadRules

router = APIRouter(tags=["Uploads"])

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif")
SlugPath = Annotated[str, Path(max_length=255, description="The article's slug.")]
ImageIdPath = Annotated[int, Path(ge=1, le=MAX_INT32, description="The image's id.")]

# The body is read by receive_file as it streams in, not by FastAPI, so it is described here.
MULTIPART_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {
                        FIELD: {
                            "type": "string",
                            "format": "binary",
                            "description": "A JPEG, PNG, WebP or GIF image, at most CONDUIT_UPLOAD_MAX_BYTES "
                            "(5 MiB by default) and CONDUIT_UPLOAD_MAX_PIXELS.",
                        }
                    },
                },
                # What is accepted; the type is still decided by the file's content, never this.
                "encoding": {FIELD: {"contentType": ", ".join(IMAGE_TYPES)}},
            }
        },
    }
}
RULES = (
    " The type is decided by the file's content, never its name or declared type: JPEG, PNG, WebP and "
    "GIF only (415). Over the size cap: 413, as soon as it passes it. Over the pixel limit or not a "
    "valid image: 422. The image is re-encoded (metadata and anything appended are dropped). Over the "
    "caller's quota of images or bytes: 403. Uploads are rate-limited per user (429)."
)


async def _rate_limit(limiter: LimiterDep, settings: SettingsDep, user_id: int) -> None:
    await limiter.hit(settings.rate_limit_uploads_user, "uploads-user", str(user_id))


@router.put(
    "/user/avatar",
    status_code=status.HTTP_201_CREATED,
    response_model=UserResponse,
    summary="Upload my avatar",
    description="Multipart, the image in the field `file`. Replaces the caller's avatar (uploaded or "
    "set as an `image` URL): `image` becomes its URL. Stored at most 512 pixels a side." + RULES,
    responses=error_responses(400, 401, 403, 413, 415, 422, 429, 503),
    openapi_extra=MULTIPART_BODY,
)
async def upload_avatar(
    request: Request,
    caller: CurrentCaller,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    links: MediaLinksDep,
) -> UserResponse:
    await _rate_limit(limiter, settings, caller.user.id)
    async with receive_file(request, max_bytes=settings.upload_max_bytes) as upload:
        await media_service.set_avatar(
            session, storage, caller.user, upload.path, UploadRules.from_settings(settings)
        )
    return user_response(caller.user, caller.token, links)


@router.delete(
    "/user/avatar",
    response_model=UserResponse,
    summary="Remove my avatar",
    description="Removes the uploaded avatar; `image` becomes empty. Idempotent.",
    responses=error_responses(401, 429),
)
async def remove_avatar(caller: CurrentCaller, session: SessionDep, links: MediaLinksDep) -> UserResponse:
    await media_service.remove_avatar(session, caller.user)
    return user_response(caller.user, caller.token, links)


@router.post(
    "/articles/{slug}/images",
    status_code=status.HTTP_201_CREATED,
    response_model=ArticleResponse,
    summary="Add an image to an article",
    description="Multipart, the image in the field `file`. Only the article's author may. Answers the "
    "article with the new image in `images`; its `variants` (thumbnails) appear once a background job "
    "has made them." + RULES + " Safe to retry with an `Idempotency-Key` (the file's bytes are part "
    "of the request it names; the multipart framing is not).",
    responses={
        **error_responses(400, 401, 403, 404, 413, 415, 429, 503),
        **idempotent_responses(201),
    },
    openapi_extra=MULTIPART_BODY,
)
async def add_article_image(
    slug: SlugPath,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    storage: StorageDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    links: MediaLinksDep,
    idempotency: IdempotencyDep,
) -> ArticleResponse:
    await _rate_limit(limiter, settings, user.id)
    # Before the body is read: a stranger's upload is refused without being received or decoded.
    article_id = await media_service.article_for_upload(session, user, slug)
    async with receive_file(request, max_bytes=settings.upload_max_bytes) as upload:
        await idempotency.claim(user.id, body_sha256=upload.sha256)
        await media_service.add_article_image(
            session, storage, user, article_id, upload.path, UploadRules.from_settings(settings)
        )
    return ArticleResponse(article=await article_service.get_article(session, slug, user.id, links))


@router.delete(
    "/articles/{slug}/images/{image_id}",
    response_model=ArticleResponse,
    summary="Delete an image of an article",
    description="Only the article's author or a moderator may. Answers the article without it.",
    responses=error_responses(401, 403, 404, 422, 429),
)
async def delete_article_image(
    slug: SlugPath, image_id: ImageIdPath, user: CurrentUser, session: SessionDep, links: MediaLinksDep
) -> ArticleResponse:
    await media_service.delete_article_image(session, user, slug, image_id)
    return ArticleResponse(article=await article_service.get_article(session, slug, user.id, links))
