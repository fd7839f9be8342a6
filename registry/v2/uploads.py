"""Blob uploads: monolithic (POST or PUT with `digest`), chunked (PATCH), status, cancel."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from auth.actions import PUSH
from registry.auth import may_pull, require_create, services
from registry.v2.common import content_length, has_body, repository, store, url_path
from storage.content.digest import ALGORITHMS, Digest
from storage.content.names import check_name
from storage.errors import BlobUploadInvalid, DigestInvalid, UploadOffsetMismatch
from storage.uploads import UploadSession

_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/(?:\d+|\*))?$")


async def start_upload(request: Request) -> Response:
    name = await repository(request, PUSH)
    await store(request).repositories.for_push(name, lambda: require_create(request, name))
    uploads = store(request).uploads
    digest_param = request.query_params.get("digest")
    algorithm = request.query_params.get("digest-algorithm", "sha256")
    if algorithm not in ALGORITHMS:
        raise DigestInvalid(f"unsupported digest algorithm {algorithm!r}")
    mount = request.query_params.get("mount")
    if mount is not None:
        digest = Digest.parse(mount)
        source = request.query_params.get("from")
        if source is not None:
            source = check_name(source)
        readable = None
        if services(request) is not None:
            async def readable(other: str) -> bool:
                return await may_pull(request, other)
        if await store(request).blobs.mount(name, digest, source, readable):
            return _created(request, name, digest)
        # Not mountable: fall back to an ordinary upload session, as the spec asks.
    if digest_param is not None:
        digest = Digest.parse(digest_param)
        session = await uploads.start(name, digest.algorithm)
        await uploads.complete(session, digest, request.stream())
        return _created(request, name, digest)
    session = await uploads.start(name, algorithm)
    return _progress(request, session, 0)


async def upload_chunk(request: Request) -> Response:
    name = await repository(request, PUSH)
    uploads = store(request).uploads
    session = await uploads.get(name, request.path_params["uuid"])
    start = _check_content_range(request, session)
    size = await uploads.append(session, request.stream(), start)
    return _progress(request, session, size)


async def complete_upload(request: Request) -> Response:
    name = await repository(request, PUSH)
    uploads = store(request).uploads
    session = await uploads.get(name, request.path_params["uuid"])
    digest_param = request.query_params.get("digest")
    if not digest_param:
        raise DigestInvalid("the digest query parameter is required to complete an upload")
    digest = Digest.parse(digest_param)
    final = None
    if has_body(request):
        _check_content_range(request, session)
        final = request.stream()
    await uploads.complete(session, digest, final)
    return _created(request, name, digest)


async def upload_status(request: Request) -> Response:
    name = await repository(request, PUSH)
    session = await store(request).uploads.get(name, request.path_params["uuid"])
    return _progress(request, session, session.size, status=204)


async def cancel_upload(request: Request) -> Response:
    name = await repository(request, PUSH)
    uploads = store(request).uploads
    session = await uploads.get(name, request.path_params["uuid"])
    await uploads.cancel(session)
    return Response(status_code=204)


def _check_content_range(request: Request, session: UploadSession) -> int | None:
    """The chunk's start offset from Content-Range (None when absent), checked against the
    upload's size and the body's Content-Length."""
    header = request.headers.get("content-range")
    if not header:
        return None
    match = _CONTENT_RANGE.match(header.strip())
    if match is None:
        raise BlobUploadInvalid(f"invalid Content-Range {header[:64]!r}")
    start, end = int(match[1]), int(match[2])
    if end < start:
        raise BlobUploadInvalid(f"invalid Content-Range {header[:64]!r}")
    if start != session.size:
        raise UploadOffsetMismatch(
            f"chunk starts at {start} but the upload has {session.size} bytes", session.size
        )
    length = content_length(request)
    if length is not None and length != end - start + 1:
        raise BlobUploadInvalid(
            f"Content-Range covers {end - start + 1} bytes but Content-Length is {length}"
        )
    return start


def _progress(request: Request, session: UploadSession, size: int, status: int = 202) -> Response:
    headers = {
        "Location": url_path(request, "upload", name=session.repository, uuid=session.id),
        "Range": f"0-{max(size - 1, 0)}",
        "Docker-Upload-UUID": session.id,
    }
    return Response(status_code=status, headers=headers)


def _created(request: Request, name: str, digest: Digest) -> Response:
    headers = {
        "Location": url_path(request, "blob", name=name, digest=str(digest)),
        "Docker-Content-Digest": str(digest),
    }
    return Response(status_code=201, headers=headers)
