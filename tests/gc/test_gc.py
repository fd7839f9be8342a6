"""Garbage collection removes exactly the unreferenced data, on both backends."""

from __future__ import annotations

import json

import httpx

from tests.conftest import LiveRegistry
from tests.gc.util import blobs_of, gc_registry, pull_fully, run_gc, stored_blobs
from tests.registry.util import (
    OCI_INDEX,
    OCI_MANIFEST,
    build_image,
    build_index,
    descriptor,
    push_blob,
    push_image,
    push_image_blobs,
    put_manifest,
    random_blob,
    sha256,
)

__all__ = ["gc_registry"]


def test_gc_removes_exactly_the_unreferenced_data(gc_registry: LiveRegistry) -> None:
    live = gc_registry
    with httpx.Client(base_url=live.url, timeout=60, follow_redirects=True) as http:
        shared = random_blob(4096)
        kept_a = push_image(http, "team/a", "v1")
        # An untagged image in team/a: garbage, with its own config and layers.
        loose = build_image()
        push_image_blobs(http, "team/a", loose)
        assert put_manifest(http, "team/a", loose.digest, loose.manifest,
                            loose.media_type).status_code == 201
        # A layer shared by a kept image in another repository and the loose one's repository.
        push_blob(http, "team/a", shared)
        image_b = build_image()
        image_b.layers.append(shared)
        doc = json.loads(image_b.manifest)
        doc["layers"].append(descriptor(doc["layers"][0]["mediaType"], shared))
        image_b.manifest = json.dumps(doc).encode()
        push_image_blobs(http, "team/b", image_b)
        assert put_manifest(http, "team/b", "v1", image_b.manifest,
                            OCI_MANIFEST).status_code == 201
        # An index (tagged) whose children are untagged: the children are kept.
        child1, child2 = build_image(), build_image()
        for child in (child1, child2):
            push_image_blobs(http, "team/multi", child)
            assert put_manifest(http, "team/multi", child.digest, child.manifest,
                                child.media_type).status_code == 201
        index = build_index(OCI_INDEX, [child1, child2])
        assert put_manifest(http, "team/multi", "latest", index, OCI_INDEX).status_code == 201
        # A signature of a kept image (untagged referrer): kept with its subject.
        empty = b"{}"
        push_blob(http, "team/a", empty)
        signature = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.signature",
            "config": descriptor("application/vnd.oci.empty.v1+json", empty),
            "layers": [descriptor("application/vnd.oci.empty.v1+json", empty)],
            "subject": descriptor(OCI_MANIFEST, kept_a.manifest)}).encode()
        assert put_manifest(http, "team/a", sha256(signature), signature,
                            OCI_MANIFEST).status_code == 201
        # A blob uploaded and never used, in team/b.
        orphan = random_blob(2048)
        push_blob(http, "team/b", orphan)

        garbage_blobs = (blobs_of(loose) | {loose.digest, sha256(orphan)}) - blobs_of(kept_a)
        before = stored_blobs(live)
        assert garbage_blobs <= before

        planned = run_gc(live, "--grace", "0", "--dry-run")
        assert planned["dry_run"] is True
        assert planned["manifests_deleted"] == 1
        assert stored_blobs(live) == before  # a dry run removes nothing
        assert http.get(f"/v2/team/a/manifests/{loose.digest}").status_code == 200

        report = run_gc(live, "--grace", "0")
        assert report["deleted_manifests"] == [f"team/a@{loose.digest}"]
        assert report["manifests_deleted"] == 1
        assert report["blobs_deleted"] == len(garbage_blobs) == planned["blobs_deleted"]
        assert report["bytes_freed"] == planned["bytes_freed"] > 0
        assert stored_blobs(live) == before - garbage_blobs

        assert http.get(f"/v2/team/a/manifests/{loose.digest}").status_code == 404
        assert http.head(f"/v2/team/b/blobs/{sha256(orphan)}").status_code == 404
        assert pull_fully(http, "team/a", "v1") == kept_a.digest
        assert pull_fully(http, "team/b", "v1") == sha256(image_b.manifest)
        assert pull_fully(http, "team/multi", "latest") == sha256(index)
        assert pull_fully(http, "team/a", sha256(signature)) == sha256(signature)
        referrers = http.get(f"/v2/team/a/referrers/{kept_a.digest}").json()["manifests"]
        assert [r["digest"] for r in referrers] == [sha256(signature)]

        again = run_gc(live, "--grace", "0")
        assert (again["manifests_deleted"], again["links_deleted"], again["blobs_deleted"]) == \
            (0, 0, 0)


def test_gc_keeps_what_is_younger_than_the_grace_period(gc_registry: LiveRegistry) -> None:
    live = gc_registry
    with httpx.Client(base_url=live.url, timeout=60, follow_redirects=True) as http:
        loose = build_image()
        push_image_blobs(http, "grace/app", loose)
        assert put_manifest(http, "grace/app", loose.digest, loose.manifest,
                            loose.media_type).status_code == 201
        orphan = random_blob(100)
        push_blob(http, "grace/app", orphan)
        report = run_gc(live)  # the default grace: an hour
        assert (report["manifests_deleted"], report["links_deleted"],
                report["blobs_deleted"]) == (0, 0, 0)
        assert http.get(f"/v2/grace/app/manifests/{loose.digest}").status_code == 200
        assert http.head(f"/v2/grace/app/blobs/{sha256(orphan)}").status_code == 200


def test_gc_purges_stale_upload_sessions(gc_registry: LiveRegistry) -> None:
    live = gc_registry
    with httpx.Client(base_url=live.url, timeout=60) as http:
        started = http.post("/v2/stale/app/blobs/uploads/")
        assert started.status_code == 202
        location = started.headers["location"]
        assert http.patch(location, content=random_blob(1000),
                          headers={"Content-Type": "application/octet-stream"}
                          ).status_code == 202
        fresh = run_gc(live)
        assert fresh["uploads_purged"] == 0
        assert http.get(location).status_code == 204
        report = run_gc(live, "--upload-max-age", "0")
        assert report["uploads_purged"] == 1
        gone = http.get(location)
        assert gone.status_code == 404
        assert gone.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
