"""Blob uploads: monolithic, POST+PUT, chunked, session status, cancellation, digest checks."""

from __future__ import annotations

import uuid

import pytest

from .util import (
    OCTET,
    RegistryClient,
    assert_blob,
    assert_error,
    assert_head_error,
    finish_upload,
    location_of,
    location_path,
    patch_chunk,
    push_blob,
    push_chunked,
    random_blob,
    sha256,
    sha512,
    start_upload,
)

# --------------------------------------------------------------------------- session start


def test_post_starts_session(client: RegistryClient, repo: str) -> None:
    response = client.post(f"/v2/{repo}/blobs/uploads/")
    assert response.status_code == 202
    upload_uuid = response.headers.get("docker-upload-uuid")
    assert upload_uuid
    assert response.headers.get("range") == "0-0"
    path = location_path(client.base_url, response.headers["location"])
    assert path.startswith(f"/v2/{repo}/blobs/uploads/")


def test_sessions_are_distinct(client: RegistryClient, repo: str) -> None:
    first = client.post(f"/v2/{repo}/blobs/uploads/")
    second = client.post(f"/v2/{repo}/blobs/uploads/")
    assert first.headers["docker-upload-uuid"] != second.headers["docker-upload-uuid"]
    assert first.headers["location"] != second.headers["location"]


# --------------------------------------------------------------------------- monolithic


def test_monolithic_post(client: RegistryClient, repo: str) -> None:
    data = random_blob(4096)
    digest = sha256(data)
    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest},
                           content=data, headers=OCTET)
    assert response.status_code == 201
    assert response.headers.get("docker-content-digest") == digest
    assert location_path(client.base_url, response.headers["location"]) == \
        f"/v2/{repo}/blobs/{digest}"
    assert_blob(client, repo, digest, data)


def test_post_then_put_whole_body(client: RegistryClient, repo: str) -> None:
    data = random_blob(3000)
    digest = sha256(data)
    location = start_upload(client, repo)
    response = finish_upload(client, location, digest, data)
    assert response.status_code == 201
    assert response.headers.get("docker-content-digest") == digest
    assert location_path(client.base_url, response.headers["location"]) == \
        f"/v2/{repo}/blobs/{digest}"
    assert_blob(client, repo, digest, data)


def test_empty_blob(client: RegistryClient, repo: str) -> None:
    digest = sha256(b"")
    location = start_upload(client, repo)
    response = finish_upload(client, location, digest)
    assert response.status_code == 201
    assert_blob(client, repo, digest, b"")


def test_push_existing_blob_again(client: RegistryClient, repo: str) -> None:
    data = random_blob(100)
    push_blob(client, repo, data)
    push_blob(client, repo, data)
    assert_blob(client, repo, sha256(data), data)


# --------------------------------------------------------------------------- chunked


def test_chunked_with_content_range(client: RegistryClient, repo: str) -> None:
    data = random_blob(10_000)
    digest = sha256(data)
    location = start_upload(client, repo)
    for start in range(0, len(data), 4000):
        chunk = data[start:start + 4000]
        response = patch_chunk(client, location, chunk, start)
        assert response.status_code == 202, response.text
        assert response.headers.get("range") == f"0-{start + len(chunk) - 1}"
        assert response.headers.get("docker-upload-uuid")
        location = location_of(response)
    response = finish_upload(client, location, digest)
    assert response.status_code == 201, response.text
    assert response.headers.get("docker-content-digest") == digest
    assert_blob(client, repo, digest, data)


def test_chunked_streamed_without_content_range(client: RegistryClient, repo: str) -> None:
    data = random_blob(9_000)
    digest = sha256(data)
    location = start_upload(client, repo)
    for start in range(0, len(data), 3000):
        response = patch_chunk(client, location, data[start:start + 3000])
        assert response.status_code == 202, response.text
        assert response.headers.get("range") == f"0-{start + 2999}"
        location = location_of(response)
    response = finish_upload(client, location, digest)
    assert response.status_code == 201, response.text
    assert_blob(client, repo, digest, data)


def test_chunked_with_final_chunk_in_put(client: RegistryClient, repo: str) -> None:
    data = random_blob(5_000)
    digest = sha256(data)
    location = start_upload(client, repo)
    response = patch_chunk(client, location, data[:3000], 0)
    assert response.status_code == 202
    response = finish_upload(client, location_of(response), digest, data[3000:])
    assert response.status_code == 201, response.text
    assert response.headers.get("docker-content-digest") == digest
    assert_blob(client, repo, digest, data)


def test_chunked_single_byte_chunks(client: RegistryClient, repo: str) -> None:
    data = random_blob(5)
    digest = sha256(data)
    location = start_upload(client, repo)
    for start in range(len(data)):
        response = patch_chunk(client, location, data[start:start + 1], start)
        assert response.status_code == 202
        assert response.headers.get("range") == f"0-{start}"
        location = location_of(response)
    assert finish_upload(client, location, digest).status_code == 201
    assert_blob(client, repo, digest, data)


def test_chunked_across_storage_parts(client: RegistryClient, repo: str) -> None:
    """Chunks of 6 and 3 MiB adding up to 18 MiB + 1: on S3, where appends become multipart
    uploads of 16 MiB parts, a chunk crosses a part boundary and the rest becomes the last,
    short part. The blob, and a range across that boundary, hold exactly the bytes sent."""
    mib = 1024 * 1024
    data = random_blob(18 * mib + 1)
    digest = sha256(data)
    location = start_upload(client, repo)
    start = 0
    for size in (6 * mib, 3 * mib, 6 * mib, 3 * mib, 1):
        response = patch_chunk(client, location, data[start:start + size], start)
        assert response.status_code == 202, response.text
        start += size
        assert response.headers.get("range") == f"0-{start - 1}"
        location = location_of(response)
    assert start == len(data)
    response = finish_upload(client, location, digest)
    assert response.status_code == 201, response.text
    assert_blob(client, repo, digest, data)
    first, last = 16 * mib - 10, 16 * mib + 9
    ranged = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": f"bytes={first}-{last}"},
                        follow_redirects=False)
    assert ranged.status_code == 206
    assert ranged.content == data[first:last + 1]


def test_chunk_gap_is_416_and_session_survives(client: RegistryClient, repo: str) -> None:
    data = random_blob(6_000)
    digest = sha256(data)
    location = start_upload(client, repo)
    response = patch_chunk(client, location, data[:2000], 0)
    assert response.status_code == 202
    location = location_of(response)

    bad = patch_chunk(client, location, data[3000:4000], 3000)
    assert_error(bad, 416, "BLOB_UPLOAD_INVALID")

    response = patch_chunk(client, location, data[2000:], 2000)
    assert response.status_code == 202, response.text
    assert response.headers.get("range") == f"0-{len(data) - 1}"
    response = finish_upload(client, location_of(response), digest)
    assert response.status_code == 201, response.text
    assert_blob(client, repo, digest, data)


def test_chunk_overlap_is_416_and_session_survives(client: RegistryClient, repo: str) -> None:
    data = random_blob(4_000)
    digest = sha256(data)
    location = start_upload(client, repo)
    response = patch_chunk(client, location, data[:2000], 0)
    assert response.status_code == 202
    location = location_of(response)

    bad = patch_chunk(client, location, data[1000:3000], 1000)
    assert_error(bad, 416, "BLOB_UPLOAD_INVALID")
    status = client.get(location)
    assert status.status_code == 204
    assert status.headers.get("range") == "0-1999"

    response = patch_chunk(client, location, data[2000:], 2000)
    assert response.status_code == 202
    response = finish_upload(client, location_of(response), digest)
    assert response.status_code == 201, response.text
    assert_blob(client, repo, digest, data)


def test_first_chunk_not_at_zero_is_416(client: RegistryClient, repo: str) -> None:
    location = start_upload(client, repo)
    assert_error(patch_chunk(client, location, b"x" * 10, 5), 416, "BLOB_UPLOAD_INVALID")


@pytest.mark.parametrize("content_range", ["0-99", "0-10", "5-54"])
def test_content_range_inconsistent_with_length(client: RegistryClient, repo: str,
                                                content_range: str) -> None:
    location = start_upload(client, repo)
    response = client.patch(location, content=random_blob(50),
                            headers={**OCTET, "Content-Range": content_range})
    assert_error(response, (400, 416), "BLOB_UPLOAD_INVALID")


def test_malformed_content_range(client: RegistryClient, repo: str) -> None:
    location = start_upload(client, repo)
    response = client.patch(location, content=b"abc",
                            headers={**OCTET, "Content-Range": "banana"})
    assert_error(response, (400, 416), "BLOB_UPLOAD_INVALID")


# --------------------------------------------------------------------------- status / cancel


def test_upload_status(client: RegistryClient, repo: str) -> None:
    location = start_upload(client, repo)
    response = patch_chunk(client, location, random_blob(1234), 0)
    assert response.status_code == 202
    location = location_of(response)
    status = client.get(location)
    assert status.status_code == 204
    assert status.headers.get("range") == "0-1233"
    assert status.headers.get("docker-upload-uuid") == response.headers["docker-upload-uuid"]
    assert status.content == b""


def test_cancel_upload(client: RegistryClient, repo: str) -> None:
    location = start_upload(client, repo)
    response = patch_chunk(client, location, random_blob(100), 0)
    location = location_of(response)
    assert client.delete(location).status_code == 204
    assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(patch_chunk(client, location, b"more", 100), 404, "BLOB_UPLOAD_UNKNOWN")


def test_completed_upload_is_gone(client: RegistryClient, repo: str) -> None:
    data = random_blob(64)
    location = start_upload(client, repo)
    assert finish_upload(client, location, sha256(data), data).status_code == 201
    assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
@pytest.mark.parametrize("upload_id", ["uuid4", "not-a-session"])
def test_unknown_upload(client: RegistryClient, repo: str, method: str, upload_id: str) -> None:
    push_blob(client, repo, random_blob(10))  # the repository exists
    session = str(uuid.uuid4()) if upload_id == "uuid4" else upload_id
    data = b"some bytes"
    response = client.request(method, f"/v2/{repo}/blobs/uploads/{session}",
                              params={"digest": sha256(data)} if method == "PUT" else None,
                              content=data if method in ("PATCH", "PUT") else None,
                              headers=OCTET)
    assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
def test_upload_under_other_repository(client: RegistryClient, repo: str, method: str) -> None:
    other = repo + "-other"
    push_blob(client, other, random_blob(10))  # the other repository exists
    data = random_blob(200)
    location = start_upload(client, repo)
    foreign = location.replace(f"/v2/{repo}/", f"/v2/{other}/", 1)
    assert foreign != location
    response = client.request(method, foreign,
                              params={"digest": sha256(data)} if method == "PUT" else None,
                              content=data if method in ("PATCH", "PUT") else None,
                              headers=OCTET)
    assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
    assert_head_error(client.head(f"/v2/{other}/blobs/{sha256(data)}"))
    # The session is untouched in its own repository.
    response = finish_upload(client, location, sha256(data), data)
    assert response.status_code == 201, response.text


# --------------------------------------------------------------------------- digest checks


def test_wrong_digest_monolithic(client: RegistryClient, repo: str) -> None:
    data = random_blob(500)
    claimed = sha256(b"something else")
    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": claimed},
                           content=data, headers=OCTET)
    assert_error(response, 400, "DIGEST_INVALID")
    assert_head_error(client.head(f"/v2/{repo}/blobs/{claimed}"))
    assert_head_error(client.head(f"/v2/{repo}/blobs/{sha256(data)}"))


def test_wrong_digest_put(client: RegistryClient, repo: str) -> None:
    data = random_blob(500)
    claimed = sha256(b"something else")
    location = start_upload(client, repo)
    assert_error(finish_upload(client, location, claimed, data), 400, "DIGEST_INVALID")
    assert_head_error(client.head(f"/v2/{repo}/blobs/{claimed}"))
    assert_head_error(client.head(f"/v2/{repo}/blobs/{sha256(data)}"))


def test_wrong_digest_chunked(client: RegistryClient, repo: str) -> None:
    data = random_blob(800)
    claimed = sha256(data[:-1])
    location = start_upload(client, repo)
    response = patch_chunk(client, location, data, 0)
    assert response.status_code == 202
    assert_error(finish_upload(client, location_of(response), claimed), 400, "DIGEST_INVALID")
    assert_head_error(client.head(f"/v2/{repo}/blobs/{claimed}"))
    assert_head_error(client.head(f"/v2/{repo}/blobs/{sha256(data)}"))


MALFORMED_DIGESTS = [
    "sha256:xyz",
    "md5:abc",
    "md5:" + "0" * 32,
    "sha256:" + "a" * 63,
    "sha256:" + "A" * 64,
    "sha512:" + "a" * 64,
    "sha256",
    "nonsense",
]


@pytest.mark.parametrize("digest", MALFORMED_DIGESTS)
def test_malformed_digest_monolithic(client: RegistryClient, repo: str, digest: str) -> None:
    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest},
                           content=b"data", headers=OCTET)
    assert_error(response, 400, "DIGEST_INVALID")


@pytest.mark.parametrize("digest", MALFORMED_DIGESTS)
def test_malformed_digest_put(client: RegistryClient, repo: str, digest: str) -> None:
    location = start_upload(client, repo)
    assert_error(finish_upload(client, location, digest, b"data"), 400, "DIGEST_INVALID")


def test_put_without_digest(client: RegistryClient, repo: str) -> None:
    location = start_upload(client, repo)
    response = client.put(location, content=b"data", headers=OCTET)
    assert_error(response, 400, "DIGEST_INVALID")


# --------------------------------------------------------------------------- sha512


def test_sha512_monolithic(client: RegistryClient, repo: str) -> None:
    data = random_blob(2048)
    digest = sha512(data)
    assert len(digest) == len("sha512:") + 128
    assert push_blob(client, repo, data, digest) == digest
    assert_blob(client, repo, digest, data)
    assert_head_error(client.head(f"/v2/{repo}/blobs/{sha256(data)}"))


def test_sha512_chunked(client: RegistryClient, repo: str) -> None:
    data = random_blob(5000)
    digest = push_chunked(client, repo, data, 2000, sha512(data))
    assert_blob(client, repo, digest, data)


def test_sha512_wrong_digest(client: RegistryClient, repo: str) -> None:
    data = random_blob(300)
    claimed = sha512(b"other")
    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": claimed},
                           content=data, headers=OCTET)
    assert_error(response, 400, "DIGEST_INVALID")
    assert_head_error(client.head(f"/v2/{repo}/blobs/{claimed}"))
    assert_head_error(client.head(f"/v2/{repo}/blobs/{sha512(data)}"))
