"""Content management workflow: deleting tags, manifests and blobs.

Registries MAY disable deletion (answering 400 or 405); such answers are reported as skipped.
"""

from __future__ import annotations

import httpx

from .data import random_digest, token
from .framework import Context, Skipped, check, error_suffix, fixture
from .ops import Image, blob_path, fetch_manifest, manifest_path, push_image, push_manifest

DISABLED = (400, 405)


@fixture("management images")
def _management_images(ctx: Context) -> tuple[Image, Image]:
    by_tag = push_image(ctx, ctx.namespace, tag=f"mgmt-tag-{token()}")
    by_digest = push_image(ctx, ctx.namespace, tag=f"mgmt-digest-{token()}")
    push_manifest(ctx, ctx.namespace, by_digest.manifest, by_digest.manifest.digest)
    return by_tag, by_digest


def _images(ctx: Context) -> tuple[Image, Image]:
    images: tuple[Image, Image] = ctx.fixture("management images")
    return images


def _delete(ctx: Context, path: str, what: str) -> httpx.Response:
    resp = ctx.request("DELETE", path)
    if resp.status_code in DISABLED:
        raise Skipped(f"{what} deletion disabled or unsupported: {resp.status_code}"
                      f"{error_suffix(resp)} (400/405 allowed)")
    ctx.expect_status(resp, 202)
    return resp


@check("management", "DELETE tag returns 202", provides=("deleted tag",))
def delete_tag(ctx: Context) -> None:
    image = _images(ctx)[0]
    assert image.tag is not None
    _delete(ctx, manifest_path(ctx.namespace, image.tag), "tag")
    ctx.put("deleted tag", image.tag)


@check("management", "GET deleted tag returns 404")
def deleted_tag_gone(ctx: Context) -> None:
    tag: str = ctx.get("deleted tag")
    ctx.expect_status(fetch_manifest(ctx, ctx.namespace, tag), 404)


@check("management", "DELETE manifest by digest returns 202", provides=("deleted manifest",))
def delete_manifest(ctx: Context) -> None:
    image = _images(ctx)[1]
    _delete(ctx, manifest_path(ctx.namespace, image.manifest.digest), "manifest")
    ctx.put("manifest deletes enabled", True)
    ctx.put("deleted manifest", image)


@check("management", "GET deleted manifest by digest returns 404")
def deleted_manifest_gone(ctx: Context) -> None:
    image: Image = ctx.get("deleted manifest")
    ctx.expect_status(fetch_manifest(ctx, ctx.namespace, image.manifest.digest), 404)


@check("management", "GET tag of a deleted manifest returns 404")
def deleted_manifest_tag_gone(ctx: Context) -> None:
    image: Image = ctx.get("deleted manifest")
    assert image.tag is not None
    ctx.expect_status(fetch_manifest(ctx, ctx.namespace, image.tag), 404)


@check("management", "DELETE blob returns 202", provides=("deleted blob",))
def delete_blob(ctx: Context) -> None:
    image = _images(ctx)[1]
    _delete(ctx, blob_path(ctx.namespace, image.layer.digest), "blob")
    ctx.put("blob deletes enabled", True)
    ctx.put("deleted blob", image.layer.digest)


@check("management", "GET deleted blob returns 404")
def deleted_blob_gone(ctx: Context) -> None:
    digest: str = ctx.get("deleted blob")
    ctx.expect_status(ctx.request("GET", blob_path(ctx.namespace, digest)), 404)


def _delete_unknown(ctx: Context, path: str, what: str, enabled_flag: str) -> None:
    _images(ctx)
    resp = ctx.request("DELETE", path)
    if resp.status_code in DISABLED and not ctx.values.get(enabled_flag):
        raise Skipped(f"{what} deletion disabled or unsupported: {resp.status_code}"
                      f"{error_suffix(resp)} (400/405 allowed)")
    ctx.expect_status(resp, 404)


@check("management", "DELETE unknown manifest returns 404")
def delete_unknown_manifest(ctx: Context) -> None:
    path = manifest_path(ctx.namespace, random_digest())
    _delete_unknown(ctx, path, "manifest", "manifest deletes enabled")


@check("management", "DELETE unknown blob returns 404")
def delete_unknown_blob(ctx: Context) -> None:
    path = blob_path(ctx.namespace, random_digest())
    _delete_unknown(ctx, path, "blob", "blob deletes enabled")
