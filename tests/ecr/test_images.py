"""ECR image operations against a live server, on both storage backends: images pushed over
/v2/ are listed and described by the control plane, and images put or deleted through the
control plane are what the data plane serves."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.client import BaseClient
from botocore.config import Config

from tests.conftest import LiveRegistry, start_registry
from tests.registry.util import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    build_image,
    build_index,
    descriptor,
    push_blob,
    push_image,
    push_image_blobs,
    put_manifest,
    sha256,
)

ARTIFACT = "application/vnd.example.signature.v1"


@pytest.fixture
def ecr(registry_server: LiveRegistry) -> BaseClient:
    return boto3.client("ecr", endpoint_url=registry_server.url, region_name="us-east-1",
                        aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="secret",
                        config=Config(retries={"total_max_attempts": 1}))


@pytest.fixture
def http(registry_server: LiveRegistry) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry_server.url, timeout=60, follow_redirects=True) as c:
        yield c


@pytest.fixture
def name(ecr: BaseClient, repo: str) -> str:
    ecr.create_repository(repositoryName=repo)
    return repo


def ids(response: dict[str, Any]) -> set[tuple[str, str | None]]:
    return {(i["imageDigest"], i.get("imageTag")) for i in response["imageIds"]}


def layers_size(image: Image) -> int:
    return sum(len(layer) for layer in image.layers)


# --------------------------------------------------------------------------- ListImages


def test_list_images_one_entry_per_tag_and_untagged(ecr: BaseClient, http: httpx.Client,
                                                    name: str) -> None:
    a = push_image(http, name, "v1")
    assert put_manifest(http, name, "v2", a.manifest, a.media_type).status_code == 201
    b = push_image(http, name, "v3")
    c = build_image()
    push_image_blobs(http, name, c)
    assert put_manifest(http, name, c.digest, c.manifest, c.media_type).status_code == 201

    every = {(a.digest, "v1"), (a.digest, "v2"), (b.digest, "v3"), (c.digest, None)}
    assert ids(ecr.list_images(repositoryName=name)) == every
    assert ids(ecr.list_images(repositoryName=name, filter={"tagStatus": "TAGGED"})) == \
        every - {(c.digest, None)}
    assert ids(ecr.list_images(repositoryName=name, filter={"tagStatus": "UNTAGGED"})) == \
        {(c.digest, None)}


def test_list_images_pages_with_next_token(ecr: BaseClient, http: httpx.Client,
                                           name: str) -> None:
    pushed = set()
    for i in range(4):
        image = push_image(http, name, f"t{i}")
        pushed.add((image.digest, f"t{i}"))
    assert put_manifest(http, name, "extra", image.manifest, image.media_type).status_code == 201
    pushed.add((image.digest, "extra"))
    pages = list(ecr.get_paginator("list_images").paginate(
        repositoryName=name, PaginationConfig={"PageSize": 1}))
    seen = [(i["imageDigest"], i.get("imageTag")) for p in pages for i in p["imageIds"]]
    assert all(len(p["imageIds"]) <= 1 for p in pages)
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == pushed


def test_moving_a_tag_moves_it_in_the_listing(ecr: BaseClient, http: httpx.Client,
                                              name: str) -> None:
    a = push_image(http, name, "latest")
    b = push_image(http, name, "latest")
    assert ids(ecr.list_images(repositoryName=name)) == {(b.digest, "latest"), (a.digest, None)}
    described = ecr.describe_images(repositoryName=name,
                                    imageIds=[{"imageDigest": a.digest}])["imageDetails"]
    assert "imageTags" not in described[0]


def test_list_images_of_unknown_repository(ecr: BaseClient) -> None:
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.list_images(repositoryName="no/such-repository")


# --------------------------------------------------------------------------- DescribeImages


def test_describe_images_details(ecr: BaseClient, http: httpx.Client, name: str) -> None:
    before = time.time()
    image = push_image(http, name, "v1", media_type=DOCKER_MANIFEST, layer_size=3000)
    assert put_manifest(http, name, "stable", image.manifest, image.media_type).status_code == 201
    after = time.time()
    details = ecr.describe_images(repositoryName=name)["imageDetails"]
    assert len(details) == 1
    detail = details[0]
    assert detail["registryId"] == "000000000000"
    assert detail["repositoryName"] == name
    assert detail["imageDigest"] == image.digest
    assert sorted(detail["imageTags"]) == ["stable", "v1"]
    assert detail["imageSizeInBytes"] == layers_size(image)
    assert before - 1 <= detail["imagePushedAt"].timestamp() <= after + 1
    assert detail["imageManifestMediaType"] == DOCKER_MANIFEST
    assert detail["artifactMediaType"] == "application/vnd.docker.container.image.v1+json"
    assert "lastRecordedPullTime" not in detail


def test_describe_images_by_tag_and_digest(ecr: BaseClient, http: httpx.Client,
                                           name: str) -> None:
    a = push_image(http, name, "a")
    b = push_image(http, name, "b")
    push_image(http, name, "c")
    found = ecr.describe_images(repositoryName=name, imageIds=[
        {"imageTag": "a"}, {"imageDigest": b.digest}, {"imageTag": "a"}])["imageDetails"]
    assert [(d["imageDigest"], d["imageTags"]) for d in found] == \
        [(a.digest, ["a"]), (b.digest, ["b"])]
    with pytest.raises(ecr.exceptions.ImageNotFoundException):
        ecr.describe_images(repositoryName=name, imageIds=[{"imageTag": "missing"}])
    with pytest.raises(ecr.exceptions.ImageNotFoundException):
        ecr.describe_images(repositoryName=name, imageIds=[{"imageDigest": sha256(b"none")}])


def test_describe_images_pages_and_filters(ecr: BaseClient, http: httpx.Client,
                                           name: str) -> None:
    tagged = {push_image(http, name, f"t{i}").digest for i in range(3)}
    untagged = build_image()
    push_image_blobs(http, name, untagged)
    assert put_manifest(http, name, untagged.digest, untagged.manifest,
                        untagged.media_type).status_code == 201
    pages = list(ecr.get_paginator("describe_images").paginate(
        repositoryName=name, PaginationConfig={"PageSize": 1}))
    digests = [d["imageDigest"] for p in pages for d in p["imageDetails"]]
    assert sorted(digests) == sorted(tagged | {untagged.digest})
    only_untagged = ecr.describe_images(repositoryName=name, filter={"tagStatus": "UNTAGGED"})
    assert [d["imageDigest"] for d in only_untagged["imageDetails"]] == [untagged.digest]


def test_last_recorded_pull_time_is_written_once_per_hour(ecr: BaseClient, http: httpx.Client,
                                                          name: str) -> None:
    image = push_image(http, name, "v1")
    before = time.time()
    assert http.get(f"/v2/{name}/manifests/v1",
                    headers={"Accept": OCI_MANIFEST}).status_code == 200
    first = ecr.describe_images(repositoryName=name)["imageDetails"][0]["lastRecordedPullTime"]
    assert before - 1 <= first.timestamp() <= time.time() + 1
    time.sleep(1.1)
    assert http.get(f"/v2/{name}/manifests/{image.digest}").status_code == 200
    ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "v1"}])
    again = ecr.describe_images(repositoryName=name)["imageDetails"][0]["lastRecordedPullTime"]
    assert again == first  # pulls within the hour do not write again
    # HEAD is not a pull.
    other = push_image(http, name, "v2")
    assert http.head(f"/v2/{name}/manifests/v2").status_code == 200
    detail = ecr.describe_images(repositoryName=name,
                                 imageIds=[{"imageDigest": other.digest}])["imageDetails"][0]
    assert "lastRecordedPullTime" not in detail


def test_index_size_is_its_largest_image(ecr: BaseClient, http: httpx.Client,
                                         name: str) -> None:
    small = push_image(http, name, "small", layer_size=100)
    big = push_image(http, name, "big", layer_size=5000)
    index = build_index(OCI_INDEX, [small, big])
    assert put_manifest(http, name, "multi", index, OCI_INDEX).status_code == 201
    detail = ecr.describe_images(repositoryName=name,
                                 imageIds=[{"imageTag": "multi"}])["imageDetails"][0]
    assert detail["imageManifestMediaType"] == OCI_INDEX
    assert detail["imageSizeInBytes"] == max(layers_size(small), layers_size(big))


# --------------------------------------------------------------------------- BatchGetImage


def test_batch_get_image_returns_the_exact_manifest(ecr: BaseClient, http: httpx.Client,
                                                    name: str) -> None:
    image = push_image(http, name, "v1")
    other = push_image(http, name, "v2")
    response = ecr.batch_get_image(repositoryName=name, imageIds=[
        {"imageTag": "v1"},
        {"imageDigest": image.digest},
        {"imageTag": "missing"},
        {"imageTag": "v2", "imageDigest": image.digest},
        {"imageDigest": "sha256:not-a-digest"},
    ])
    images = response["images"]
    assert [i["imageId"] for i in images] == [
        {"imageDigest": image.digest, "imageTag": "v1"}, {"imageDigest": image.digest}]
    assert all(i["imageManifest"].encode() == image.manifest for i in images)
    assert all(i["imageManifestMediaType"] == OCI_MANIFEST for i in images)
    codes = [(f["imageId"], f["failureCode"]) for f in response["failures"]]
    assert codes == [
        ({"imageTag": "missing"}, "ImageNotFound"),
        ({"imageTag": "v2", "imageDigest": image.digest}, "ImageTagDoesNotMatchDigest"),
        ({"imageDigest": "sha256:not-a-digest"}, "InvalidImageDigest"),
    ]
    assert other.digest not in {i["imageId"]["imageDigest"] for i in images}


def test_batch_get_image_honours_accepted_media_types(ecr: BaseClient, http: httpx.Client,
                                                      name: str) -> None:
    push_image(http, name, "v1", media_type=DOCKER_MANIFEST)
    refused = ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "v1"}],
                                  acceptedMediaTypes=[OCI_MANIFEST])
    assert refused["images"] == []
    assert refused["failures"][0]["imageId"] == {"imageTag": "v1"}
    accepted = ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "v1"}],
                                   acceptedMediaTypes=[OCI_MANIFEST, DOCKER_MANIFEST])
    assert accepted["images"][0]["imageManifestMediaType"] == DOCKER_MANIFEST


# --------------------------------------------------------------------------- PutImage


def test_put_image_stores_exact_bytes_served_by_the_data_plane(
        ecr: BaseClient, http: httpx.Client, name: str) -> None:
    image = build_image()
    push_image_blobs(http, name, image)
    text = image.manifest.decode()
    put = ecr.put_image(repositoryName=name, imageManifest=text, imageTag="v1",
                        imageManifestMediaType=OCI_MANIFEST)["image"]
    assert put["imageId"] == {"imageDigest": image.digest, "imageTag": "v1"}
    served = http.get(f"/v2/{name}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert served.status_code == 200
    assert served.content == image.manifest
    assert served.headers["docker-content-digest"] == image.digest

    with pytest.raises(ecr.exceptions.ImageAlreadyExistsException):
        ecr.put_image(repositoryName=name, imageManifest=text, imageTag="v1")
    with pytest.raises(ecr.exceptions.ImageAlreadyExistsException):
        ecr.put_image(repositoryName=name, imageManifest=text)
    # The same manifest under another tag: the tag is added.
    ecr.put_image(repositoryName=name, imageManifest=text, imageTag="stable")
    assert http.get(f"/v2/{name}/manifests/stable",
                    headers={"Accept": OCI_MANIFEST}).content == image.manifest


def test_put_image_errors(ecr: BaseClient, http: httpx.Client, name: str) -> None:
    image = build_image()
    with pytest.raises(ecr.exceptions.LayersNotFoundException):
        ecr.put_image(repositoryName=name, imageManifest=image.manifest.decode(), imageTag="x")
    push_image_blobs(http, name, image)
    with pytest.raises(ecr.exceptions.ImageDigestDoesNotMatchException):
        ecr.put_image(repositoryName=name, imageManifest=image.manifest.decode(),
                      imageDigest=sha256(b"something else"))
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.put_image(repositoryName=name, imageManifest="{not json", imageTag="x")
    missing_child = build_image()
    index = build_index(OCI_INDEX, [missing_child])
    with pytest.raises(ecr.exceptions.ReferencedImagesNotFoundException):
        ecr.put_image(repositoryName=name, imageManifest=index.decode(), imageTag="multi")
    assert ecr.list_images(repositoryName=name)["imageIds"] == []


def test_put_image_respects_immutable_tags(ecr: BaseClient, http: httpx.Client,
                                           repo: str) -> None:
    ecr.create_repository(repositoryName=repo, imageTagMutability="IMMUTABLE")
    first, second = build_image(), build_image()
    push_image_blobs(http, repo, first)
    push_image_blobs(http, repo, second)
    ecr.put_image(repositoryName=repo, imageManifest=first.manifest.decode(), imageTag="v1")
    with pytest.raises(ecr.exceptions.ImageTagAlreadyExistsException):
        ecr.put_image(repositoryName=repo, imageManifest=second.manifest.decode(),
                      imageTag="v1")
    response = put_manifest(http, repo, "v1", second.manifest, second.media_type)
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "TAG_INVALID"
    assert http.get(f"/v2/{repo}/manifests/v1",
                    headers={"Accept": OCI_MANIFEST}).content == first.manifest
    # A new tag is fine, and so is the same image under the same tag again.
    ecr.put_image(repositoryName=repo, imageManifest=second.manifest.decode(), imageTag="v2")
    assert put_manifest(http, repo, "v1", first.manifest, first.media_type).status_code == 201


# --------------------------------------------------------------------------- BatchDeleteImage


def test_batch_delete_by_tag_keeps_the_image_while_other_tags_remain(
        ecr: BaseClient, http: httpx.Client, name: str) -> None:
    image = push_image(http, name, "v1")
    assert put_manifest(http, name, "v2", image.manifest, image.media_type).status_code == 201
    done = ecr.batch_delete_image(repositoryName=name, imageIds=[{"imageTag": "v1"}])
    assert done["imageIds"] == [{"imageDigest": image.digest, "imageTag": "v1"}]
    assert done["failures"] == []
    assert http.get(f"/v2/{name}/manifests/v1").status_code == 404
    assert http.get(f"/v2/{name}/manifests/{image.digest}").status_code == 200
    # Removing the last tag removes the image, as ECR does.
    ecr.batch_delete_image(repositoryName=name, imageIds=[{"imageTag": "v2"}])
    assert http.get(f"/v2/{name}/manifests/{image.digest}").status_code == 404
    assert ecr.list_images(repositoryName=name)["imageIds"] == []


def test_batch_delete_by_digest_removes_every_tag(ecr: BaseClient, http: httpx.Client,
                                                  name: str) -> None:
    image = push_image(http, name, "v1")
    assert put_manifest(http, name, "v2", image.manifest, image.media_type).status_code == 201
    keep = push_image(http, name, "keep")
    done = ecr.batch_delete_image(repositoryName=name, imageIds=[
        {"imageDigest": image.digest}, {"imageTag": "gone"}, {"imageDigest": "sha256:bad"}])
    assert sorted(i.get("imageTag", "") for i in done["imageIds"]) == ["v1", "v2"]
    assert [f["failureCode"] for f in done["failures"]] == ["ImageNotFound",
                                                            "InvalidImageDigest"]
    for ref in ("v1", "v2", image.digest):
        assert http.get(f"/v2/{name}/manifests/{ref}").status_code == 404
    assert ids(ecr.list_images(repositoryName=name)) == {(keep.digest, "keep")}


# --------------------------------------------------------------------------- referrers


def test_list_image_referrers(ecr: BaseClient, http: httpx.Client, name: str) -> None:
    subject = push_image(http, name, "v1")
    empty = b"{}"
    push_blob(http, name, empty)
    made = []
    for artifact_type in (ARTIFACT, "application/vnd.example.sbom", ARTIFACT):
        payload = json.dumps({"note": artifact_type, "n": len(made)}).encode()
        push_blob(http, name, payload)
        doc = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": descriptor("application/vnd.oci.empty.v1+json", empty),
            "layers": [descriptor("application/octet-stream", payload)],
            "subject": descriptor(OCI_MANIFEST, subject.manifest),
        }
        raw = json.dumps(doc).encode()
        assert put_manifest(http, name, sha256(raw), raw, OCI_MANIFEST).status_code == 201
        made.append((sha256(raw), artifact_type))
    listed = ecr.list_image_referrers(repositoryName=name,
                                      subjectId={"imageDigest": subject.digest})["referrers"]
    assert sorted((r["digest"], r["artifactType"]) for r in listed) == sorted(made)
    assert all(r["mediaType"] == OCI_MANIFEST and r["size"] > 0 for r in listed)
    signatures = ecr.list_image_referrers(repositoryName=name,
                                          subjectId={"imageDigest": subject.digest},
                                          filter={"artifactTypes": [ARTIFACT]})["referrers"]
    assert sorted(r["digest"] for r in signatures) == sorted(d for d, t in made
                                                             if t == ARTIFACT)
    first = ecr.list_image_referrers(repositoryName=name, maxResults=2,
                                     subjectId={"imageDigest": subject.digest})
    assert len(first["referrers"]) == 2 and "nextToken" in first
    rest = ecr.list_image_referrers(repositoryName=name, nextToken=first["nextToken"],
                                    subjectId={"imageDigest": subject.digest})
    assert sorted(r["digest"] for r in first["referrers"] + rest["referrers"]) == \
        sorted(d for d, _ in made)


def test_put_image_needs_the_repository_without_create_on_push(tmp_path: Path) -> None:
    live = start_registry(tmp_path / "data", env={"REGISTRY_REPOSITORIES_CREATE_ON_PUSH": "false"})
    try:
        client = boto3.client("ecr", endpoint_url=live.url, region_name="us-east-1",
                              aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="secret")
        with pytest.raises(client.exceptions.RepositoryNotFoundException):
            client.put_image(repositoryName="not/created", imageManifest=build_image()
                             .manifest.decode())
        assert client.describe_repositories()["repositories"] == []
    finally:
        live.stop()
