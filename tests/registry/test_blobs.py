"""Blob reads: HEAD/GET, unknown blobs, per-repository visibility, Range requests.

A whole-blob GET is answered by the registry itself (filesystem) or with a 307 to a presigned
URL of the storage backend (S3, as ECR does); `util.get_blob` checks either answer and fetches
the bytes. Range requests are always answered by the registry itself.
"""

from __future__ import annotations

import pytest

from .util import (
    RegistryClient,
    assert_error,
    assert_head_error,
    get_blob,
    push_blob,
    random_blob,
    sha256,
)

SIZE = 1000


@pytest.fixture
def blob(client: RegistryClient, repo: str) -> tuple[str, bytes]:
    data = random_blob(SIZE)
    return push_blob(client, repo, data), data


def test_head_blob(client: RegistryClient, repo: str, blob: tuple[str, bytes]) -> None:
    digest, data = blob
    response = client.head(f"/v2/{repo}/blobs/{digest}")
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(data)
    assert response.headers.get("docker-content-digest") == digest
    assert response.content == b""


def test_get_blob(client: RegistryClient, repo: str, blob: tuple[str, bytes]) -> None:
    digest, data = blob
    own, response = get_blob(client, repo, digest)
    assert own.headers.get("docker-content-digest") == digest
    assert response.status_code == 200
    assert response.content == data
    assert int(response.headers["content-length"]) == len(data)
    if client.blob_redirect is not None:
        assert own.status_code == 307 and own.content == b""
        assert own.headers["location"].startswith(client.blob_redirect)
    else:
        assert own is response


def test_get_blob_following_redirects(client: RegistryClient, repo: str,
                                      blob: tuple[str, bytes]) -> None:
    """What a client that simply follows redirects sees: 200 and the exact bytes."""
    digest, data = blob
    response = client.get(f"/v2/{repo}/blobs/{digest}")
    assert response.status_code == 200
    assert response.content == data
    assert [r.status_code for r in response.history] == \
        ([307] if client.blob_redirect is not None else [])


def test_get_large_blob(client: RegistryClient, repo: str) -> None:
    data = random_blob(3 * 1024 * 1024 + 17)
    digest = push_blob(client, repo, data)
    _, response = get_blob(client, repo, digest)
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(data)
    assert sha256(response.content) == digest
    assert response.content == data


def test_unknown_blob(client: RegistryClient, repo: str, blob: tuple[str, bytes]) -> None:
    missing = sha256(b"never pushed " + random_blob(8))
    assert_error(client.get(f"/v2/{repo}/blobs/{missing}"), 404, "BLOB_UNKNOWN")
    assert_head_error(client.head(f"/v2/{repo}/blobs/{missing}"))


def test_unknown_blob_in_unknown_repository(client: RegistryClient, repo: str) -> None:
    missing = sha256(random_blob(8))
    assert_error(client.get(f"/v2/{repo}/blobs/{missing}"), 404, "BLOB_UNKNOWN", "NAME_UNKNOWN")
    assert_head_error(client.head(f"/v2/{repo}/blobs/{missing}"))


def test_malformed_digest_in_path(client: RegistryClient, repo: str,
                                  blob: tuple[str, bytes]) -> None:
    response = client.get(f"/v2/{repo}/blobs/sha256:xyz")
    assert_error(response, (400, 404), "DIGEST_INVALID", "BLOB_UNKNOWN")


def test_blob_not_visible_from_other_repository(client: RegistryClient, repo: str,
                                                blob: tuple[str, bytes]) -> None:
    digest, _ = blob
    other = repo + "-b"
    push_blob(client, other, random_blob(50))  # the other repository exists
    assert_error(client.get(f"/v2/{other}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert_head_error(client.head(f"/v2/{other}/blobs/{digest}"))


def test_same_blob_in_two_repositories(client: RegistryClient, repo: str,
                                       blob: tuple[str, bytes]) -> None:
    digest, data = blob
    other = repo + "-b"
    push_blob(client, other, data)
    for name in (repo, other):
        _, response = get_blob(client, name, digest)
        assert response.status_code == 200
        assert response.content == data


# --------------------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=10-99", 10, 99),
        ("bytes=0-0", 0, 0),
        ("bytes=100-", 100, SIZE - 1),
        ("bytes=-50", SIZE - 50, SIZE - 1),
        ("bytes=990-5000", 990, SIZE - 1),
        (f"bytes=0-{SIZE - 1}", 0, SIZE - 1),
    ],
)
def test_range(client: RegistryClient, repo: str, blob: tuple[str, bytes],
               header: str, start: int, end: int) -> None:
    digest, data = blob
    # Not followed: the registry serves ranges itself, on every backend.
    response = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": header},
                          follow_redirects=False)
    assert response.status_code == 206
    assert response.headers.get("docker-content-digest") == digest
    assert response.headers.get("content-range") == f"bytes {start}-{end}/{SIZE}"
    assert response.content == data[start:end + 1]
    assert int(response.headers["content-length"]) == end - start + 1


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}"])
def test_range_not_satisfiable(client: RegistryClient, repo: str, blob: tuple[str, bytes],
                               header: str) -> None:
    digest, _ = blob
    response = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": header},
                          follow_redirects=False)
    assert response.status_code == 416
    assert response.headers.get("content-range") == f"bytes */{SIZE}"
    if response.content:
        assert_error(response, 416)
