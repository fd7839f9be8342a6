"""`GET /v2/`: the API version check every client starts with."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from registry.auth import require_login
from registry.v2.common import API_VERSION_HEADER


async def version_check(request: Request) -> Response:
    await require_login(request)
    return Response(b"{}", media_type="application/json", headers=API_VERSION_HEADER)
