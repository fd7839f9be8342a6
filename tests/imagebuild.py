"""Write OCI image layouts (image-layout spec v1.0.0) of random images for client round-trips.

Layers are real tar archives, gzip-compressed or plain, each holding one file of random bytes.
Everything is streamed to disk: a layer is never held in memory, and every digest (the
compressed blob's and the uncompressed tar's diff_id) is computed while writing.

A layout written here holds `oci-layout`, `index.json` and `blobs/sha256/<hex>`; the image or
image index is named in `index.json` by the `org.opencontainers.image.ref.name` annotation,
which is what `skopeo copy oci:<dir>:<ref> ...` looks up.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

OCI_LAYOUT_VERSION = "1.0.0"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
REF_NAME = "org.opencontainers.image.ref.name"

DEFAULT_PLATFORMS: tuple[tuple[str, str], ...] = (("linux", "amd64"), ("linux", "arm64"))

_CHUNK = 1 << 20


# --------------------------------------------------------------------------- streaming helpers


class _Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...
    def flush(self) -> object: ...


class _DigestWriter:
    """A write-only stream that hashes and counts what passes through to `sink`."""

    def __init__(self, sink: _Sink) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        self._sink.write(data)
        return len(data)

    def flush(self) -> None:
        self._sink.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class _RandomReader:
    """A read-only stream of `size` random bytes, generated on demand."""

    def __init__(self, size: int) -> None:
        self._left = size

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        n = min(n, _CHUNK)
        self._left -= n
        return os.urandom(n)


def file_digest(path: Path) -> str:
    """The sha256 digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def iter_file(path: Path, chunk_size: int = _CHUNK) -> Iterator[bytes]:
    """Yield a file's bytes in chunks (for streaming request bodies)."""
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            yield chunk


# --------------------------------------------------------------------------- layout access


def init_layout(layout: Path) -> None:
    """Create an empty layout directory (idempotent)."""
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    marker = layout / "oci-layout"
    if not marker.exists():
        marker.write_text(json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
    index = layout / "index.json"
    if not index.exists():
        index.write_bytes(_dumps({"schemaVersion": 2, "mediaType": MEDIA_TYPE_INDEX,
                                  "manifests": []}))


def blob_path(layout: Path, digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    return layout / "blobs" / algorithm / hexdigest


def read_blob(layout: Path, digest: str) -> bytes:
    return blob_path(layout, digest).read_bytes()


def read_index_json(layout: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((layout / "index.json").read_bytes())
    return data


def resolve(layout: Path, ref: str) -> dict[str, Any]:
    """The descriptor that `index.json` names `ref` (KeyError when none does)."""
    for descriptor in read_index_json(layout).get("manifests", []):
        if descriptor.get("annotations", {}).get(REF_NAME) == ref:
            found: dict[str, Any] = descriptor
            return found
    raise KeyError(f"no reference {ref!r} in {layout / 'index.json'}")


def add_ref(layout: Path, descriptor: dict[str, Any], ref: str) -> None:
    """Name `descriptor` as `ref` in `index.json`, replacing an earlier entry of that name."""
    init_layout(layout)
    index = read_index_json(layout)
    kept = [d for d in index.get("manifests", [])
            if d.get("annotations", {}).get(REF_NAME) != ref]
    entry = {**descriptor, "annotations": {**descriptor.get("annotations", {}), REF_NAME: ref}}
    index["manifests"] = [*kept, entry]
    (layout / "index.json").write_bytes(_dumps(index))


def write_blob(layout: Path, data: bytes) -> str:
    """Store `data` as a blob; returns its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = blob_path(layout, digest)
    if not path.exists():
        tmp = path.with_name(f".tmp-{os.urandom(8).hex()}")
        tmp.write_bytes(data)
        tmp.replace(path)
    return digest


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Layer:
    digest: str
    """Digest of the blob as stored (compressed when `media_type` says so)."""
    size: int
    diff_id: str
    """Digest of the uncompressed tar."""
    media_type: str

    @property
    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class BuiltImage:
    layout: Path
    ref: str | None
    """Name in `index.json`; None for an image that only an index refers to."""
    manifest_digest: str
    manifest: bytes
    config_digest: str
    config: bytes
    layers: tuple[Layer, ...]
    os: str
    architecture: str

    @property
    def layer_digests(self) -> list[str]:
        return [layer.digest for layer in self.layers]

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]

    @property
    def blob_digests(self) -> list[str]:
        """Config then layers: everything to push before the manifest."""
        return [self.config_digest, *self.layer_digests]

    @property
    def platform(self) -> str:
        return f"{self.os}/{self.architecture}"

    @property
    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": MEDIA_TYPE_MANIFEST, "digest": self.manifest_digest,
                "size": len(self.manifest)}


@dataclass(frozen=True)
class BuiltIndex:
    layout: Path
    ref: str
    index_digest: str
    index: bytes
    images: dict[str, BuiltImage] = field(default_factory=dict)
    """Child images keyed by platform, e.g. "linux/amd64"."""

    @property
    def manifest_digests(self) -> list[str]:
        return [image.manifest_digest for image in self.images.values()]


# --------------------------------------------------------------------------- writers


def write_layer(layout: Path, size: int, *, compress: bool = True,
                name: str = "random.bin") -> Layer:
    """Write a tar (gzip-compressed when `compress`) holding one file of `size` random bytes."""
    init_layout(layout)
    directory = layout / "blobs" / "sha256"
    tmp = directory / f".tmp-{os.urandom(8).hex()}"
    with open(tmp, "wb") as out:
        stored = _DigestWriter(out)
        gz: gzip.GzipFile | None = None
        if compress:
            # mtime=0 and no file name keep the gzip header deterministic.
            gz = gzip.GzipFile(fileobj=stored, mode="wb", compresslevel=1, mtime=0)
            uncompressed = _DigestWriter(gz)
        else:
            uncompressed = stored
        # Stream mode only ever calls write() (typeshed wants a full read/seek file object).
        with tarfile.open(fileobj=uncompressed, mode="w|",  # type: ignore[call-overload]
                          format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(name)
            info.size = size
            info.mode = 0o644
            info.mtime = 0
            info.type = tarfile.REGTYPE
            tar.addfile(info, _RandomReader(size))
        if gz is not None:
            gz.close()
    path = directory / stored.digest.partition(":")[2]
    tmp.replace(path)
    media_type = MEDIA_TYPE_LAYER_GZIP if compress else MEDIA_TYPE_LAYER_TAR
    return Layer(digest=stored.digest, size=stored.size, diff_id=uncompressed.digest,
                 media_type=media_type)


def write_image(layout: Path, layer_sizes: Sequence[int], *, compress: bool = True,
                os_name: str = "linux", architecture: str = "amd64",
                ref: str | None = None) -> BuiltImage:
    """Write layers, config and image manifest; name the manifest `ref` in index.json if given."""
    init_layout(layout)
    layers = tuple(write_layer(layout, size, compress=compress, name=f"layer-{i}.bin")
                   for i, size in enumerate(layer_sizes))
    config = _dumps({
        "architecture": architecture,
        "os": os_name,
        "config": {"Env": [f"BUILD_NONCE={os.urandom(8).hex()}"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created_by": f"imagebuild layer {i}"} for i in range(len(layers))],
    })
    config_digest = write_blob(layout, config)
    manifest = _dumps({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": config_digest,
                   "size": len(config)},
        "layers": [layer.descriptor for layer in layers],
    })
    manifest_digest = write_blob(layout, manifest)
    image = BuiltImage(layout=layout, ref=ref, manifest_digest=manifest_digest,
                       manifest=manifest, config_digest=config_digest, config=config,
                       layers=layers, os=os_name, architecture=architecture)
    if ref is not None:
        add_ref(layout, image.descriptor, ref)
    return image


def build_image(layout: Path, layer_sizes: Sequence[int], *, ref: str = "latest",
                compress: bool = True, os_name: str = "linux",
                architecture: str = "amd64") -> BuiltImage:
    """A layout whose `index.json` names one single-platform image manifest `ref`."""
    return write_image(layout, layer_sizes, compress=compress, os_name=os_name,
                       architecture=architecture, ref=ref)


def build_index(layout: Path, layer_sizes: Sequence[int], *, ref: str = "latest",
                compress: bool = True,
                platforms: Sequence[tuple[str, str]] = DEFAULT_PLATFORMS) -> BuiltIndex:
    """A layout whose `index.json` names an OCI image index `ref`.

    The index lists one image manifest per (os, architecture) platform; every image has its
    own config and its own random layers of `layer_sizes`.
    """
    images: dict[str, BuiltImage] = {}
    for os_name, architecture in platforms:
        image = write_image(layout, layer_sizes, compress=compress, os_name=os_name,
                            architecture=architecture)
        images[image.platform] = image
    index = _dumps({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": [
            {**image.descriptor,
             "platform": {"architecture": image.architecture, "os": image.os}}
            for image in images.values()
        ],
    })
    index_digest = write_blob(layout, index)
    add_ref(layout, {"mediaType": MEDIA_TYPE_INDEX, "digest": index_digest,
                     "size": len(index)}, ref)
    return BuiltIndex(layout=layout, ref=ref, index_digest=index_digest, index=index,
                      images=images)
