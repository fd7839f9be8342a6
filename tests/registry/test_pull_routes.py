"""Pulls' GET and HEAD are routed past Starlette's router (`registry/fastlane.py`): paths
that only look like a manifest or blob URL, and every error, answer exactly as the router
would have: the right route, the right OCI error, a HEAD without a body."""

from __future__ import annotations

import httpx
import pytest

from .util import ACCEPT_ALL, assert_error, assert_head_error, push_image, sha256


@pytest.fixture
def pushed(client: httpx.Client, repo: str) -> tuple[str, str, str]:
    image = push_image(client, repo, "v1")
    return repo, image.digest, sha256(image.config)


def test_pull_paths_reach_their_handlers(client: httpx.Client,
                                         pushed: tuple[str, str, str]) -> None:
    repo, digest, config = pushed
    for reference in ("v1", digest):
        got = client.get(f"/v2/{repo}/manifests/{reference}", headers=ACCEPT_ALL)
        assert got.status_code == 200 and got.headers["docker-content-digest"] == digest
        head = client.head(f"/v2/{repo}/manifests/{reference}", headers=ACCEPT_ALL)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(got.content))
    ranged = client.get(f"/v2/{repo}/blobs/{config}", headers={"Range": "bytes=0-3"})
    assert ranged.status_code == 206 and len(ranged.content) == 4
    assert client.get(f"/v2/{repo}/blobs/{config}?anything=1").status_code == 200


def test_errors_on_pull_paths_are_the_routers_and_handlers(
        client: httpx.Client, pushed: tuple[str, str, str]) -> None:
    repo, _, _ = pushed
    assert_error(client.get(f"/v2/{repo.upper()}/manifests/v1"), 400, "NAME_INVALID")
    assert_error(client.get("/v2//manifests/v1"), 400, "NAME_INVALID")
    assert_error(client.get(f"/v2/{repo}/manifests/nope"), 404, "MANIFEST_UNKNOWN")
    assert_error(client.get(f"/v2/{repo}/manifests/{'t' * 200}"), 400, "TAG_INVALID")
    assert_error(client.get(f"/v2/{repo}/manifests/sha256:zz"), 400, "DIGEST_INVALID",
                 "MANIFEST_INVALID", "MANIFEST_UNKNOWN")
    assert_error(client.get(f"/v2/{repo}/blobs/sha256:abc"), 400, "DIGEST_INVALID")
    assert_error(client.get(f"/v2/{repo}/blobs/sha256:{'0' * 64}"), 404, "BLOB_UNKNOWN")
    # not a pull route at all: the router's answers
    assert_error(client.get(f"/v2/{repo}/manifests/a/b"), 404, "NAME_UNKNOWN")
    assert_error(client.get(f"/v2/{repo}/blobs/uploads/"), 405, "UNSUPPORTED")
    assert_error(client.get(f"/v2/{repo}/blobs/uploads/not-an-upload"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_head_error(client.head(f"/v2/{repo}/manifests/nope"), 404)
    assert_head_error(client.head(f"/v2/{repo.upper()}/manifests/v1"), 400)
    assert_head_error(client.head(f"/v2/{repo}/blobs/sha256:{'0' * 64}"), 404)
