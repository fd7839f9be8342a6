"""Helpers for the HTTP protocol tests: digests, error bodies, uploads and manifests."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

OCTET = {"Content-Type": "application/octet-stream"}

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

ALL_MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
ACCEPT_ALL = {"Accept": ", ".join(ALL_MANIFEST_TYPES)}

# --------------------------------------------------------------------------- digests


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def random_blob(size: int = 1024) -> bytes:
    return os.urandom(size)


# --------------------------------------------------------------------------- responses


def assert_error(response: httpx.Response, status: int | tuple[int, ...],
                 *codes: str) -> dict[str, Any]:
    """Assert an OCI error response: status, JSON content type, body shape, one of `codes`.

    Returns the first error object. With no `codes`, any code is accepted.
    """
    statuses = (status,) if isinstance(status, int) else status
    context = f"{response.request.method} {response.request.url} -> {response.status_code}: " \
        f"{response.text[:500]!r}"
    assert response.status_code in statuses, context
    content_type = response.headers.get("content-type", "")
    assert content_type.split(";")[0].strip() == "application/json", context
    body = response.json()
    assert isinstance(body, dict), context
    errors = body.get("errors")
    assert isinstance(errors, list) and errors, context
    for error in errors:
        assert isinstance(error, dict), context
        assert isinstance(error.get("code"), str), context
        assert isinstance(error.get("message"), str), context
        assert "detail" in error, context
    if codes:
        assert errors[0]["code"] in codes, context
    first: dict[str, Any] = errors[0]
    return first


def assert_head_error(response: httpx.Response, status: int = 404) -> None:
    context = f"HEAD {response.request.url} -> {response.status_code}"
    assert response.status_code == status, context
    assert response.content == b"", context


def resolve(base_url: str | httpx.URL, location: str) -> str:
    """A Location header (relative or absolute) as an absolute URL."""
    return urljoin(str(base_url), location)


def location_path(base_url: str | httpx.URL, location: str) -> str:
    """Path (and query) of a Location header, whatever its form."""
    parts = urlsplit(resolve(base_url, location))
    return parts.path + (f"?{parts.query}" if parts.query else "")


def location_of(response: httpx.Response) -> str:
    location = response.headers.get("location")
    assert location, f"no Location header on {response.status_code} {response.request.url}"
    return resolve(response.request.url, location)


# --------------------------------------------------------------------------- uploads


def start_upload(client: httpx.Client, repo: str) -> str:
    """POST a new upload session; return its absolute Location."""
    response = client.post(f"/v2/{repo}/blobs/uploads/")
    assert response.status_code == 202, response.text
    return location_of(response)


def push_blob(client: httpx.Client, repo: str, data: bytes, digest: str | None = None) -> str:
    """Monolithic POST ?digest= upload; returns the digest."""
    digest = digest or sha256(data)
    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest},
                           content=data, headers=OCTET)
    assert response.status_code == 201, f"{response.status_code} {response.text}"
    assert response.headers.get("docker-content-digest") == digest
    return digest


def patch_chunk(client: httpx.Client, location: str, chunk: bytes,
                start: int | None = None) -> httpx.Response:
    headers = dict(OCTET)
    if start is not None:
        headers["Content-Range"] = f"{start}-{start + len(chunk) - 1}"
    return client.patch(location, content=chunk, headers=headers)


def finish_upload(client: httpx.Client, location: str, digest: str,
                  body: bytes = b"") -> httpx.Response:
    return client.put(location, params={"digest": digest}, content=body, headers=OCTET)


def push_chunked(client: httpx.Client, repo: str, data: bytes, chunk_size: int,
                 digest: str | None = None) -> str:
    digest = digest or sha256(data)
    location = start_upload(client, repo)
    for start in range(0, len(data), chunk_size):
        response = patch_chunk(client, location, data[start:start + chunk_size], start)
        assert response.status_code == 202, response.text
        location = location_of(response)
    response = finish_upload(client, location, digest)
    assert response.status_code == 201, response.text
    return digest


class RegistryClient(httpx.Client):
    """An httpx client for one registry that knows how that registry serves whole blobs.

    `blob_redirect` is the URL prefix of the storage backend a blob GET without `Range` is
    redirected to (S3 presigned URLs, as ECR does), or None when the registry serves the bytes
    itself (filesystem).
    """

    def __init__(self, *args: Any, blob_redirect: str | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.blob_redirect = blob_redirect


def get_blob(client: RegistryClient, repo: str, digest: str,
             headers: dict[str, str] | None = None) -> tuple[httpx.Response, httpx.Response]:
    """GET a whole blob as a pulling client does.

    Returns the registry's own answer (never followed) and the answer holding the bytes: the
    same response when the registry serves them, else the redirect target's. The registry's
    answer is checked: 200 with Content-Length, or 307 to the storage backend; both carry
    Docker-Content-Digest.
    """
    own = client.get(f"/v2/{repo}/blobs/{digest}", headers=headers, follow_redirects=False)
    context = f"GET /v2/{repo}/blobs/{digest} -> {own.status_code} {dict(own.headers)!r}"
    assert own.headers.get("docker-content-digest") == digest, context
    if client.blob_redirect is None:
        assert own.status_code == 200, context
        assert int(own.headers["content-length"]) == len(own.content), context
        return own, own
    assert own.status_code == 307, context
    location = own.headers.get("location", "")
    assert location.startswith(client.blob_redirect), context
    assert "X-Amz-Signature=" in location, f"not a presigned URL: {context}"
    assert digest.split(":", 1)[1] in urlsplit(location).path, context
    # The redirect target is another service: no registry headers, no base URL.
    with httpx.Client(timeout=client.timeout) as other:
        target = other.get(location)
    assert target.status_code == 200, f"{location} -> {target.status_code} {target.text[:300]}"
    return own, target


def assert_blob(client: RegistryClient, repo: str, digest: str, data: bytes) -> None:
    head = client.head(f"/v2/{repo}/blobs/{digest}")
    assert head.status_code == 200, head.status_code
    assert int(head.headers["content-length"]) == len(data)
    assert head.headers.get("docker-content-digest") == digest
    _, get = get_blob(client, repo, digest)
    assert get.content == data
    assert int(get.headers["content-length"]) == len(data)


# --------------------------------------------------------------------------- manifests


def odd_json(obj: Any) -> bytes:
    """JSON with reversed keys and odd whitespace: only byte-exact storage round-trips it."""

    def reorder(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: reorder(v) for k, v in reversed(list(value.items()))}
        if isinstance(value, list):
            return [reorder(v) for v in value]
        return value

    text = json.dumps(reorder(obj), indent="\t ", separators=(" ,", " :  "))
    return ("\n  " + text + "\n\n").encode()


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


@dataclass
class Image:
    """An image manifest whose config and layers are already pushed."""

    manifest: bytes
    media_type: str
    config: bytes
    layers: list[bytes] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def build_image(media_type: str = OCI_MANIFEST, *, layer_size: int = 512,
                annotation: str | None = None) -> Image:
    docker = media_type == DOCKER_MANIFEST
    config_doc = {
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "nonce": os.urandom(8).hex(),
    }
    config = json.dumps(config_doc).encode()
    layers = [random_blob(layer_size), random_blob(layer_size + 7)]
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config),
        "layers": [descriptor(DOCKER_LAYER if docker else OCI_LAYER, layer) for layer in layers],
    }
    if annotation is not None:
        doc["annotations"] = {"test.note": annotation}
    return Image(manifest=odd_json(doc), media_type=media_type, config=config, layers=layers)


def push_image_blobs(client: httpx.Client, repo: str, image: Image) -> None:
    for blob in (image.config, *image.layers):
        push_blob(client, repo, blob)


def put_manifest(client: httpx.Client, repo: str, reference: str, body: bytes,
                 media_type: str) -> httpx.Response:
    return client.put(f"/v2/{repo}/manifests/{reference}", content=body,
                      headers={"Content-Type": media_type})


def push_image(client: httpx.Client, repo: str, reference: str,
               media_type: str = OCI_MANIFEST, **kwargs: Any) -> Image:
    image = build_image(media_type, **kwargs)
    push_image_blobs(client, repo, image)
    response = put_manifest(client, repo, reference, image.manifest, media_type)
    assert response.status_code == 201, f"{response.status_code} {response.text}"
    assert response.headers.get("docker-content-digest") == image.digest
    return image


def build_index(media_type: str, children: list[Image]) -> bytes:
    platforms = [{"architecture": "amd64", "os": "linux"},
                 {"architecture": "arm64", "os": "linux", "variant": "v8"}]
    doc = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            descriptor(child.media_type, child.manifest, platform=platforms[i % 2])
            for i, child in enumerate(children)
        ],
    }
    return odd_json(doc)


# --------------------------------------------------------------------------- tags

_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


def next_link(response: httpx.Response) -> str | None:
    header = response.headers.get("link")
    if not header:
        return None
    match = _LINK.search(header)
    assert match, f"malformed Link header {header!r}"
    return match.group(1)


def held_body(gate: threading.Event, timeout: float = 30) -> Iterator[bytes]:
    """A request body that sends a first piece, then waits for `gate` before the rest: an
    upload kept in flight for as long as a test needs."""
    yield b"x" * 1024
    gate.wait(timeout)
    yield b"y" * 1024
