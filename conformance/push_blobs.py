"""Push workflow, blob side: monolithic, single-POST and chunked uploads, cancels, mounts."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import httpx

from .data import OCTET, Blob, new_layer, random_digest, sha256
from .framework import Context, Failed, Skipped, check, error_codes, fixture
from .ops import blob_path, remember_blob, start_upload, upload_blob, uploads_path, with_query


def _expect_pullable(ctx: Context, resp: httpx.Response, blob: Blob) -> None:
    """The 201's Location must be a pullable blob URL serving exactly the blob."""
    got = ctx.request("GET", ctx.location(resp))
    ctx.soft(got.status_code == 200, f"GET Location {got.url.path} answered {got.status_code}")
    ctx.soft(got.status_code != 200 or got.content == blob.data,
             "GET Location returned bytes that differ from the upload")


@check("push", "POST then PUT monolithic upload: 202 + Location, then 201 + Location")
def post_then_put(ctx: Context) -> None:
    blob = new_layer()
    _expect_pullable(ctx, upload_blob(ctx, ctx.namespace, blob), blob)


@check("push", "single POST ?digest= monolithic upload returns 201 + Location")
def single_post(ctx: Context) -> None:
    blob = new_layer()
    resp = ctx.request(
        "POST",
        with_query(uploads_path(ctx.namespace), {"digest": blob.digest}),
        headers={"Content-Type": OCTET},
        content=blob.data,
    )
    ctx.expect_status(resp, 201, 202)
    if resp.status_code == 201:
        remember_blob(ctx, ctx.namespace, blob.digest)
        _expect_pullable(ctx, resp, blob)
        return
    put = ctx.request("PUT", with_query(ctx.location(resp), {"digest": blob.digest}),
                      headers={"Content-Type": OCTET}, content=blob.data)
    ctx.expect_status(put, 201)
    remember_blob(ctx, ctx.namespace, blob.digest)
    raise Skipped("single-request upload not supported (202, allowed); the PUT fallback worked")


# ---- chunked upload, one session walked through step by step ----


@dataclass
class Chunked:
    blob: Blob
    chunk: int
    location: str


def _expect_range(ctx: Context, resp: httpx.Response, end: int) -> None:
    ctx.expect_header(resp, "Range", f"0-{end}")


def _patch(ctx: Context, location: str, data: bytes, start: int) -> httpx.Response:
    headers = {"Content-Type": OCTET, "Content-Range": f"{start}-{start + len(data) - 1}"}
    return ctx.request("PATCH", location, headers=headers, content=data)


def _chunk_size(post: httpx.Response) -> int:
    """1 KiB, or the registry's OCI-Chunk-Min-Length when that is larger."""
    minimum = post.headers.get("OCI-Chunk-Min-Length", "0").strip()
    return max(int(minimum) if minimum.isdigit() else 0, 1024)


@check("push", "chunked upload: POST returns 202 + Location", provides=("chunked",))
def chunked_start(ctx: Context) -> None:
    resp, location = start_upload(ctx, ctx.namespace)
    chunk = _chunk_size(resp)
    ctx.put("chunked", Chunked(Blob(os.urandom(2 * chunk + 500)), chunk, location))


@check("push", "chunked upload: PATCH first chunk returns 202 + Location + Range",
       provides=("chunk 1",))
def chunked_first(ctx: Context) -> None:
    up: Chunked = ctx.get("chunked")
    resp = _patch(ctx, up.location, up.blob.data[: up.chunk], 0)
    ctx.expect_status(resp, 202)
    up.location = ctx.location(resp)
    _expect_range(ctx, resp, up.chunk - 1)
    ctx.put("chunk 1", up)


@check("push", "chunked upload: GET upload status returns 204 + Location + Range",
       provides=("upload status",))
def chunked_status(ctx: Context) -> None:
    up: Chunked = ctx.get("chunk 1")
    resp = ctx.request("GET", up.location)
    ctx.expect_status(resp, 204)
    up.location = ctx.location(resp)
    _expect_range(ctx, resp, up.chunk - 1)
    ctx.put("upload status", up)


@check("push", "chunked upload: PATCH second chunk returns 202 + Range", provides=("chunk 2",))
def chunked_second(ctx: Context) -> None:
    up: Chunked = ctx.get("upload status")
    resp = _patch(ctx, up.location, up.blob.data[up.chunk : 2 * up.chunk], up.chunk)
    ctx.expect_status(resp, 202)
    up.location = ctx.location(resp)
    _expect_range(ctx, resp, 2 * up.chunk - 1)
    ctx.put("chunk 2", up)


@check("push", "chunked upload: PUT with the final chunk returns 201 + Location",
       provides=("chunked blob",))
def chunked_finish(ctx: Context) -> None:
    up: Chunked = ctx.get("chunk 2")
    start = 2 * up.chunk
    tail = up.blob.data[start:]
    headers = {"Content-Type": OCTET, "Content-Range": f"{start}-{up.blob.size - 1}"}
    url = with_query(up.location, {"digest": up.blob.digest})
    resp = ctx.request("PUT", url, headers=headers, content=tail)
    ctx.expect_status(resp, 201)
    remember_blob(ctx, ctx.namespace, up.blob.digest)
    ctx.require_header(resp, "Location")
    ctx.put("chunked blob", up.blob)


@check("push", "chunked upload: the assembled blob has exactly the uploaded bytes")
def chunked_content(ctx: Context) -> None:
    blob: Blob = ctx.get("chunked blob")
    resp = ctx.request("GET", blob_path(ctx.namespace, blob.digest))
    ctx.expect_status(resp, 200)
    if resp.content != blob.data:
        raise Failed(f"blob differs: got {len(resp.content)} bytes, uploaded {blob.size}")


@check("push", "chunked upload: out-of-order PATCH returns 416 (separate session)")
def chunked_out_of_order(ctx: Context) -> None:
    post, location = start_upload(ctx, ctx.namespace)
    chunk = _chunk_size(post)
    data = os.urandom(3 * chunk)
    first = _patch(ctx, location, data[:chunk], 0)
    ctx.expect_status(first, 202)
    location = ctx.location(first)
    ctx.expect_status(_patch(ctx, location, data[2 * chunk :], 2 * chunk), 416)
    status = ctx.request("GET", location)
    ctx.soft(status.status_code == 204,
             f"GET upload status after the 416 answered {status.status_code}, expected 204")
    if status.status_code == 204:
        _expect_range(ctx, status, chunk - 1)
    _cancel(ctx, status)


# ---- rejected completions and cancelled sessions ----


@check("push", "upload completion with a mismatched digest returns 400 DIGEST_INVALID")
def wrong_digest(ctx: Context) -> None:
    _, location = start_upload(ctx, ctx.namespace)
    data = os.urandom(700)
    resp = ctx.request("PUT", with_query(location, {"digest": sha256(data + b"x")}),
                       headers={"Content-Type": OCTET}, content=data)
    ctx.expect_status(resp, 400)
    codes = error_codes(resp)
    ctx.soft("DIGEST_INVALID" in codes, f"error codes are {codes}, expected DIGEST_INVALID")


@check("push", "upload completion with a malformed digest returns 400")
def malformed_digest(ctx: Context) -> None:
    _, location = start_upload(ctx, ctx.namespace)
    resp = ctx.request("PUT", with_query(location, {"digest": "sha256:not-a-digest"}),
                       headers={"Content-Type": OCTET}, content=os.urandom(300))
    ctx.expect_status(resp, 400)


@check("push", "cancel upload: DELETE upload session returns 204", provides=("cancelled",))
def cancel_upload(ctx: Context) -> None:
    _, location = start_upload(ctx, ctx.namespace)
    ctx.expect_status(ctx.request("DELETE", location), 204)
    ctx.put("cancelled", location)


@check("push", "cancel upload: GET cancelled session returns 404")
def cancelled_status(ctx: Context) -> None:
    location: str = ctx.get("cancelled")
    ctx.expect_status(ctx.request("GET", location), 404)


# ---- cross-repository mounts ----


@fixture("mount source blobs")
def _mount_sources(ctx: Context) -> tuple[Blob, Blob]:
    with_from, without_from = new_layer(), new_layer()
    upload_blob(ctx, ctx.namespace, with_from)
    upload_blob(ctx, ctx.namespace, without_from)
    return with_from, without_from


def _mount(ctx: Context, digest: str, source: str | None) -> httpx.Response:
    params = {"mount": digest} if source is None else {"mount": digest, "from": source}
    url = with_query(uploads_path(ctx.crossmount), params)
    return ctx.request("POST", url, headers={"Content-Length": "0"}, content=b"")


def _cancel(ctx: Context, resp: httpx.Response) -> None:
    with contextlib.suppress(Failed, httpx.HTTPError):
        ctx.request("DELETE", ctx.location(resp))


def _expect_mounted(ctx: Context, resp: httpx.Response, blob: Blob) -> None:
    remember_blob(ctx, ctx.crossmount, blob.digest)
    ctx.require_header(resp, "Location")
    head = ctx.request("HEAD", blob_path(ctx.crossmount, blob.digest))
    ctx.soft(head.status_code == 200,
             f"HEAD of the mounted blob in {ctx.crossmount} answered {head.status_code}")


@check("push", "cross-repository mount with from returns 201 + Location")
def mount_with_from(ctx: Context) -> None:
    blob = ctx.fixture("mount source blobs")[0]
    resp = _mount(ctx, blob.digest, ctx.namespace)
    ctx.expect_status(resp, 201, 202)
    if resp.status_code == 202:
        ctx.require_header(resp, "Location")
        _cancel(ctx, resp)
        raise Skipped("registry declined the mount and opened an upload session (202, allowed)")
    _expect_mounted(ctx, resp, blob)


@check("push", "mount of an unknown blob falls back to an upload session (202 + Location)")
def mount_unknown(ctx: Context) -> None:
    ctx.fixture("mount source blobs")
    resp = _mount(ctx, random_digest(), ctx.namespace)
    ctx.expect_status(resp, 202)
    ctx.require_header(resp, "Location")
    _cancel(ctx, resp)


@check("push", "mount without from returns 201 (mounted) or 202 (upload session)")
def mount_without_from(ctx: Context) -> None:
    blob = ctx.fixture("mount source blobs")[1]
    resp = _mount(ctx, blob.digest, None)
    ctx.expect_status(resp, 201, 202)
    if resp.status_code == 201:
        _expect_mounted(ctx, resp, blob)
    else:
        ctx.require_header(resp, "Location")
        _cancel(ctx, resp)
