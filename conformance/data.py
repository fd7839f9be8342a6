"""In-memory test content: random blobs, OCI image manifests and indexes.

Manifests are serialised with unusual indentation on purpose, so a registry that re-encodes
the JSON instead of storing the exact bytes is caught by the byte-for-byte pull checks.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = f"{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {DOCKER_LIST}"
OCTET = "application/octet-stream"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def random_digest() -> str:
    """A well-formed digest of content that nobody has pushed."""
    return sha256(os.urandom(32))


def token(n: int = 4) -> str:
    return os.urandom(n).hex()


def encode(obj: Any) -> bytes:
    return json.dumps(obj, indent=3).encode() + b"\n"


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str = OCI_LAYER

    @property
    def digest(self) -> str:
        return sha256(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Manifest:
    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha256(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def json(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.data)
        return parsed

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def new_layer(size: int = 1536) -> Blob:
    return Blob(os.urandom(size), OCI_LAYER)


def new_config(media_type: str = OCI_CONFIG) -> Blob:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"org.example.conformance.nonce": token(8)}},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    return Blob(encode(config), media_type)


EMPTY_CONFIG = Blob(b"{}", OCI_EMPTY)


def image_manifest(
    config: Blob,
    layers: list[Blob],
    *,
    subject: Manifest | None = None,
    artifact_type: str | None = None,
    annotations: dict[str, str] | None = None,
) -> Manifest:
    body: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact_type:
        body["artifactType"] = artifact_type
    body["config"] = config.descriptor()
    body["layers"] = [layer.descriptor() for layer in layers]
    if subject is not None:
        body["subject"] = subject.descriptor()
    if annotations:
        body["annotations"] = annotations
    return Manifest(encode(body), OCI_MANIFEST)


def image_index(
    manifests: list[Manifest],
    *,
    subject: Manifest | None = None,
    artifact_type: str | None = None,
    annotations: dict[str, str] | None = None,
) -> Manifest:
    body: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX}
    if artifact_type:
        body["artifactType"] = artifact_type
    body["manifests"] = [
        {**m.descriptor(), "platform": {"architecture": arch, "os": "linux"}}
        for m, arch in zip(manifests, ["amd64", "arm64", "riscv64", "s390x"], strict=False)
    ]
    if subject is not None:
        body["subject"] = subject.descriptor()
    if annotations:
        body["annotations"] = annotations
    return Manifest(encode(body), OCI_INDEX)

