"""Push workflow, manifest side: by tag, by digest, indexes, rejections, multi-tag, errors."""

from __future__ import annotations

import json
import re

import httpx

from .client import Exchange
from .data import (
    MANIFEST_ACCEPT,
    OCI_MANIFEST,
    Blob,
    Manifest,
    image_index,
    image_manifest,
    new_config,
    new_layer,
    random_digest,
    sha256,
    token,
)
from .framework import Context, Failed, Skipped, check, error_codes, fixture
from .ops import (
    blob_path,
    fetch_manifest,
    manifest_path,
    push_manifest,
    remember_manifest,
    upload_blob,
    uploads_path,
    with_query,
)

KNOWN_CODES = {
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID",
    "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED", "DENIED", "UNSUPPORTED", "TOOMANYREQUESTS",
    # legacy Docker codes the spec says clients may encounter
    "TAG_INVALID", "MANIFEST_UNVERIFIED",
}
_CODE_SHAPE = re.compile(r"^[A-Z_]+$")


@fixture("manifest blobs")
def _manifest_blobs(ctx: Context) -> tuple[Blob, Blob]:
    config, layer = new_config(), new_layer()
    upload_blob(ctx, ctx.namespace, config)
    upload_blob(ctx, ctx.namespace, layer)
    return config, layer


def _fresh_manifest(ctx: Context, case: str) -> Manifest:
    config, layer = ctx.fixture("manifest blobs")
    notes = {"org.example.conformance.case": case, "org.example.conformance.nonce": token()}
    return image_manifest(config, [layer], annotations=notes)


def _verify_push(ctx: Context, resp: httpx.Response, manifest: Manifest) -> None:
    ctx.expect_header(resp, "Docker-Content-Digest", manifest.digest)
    got = ctx.request("GET", ctx.location(resp), headers={"Accept": MANIFEST_ACCEPT})
    ctx.soft(got.status_code == 200, f"GET Location {got.url.path} answered {got.status_code}")
    ctx.soft(got.status_code != 200 or got.content == manifest.data,
             "manifest pulled from Location differs from the pushed bytes")


@check("push", "manifest push by tag returns 201 + Location + Docker-Content-Digest",
       provides=("tagged manifest",))
def push_by_tag(ctx: Context) -> None:
    manifest = _fresh_manifest(ctx, "by-tag")
    resp = push_manifest(ctx, ctx.namespace, manifest, f"push-{token()}")
    _verify_push(ctx, resp, manifest)
    ctx.put("tagged manifest", manifest)


@check("push", "manifest push by digest returns 201 + Location + Docker-Content-Digest",
       provides=("digest manifest",))
def push_by_digest(ctx: Context) -> None:
    manifest = _fresh_manifest(ctx, "by-digest")
    resp = push_manifest(ctx, ctx.namespace, manifest, manifest.digest)
    _verify_push(ctx, resp, manifest)
    ctx.put("digest manifest", manifest)


@check("push", "image index push returns 201 and pulls back byte-for-byte with its type")
def push_index(ctx: Context) -> None:
    index = image_index([ctx.get("tagged manifest"), ctx.get("digest manifest")])
    tag = f"index-{token()}"
    resp = push_manifest(ctx, ctx.namespace, index, tag)
    ctx.expect_header(resp, "Docker-Content-Digest", index.digest)
    got = fetch_manifest(ctx, ctx.namespace, tag)
    ctx.expect_status(got, 200)
    ctx.expect_content_type(got, index.media_type)
    ctx.soft(got.content == index.data, "pulled index differs from the pushed bytes")


@check("push", "manifest referencing a missing blob is rejected with 400 MANIFEST_BLOB_UNKNOWN")
def missing_blob_manifest(ctx: Context) -> None:
    config, _ = ctx.fixture("manifest blobs")
    manifest = image_manifest(config, [new_layer()])  # the layer is never uploaded
    resp = ctx.request("PUT", manifest_path(ctx.namespace, manifest.digest),
                       headers={"Content-Type": OCI_MANIFEST}, content=manifest.data)
    if resp.status_code == 201:
        remember_manifest(ctx, ctx.namespace, manifest.digest)
        raise Skipped("registry accepts manifests whose blobs are missing (allowed: MAY reject)")
    ctx.expect_status(resp, 400)
    codes = error_codes(resp)
    ctx.soft("MANIFEST_BLOB_UNKNOWN" in codes,
             f"error codes are {codes}, expected MANIFEST_BLOB_UNKNOWN")


def _oci_tags(resp: httpx.Response) -> list[str]:
    values = resp.headers.get_list("OCI-Tag")
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


@check("push", "multi-tag push: PUT by digest with ?tag=&tag= returns OCI-Tag headers")
def multi_tag_push(ctx: Context) -> None:
    manifest = _fresh_manifest(ctx, "multi-tag")
    tags = [f"multi-a-{token()}", f"multi-b-{token()}"]
    url = with_query(manifest_path(ctx.namespace, manifest.digest), [("tag", t) for t in tags])
    resp = ctx.request("PUT", url, headers={"Content-Type": manifest.media_type},
                       content=manifest.data)
    ctx.expect_status(resp, 201)
    remember_manifest(ctx, ctx.namespace, manifest.digest)
    ctx.expect_header(resp, "Docker-Content-Digest", manifest.digest)
    announced = _oci_tags(resp)
    exists = {t: fetch_manifest(ctx, ctx.namespace, t, "HEAD").status_code == 200 for t in tags}
    if not announced and not any(exists.values()):
        raise Skipped("tag query parameters ignored: no OCI-Tag header and no tags created "
                      "(multi-tag push is a MAY)")
    ctx.soft(set(announced) <= set(tags), f"OCI-Tag names tags never requested: {announced}")
    for tag in tags:
        if exists[tag] and tag not in announced:
            ctx.problems.append(f"tag {tag} was created but is missing from OCI-Tag {announced}")
        if tag in announced and not exists[tag]:
            ctx.problems.append(f"OCI-Tag announces {tag} but HEAD on it does not answer 200")


# ---- error bodies ----


def _provoke_errors(ctx: Context) -> None:
    ns = ctx.namespace
    ctx.request("GET", blob_path(ns, random_digest()))
    ctx.request("GET", manifest_path(ns, f"missing-{token()}"), headers={"Accept": MANIFEST_ACCEPT})
    ctx.request("GET", f"/v2/{ns}-absent-{token()}/tags/list")
    ctx.request("GET", uploads_path(ns) + "00000000-0000-4000-8000-" + token(6))
    ctx.request("PUT", manifest_path(ns, f"bad-{token()}"),
                headers={"Content-Type": OCI_MANIFEST}, content=b"{not json")
    ctx.request("POST", with_query(uploads_path(ns), {"digest": sha256(b"a")}), content=b"b")


def _body_problem(ex: Exchange) -> str | None:
    headers = {k.lower(): v for k, v in ex.response_headers}
    is_json_type = "json" in headers.get("content-type", "")
    try:
        body = json.loads(ex.body)
    except ValueError:
        return "Content-Type says JSON but the body does not parse" if is_json_type else None
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list) or not errors:
        return "JSON body without a non-empty `errors` list"
    for err in errors:
        if not isinstance(err, dict) or not isinstance(err.get("code"), str):
            return f"error entry without a string `code`: {err!r}"
        if not _CODE_SHAPE.match(err["code"]) or err["code"] not in KNOWN_CODES:
            return f"unknown error code {err['code']!r}"
        if "message" in err and not isinstance(err["message"], str):
            return f"`message` is not a string: {err['message']!r}"
    return None


@check("push", "error responses with JSON bodies use the `errors` shape with known codes")
def error_bodies(ctx: Context) -> None:
    _provoke_errors(ctx)
    checked, bad = 0, []
    for ex in ctx.client.exchanges:
        if not 400 <= ex.status < 500 or ex.method == "HEAD" or not ex.body or ex.note:
            continue
        checked += 1
        problem = _body_problem(ex)
        if problem:
            bad.append(f"{ex.method} {httpx.URL(ex.url).path} -> {ex.status}: {problem}")
    if bad:
        raise Failed(f"{len(bad)} of {checked} error bodies are malformed: " + "; ".join(bad[:5]))
