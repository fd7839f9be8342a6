"""Images pushed to the source arrive at each destination its rules name: same digests, the
same bytes, through a destination that is down, a source that restarts, and a destination that
wants the token flow; what keeps failing ends FAILED. Deletes are not replicated."""

from __future__ import annotations

import hashlib
import time
from urllib.parse import parse_qs, unquote

import httpx
from botocore.client import BaseClient

from tests.conftest import LiveRegistry, metric
from tests.faultproxy import FaultProxy
from tests.registry.util import (
    OCI_INDEX,
    Image,
    build_image,
    build_index,
    push_blob,
    push_image,
    push_image_blobs,
    put_manifest,
    sha256,
)

from .conftest import (
    DOOMED,
    PLAIN,
    REPLICATOR_PASSWORD,
    SECURE,
    STRICT,
    manifest_of,
    statuses,
    wait_for,
)


def assert_replicated(client: httpx.Client, repository: str, reference: str,
                      image: Image) -> None:
    """The destination serves the image byte for byte: manifest, config and layers."""
    found = manifest_of(client, repository, reference)
    assert found is not None, f"{repository}:{reference} missing at {client.base_url}"
    assert found.content == image.manifest
    assert found.headers["docker-content-digest"] == image.digest
    assert found.headers["content-type"] == image.media_type
    for blob in (image.config, *image.layers):
        got = client.get(f"/v2/{repository}/blobs/{sha256(blob)}", follow_redirects=True)
        assert got.status_code == 200
        assert got.content == blob


def uploads(seen: FaultProxy, repository: str) -> int:
    """Blob bodies a destination received for `repository` (PATCHes of its uploads)."""
    return seen.count(method="PATCH", path=f"/v2/{repository}/blobs/uploads/")


def mounts(seen: FaultProxy, repository: str) -> list[str]:
    """The repositories a destination was asked to mount blobs into `repository` from, one
    entry per mount it answered 201."""
    return [parse_qs(s.query).get("from", [""])[0] for s in seen.requests
            if s.method == "POST" and s.status == 201 and "mount" in parse_qs(s.query)
            and unquote(s.path) == f"/v2/{repository}/blobs/uploads/"]


def copies(source: httpx.Client, destination: str, result: str) -> float:
    """The source's registry_replication_copies_total for a destination and result."""
    return metric(source.get("/metrics").text, "registry_replication_copies_total",
                  destination=destination, result=result) or 0.0


def wait_complete(ecr: BaseClient, repository: str, digest: str,
                  *destinations: dict[str, str]) -> None:
    """Wait until the image's status is COMPLETE at exactly these destinations."""
    wanted = {d["registryId"]: ("COMPLETE", None) for d in destinations}

    def complete() -> bool:
        return statuses(ecr, repository, digest) == wanted

    wait_for(complete, what=f"{digest} COMPLETE")


def test_image_and_index_arrive_identical(ecr: BaseClient, http: httpx.Client,
                                          plain: LiveRegistry, suffix: str) -> None:
    name = f"rep/app-{suffix}"
    image = push_image(http, name, "v1")
    children = [build_image(), build_image()]
    for child in children:
        push_image_blobs(http, name, child)
        assert put_manifest(http, name, child.digest, child.manifest,
                            child.media_type).status_code == 201
    index = build_index(OCI_INDEX, children)
    assert put_manifest(http, name, "multi", index, OCI_INDEX).status_code == 201

    with httpx.Client(base_url=plain.url, timeout=30) as b:
        wait_for(lambda: manifest_of(b, name, "multi"), what="the index at the destination")
        assert_replicated(b, name, "v1", image)
        listed = manifest_of(b, name, "multi")
        assert listed is not None and listed.content == index
        assert listed.headers["docker-content-digest"] == sha256(index)
        for child in children:
            assert_replicated(b, name, child.digest, child)
        assert b.get(f"/v2/{name}/tags/list").json()["tags"] == ["multi", "v1"]
    for digest in (image.digest, sha256(index)):
        wait_complete(ecr, name, digest, PLAIN)
    found = ecr.describe_image_replication_status(repositoryName=name,
                                                  imageId={"imageTag": "v1"})
    assert found["imageId"] == {"imageDigest": image.digest, "imageTag": "v1"}
    assert found["replicationStatuses"] == [{**PLAIN, "status": "COMPLETE"}]
    # The image, the two children and the index: four copies counted (at least: the source
    # serves every test of this module).
    wait_for(lambda: copies(http, "plain", "copied") >= 4, what="four copies counted")


def test_filters_choose_repositories_and_deletes_stay(ecr: BaseClient, http: httpx.Client,
                                                       plain: LiveRegistry, suffix: str) -> None:
    elsewhere = push_image(http, f"other/app-{suffix}", "v1")
    prefix_only = push_image(http, f"rep-{suffix}", "v1")  # "rep/" is not a prefix of it
    first = push_image(http, f"rep/keep-{suffix}", "v1")
    with httpx.Client(base_url=plain.url, timeout=30) as b:
        wait_for(lambda: manifest_of(b, f"rep/keep-{suffix}", "v1"), what="the first image")
        # A delete on the source is not replicated; the push after it is (same queue, later).
        assert http.delete(f"/v2/rep/keep-{suffix}/manifests/{first.digest}").status_code == 202
        second = push_image(http, f"rep/keep-{suffix}", "v2")
        wait_for(lambda: manifest_of(b, f"rep/keep-{suffix}", "v2"), what="the second image")
        assert_replicated(b, f"rep/keep-{suffix}", "v1", first)
        assert_replicated(b, f"rep/keep-{suffix}", "v2", second)
        # Pushed before the matching images, on the same destination queue, had they been
        # queued at all: they would be there by now.
        assert manifest_of(b, f"other/app-{suffix}", "v1") is None
        assert manifest_of(b, f"rep-{suffix}", "v1") is None
    assert statuses(ecr, f"other/app-{suffix}", elsewhere.digest) == {}
    assert statuses(ecr, f"rep-{suffix}", prefix_only.digest) == {}


def test_blobs_the_destination_has_are_not_sent_again(http: httpx.Client, plain: LiveRegistry,
                                                      to_plain: FaultProxy, suffix: str) -> None:
    name, other = f"rep/shared-{suffix}", f"rep/mounted-{suffix}"
    base = push_image(http, name, "base")
    with httpx.Client(base_url=plain.url, timeout=30) as b:
        wait_for(lambda: manifest_of(b, name, "base"), what="the base image")
        assert uploads(to_plain, name) == 3  # config and two layers
        # Same layers, new config: only the config travels.
        derived = Image(manifest=b"", media_type=base.media_type, config=build_image().config,
                        layers=base.layers)
        doc = {"schemaVersion": 2, "mediaType": base.media_type,
               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                          "digest": sha256(derived.config), "size": len(derived.config)},
               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                           "digest": sha256(layer), "size": len(layer)}
                          for layer in base.layers]}
        derived.manifest = httpx.Request("PUT", "/", json=doc).content
        push_blob(http, name, derived.config)
        assert put_manifest(http, name, "derived", derived.manifest,
                            derived.media_type).status_code == 201
        # The same image in another repository: its blobs are mounted there, not uploaded.
        push_image_blobs(http, other, base)
        assert put_manifest(http, other, "copy", base.manifest,
                            base.media_type).status_code == 201
        wait_for(lambda: manifest_of(b, other, "copy"), what="the copy")
        assert_replicated(b, name, "derived", derived)
        assert_replicated(b, other, "copy", base)
        assert uploads(to_plain, name) == 4
        assert uploads(to_plain, other) == 0
        assert mounts(to_plain, other) == [name] * 3


def test_destination_down_then_source_restart_loses_nothing(
        ecr: BaseClient, source: LiveRegistry, plain: LiveRegistry, suffix: str) -> None:
    name = f"rep/outage-{suffix}"
    plain.stop()
    try:
        with httpx.Client(base_url=source.url, timeout=30) as a:
            first = push_image(a, name, "v1")
            second = push_image(a, name, "v2")
            moved = push_image(a, name, "v1")  # the tag moves: order matters
            gone = push_image(a, name, "gone")  # deleted before it could be copied
            assert a.delete(f"/v2/{name}/manifests/{gone.digest}").status_code == 202
        time.sleep(1.0)  # a few failed attempts
        assert statuses(ecr, name, first.digest) == {PLAIN["registryId"]: ("IN_PROGRESS", None)}
        source.stop()  # the source restarts while the jobs wait
        source.start_again()
        with httpx.Client(base_url=source.url, timeout=30) as a:
            late = push_image(a, name, "v3")
        assert statuses(ecr, name, late.digest) == {PLAIN["registryId"]: ("IN_PROGRESS", None)}
    finally:
        plain.start_again()
    with httpx.Client(base_url=plain.url, timeout=30) as b:
        wait_for(lambda: manifest_of(b, name, "v3"), what="the images after the outage")
        assert_replicated(b, name, "v1", moved)
        assert_replicated(b, name, "v2", second)
        assert_replicated(b, name, "v3", late)
        assert manifest_of(b, name, first.digest) is not None
        assert manifest_of(b, name, gone.digest) is None  # ends at once, holding nothing back
    for image in (first, second, moved, late):
        wait_complete(ecr, name, image.digest, PLAIN)


def test_destination_with_auth_through_the_token_flow(
        ecr: BaseClient, http: httpx.Client, plain: LiveRegistry, secure: LiveRegistry,
        to_secure: FaultProxy, suffix: str) -> None:
    name = f"fan/app-{suffix}"
    image = push_image(http, name, "v1")
    with httpx.Client(base_url=secure.url, timeout=30,
                      auth=("replicator", REPLICATOR_PASSWORD)) as s:
        wait_for(lambda: manifest_of(s, name, "v1"), what="the image at the auth destination")
        assert_replicated(s, name, "v1", image)
    with httpx.Client(base_url=plain.url, timeout=30) as b:
        wait_for(lambda: manifest_of(b, name, "v1"), what="the image at the plain destination")
        assert_replicated(b, name, "v1", image)
    scopes = [scope for s in to_secure.requests if s.method == "GET" and s.path == "/token"
              for scope in parse_qs(s.query).get("scope", [])]
    assert any(scope.startswith(f"repository:{name}:") for scope in scopes), scopes
    assert to_secure.count(method="PUT", path=f"/v2/{name}/manifests/v1", status=201) >= 1
    wait_complete(ecr, name, image.digest, PLAIN, SECURE)
    with httpx.Client(base_url=secure.url, timeout=30) as anonymous:
        assert anonymous.head(f"/v2/{name}/manifests/v1").status_code == 401
    # The same image in a second repository there: mounted from the first, whose pull scope
    # the token then also needs.
    copy = f"sec/copy-{suffix}"
    push_image_blobs(http, copy, image)
    assert put_manifest(http, copy, "v1", image.manifest, image.media_type).status_code == 201
    with httpx.Client(base_url=secure.url, timeout=30,
                      auth=("replicator", REPLICATOR_PASSWORD)) as s:
        wait_for(lambda: manifest_of(s, copy, "v1"), what="the copy at the auth destination")
        assert_replicated(s, copy, "v1", image)
    assert uploads(to_secure, copy) == 0
    assert mounts(to_secure, copy) == [name] * 3


def test_max_attempts_exhausted_is_failed(ecr: BaseClient, http: httpx.Client,
                                          secure: LiveRegistry, suffix: str) -> None:
    name = f"doomed/app-{suffix}"
    image = push_image(http, name, "v1")
    assert statuses(ecr, name, image.digest) == {DOOMED["registryId"]: ("IN_PROGRESS", None)}
    wait_for(lambda: statuses(ecr, name, image.digest) != {
        DOOMED["registryId"]: ("IN_PROGRESS", None)}, what="the end of the retries")
    assert statuses(ecr, name, image.digest) == {
        DOOMED["registryId"]: ("FAILED", "DESTINATION_AUTHENTICATION_FAILED")}
    wait_for(lambda: copies(http, "doomed", "dead") >= 1, what="a dead-lettered copy counted")
    with httpx.Client(base_url=secure.url, timeout=30,
                      auth=("replicator", REPLICATOR_PASSWORD)) as s:
        assert s.head(f"/v2/{name}/manifests/v1").status_code == 404


def test_a_destination_that_does_not_create_repositories_fails_saying_so(
        ecr: BaseClient, http: httpx.Client, strict: LiveRegistry, suffix: str) -> None:
    name = f"strict/app-{suffix}"
    image = push_image(http, name, "v1")
    wait_for(lambda: statuses(ecr, name, image.digest) != {
        STRICT["registryId"]: ("IN_PROGRESS", None)}, what="the end of the attempt")
    assert statuses(ecr, name, image.digest) == {
        STRICT["registryId"]: ("FAILED", "DESTINATION_REPOSITORY_NOT_FOUND")}
    with httpx.Client(base_url=strict.url, timeout=30) as s:
        assert s.get("/v2/_catalog").json()["repositories"] == []


def test_pull_through_cache_copies_are_not_replicated(ecr: BaseClient, http: httpx.Client,
                                                      plain: LiveRegistry, suffix: str) -> None:
    """A cached copy is stored before its blobs arrive: ECR does not replicate those."""
    prefix = f"rep/cache{suffix}"
    with httpx.Client(base_url=plain.url, timeout=30) as b:
        upstream = push_image(b, f"upstream/img-{suffix}", "v1")
    ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=prefix, upstreamRegistryUrl=plain.url)
    try:
        cached = manifest_of(http, f"{prefix}/upstream/img-{suffix}", "v1")
        assert cached is not None and cached.content == upstream.manifest
        after = push_image(http, f"rep/after-cache-{suffix}", "v1")
        with httpx.Client(base_url=plain.url, timeout=30) as b:
            wait_for(lambda: manifest_of(b, f"rep/after-cache-{suffix}", "v1"),
                     what="the image pushed after the pull")
            assert_replicated(b, f"rep/after-cache-{suffix}", "v1", after)
            assert manifest_of(b, f"{prefix}/upstream/img-{suffix}", "v1") is None
        assert statuses(ecr, f"{prefix}/upstream/img-{suffix}", upstream.digest) == {}
    finally:
        ecr.delete_pull_through_cache_rule(ecrRepositoryPrefix=prefix)


def test_digests_match_what_the_source_serves(http: httpx.Client, plain: LiveRegistry,
                                              suffix: str) -> None:
    """A Docker manifest keeps its media type and digest (the bytes are never rewritten)."""
    name = f"rep/docker-{suffix}"
    image = push_image(http, name, "v1", media_type="application/vnd.docker.distribution."
                       "manifest.v2+json")
    with httpx.Client(base_url=plain.url, timeout=30) as b:
        found = wait_for(lambda: manifest_of(b, name, "v1"), what="the docker image")
        assert found.headers["content-type"] == image.media_type
        assert "sha256:" + hashlib.sha256(found.content).hexdigest() == image.digest
