"""`GET /v2/<name>/tags/list` with `n`/`last` pagination and a `Link` header."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from auth.actions import PULL
from registry.v2.common import repository, store, url_path
from storage.errors import PaginationInvalid


def page_size(request: Request) -> int | None:
    value = request.query_params.get("n")
    if value is None or value == "":
        return None
    try:
        n = int(value)
    except ValueError:
        raise PaginationInvalid("query parameter n must be an integer") from None
    if n < 0:
        raise PaginationInvalid("query parameter n must not be negative")
    return n


def next_link(path: str, n: int | None, last: str) -> str:
    query = {"n": str(n)} if n is not None else {}
    query["last"] = last
    return f'<{path}?{urlencode(query)}>; rel="next"'


async def list_tags(request: Request) -> Response:
    name = await repository(request, PULL)
    n = page_size(request)
    tags, more = await store(request).manifests.tags(name, request.query_params.get("last"), n)
    headers = {}
    if more and tags:
        headers["Link"] = next_link(url_path(request, "tags", name=name), n, tags[-1])
    return JSONResponse({"name": name, "tags": tags}, headers=headers)
