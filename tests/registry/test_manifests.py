"""Manifests: push/pull of OCI and Docker images and indexes, validation, tags moving."""

from __future__ import annotations

import json
import os
import re

import httpx
import pytest

from .util import (
    ACCEPT_ALL,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1_SIGNED,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Image,
    assert_error,
    assert_head_error,
    build_image,
    build_index,
    descriptor,
    location_of,
    odd_json,
    push_blob,
    push_image,
    push_image_blobs,
    put_manifest,
    random_blob,
    sha256,
)

IMAGE_TYPES = [OCI_MANIFEST, DOCKER_MANIFEST]
INDEX_TYPES = [(OCI_INDEX, OCI_MANIFEST), (DOCKER_MANIFEST_LIST, DOCKER_MANIFEST)]


def assert_manifest(client: httpx.Client, repo: str, reference: str, body: bytes,
                    media_type: str) -> None:
    """GET and HEAD of `reference` serve exactly `body` with the pushed media type."""
    digest = sha256(body)
    get = client.get(f"/v2/{repo}/manifests/{reference}", headers=ACCEPT_ALL)
    assert get.status_code == 200, get.text
    assert get.content == body
    assert get.headers["content-type"].split(";")[0].strip() == media_type
    assert get.headers.get("docker-content-digest") == digest
    head = client.head(f"/v2/{repo}/manifests/{reference}", headers=ACCEPT_ALL)
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(body)
    assert head.headers["content-type"].split(";")[0].strip() == media_type
    assert head.headers.get("docker-content-digest") == digest


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("media_type", IMAGE_TYPES)
def test_push_image_by_tag(client: httpx.Client, repo: str, media_type: str) -> None:
    image = build_image(media_type)
    push_image_blobs(client, repo, image)
    response = put_manifest(client, repo, "v1", image.manifest, media_type)
    assert response.status_code == 201, response.text
    assert response.headers.get("docker-content-digest") == image.digest
    # Location points at the manifest just pushed.
    pulled = client.get(location_of(response), headers=ACCEPT_ALL)
    assert pulled.status_code == 200
    assert pulled.content == image.manifest


@pytest.mark.parametrize("media_type", IMAGE_TYPES)
def test_pull_by_tag_and_digest(client: httpx.Client, repo: str, media_type: str) -> None:
    image = push_image(client, repo, "latest", media_type)
    assert b"\t" in image.manifest  # odd whitespace survives only byte-exact storage
    assert_manifest(client, repo, "latest", image.manifest, media_type)
    assert_manifest(client, repo, image.digest, image.manifest, media_type)


def test_pull_without_accept_header(client: httpx.Client, repo: str) -> None:
    image = push_image(client, repo, "v1")
    response = client.get(f"/v2/{repo}/manifests/v1")
    assert response.status_code == 200
    assert response.content == image.manifest


@pytest.mark.parametrize("media_type", IMAGE_TYPES)
def test_push_by_digest(client: httpx.Client, repo: str, media_type: str) -> None:
    image = build_image(media_type)
    push_image_blobs(client, repo, image)
    response = put_manifest(client, repo, image.digest, image.manifest, media_type)
    assert response.status_code == 201, response.text
    assert response.headers.get("docker-content-digest") == image.digest
    assert_manifest(client, repo, image.digest, image.manifest, media_type)


def test_push_by_wrong_digest(client: httpx.Client, repo: str) -> None:
    image = build_image()
    push_image_blobs(client, repo, image)
    wrong = sha256(image.manifest + b" ")
    response = put_manifest(client, repo, wrong, image.manifest, OCI_MANIFEST)
    assert_error(response, 400, "DIGEST_INVALID")
    assert_error(client.get(f"/v2/{repo}/manifests/{wrong}", headers=ACCEPT_ALL),
                 404, "MANIFEST_UNKNOWN")
    assert_error(client.get(f"/v2/{repo}/manifests/{image.digest}", headers=ACCEPT_ALL),
                 404, "MANIFEST_UNKNOWN")


def test_push_same_manifest_twice(client: httpx.Client, repo: str) -> None:
    image = push_image(client, repo, "one")
    response = put_manifest(client, repo, "one", image.manifest, OCI_MANIFEST)
    assert response.status_code == 201
    assert response.headers.get("docker-content-digest") == image.digest


def test_retag_moves_tag(client: httpx.Client, repo: str) -> None:
    first = push_image(client, repo, "stable")
    second = push_image(client, repo, "stable")
    assert first.digest != second.digest
    assert_manifest(client, repo, "stable", second.manifest, OCI_MANIFEST)
    assert_manifest(client, repo, first.digest, first.manifest, OCI_MANIFEST)


def test_same_manifest_under_two_tags(client: httpx.Client, repo: str) -> None:
    image = push_image(client, repo, "a")
    assert put_manifest(client, repo, "b", image.manifest, OCI_MANIFEST).status_code == 201
    assert_manifest(client, repo, "a", image.manifest, OCI_MANIFEST)
    assert_manifest(client, repo, "b", image.manifest, OCI_MANIFEST)


def test_manifest_not_visible_from_other_repository(client: httpx.Client, repo: str) -> None:
    image = push_image(client, repo, "v1")
    other = repo + "-other"
    push_image(client, other, "v0")
    assert_error(client.get(f"/v2/{other}/manifests/{image.digest}", headers=ACCEPT_ALL),
                 404, "MANIFEST_UNKNOWN")
    assert_error(client.get(f"/v2/{other}/manifests/v1", headers=ACCEPT_ALL),
                 404, "MANIFEST_UNKNOWN")


def test_image_with_empty_config(client: httpx.Client, repo: str) -> None:
    """An artifact-style manifest: the OCI empty descriptor `{}` as config."""
    empty = b"{}"
    layer = random_blob(100)
    push_blob(client, repo, empty)
    push_blob(client, repo, layer)
    body = odd_json({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.test",
        "config": descriptor("application/vnd.oci.empty.v1+json", empty),
        "layers": [descriptor("application/octet-stream", layer)],
    })
    assert put_manifest(client, repo, "artifact", body, OCI_MANIFEST).status_code == 201
    assert_manifest(client, repo, "artifact", body, OCI_MANIFEST)


# --------------------------------------------------------------------------- indexes


@pytest.mark.parametrize(("index_type", "child_type"), INDEX_TYPES)
def test_push_index(client: httpx.Client, repo: str, index_type: str, child_type: str) -> None:
    children: list[Image] = []
    for _ in range(2):
        child = build_image(child_type)
        push_image_blobs(client, repo, child)
        response = put_manifest(client, repo, child.digest, child.manifest, child_type)
        assert response.status_code == 201, response.text
        children.append(child)
    index = build_index(index_type, children)
    response = put_manifest(client, repo, "multi", index, index_type)
    assert response.status_code == 201, response.text
    assert response.headers.get("docker-content-digest") == sha256(index)
    assert_manifest(client, repo, "multi", index, index_type)
    assert_manifest(client, repo, sha256(index), index, index_type)
    for child in children:
        assert_manifest(client, repo, child.digest, child.manifest, child_type)


@pytest.mark.parametrize(("index_type", "child_type"), INDEX_TYPES)
def test_index_with_missing_child(client: httpx.Client, repo: str, index_type: str,
                                  child_type: str) -> None:
    present = push_image(client, repo, "present", child_type)
    missing = build_image(child_type)
    index = build_index(index_type, [present, missing])
    response = put_manifest(client, repo, "multi", index, index_type)
    assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN", "MANIFEST_UNKNOWN")
    assert_error(client.get(f"/v2/{repo}/manifests/multi", headers=ACCEPT_ALL),
                 404, "MANIFEST_UNKNOWN")


def test_large_index_names_exactly_its_missing_children(client: httpx.Client,
                                                        repo: str) -> None:
    """An index of 150 manifests, 10 of them never pushed: refused, naming those 10 (the
    children are checked a slice at a time; none is skipped or named twice)."""
    config, layer = b"{}", random_blob(64)
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    children = [odd_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
        "annotations": {"n": str(i)}}) for i in range(150)]
    missing = {sha256(children[i]) for i in range(5, 150, 15)}
    for child in children:
        if sha256(child) not in missing:
            assert put_manifest(client, repo, sha256(child), child,
                                OCI_MANIFEST).status_code == 201
    index = odd_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                      "manifests": [descriptor(OCI_MANIFEST, c) for c in children]})
    error = assert_error(put_manifest(client, repo, "big", index, OCI_INDEX), 400,
                         "MANIFEST_BLOB_UNKNOWN", "MANIFEST_UNKNOWN")
    assert sorted(error["detail"]["digests"]) == sorted(missing)


# --------------------------------------------------------------------------- validation


def test_manifest_with_unknown_layer(client: httpx.Client, repo: str) -> None:
    image = build_image()
    push_blob(client, repo, image.config)
    push_blob(client, repo, image.layers[0])  # layers[1] is never pushed
    response = put_manifest(client, repo, "v1", image.manifest, OCI_MANIFEST)
    assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
    assert_error(client.get(f"/v2/{repo}/manifests/v1", headers=ACCEPT_ALL),
                 404, "MANIFEST_UNKNOWN", "NAME_UNKNOWN")


def test_manifest_with_unknown_config(client: httpx.Client, repo: str) -> None:
    image = build_image()
    for layer in image.layers:
        push_blob(client, repo, layer)
    response = put_manifest(client, repo, "v1", image.manifest, OCI_MANIFEST)
    assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")


def test_manifest_with_blob_only_in_other_repository(client: httpx.Client, repo: str) -> None:
    image = build_image()
    push_image_blobs(client, repo + "-other", image)
    push_blob(client, repo, image.config)
    response = put_manifest(client, repo, "v1", image.manifest, OCI_MANIFEST)
    assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2]", b"\xff\xfe{}", b"null"])
def test_invalid_manifest(client: httpx.Client, repo: str, body: bytes) -> None:
    response = put_manifest(client, repo, "bad", body, OCI_MANIFEST)
    assert_error(response, 400, "MANIFEST_INVALID")


def test_manifest_missing_fields(client: httpx.Client, repo: str) -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": "nope"})
    response = put_manifest(client, repo, "bad", body.encode(), OCI_MANIFEST)
    assert_error(response, 400, "MANIFEST_INVALID")


def test_manifest_with_malformed_layer_digest(client: httpx.Client, repo: str) -> None:
    config = random_blob(30)
    push_blob(client, repo, config)
    body = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [{"mediaType": OCI_LAYER, "digest": "sha256:xyz", "size": 3}],
    }).encode()
    response = put_manifest(client, repo, "bad", body, OCI_MANIFEST)
    assert_error(response, 400, "MANIFEST_INVALID", "DIGEST_INVALID")


def _big_manifest(size: int) -> bytes:
    head = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": OCI_CONFIG, "digest": sha256(b"x"), "size": 1},
                       "layers": [],
                       "annotations": {"pad": ""}}).encode()
    padding = b"a" * (size - len(head))
    return head.replace(b'"pad": ""', b'"pad": "' + padding + b'"')


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_manifest_too_large(client: httpx.Client, repo: str, chunked: bool) -> None:
    body = _big_manifest(4 * 1024 * 1024 + 1)
    assert len(body) == 4 * 1024 * 1024 + 1
    json.loads(body)
    content: bytes | list[bytes] = body
    if chunked:
        content = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    response = client.put(f"/v2/{repo}/manifests/big", content=content,
                          headers={"Content-Type": OCI_MANIFEST})
    assert_error(response, (400, 413), "SIZE_INVALID", "MANIFEST_INVALID")
    assert client.get("/v2/").status_code == 200
    image = push_image(client, repo, "small")
    assert_manifest(client, repo, "small", image.manifest, OCI_MANIFEST)


@pytest.mark.parametrize("content_type", [DOCKER_SCHEMA1_SIGNED, "application/json"])
def test_schema1_rejected(client: httpx.Client, repo: str, content_type: str) -> None:
    layer = random_blob(20)
    push_blob(client, repo, layer)
    body = json.dumps({
        "schemaVersion": 1,
        "name": repo,
        "tag": "old",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": sha256(layer)}],
        "history": [{"v1Compatibility": "{}"}],
        "signatures": [],
    }, indent=3).encode()
    response = put_manifest(client, repo, "old", body, content_type)
    error = assert_error(response, 400, "MANIFEST_INVALID")
    assert re.search(r"schema[\s_-]*(version)?[\s:=]*1", error["message"], re.IGNORECASE), error


# --------------------------------------------------------------------------- unknown


def test_unknown_tag(client: httpx.Client, repo: str) -> None:
    push_image(client, repo, "exists")
    response = client.get(f"/v2/{repo}/manifests/missing", headers=ACCEPT_ALL)
    assert_error(response, 404, "MANIFEST_UNKNOWN")
    assert_head_error(client.head(f"/v2/{repo}/manifests/missing", headers=ACCEPT_ALL))


def test_unknown_digest(client: httpx.Client, repo: str) -> None:
    push_image(client, repo, "exists")
    digest = sha256(os.urandom(16))
    response = client.get(f"/v2/{repo}/manifests/{digest}", headers=ACCEPT_ALL)
    assert_error(response, 404, "MANIFEST_UNKNOWN")
    assert_head_error(client.head(f"/v2/{repo}/manifests/{digest}", headers=ACCEPT_ALL))


def test_unknown_repository(client: httpx.Client, repo: str) -> None:
    response = client.get(f"/v2/{repo}/manifests/latest", headers=ACCEPT_ALL)
    assert_error(response, 404, "MANIFEST_UNKNOWN", "NAME_UNKNOWN")


def test_blob_digest_is_not_a_manifest(client: httpx.Client, repo: str) -> None:
    image = push_image(client, repo, "v1")
    config_digest = sha256(image.config)
    response = client.get(f"/v2/{repo}/manifests/{config_digest}", headers=ACCEPT_ALL)
    assert_error(response, 404, "MANIFEST_UNKNOWN")
