"""Articles, the feed and favorites (RealWorld ``/articles``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from app.api.v1.dependencies import (
    OPTIONAL_AUTH,
    CacheDep,
    CurrentUser,
    MediaLinksDep,
    Pagination,
    PublishingUser,
    ReaderId,
    SessionDep,
    ViewerId,
)
from app.api.v1.idempotency import IdempotencyDep, idempotent_responses
from app.core.errors import error_responses
from app.core.responses import JSONBytes
from app.schemas.article import (
    ArticleListResponse,
    ArticleResponse,
    NewArticleRequest,
    UpdateArticleRequest,
)
from app.services import articles as article_service

router = APIRouter(prefix="/articles", tags=["Articles"])

SlugPath = Annotated[str, Path(max_length=255, description="The article's slug.")]
FilterQuery = Annotated[str | None, Query(max_length=64)]


@router.get(
    "",
    response_model=ArticleListResponse,
    summary="List articles",
    description="Newest first, filtered by `tag`, `author` and/or `favorited` (a username). "
    "`articlesCount` is the total number of matching articles.",
    responses=error_responses(401, 422),
    openapi_extra=OPTIONAL_AUTH,
)
async def list_articles(
    session: SessionDep,
    cache: CacheDep,
    viewer_id: ViewerId,
    page: Pagination,
    links: MediaLinksDep,
    tag: FilterQuery = None,
    author: FilterQuery = None,
    favorited: FilterQuery = None,
) -> Response:
    return JSONBytes(
        await article_service.list_articles_json(
            session,
            cache,
            viewer_id,
            tag=tag,
            author=author,
            favorited=favorited,
            limit=page.limit,
            offset=page.offset,
            links=links,
        )
    )


@router.get(
    "/feed",
    response_model=ArticleListResponse,
    summary="Feed",
    description="Articles by the users the caller follows, newest first.",
    responses=error_responses(401, 422),
)
async def feed(
    session: SessionDep, cache: CacheDep, reader_id: ReaderId, page: Pagination, links: MediaLinksDep
) -> Response:
    return JSONBytes(
        await article_service.feed_json(
            session, cache, reader_id, links, limit=page.limit, offset=page.offset
        )
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ArticleResponse,
    summary="Create an article",
    description="Publish an article. The slug is derived from the title and stays stable across edits. "
    "When CONDUIT_REQUIRE_VERIFIED_EMAIL is on, only users with a verified email may publish (403). "
    "Safe to retry with an `Idempotency-Key`.",
    responses={**error_responses(401, 403), **idempotent_responses(201)},
)
async def create_article(
    body: NewArticleRequest,
    session: SessionDep,
    user: PublishingUser,
    links: MediaLinksDep,
    idempotency: IdempotencyDep,
) -> ArticleResponse:
    await idempotency.claim(user.id)
    return ArticleResponse(article=await article_service.create_article(session, user, body.article, links))


@router.get(
    "/{slug}",
    response_model=ArticleResponse,
    summary="Get an article",
    description="One article with its body.",
    responses=error_responses(401, 404, 422),
    openapi_extra=OPTIONAL_AUTH,
)
async def get_article(
    slug: SlugPath, session: SessionDep, cache: CacheDep, viewer_id: ViewerId, links: MediaLinksDep
) -> Response:
    return JSONBytes(await article_service.article_json(session, cache, slug, viewer_id, links))


@router.put(
    "/{slug}",
    response_model=ArticleResponse,
    summary="Update an article",
    description="Change title, description, body and/or tagList. Only the author may.",
    responses=error_responses(401, 403, 404, 422),
)
async def update_article(
    slug: SlugPath, body: UpdateArticleRequest, session: SessionDep, user: CurrentUser, links: MediaLinksDep
) -> ArticleResponse:
    return ArticleResponse(
        article=await article_service.update_article(session, user, slug, body.article, links)
    )


@router.delete(
    "/{slug}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete an article",
    description="Delete an article with its comments and favorites. Only the author or a moderator may.",
    responses=error_responses(401, 403, 404, 422),
)
async def delete_article(slug: SlugPath, session: SessionDep, user: CurrentUser) -> None:
    await article_service.delete_article(session, user, slug)


@router.post(
    "/{slug}/favorite",
    response_model=ArticleResponse,
    summary="Favorite an article",
    description="Idempotent: favoriting again changes nothing.",
    responses=error_responses(401, 404, 422),
)
async def favorite(
    slug: SlugPath, session: SessionDep, user: CurrentUser, links: MediaLinksDep
) -> ArticleResponse:
    return ArticleResponse(article=await article_service.favorite(session, user, slug, links))


@router.delete(
    "/{slug}/favorite",
    response_model=ArticleResponse,
    summary="Unfavorite an article",
    description="Idempotent.",
    responses=error_responses(401, 404, 422),
)
async def unfavorite(
    slug: SlugPath, session: SessionDep, user: CurrentUser, links: MediaLinksDep
) -> ArticleResponse:
    return ArticleResponse(article=await article_service.unfavorite(session, user, slug, links))
