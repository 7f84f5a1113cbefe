"""``/health/live`` and ``/health/ready``: the probes of orchestrators and load balancers.

Outside ``/api/v1`` and the OpenAPI document. Probes come by IP over plain HTTP, so these paths are
exempt from the trusted-host check, the HTTPS redirect and the rate limit (``app/core/middleware.py``,
``app/core/ratelimit.py``). The bodies name no driver, host or error: only the states of
``app.core.health.Check``. docs/operations.md describes the semantics.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, FastAPI, Request, Response

from app.core.health import Check, Readiness, quiet_probe_access_logs

router = APIRouter(prefix="/health", include_in_schema=False)

NO_STORE = {"Cache-Control": "no-store"}
LIVE = orjson.dumps({"status": Check.OK})


def _json(body: bytes, status_code: int = 200) -> Response:
    return Response(body, status_code=status_code, media_type="application/json", headers=NO_STORE)


@router.get("/live")
async def live() -> Response:
    """The process is up and its event loop answers; no I/O, so a dependency outage never restarts it."""
    return _json(LIVE)


@router.get("/ready")
async def ready(request: Request) -> Response:
    """503 only when the database does not answer in time; Redis and the broker only degrade."""
    readiness: Readiness = request.app.state.readiness
    status, checks = await readiness.report()
    body = orjson.dumps({"status": status, "checks": checks})
    return _json(body, 503 if status is Check.UNAVAILABLE else 200)


def include_health(app: FastAPI) -> None:
    app.include_router(router)
    quiet_probe_access_logs()
