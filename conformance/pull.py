"""Pull workflow: the API every conforming registry MUST support."""

from __future__ import annotations

import httpx

from .data import random_digest, token
from .framework import Context, Skipped, check, fixture
from .ops import Image, blob_path, fetch_manifest, push_image


@fixture("pull image")
def _pull_image(ctx: Context) -> Image:
    return push_image(ctx, ctx.namespace, tag=f"pull-{token()}")


def _image(ctx: Context) -> Image:
    image: Image = ctx.fixture("pull image")
    return image


def _expect_length(ctx: Context, resp: httpx.Response, size: int, required: bool) -> None:
    value = resp.headers.get("Content-Length")
    where = f"{resp.request.method} {resp.url.path}"
    if value is None:
        ctx.soft(not required, f"{where}: header Content-Length missing (expected {size})")
    else:
        ctx.soft(value.strip() == str(size), f"{where}: Content-Length is {value}, expected {size}")


def _expect_body(ctx: Context, resp: httpx.Response, data: bytes) -> None:
    ctx.soft(
        resp.content == data,
        f"{resp.request.method} {resp.url.path}: body differs from the pushed bytes "
        f"({len(resp.content)} bytes received, {len(data)} pushed)",
    )


def _verify_manifest(ctx: Context, ref_kind: str, method: str) -> None:
    image = _image(ctx)
    ref = image.tag if ref_kind == "tag" else image.manifest.digest
    assert ref is not None
    resp = fetch_manifest(ctx, ctx.namespace, ref, method)
    ctx.expect_status(resp, 200)
    ctx.expect_header(resp, "Docker-Content-Digest", image.manifest.digest)
    ctx.expect_content_type(resp, image.manifest.media_type)
    _expect_length(ctx, resp, image.manifest.size, required=method == "HEAD")
    if method == "GET":
        _expect_body(ctx, resp, image.manifest.data)
    else:
        ctx.soft(not resp.content, "HEAD response carried a body")


@check("pull", "GET /v2/ returns 200")
def base_endpoint(ctx: Context) -> None:
    ctx.expect_status(ctx.request("GET", "/v2/"), 200)


@check("pull", "GET manifest by tag: 200, exact bytes, digest, type, length")
def get_manifest_by_tag(ctx: Context) -> None:
    _verify_manifest(ctx, "tag", "GET")


@check("pull", "HEAD manifest by tag: 200, digest, type, length")
def head_manifest_by_tag(ctx: Context) -> None:
    _verify_manifest(ctx, "tag", "HEAD")


@check("pull", "GET manifest by digest: 200, exact bytes, digest, type, length")
def get_manifest_by_digest(ctx: Context) -> None:
    _verify_manifest(ctx, "digest", "GET")


@check("pull", "HEAD manifest by digest: 200, digest, type, length")
def head_manifest_by_digest(ctx: Context) -> None:
    _verify_manifest(ctx, "digest", "HEAD")


@check("pull", "GET blob: 200, exact bytes, Docker-Content-Digest")
def get_blob(ctx: Context) -> None:
    layer = _image(ctx).layer
    resp = ctx.request("GET", blob_path(ctx.namespace, layer.digest))
    ctx.expect_status(resp, 200)
    # A registry MAY redirect blob GETs (307 to object storage, as ECR does); the digest header
    # is then the registry's, on its redirect, not the storage service's.
    ctx.expect_header(resp.history[0] if resp.history else resp, "Docker-Content-Digest",
                      layer.digest)
    _expect_length(ctx, resp, layer.size, required=False)
    _expect_body(ctx, resp, layer.data)


@check("pull", "HEAD blob: 200, Content-Length, Docker-Content-Digest")
def head_blob(ctx: Context) -> None:
    layer = _image(ctx).layer
    resp = ctx.request("HEAD", blob_path(ctx.namespace, layer.digest))
    ctx.expect_status(resp, 200)
    ctx.expect_header(resp, "Docker-Content-Digest", layer.digest)
    _expect_length(ctx, resp, layer.size, required=True)


@check("pull", "GET blob with Range header returns 206 and the requested bytes")
def get_blob_range(ctx: Context) -> None:
    layer = _image(ctx).layer
    first, last = 100, 599
    resp = ctx.request(
        "GET", blob_path(ctx.namespace, layer.digest), headers={"Range": f"bytes={first}-{last}"}
    )
    if resp.status_code == 200 and resp.content == layer.data:
        raise Skipped("Range ignored (whole blob returned with 200); Range support is a SHOULD")
    ctx.expect_status(resp, 206)
    ctx.expect_header(resp, "Content-Range", f"bytes {first}-{last}/{layer.size}")
    _expect_body(ctx, resp, layer.data[first : last + 1])


@check("pull", "GET unknown manifest tag returns 404")
def get_unknown_tag(ctx: Context) -> None:
    _image(ctx)
    resp = fetch_manifest(ctx, ctx.namespace, f"missing-{token()}")
    ctx.expect_status(resp, 404)


@check("pull", "GET unknown manifest digest returns 404")
def get_unknown_manifest_digest(ctx: Context) -> None:
    _image(ctx)
    ctx.expect_status(fetch_manifest(ctx, ctx.namespace, random_digest()), 404)


@check("pull", "HEAD unknown manifest returns 404")
def head_unknown_manifest(ctx: Context) -> None:
    _image(ctx)
    ctx.expect_status(fetch_manifest(ctx, ctx.namespace, random_digest(), "HEAD"), 404)


@check("pull", "GET manifest in an unknown repository returns 404")
def get_manifest_unknown_repo(ctx: Context) -> None:
    resp = fetch_manifest(ctx, f"{ctx.namespace}-absent-{token()}", "latest")
    ctx.expect_status(resp, 404)


@check("pull", "GET unknown blob returns 404")
def get_unknown_blob(ctx: Context) -> None:
    _image(ctx)
    ctx.expect_status(ctx.request("GET", blob_path(ctx.namespace, random_digest())), 404)


@check("pull", "HEAD unknown blob returns 404")
def head_unknown_blob(ctx: Context) -> None:
    _image(ctx)
    ctx.expect_status(ctx.request("HEAD", blob_path(ctx.namespace, random_digest())), 404)


@check("pull", "GET blob with an invalid digest returns 400")
def get_blob_invalid_digest(ctx: Context) -> None:
    _image(ctx)
    resp = ctx.request("GET", blob_path(ctx.namespace, "sha256:" + "g" * 64))
    if resp.status_code == 404:
        raise Skipped("answered 404; the spec only requires 400 for invalid digests it is sent "
                      "on push and referrers requests")
    ctx.expect_status(resp, 400)
