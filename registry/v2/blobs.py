"""Blob reads: `HEAD`/`GET /v2/<name>/blobs/<digest>`, with single `Range` requests."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from auth.actions import DELETE, PULL
from registry import signed_urls
from registry.settings import Settings
from registry.v2.common import repository, require_deletes, store, url_path
from storage.blobs import parse_range
from storage.content.digest import Digest
from storage.content.names import check_name


async def get_blob(request: Request) -> Response:
    name, digest = await _readable(request)
    blobs = store(request).blobs
    info = await blobs.stat(name, digest)
    headers = {
        "Docker-Content-Digest": str(digest),
        "Accept-Ranges": "bytes",
        "ETag": f'"{digest}"',
        "Cache-Control": "max-age=31536000",
    }
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
    return Response(status_code=202)
