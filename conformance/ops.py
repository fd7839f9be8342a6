"""Push/pull helpers used by checks and fixtures (they fail loudly via `Failed`)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

import httpx

from .data import MANIFEST_ACCEPT, OCTET, Blob, Manifest, image_manifest, new_config, new_layer
from .framework import Context


def uploads_path(repo: str) -> str:
    return f"/v2/{repo}/blobs/uploads/"


def blob_path(repo: str, digest: str) -> str:
    return f"/v2/{repo}/blobs/{digest}"


def manifest_path(repo: str, ref: str) -> str:
    return f"/v2/{repo}/manifests/{ref}"


def with_query(url: str, params: list[tuple[str, str]] | dict[str, str]) -> str:
    """Append query parameters without re-encoding the ones the registry put in the URL."""
    sep = "&" if "?" in url else "?"
    return url + sep + urlencode(params, safe=":/")


def remember_blob(ctx: Context, repo: str, digest: str) -> None:
    if (repo, digest) not in ctx.pushed_blobs:
        ctx.pushed_blobs.append((repo, digest))


def remember_manifest(ctx: Context, repo: str, digest: str) -> None:
    if (repo, digest) not in ctx.pushed_manifests:
        ctx.pushed_manifests.append((repo, digest))


def start_upload(ctx: Context, repo: str) -> tuple[httpx.Response, str]:
    resp = ctx.request("POST", uploads_path(repo), headers={"Content-Length": "0"}, content=b"")
    ctx.expect_status(resp, 202)
    return resp, ctx.location(resp)


def upload_blob(ctx: Context, repo: str, blob: Blob) -> httpx.Response:
    """POST then PUT a blob monolithically; returns the 201 response."""
    _, location = start_upload(ctx, repo)
    resp = ctx.request(
        "PUT",
        with_query(location, {"digest": blob.digest}),
        headers={"Content-Type": OCTET},
        content=blob.data,
    )
    ctx.expect_status(resp, 201)
    remember_blob(ctx, repo, blob.digest)
    return resp


def push_manifest(ctx: Context, repo: str, manifest: Manifest, ref: str) -> httpx.Response:
    """PUT a manifest by tag or digest; returns the 201 response."""
    resp = ctx.request(
        "PUT",
        manifest_path(repo, ref),
        headers={"Content-Type": manifest.media_type},
        content=manifest.data,
    )
    ctx.expect_status(resp, 201)
    remember_manifest(ctx, repo, manifest.digest)
    return resp


def fetch_manifest(ctx: Context, repo: str, ref: str, method: str = "GET") -> httpx.Response:
    return ctx.request(method, manifest_path(repo, ref), headers={"Accept": MANIFEST_ACCEPT})


@dataclass(frozen=True)
class Image:
    repo: str
    config: Blob
    layer: Blob
    manifest: Manifest
    tag: str | None


def push_image(ctx: Context, repo: str, tag: str | None = None, layer_size: int = 1536) -> Image:
    """Upload a fresh config and layer, then push a manifest (by tag, else by digest)."""
    config, layer = new_config(), new_layer(layer_size)
    upload_blob(ctx, repo, config)
    upload_blob(ctx, repo, layer)
    manifest = image_manifest(config, [layer])
    push_manifest(ctx, repo, manifest, tag or manifest.digest)
    return Image(repo, config, layer, manifest, tag)


def cleanup(ctx: Context) -> int:
    """Delete what the run pushed, newest manifests first; returns how many deletes failed."""
    failures = 0
    targets = [manifest_path(r, d) for r, d in reversed(ctx.pushed_manifests)]
    targets += [blob_path(r, d) for r, d in reversed(ctx.pushed_blobs)]
    for path in targets:
        try:
            resp = ctx.request("DELETE", path)
            failures += resp.status_code not in (200, 202, 204, 404)
        except httpx.HTTPError:
            failures += 1
    return failures
