"""Comments on articles (RealWorld ``/articles/{slug}/comments``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Path, Response, status

from app.api.v1.dependencies import (
    OPTIONAL_AUTH,
    CacheDep,
    CurrentUser,
    MailerDep,
    MediaLinksDep,
    SessionDep,
    SettingsDep,
    ViewerId,
)
from app.api.v1.idempotency import IdempotencyDep, idempotent_responses
from app.core.errors import error_responses
from app.core.mail import send_quietly
from app.core.responses import JSONBytes
from app.schemas.comment import CommentListResponse, CommentResponse, NewCommentRequest
from app.schemas.common import MAX_INT32
from app.services import comments as comment_service

router = APIRouter(prefix="/articles/{slug}/comments", tags=["Comments"])

SlugPath = Annotated[str, Path(max_length=255, description="The article's slug.")]


@router.get(
    "",
    response_model=CommentListResponse,
    summary="List comments",
    description="The article's comments, newest first.",
    responses=error_responses(401, 404, 422),
    openapi_extra=OPTIONAL_AUTH,
)
async def list_comments(
    slug: SlugPath, session: SessionDep, cache: CacheDep, viewer_id: ViewerId, links: MediaLinksDep
) -> Response:
    return JSONBytes(await comment_service.comments_json(session, cache, slug, viewer_id, links))


@router.post(
    "",
    response_model=CommentResponse,
    summary="Add a comment",
    description="Comment on an article. Answers 200, as the RealWorld contract says. The article's "
    "author is notified (and emailed, if their settings say so). Safe to retry with an `Idempotency-Key`.",
    responses={**error_responses(401, 404), **idempotent_responses(200)},
)
async def add_comment(
    slug: SlugPath,
    body: NewCommentRequest,
    session: SessionDep,
    user: CurrentUser,
    settings: SettingsDep,
    mailer: MailerDep,
    background: BackgroundTasks,
    links: MediaLinksDep,
    idempotency: IdempotencyDep,
) -> CommentResponse:
    await idempotency.claim(user.id)
    comment, email = await comment_service.add_comment(
        session, user, slug, body.comment.body, links, frontend_url=settings.frontend_url
    )
    if email is not None:  # after the response, so after the commit; failures are only logged
        background.add_task(send_quietly, mailer, email)
    return CommentResponse(comment=comment)


@router.delete(
    "/{comment_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a comment",
    description="Only the comment's author or a moderator may delete it.",
    responses=error_responses(401, 403, 404, 422),
)
async def delete_comment(
    slug: SlugPath,
    comment_id: Annotated[int, Path(ge=1, le=MAX_INT32, description="The comment's id.")],
    session: SessionDep,
    user: CurrentUser,
) -> None:
    await comment_service.delete_comment(session, user, slug, comment_id)
