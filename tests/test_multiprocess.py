"""Two registry processes on one storage behave as one registry.

Nothing may live only in one process's memory: an upload session started on A continues on B,
a blob finished on either is served by both, and manifests and tags written through one are
read back through the other at once. Runs on each backend: both processes on one data
directory (filesystem), or on one bucket (S3; whole-blob GETs answer 307 to the bucket).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.conftest import (
    BACKENDS,
    S3_BACKENDS,
    LiveRegistry,
    backend_env,
    s3_endpoint,
    start_registry,
)
from tests.imagebuild import (
    MEDIA_TYPE_MANIFEST,
    BuiltImage,
    blob_path,
    build_image,
)

OCTET = {"Content-Type": "application/octet-stream"}
NAME = "multi/proc"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Node:
    registry: LiveRegistry
    client: httpx.Client
    blob_redirect: str | None  # where whole-blob GETs are redirected to (S3), or None

    @property
    def url(self) -> str:
        return self.registry.url


@pytest.fixture(params=BACKENDS)
def nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    """Registries A and B serving the same data directory, or the same bucket."""
    backend: str = request.param
    env = backend_env(backend, request)  # one new bucket for both on S3
    redirect = s3_endpoint(backend, request).url + "/" if backend in S3_BACKENDS else None
    data_dir = tmp_path / "data"
    a = start_registry(data_dir, env=env)
    try:
        b = start_registry(data_dir, env=env)
    except BaseException:
        a.stop()
        raise
    clients = [httpx.Client(base_url=r.url, timeout=60) for r in (a, b)]
    try:
        yield Node(a, clients[0], redirect), Node(b, clients[1], redirect)
    finally:
        for c in clients:
            c.close()
        b.stop()
        a.stop()
    for r in (a, b):
        assert "Traceback" not in r.log(), f"registry {r.url} logged a traceback:\n{r.log()}"


def describe(response: httpx.Response) -> str:
    return (f"{response.request.method} {response.request.url} -> {response.status_code} "
            f"{dict(response.headers)!r} {response.text[:500]!r}")


def location_path(response: httpx.Response) -> str:
    """The Location header as path?query, resolved against the request URL.

    The result can be sent to either node: only the path and query identify the session.
    """
    location = str(response.headers.get("location", ""))
    assert location, describe(response)
    parts = urlsplit(urljoin(str(response.request.url), location))
    return parts.path + (f"?{parts.query}" if parts.query else "")


def start_upload(node: Node, name: str = NAME) -> str:
    response = node.client.post(f"/v2/{name}/blobs/uploads/")
    assert response.status_code == 202, describe(response)
    return location_path(response)


def patch_chunk(node: Node, location: str, data: bytes, start: int) -> str:
    end = start + len(data) - 1
    response = node.client.patch(location, content=data, headers={
        **OCTET, "Content-Range": f"{start}-{end}", "Content-Length": str(len(data)),
    })
    assert response.status_code == 202, describe(response)
    assert response.headers.get("range") == f"0-{end}", describe(response)
    return location_path(response)


def finish_upload(node: Node, location: str, digest: str, data: bytes = b"") -> str:
    response = node.client.put(location, params={"digest": digest}, content=data, headers=OCTET)
    assert response.status_code == 201, describe(response)
    assert response.headers.get("docker-content-digest") == digest, describe(response)
    return location_path(response)


def assert_blob(node: Node, digest: str, data: bytes, name: str = NAME) -> None:
    head = node.client.head(f"/v2/{name}/blobs/{digest}")
    assert head.status_code == 200, describe(head)
    assert int(head.headers["content-length"]) == len(data), describe(head)
    assert head.headers.get("docker-content-digest") == digest, describe(head)
    response = node.client.get(f"/v2/{name}/blobs/{digest}")  # redirects not followed
    assert response.headers.get("docker-content-digest") == digest, describe(response)
    if node.blob_redirect is not None:
        assert response.status_code == 307, describe(response)
        location = response.headers.get("location", "")
        assert location.startswith(node.blob_redirect), describe(response)
        response = httpx.get(location, timeout=60)
    assert response.status_code == 200, describe(response)
    assert sha256(response.content) == digest, f"{node.url}: wrong bytes for {digest}"
    assert response.content == data


def push_blob_file(node: Node, path: Path, digest: str, name: str = NAME) -> None:
    location = start_upload(node, name)
    finish_upload(node, location, digest, path.read_bytes())


def push_image(node: Node, image: BuiltImage, tag: str, name: str = NAME) -> None:
    for digest in image.blob_digests:
        push_blob_file(node, blob_path(image.layout, digest), digest, name)
    put_manifest(node, image, tag, name)


def put_manifest(node: Node, image: BuiltImage, reference: str, name: str = NAME) -> None:
    response = node.client.put(f"/v2/{name}/manifests/{reference}", content=image.manifest,
                               headers={"Content-Type": MEDIA_TYPE_MANIFEST})
    assert response.status_code == 201, describe(response)
    assert response.headers.get("docker-content-digest") == image.manifest_digest, \
        describe(response)


def get_manifest(node: Node, reference: str, name: str = NAME) -> httpx.Response:
    response = node.client.get(f"/v2/{name}/manifests/{reference}",
                               headers={"Accept": MEDIA_TYPE_MANIFEST})
    assert response.status_code == 200, describe(response)
    return response


def tags(node: Node, name: str = NAME) -> list[str]:
    response = node.client.get(f"/v2/{name}/tags/list")
    assert response.status_code == 200, describe(response)
    listed: list[str] = response.json()["tags"]
    return listed


# --------------------------------------------------------------------------- uploads


def test_chunks_on_both_nodes(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    data = os.urandom(3 * (1 << 20) + 17)
    digest = sha256(data)
    split = (1 << 20) + 5

    location = start_upload(a)
    location = patch_chunk(a, location, data[:split], 0)
    location = patch_chunk(b, location, data[split:], split)

    # A sees the chunk B received.
    status = a.client.get(location)
    assert status.status_code == 204, describe(status)
    assert status.headers.get("range") == f"0-{len(data) - 1}", describe(status)

    blob_location = finish_upload(a, location, digest)
    assert blob_location.endswith(f"/v2/{NAME}/blobs/{digest}"), blob_location
    assert_blob(a, digest, data)
    assert_blob(b, digest, data)


@pytest.mark.parametrize("last_chunk_in_put", [False, True], ids=["empty-put", "put-with-chunk"])
def test_upload_on_a_completed_on_b(nodes: tuple[Node, Node], last_chunk_in_put: bool) -> None:
    a, b = nodes
    data = os.urandom(700_001)
    digest = sha256(data)
    split = 300_000 if last_chunk_in_put else len(data)

    location = start_upload(a)
    location = patch_chunk(a, location, data[:split], 0)
    finish_upload(b, location, digest, data[split:])

    assert_blob(b, digest, data)
    assert_blob(a, digest, data)
    # The session is over for both.
    for node in (a, b):
        gone = node.client.get(location)
        assert gone.status_code == 404, describe(gone)


# --------------------------------------------------------------------------- manifests and tags


def test_manifest_pushed_on_a_pulled_on_b(nodes: tuple[Node, Node], tmp_path: Path) -> None:
    a, b = nodes
    image = build_image(tmp_path / "layout", [10_000, 2048, 1])
    push_image(a, image, "v1")

    for reference in ("v1", image.manifest_digest):
        response = get_manifest(b, reference)
        assert response.content == image.manifest, reference
        assert response.headers.get("content-type", "").split(";")[0] == MEDIA_TYPE_MANIFEST
        assert response.headers.get("docker-content-digest") == image.manifest_digest
        head = b.client.head(f"/v2/{NAME}/manifests/{reference}",
                             headers={"Accept": MEDIA_TYPE_MANIFEST})
        assert head.status_code == 200, describe(head)
        assert head.headers.get("docker-content-digest") == image.manifest_digest
    for digest in image.blob_digests:
        assert_blob(b, digest, blob_path(image.layout, digest).read_bytes())
    assert tags(b) == ["v1"]


def test_tag_moved_on_b_seen_on_a(nodes: tuple[Node, Node], tmp_path: Path) -> None:
    a, b = nodes
    first = build_image(tmp_path / "first", [4096])
    second = build_image(tmp_path / "second", [8192])
    push_image(a, first, "current")
    push_image(a, second, second.manifest_digest)

    # Warm whatever A might cache, then move the tag through B, back and forth.
    assert get_manifest(a, "current").content == first.manifest
    assert tags(a) == ["current"]
    for image in (second, first, second):
        put_manifest(b, image, "current")
        response = get_manifest(a, "current")
        assert response.content == image.manifest
        assert response.headers.get("docker-content-digest") == image.manifest_digest

    # A new tag written through B is listed through A at once.
    put_manifest(b, first, "other")
    assert tags(a) == ["current", "other"]
    assert get_manifest(a, "other").content == first.manifest
