"""Blob reads: `HEAD`/`GET /v2/<name>/blobs/<digest>`, with single `Range` requests."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from auth.actions import DELETE, PULL
from registry import signed_urls
from registry.pullthrough import PullThroughCache
from registry.settings import Settings
from registry.v2.common import audit_delete, repository, require_deletes, store, url_path
from storage.blobs import parse_range
from storage.content.digest import Digest
from storage.content.names import check_name
from storage.errors import BlobUnknown


async def get_blob(request: Request) -> Response:
    name, digest = await _readable(request)
    blobs = store(request).blobs
    headers = {
        "Docker-Content-Digest": str(digest),
        "Accept-Ranges": "bytes",
        "ETag": f'"{digest}"',
        "Cache-Control": "max-age=31536000",
    }
    try:
        info = await blobs.stat(name, digest, pull=True)
    except BlobUnknown:
        fetched = await _through_cache(request, name, digest, headers)
        if fetched is None:
            raise
        if isinstance(fetched, Response):
            return fetched
        info = await blobs.stat(name, digest)  # another request stored it meanwhile
    if request.method == "HEAD":
        headers["Content-Length"] = str(info.size)
        return Response(status_code=200, headers=headers, media_type="application/octet-stream")
    byte_range = parse_range(request.headers.get("range"), info.size)
    if byte_range is None:
        url = await blobs.redirect_url(digest)
        if url is not None:
            return RedirectResponse(url, status_code=307, headers=headers)
        headers["Content-Length"] = str(info.size)
        return StreamingResponse(blobs.read(digest), headers=headers,
                                 media_type="application/octet-stream")
    headers["Content-Length"] = str(byte_range.length)
    headers["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end - 1}/{info.size}"
    return StreamingResponse(blobs.read(digest, byte_range), status_code=206, headers=headers,
                             media_type="application/octet-stream")


async def _through_cache(request: Request, name: str, digest: Digest,
                         headers: dict[str, str]) -> Response | bool | None:
    """A blob of a pull-through cache repository that is not cached yet: its size (HEAD) or
    its bytes, streamed from the upstream while they are stored. None: not a cache; True: it
    was stored meanwhile by another request (serve it from storage)."""
    cache: PullThroughCache = request.app.state.pull_through
    if request.method == "HEAD":
        size = await cache.blob_size(name, digest)
        if size is None:
            return None
        headers["Content-Length"] = str(size)
        return Response(status_code=200, headers=headers, media_type="application/octet-stream")
    # A Range is ignored on this first fetch (HTTP allows a 200 with the whole blob).
    fetched = await cache.blob(name, digest)
    if fetched is None:
        return None if not await store(request).blobs.linked(name, digest) else True
    length, body = fetched
    if length is not None:
        headers["Content-Length"] = str(length)
    return StreamingResponse(body, headers=headers, media_type="application/octet-stream")


async def _readable(request: Request) -> tuple[str, Digest]:
    """The repository and digest once the caller may read them: by credentials, or (auth on)
    by a signed URL from GetDownloadUrlForLayer for exactly this path, which replaces them."""
    settings: Settings = request.app.state.settings
    signer = signed_urls.signer(settings.auth) if signed_urls.is_signed(request.query_params) \
        else None
    if signer is None:
        name = await repository(request, PULL)
        return name, Digest.parse(request.path_params["digest"])
    name = check_name(request.path_params["name"])
    digest = Digest.parse(request.path_params["digest"])
    path = url_path(request, "blob", name=name, digest=str(digest))
    signer.verify(request.method, path, request.query_params)
    return name, digest


async def delete_blob(request: Request) -> Response:
    name = await repository(request, DELETE)
    digest = Digest.parse(request.path_params["digest"])
    require_deletes(request)
    await store(request).blobs.unlink(name, digest)
    await audit_delete(request, "DeleteBlob", f"{name}@{digest}")
    return Response(status_code=202)
