"""Repository-name and tag grammar."""

from __future__ import annotations

import httpx
import pytest

from .util import OCI_MANIFEST, assert_error, build_image, push_image_blobs, put_manifest

INVALID_NAMES = [
    "UPPER/case",
    "Bad_Name",
    "a//b",
    "-a",
    "a-",
    "a/_b",
    "a/b.",
    "a..b",
    "a" * 300,
    "/".join(["abcdefghij"] * 28),
]


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_upload_invalid_name(client: httpx.Client, name: str) -> None:
    response = client.post(f"/v2/{name}/blobs/uploads/")
    assert_error(response, 400, "NAME_INVALID")


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_manifest_put_invalid_name(client: httpx.Client, name: str) -> None:
    image = build_image()
    response = put_manifest(client, name, "v1", image.manifest, OCI_MANIFEST)
    assert_error(response, 400, "NAME_INVALID")


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_get_invalid_name(client: httpx.Client, name: str) -> None:
    response = client.get(f"/v2/{name}/tags/list")
    assert_error(response, (400, 404), "NAME_INVALID", "NAME_UNKNOWN")


@pytest.mark.parametrize("name", ["a", "a/b/c/d", "a_b/c__d", "a.b-c---d/e", "x0/1y"])
def test_valid_names(client: httpx.Client, repo: str, name: str) -> None:
    full = f"{repo}/{name}"
    response = client.post(f"/v2/{full}/blobs/uploads/")
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("tag", ["-bad", ".bad", "a" * 129, "bad+tag", "b@d"])
def test_invalid_tag(client: httpx.Client, repo: str, tag: str) -> None:
    image = build_image()
    push_image_blobs(client, repo, image)
    response = put_manifest(client, repo, tag, image.manifest, OCI_MANIFEST)
    assert_error(response, 400, "TAG_INVALID")


@pytest.mark.parametrize("tag", ["a" * 128, "_under", "V1.2.3-rc_1", "0"])
def test_valid_tag(client: httpx.Client, repo: str, tag: str) -> None:
    image = build_image()
    push_image_blobs(client, repo, image)
    response = put_manifest(client, repo, tag, image.manifest, OCI_MANIFEST)
    assert response.status_code == 201, response.text
    response = client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    assert response.status_code == 200
    assert response.content == image.manifest
