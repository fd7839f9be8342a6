"""Referrers: manifests with a `subject`, the OCI-Subject header and GET /referrers/<digest>.

A registry without the referrers API (404 on the endpoint) has every API check skipped; the
one requirement that holds for every registry — accepting a manifest whose subject does not
exist yet — is always checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from .data import (
    EMPTY_CONFIG,
    OCI_INDEX,
    Blob,
    Manifest,
    encode,
    image_index,
    image_manifest,
    new_layer,
    token,
)
from .discovery import MAX_PAGES, next_link
from .framework import Context, Failed, Skipped, check
from .ops import Image, push_image, push_manifest, upload_blob, with_query

TYPE_A = "application/vnd.example.conformance.sbom.v1"
CONFIG_B = "application/vnd.example.conformance.config.v1+json"
PAYLOAD = "application/vnd.example.conformance.payload.v1"


@dataclass
class Referrers:
    subject: Image
    a: Manifest  # image manifest with artifactType
    b: Manifest  # image manifest without artifactType: its config mediaType stands in
    c: Manifest  # image index with subject, no artifactType
    pushes: dict[str, httpx.Response]

    def all(self) -> list[Manifest]:
        return [self.a, self.b, self.c]


def _notes(label: str) -> dict[str, str]:
    return {"org.example.conformance.referrer": label, "org.example.conformance.nonce": token()}


@check("referrers", "push a subject plus two image manifests and an index that refer to it (201)",
       provides=("referrers",))
def push_referrers(ctx: Context) -> None:
    subject = push_image(ctx, ctx.namespace, tag=f"subject-{token()}")
    payload = Blob(new_layer(256).data, PAYLOAD)
    config_b = Blob(encode({"conformance": token()}), CONFIG_B)
    for blob in (EMPTY_CONFIG, payload, config_b):
        upload_blob(ctx, ctx.namespace, blob)
    s = subject.manifest
    a = image_manifest(EMPTY_CONFIG, [payload], subject=s, artifact_type=TYPE_A,
                       annotations=_notes("a"))
    b = image_manifest(config_b, [payload], subject=s, annotations=_notes("b"))
    c = image_index([], subject=s, annotations=_notes("c"))
    pushes = {m.digest: push_manifest(ctx, ctx.namespace, m, m.digest) for m in (a, b, c)}
    ctx.put("referrers", Referrers(subject, a, b, c, pushes))


def fetch_referrers(
    ctx: Context, digest: str, artifact_type: str | None = None
) -> tuple[httpx.Response, list[dict[str, Any]]]:
    """GET the referrers list, following rel=next Links; returns the first page and all entries."""
    url = f"/v2/{ctx.namespace}/referrers/{digest}"
    if artifact_type:
        url = with_query(url, {"artifactType": artifact_type})
    first = resp = ctx.request("GET", url)
    entries: list[dict[str, Any]] = []
    for _ in range(MAX_PAGES):
        ctx.expect_status(resp, 200)
        body = ctx.json_body(resp)
        page = body.get("manifests") if isinstance(body, dict) else None
        if not isinstance(page, list):
            raise Failed(f"GET {resp.url.path}: `manifests` is {page!r}, expected a list")
        entries += page
        link = next_link(resp)
        if not link:
            break
        resp = ctx.request("GET", link)
    return first, entries


@check("referrers", "referrers API is available: GET /v2/<name>/referrers/<digest> returns 200",
       provides=("referrers api",))
def referrers_available(ctx: Context) -> None:
    refs: Referrers = ctx.get("referrers")
    probe = ctx.request("GET", f"/v2/{ctx.namespace}/referrers/{refs.subject.manifest.digest}")
    if probe.status_code == 404:
        raise Skipped("referrers API not available (GET .../referrers/<digest> answered 404)")
    ctx.put("referrers api", fetch_referrers(ctx, refs.subject.manifest.digest))


def _listing(ctx: Context) -> tuple[Referrers, httpx.Response, dict[str, dict[str, Any]]]:
    resp: httpx.Response
    entries: list[Any]
    resp, entries = ctx.get("referrers api")
    by_digest = {str(e.get("digest")): e for e in entries if isinstance(e, dict)}
    refs: Referrers = ctx.get("referrers")
    return refs, resp, by_digest


@check("referrers", "push of an image manifest with subject returns OCI-Subject")
def oci_subject_header(ctx: Context) -> None:
    refs, _, _ = _listing(ctx)
    for manifest in (refs.a, refs.b):
        ctx.expect_header(refs.pushes[manifest.digest], "OCI-Subject", refs.subject.manifest.digest)


@check("referrers", "referrers response is an image index with the index Content-Type")
def referrers_is_index(ctx: Context) -> None:
    _, resp, _ = _listing(ctx)
    ctx.expect_content_type(resp, OCI_INDEX)
    body = resp.json()
    ctx.soft(body.get("schemaVersion") == 2, f"schemaVersion is {body.get('schemaVersion')!r}")
    media_type = body.get("mediaType", OCI_INDEX)
    ctx.soft(media_type == OCI_INDEX, f"body mediaType is {media_type!r}")


@check("referrers", "referrers list holds exactly the referrers, with digest, mediaType and size")
def referrers_complete(ctx: Context) -> None:
    refs, _, listed = _listing(ctx)
    expected = {m.digest: m for m in refs.all()}
    if set(listed) != set(expected):
        raise Failed(f"listed digests {sorted(listed)}, expected {sorted(expected)}")
    for digest, manifest in expected.items():
        entry = listed[digest]
        ctx.soft(entry.get("mediaType") == manifest.media_type,
                 f"{digest[:19]}: mediaType {entry.get('mediaType')!r}")
        ctx.soft(entry.get("size") == manifest.size,
                 f"{digest[:19]}: size {entry.get('size')!r}, expected {manifest.size}")


def _entry(ctx: Context, manifest: Manifest) -> dict[str, Any]:
    _, _, listed = _listing(ctx)
    if manifest.digest not in listed:
        raise Failed(f"referrer {manifest.digest} is not listed")
    return listed[manifest.digest]


@check("referrers", "referrer descriptor carries the manifest's artifactType")
def artifact_type_from_manifest(ctx: Context) -> None:
    refs: Referrers = ctx.get("referrers")
    got = _entry(ctx, refs.a).get("artifactType")
    ctx.soft(got == TYPE_A, f"artifactType is {got!r}, expected {TYPE_A!r}")


@check("referrers", "referrer descriptor artifactType falls back to the config mediaType")
def artifact_type_from_config(ctx: Context) -> None:
    refs: Referrers = ctx.get("referrers")
    got = _entry(ctx, refs.b).get("artifactType")
    ctx.soft(got == CONFIG_B, f"artifactType is {got!r}, expected {CONFIG_B!r}")


@check("referrers", "index referrer without artifactType has no artifactType in its descriptor")
def artifact_type_omitted(ctx: Context) -> None:
    refs: Referrers = ctx.get("referrers")
    entry = _entry(ctx, refs.c)
    ctx.soft("artifactType" not in entry, f"artifactType is {entry.get('artifactType')!r}")


@check("referrers", "referrer descriptors carry the manifests' annotations")
def referrer_annotations(ctx: Context) -> None:
    refs: Referrers = ctx.get("referrers")
    for manifest in refs.all():
        want = manifest.json["annotations"]
        got = _entry(ctx, manifest).get("annotations") or {}
        missing = {k: v for k, v in want.items() if got.get(k) != v}
        ctx.soft(not missing, f"{manifest.digest[:19]}: annotations missing or wrong: {missing}")


@check("referrers", "?artifactType= filter returns only matches with OCI-Filters-Applied")
def artifact_type_filter(ctx: Context) -> None:
    refs, _, _ = _listing(ctx)
    resp, entries = fetch_referrers(ctx, refs.subject.manifest.digest, TYPE_A)
    applied = [f.strip() for v in resp.headers.get_list("OCI-Filters-Applied")
               for f in v.split(",")]
    digests = sorted(str(e.get("digest")) for e in entries)
    if "artifactType" in applied:
        if digests != [refs.a.digest]:
            raise Failed(f"filtered list holds {digests}, expected only {refs.a.digest}")
        return
    if len(digests) < len(refs.all()):
        raise Failed(f"list was filtered ({digests}) but OCI-Filters-Applied is missing")
    raise Skipped("artifactType filtering not applied (a SHOULD); the full list came back")


@check("referrers", "referrers of a manifest with none returns 200 and an empty index")
def no_referrers(ctx: Context) -> None:
    refs, _, _ = _listing(ctx)
    resp, entries = fetch_referrers(ctx, refs.a.digest)
    ctx.expect_content_type(resp, OCI_INDEX)
    ctx.soft(entries == [], f"expected no referrers, got {entries}")


@check("referrers", "referrers with an invalid digest returns 400")
def referrers_invalid_digest(ctx: Context) -> None:
    _listing(ctx)
    resp = ctx.request("GET", f"/v2/{ctx.namespace}/referrers/sha256:not-a-digest")
    ctx.expect_status(resp, 400)


@check("referrers", "manifest whose subject does not exist yet is accepted (201)")
def subject_pushed_later(ctx: Context) -> None:
    config, layer = Blob(encode({"later": token()}), CONFIG_B), new_layer(64)
    subject = image_manifest(config, [layer], annotations=_notes("late subject"))
    payload = Blob(new_layer(64).data, PAYLOAD)
    referrer = image_manifest(EMPTY_CONFIG, [payload], subject=subject, artifact_type=TYPE_A,
                              annotations=_notes("early referrer"))
    for blob in (EMPTY_CONFIG, payload):
        upload_blob(ctx, ctx.namespace, blob)
    push_manifest(ctx, ctx.namespace, referrer, referrer.digest)
    if "referrers api" not in ctx.values:
        return
    for blob in (config, layer):
        upload_blob(ctx, ctx.namespace, blob)
    push_manifest(ctx, ctx.namespace, subject, subject.digest)
    _, entries = fetch_referrers(ctx, subject.digest)
    listed = [e.get("digest") for e in entries]
    ctx.soft(listed == [referrer.digest],
             f"once the subject exists its referrers are {listed}, expected [{referrer.digest}]")
