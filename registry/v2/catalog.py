"""`GET /v2/_catalog` with `n`/`last` pagination and a `Link` header."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from registry.auth import check_rate, pullable, require_catalog
from registry.v2.common import store, url_path
from registry.v2.tags import next_link, page_size

DEFAULT_PAGE = 1000


async def catalog(request: Request) -> Response:
    await require_catalog(request)
    await check_rate(request)
    n = page_size(request)
    names, more = await store(request).repositories.list(
        request.query_params.get("last"), DEFAULT_PAGE if n is None else n
    )
    last_seen = names[-1] if names else ""
    # Only what the caller may pull. A filtered page may be short; Link still follows.
    names = await pullable(request, names)
    headers = {}
    if more:
        headers["Link"] = next_link(url_path(request, "catalog"), n, last_seen)
    return JSONResponse({"repositories": names}, headers=headers)
