"""Responses whose JSON body is already encoded (e.g. served from the cache)."""

from __future__ import annotations

from starlette.responses import Response


class JSONBytes(Response):
    """A JSON body passed as bytes: no re-validation and no re-encoding.

    Routes returning it still declare their ``response_model``, which documents the body and is what
    produced it in the first place (see ``app.services.documents``).
    """

    media_type = "application/json"
