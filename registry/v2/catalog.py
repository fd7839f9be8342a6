"""`GET /v2/_catalog` with `n`/`last` pagination and a `Link` header."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from registry.v2.common import store, url_path
from registry.v2.tags import next_link, page_size

DEFAULT_PAGE = 1000


async def catalog(request: Request) -> Response:
    n = page_size(request)
    names, more = await store(request).repositories.list(
        request.query_params.get("last"), DEFAULT_PAGE if n is None else n
    )
    headers = {}
    if more and names:
        headers["Link"] = next_link(url_path(request, "catalog"), n, names[-1])
    return JSONResponse({"repositories": names}, headers=headers)
