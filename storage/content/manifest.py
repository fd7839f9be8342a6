"""Manifest parsing that keeps the raw bytes: the registry never re-serialises a manifest."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from storage.content import mediatypes as mt
from storage.content.digest import Digest
from storage.content.jsontext import JsonInvalid, loads
from storage.errors import DigestInvalid, ManifestInvalid

MAX_MANIFEST_SIZE = 4 * 1024 * 1024
# The largest blob a descriptor may declare: S3's object size limit (5 TiB), the most any of
# our backends can hold portably (and far beyond ECR's own layer limit, about 52,000 MiB). The
# sum of every size a 4 MiB manifest can list then stays below 2**63, so ECR's
# imageSizeInBytes (a Long) cannot overflow either.
MAX_DESCRIPTOR_SIZE = 5 * 1024**4


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    urls: tuple[str, ...] = ()
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    platform: dict[str, Any] | None = None

    @property
    def foreign(self) -> bool:
        return self.media_type in mt.FOREIGN_LAYERS and bool(self.urls)


@dataclass(frozen=True, slots=True)
class Manifest:
    raw: bytes
    digest: Digest
    media_type: str
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEXES

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Blobs that must be present in the repository for this manifest to be accepted."""
        config = (self.config,) if self.config is not None else ()
        return config + tuple(d for d in self.layers if not d.foreign)

    @property
    def effective_artifact_type(self) -> str | None:
        """What the referrers API reports: artifactType, else the config media type."""
        if self.artifact_type:
            return self.artifact_type
        return self.config.media_type if self.config is not None else None


def parse_manifest(raw: bytes, content_type: str | None, algorithm: str = "sha256") -> Manifest:
    if len(raw) > MAX_MANIFEST_SIZE:
        raise ManifestInvalid(f"manifest larger than {MAX_MANIFEST_SIZE} bytes")
    header_type = mt.bare(content_type)
    if header_type in mt.SCHEMA1:
        raise _schema1()
    try:
        doc = loads(raw)
    except JsonInvalid as exc:
        raise ManifestInvalid(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestInvalid("manifest must be a JSON object")
    if doc.get("schemaVersion") == 1:
        raise _schema1()
    if doc.get("schemaVersion") != 2:
        raise ManifestInvalid("manifest schemaVersion must be 2")
    media_type = _media_type(doc, header_type)
    manifest_digest = Digest.of(raw, algorithm)
    subject = _descriptor(doc["subject"], "subject") if "subject" in doc else None
    artifact_type = _optional_str(doc, "artifactType")
    annotations = _annotations(doc.get("annotations"), "annotations") or {}
    if media_type in mt.INDEXES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise ManifestInvalid("index must have a manifests list")
        children = tuple(_descriptor(e, f"manifests[{i}]") for i, e in enumerate(entries))
        return Manifest(raw, manifest_digest, media_type, manifests=children, subject=subject,
                        artifact_type=artifact_type, annotations=annotations)
    config = _descriptor(doc.get("config"), "config")
    layer_list = doc.get("layers", [])
    if not isinstance(layer_list, list):
        raise ManifestInvalid("layers must be a list")
    layers = tuple(_descriptor(e, f"layers[{i}]") for i, e in enumerate(layer_list))
    if media_type == mt.DOCKER_MANIFEST and not layers:
        raise ManifestInvalid("docker image manifest must have at least one layer")
    return Manifest(raw, manifest_digest, media_type, config=config, layers=layers, subject=subject,
                    artifact_type=artifact_type, annotations=annotations)


def _schema1() -> ManifestInvalid:
    return ManifestInvalid(
        "Docker schema 1 manifests are not supported: push with Docker schema 2 or OCI "
        "(docker 1.10+ and every current client do this by default)"
    )


def _media_type(doc: dict[str, Any], header_type: str) -> str:
    field_type = doc.get("mediaType")
    if field_type is not None and not isinstance(field_type, str):
        raise ManifestInvalid("mediaType must be a string")
    if field_type in mt.SCHEMA1:
        raise _schema1()
    if header_type and header_type not in mt.GENERIC:
        if header_type not in mt.MANIFESTS:
            raise ManifestInvalid(
                f"unsupported manifest media type {header_type!r}; "
                f"accepted: {', '.join(sorted(mt.MANIFESTS))}"
            )
        if field_type and field_type != header_type:
            raise ManifestInvalid(
                f"Content-Type {header_type!r} does not match mediaType {field_type!r}"
            )
        return header_type
    if field_type:
        if field_type not in mt.MANIFESTS:
            raise ManifestInvalid(f"unsupported manifest media type {field_type!r}")
        return field_type
    # No declared type at all (allowed for OCI): infer from the structure.
    if "manifests" in doc:
        return mt.OCI_INDEX
    if "config" in doc:
        return mt.OCI_MANIFEST
    raise ManifestInvalid("cannot tell the manifest media type: set Content-Type or mediaType")


def _optional_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise ManifestInvalid(f"{key} must be a string")
    return value


def _annotations(value: Any, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ManifestInvalid(f"{where} must map strings to strings")
    return value


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise ManifestInvalid(f"{where} must be a descriptor object")
    media_type = value.get("mediaType")
    digest_text = value.get("digest")
    size = value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestInvalid(f"{where}.mediaType is required")
    if not isinstance(digest_text, str):
        raise ManifestInvalid(f"{where}.digest is required")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"{where}.size must be a non-negative integer")
    if size > MAX_DESCRIPTOR_SIZE:
        raise ManifestInvalid(f"{where}.size is larger than any blob can be "
                              f"({MAX_DESCRIPTOR_SIZE} bytes)")
    try:
        digest = Digest.parse(digest_text)
    except DigestInvalid as exc:
        raise ManifestInvalid(f"{where}.digest: {exc.message}") from None
    urls = value.get("urls") or ()
    if not isinstance(urls, list | tuple) or not all(isinstance(u, str) for u in urls):
        raise ManifestInvalid(f"{where}.urls must be a list of strings")
    platform = value.get("platform")
    if platform is not None and not isinstance(platform, dict):
        raise ManifestInvalid(f"{where}.platform must be an object")
    artifact_type = value.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid(f"{where}.artifactType must be a string")
    return Descriptor(
        media_type=media_type, digest=digest, size=size, urls=tuple(urls),
        artifact_type=artifact_type, annotations=_annotations(value.get("annotations"), where),
        platform=platform,
    )
