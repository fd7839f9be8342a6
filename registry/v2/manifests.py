"""Manifests: `PUT`/`GET`/`HEAD /v2/<name>/manifests/<reference>`, bytes exactly as pushed."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from auth.actions import DELETE, PULL, PUSH
from registry.auth import require_create
from registry.pullthrough import PullThroughCache
from registry.v2.common import (
    audit_delete,
    read_bounded,
    repository,
    require_deletes,
    store,
    url_path,
)
from storage.content.manifest import MAX_MANIFEST_SIZE
from storage.content.names import is_tag
from storage.errors import ManifestTooLarge, TagInvalid

MAX_TAGS_PER_PUT = 100


async def put_manifest(request: Request) -> Response:
    name = await repository(request, PUSH)
    reference = request.path_params["reference"]
    too_large = ManifestTooLarge(f"manifest larger than {MAX_MANIFEST_SIZE} bytes",
                                 {"limit": MAX_MANIFEST_SIZE})
    raw = await read_bounded(request, MAX_MANIFEST_SIZE, too_large)
    tags = request.query_params.getlist("tag") if not is_tag(reference) else []
    if len(tags) > MAX_TAGS_PER_PUT:
        raise TagInvalid(f"at most {MAX_TAGS_PER_PUT} tag parameters per request")
    content_type = request.headers.get("content-type")
    manifests = store(request).manifests
    checked = manifests.check(reference, raw, content_type, tags)  # before anything is stored
    settings = await store(request).repositories.for_push(
        name, lambda: require_create(request, name))
    manifest = await manifests.put(name, reference, raw, content_type, tags, settings,
                                   checked=checked)
    headers = {
        "Location": url_path(request, "manifest", name=name, reference=str(manifest.digest)),
        "Docker-Content-Digest": str(manifest.digest),
    }
    if manifest.subject is not None:
        headers["OCI-Subject"] = str(manifest.subject.digest)
    response = Response(status_code=201, headers=headers)
    for tag in tags:
        response.headers.append("OCI-Tag", tag)
    return response


async def get_manifest(request: Request) -> Response:
    name = await repository(request, PULL)
    cache: PullThroughCache = request.app.state.pull_through
    stored = await cache.manifest(name, request.path_params["reference"])
    headers = {
        "Docker-Content-Digest": str(stored.digest),
        "ETag": f'"{stored.digest}"',
        "Content-Type": stored.media_type,
        "Content-Length": str(stored.size),
    }
    body = b""
    if request.method != "HEAD":
        body = stored.raw
        await store(request).manifests.note_pull(name, stored.digest)
    return Response(body, headers=headers)


async def delete_manifest(request: Request) -> Response:
    name = await repository(request, DELETE)
    require_deletes(request)
    reference = request.path_params["reference"]
    await store(request).manifests.delete(name, reference)
    await audit_delete(request, "DeleteManifest", f"{name}:{reference}" if is_tag(reference)
                       else f"{name}@{reference}")
    return Response(status_code=202)
