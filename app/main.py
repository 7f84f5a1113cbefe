"""The application factory: ``uvicorn --factory app.main:create_app``."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api import media
from app.api.health import include_health
from app.api.v1.router import include_v1
from app.core.cache import Cache
from app.core.config import Settings, get_settings
from app.core.deadline import RequestDeadlineMiddleware
from app.core.docs import install_docs
from app.core.errors import install_error_handlers
from app.core.health import Readiness
from app.core.mail import create_mailer
from app.core.middleware import install_http_middleware
from app.core.observability import Observability
from app.core.openapi import install_openapi
from app.core.outbox import Dispatcher, TaskQueue
from app.core.pubsub import create_pubsub
from app.core.ratelimit import RateLimiter, RateLimitMiddleware
from app.core.redis_link import RedisLink
from app.core.security import PasswordHasher, TokenService
from app.core.storage import create_storage
from app.db.session import create_engine, create_sessionmaker
from app.db.unit_of_work import UnitOfWorkMiddleware
from app.workers.context import JobContext
from app.workers.queue import CeleryQueue, InProcessQueue
from app.workers.schedule import InProcessScheduler

API_V1_PREFIX = "/api/v1"
SHUTDOWN_GRACE = 10.0  # seconds for in-process jobs to finish at shutdown

DESCRIPTION = """
A publishing platform API: articles, comments, tags, favorites, follows and profiles.

`/api/v1` is a superset of the [RealWorld](https://realworld-docs.netlify.app/) "Conduit" API, so every
RealWorld front end works against it unchanged. Authenticate with `Authorization: Token <jwt>`
(or `Bearer <jwt>`), using the token returned by register or login.

Errors are RFC 9457 problem documents that also carry the RealWorld `errors` member.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.getLogger("conduit").setLevel(settings.log_level)
    engine = create_engine(settings)
    observability = Observability(settings, engine)
    link = RedisLink(settings.redis_backoff_max)  # one breaker for this process's uses of Redis
    limiter = RateLimiter(settings, link)
    cache = Cache(settings, link=link)
    sessionmaker = create_sessionmaker(engine)
    mailer = create_mailer(settings)
    pubsub = create_pubsub(settings, link, on_resubscribed=cache.bump_if_stale)
    storage = create_storage(settings)
    readiness = Readiness(settings)
    in_process = None if settings.uses_celery else InProcessQueue()
    celery_queue = None
    queue: TaskQueue
    if in_process is None:
        from app.workers.celery_app import create_celery  # imported only when Celery is used

        queue = celery_queue = CeleryQueue(create_celery(settings), settings.task_queue)
    else:
        queue = in_process
    dispatcher = Dispatcher(pubsub, queue)
    if in_process is not None:
        in_process.bind(JobContext(settings, sessionmaker, mailer, cache, dispatcher))
    # Without a broker there is no beat either: the periodic jobs are enqueued from this process.
    scheduler = (
        None if in_process is None or not settings.in_process_schedule else InProcessScheduler(in_process)
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Everything built so far (routes, schemas, metadata) lives as long as the process: move it
        # out of the collector's sight, so full collections stay short and tail latency low.
        gc.collect()
        gc.freeze()
        await pubsub.start()
        if scheduler is not None:
            scheduler.start()
        yield
        if scheduler is not None:
            await scheduler.stop()
        if in_process is not None:
            await in_process.drain(SHUTDOWN_GRACE)
        if celery_queue is not None:
            await celery_queue.close()
        await pubsub.close()
        await engine.dispose()
        await limiter.close()
        await cache.close()
        await storage.close()
        observability.close()
        await readiness.close()

    app = FastAPI(
        title="Conduit",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url=f"{API_V1_PREFIX}/openapi.json",
        docs_url=None,  # served by install_docs, with assets from this origin
        redoc_url=None,
        telemetry=observability.fastapi_telemetry(),
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = sessionmaker
    app.state.hasher = PasswordHasher(settings)
    app.state.tokens = TokenService(settings)
    app.state.mailer = mailer
    app.state.pubsub = pubsub
    app.state.dispatcher = dispatcher
    app.state.jobs = in_process  # the in-process queue, or None with Celery
    app.state.limiter = limiter
    app.state.redis_link = link
    app.state.cache = cache
    app.state.storage = storage
    app.state.readiness = readiness

    install_error_handlers(app)
    # Innermost: the unit of work wraps exactly the routes (and sees their error responses).
    app.add_middleware(UnitOfWorkMiddleware, sessionmaker=sessionmaker, cache=cache, dispatcher=dispatcher)
    # Around the unit of work, so that work cut off by the deadline is rolled back; inside CORS, so that
    # browsers can read its 503.
    app.add_middleware(RequestDeadlineMiddleware, timeout=settings.request_timeout)
    if settings.rate_limit_enabled:
        app.add_middleware(RateLimitMiddleware, limiter=limiter, rule=settings.rate_limit_default_ip)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        # Credentials are never combined with a wildcard origin.
        allow_credentials="*" not in settings.cors_origins,
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Requested-With", "Idempotency-Key"],
        expose_headers=["Idempotent-Replayed", "Retry-After"],
        max_age=600,
    )
    # After CORS, so that it wraps CORS: the middleware added last is the outermost.
    install_http_middleware(app, settings)
    install_docs(app)
    include_health(app)
    observability.install(app)  # outermost: request ids, the access log and metrics cover all the rest
    include_v1(app, API_V1_PREFIX)
    app.include_router(media.router)  # /media/{key}: uploaded files
    install_openapi(app)
    return app
