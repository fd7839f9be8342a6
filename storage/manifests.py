"""Manifests and tags.

Write order (nothing half-visible): manifest bytes at their content address, the revision record
that links them into the repository, the referrer record, the tag last. A manifest comes back
byte for byte as pushed, with the media type it was pushed with.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from storage import paths, records
from storage.blobs import BlobStore
from storage.content.digest import Digest
from storage.content.manifest import Manifest, parse_manifest
from storage.content.names import check_tag, is_tag
from storage.drivers.base import Driver
from storage.errors import (
    DigestInvalid,
    KeyNotFound,
    ManifestBlobUnknown,
    ManifestUnknown,
    NameUnknown,
)
from storage.repositories import RepositoryStore

MAX_TAGS_PAGE = 1000
MAX_REFERRERS = 10000
_CACHE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: Digest
    media_type: str
    raw: bytes
    pushed_at: float

    @property
    def size(self) -> int:
        return len(self.raw)


class ManifestStore:
    def __init__(self, driver: Driver, repositories: RepositoryStore, blobs: BlobStore) -> None:
        self.driver = driver
        self.repositories = repositories
        self.blobs = blobs
        self._bytes = _ByteCache(_CACHE_BYTES)  # immutable content, keyed by digest

    # -- write ---------------------------------------------------------------------------------

    async def put(self, name: str, reference: str, raw: bytes, content_type: str | None,
                  extra_tags: Iterable[str] = ()) -> Manifest:
        tags = [check_tag(t) for t in ([reference] if is_tag(reference) else [])]
        tags += [check_tag(t) for t in extra_tags if t not in tags]
        algorithm = "sha256"
        if not is_tag(reference):
            algorithm = Digest.parse(reference).algorithm
        manifest = parse_manifest(raw, content_type, algorithm)
        if not is_tag(reference) and str(manifest.digest) != reference:
            raise DigestInvalid(
                f"manifest digest {manifest.digest} does not match reference {reference}",
                {"expected": reference, "actual": str(manifest.digest)},
            )
        await self._check_references(name, manifest)
        digest = manifest.digest
        blob_key = paths.blob(digest)
        if not await self.driver.exists(blob_key):
            await self.driver.put(blob_key, raw)
        record: dict[str, object] = {
            "mediaType": manifest.media_type, "size": len(raw), "pushedAt": time.time(),
        }
        if manifest.subject is not None:
            record["subject"] = str(manifest.subject.digest)
        await self.driver.put(paths.revision(name, digest), records.dump(record))
        if manifest.subject is not None:
            await self._put_referrer(name, manifest)
        for tag in tags:
            await self.driver.put(paths.tag(name, tag), records.dump({"digest": str(digest)}))
        await self.repositories.ensure(name)
        self._bytes.put(digest, raw)
        return manifest

    async def _check_references(self, name: str, manifest: Manifest) -> None:
        missing = [str(d.digest) for d in manifest.blobs
                   if not await self.blobs.linked(name, d.digest)]
        if missing:
            raise ManifestBlobUnknown(
                f"manifest references blobs unknown to the repository: {', '.join(missing)}",
                {"digests": missing},
            )
        children = [str(d.digest) for d in manifest.manifests
                    if not await self.driver.exists(paths.revision(name, d.digest))]
        if children:
            raise ManifestBlobUnknown(
                f"index references manifests unknown to the repository: {', '.join(children)}",
                {"digests": children},
            )

    async def _put_referrer(self, name: str, manifest: Manifest) -> None:
        assert manifest.subject is not None
        descriptor: dict[str, object] = {
            "mediaType": manifest.media_type,
            "digest": str(manifest.digest),
            "size": len(manifest.raw),
        }
        if manifest.effective_artifact_type:
            descriptor["artifactType"] = manifest.effective_artifact_type
        if manifest.annotations:
            descriptor["annotations"] = manifest.annotations
        key = paths.referrer(name, manifest.subject.digest, manifest.digest)
        await self.driver.put(key, records.dump(descriptor))

    # -- read ----------------------------------------------------------------------------------

    async def resolve(self, name: str, reference: str) -> Digest:
        if not is_tag(reference):
            return Digest.parse(reference)
        check_tag(reference)
        key = paths.tag(name, reference)
        try:
            record = records.load(await self.driver.get(key, records.MAX_RECORD), key)
        except KeyNotFound:
            raise ManifestUnknown(f"manifest tagged {reference!r} not found",
                                  {"tag": reference}) from None
        return Digest.parse(str(record["digest"]))

    async def get(self, name: str, reference: str) -> StoredManifest:
        digest = await self.resolve(name, reference)
        key = paths.revision(name, digest)
        try:
            record = records.load(await self.driver.get(key, records.MAX_RECORD), key)
        except KeyNotFound:
            raise ManifestUnknown(f"manifest {digest} not found",
                                  {"digest": str(digest)}) from None
        raw = self._bytes.get(digest)
        if raw is None:
            try:
                raw = await self.driver.get(paths.blob(digest))
            except KeyNotFound:
                raise ManifestUnknown(f"manifest {digest} not found",
                                      {"digest": str(digest)}) from None
            self._bytes.put(digest, raw)
        return StoredManifest(digest, str(record["mediaType"]), raw,
                              float(record.get("pushedAt", 0)))

    async def delete(self, name: str, reference: str) -> None:
        """Delete a tag, or a manifest by digest together with every tag pointing at it."""
        if is_tag(reference):
            check_tag(reference)
            key = paths.tag(name, reference)
            if not await self.driver.exists(key):
                raise ManifestUnknown(f"manifest tagged {reference!r} not found",
                                      {"tag": reference})
            await self.driver.delete(key)
            return
        digest = Digest.parse(reference)
        key = paths.revision(name, digest)
        try:
            record = records.load(await self.driver.get(key, records.MAX_RECORD), key)
        except KeyNotFound:
            raise ManifestUnknown(f"manifest {digest} not found", {"digest": str(digest)}) \
                from None
        # Tags first, so that no tag ever points at a missing revision.
        for tag in await self.tags_of(name, digest):
            await self.driver.delete(paths.tag(name, tag))
        if record.get("subject"):
            await self.driver.delete(paths.referrer(name, Digest.parse(record["subject"]), digest))
        await self.driver.delete(key)

    async def tags_of(self, name: str, digest: Digest) -> list[str]:
        """Every tag of the repository that points at `digest` (reads each tag record)."""
        prefix = paths.tags(name)
        found: list[str] = []
        last: str | None = None
        while True:
            keys = await self.driver.list(prefix, start_after=last, limit=MAX_TAGS_PAGE)
            for key in keys:
                try:
                    record = records.load(await self.driver.get(key, records.MAX_RECORD), key)
                except KeyNotFound:
                    continue
                if record.get("digest") == str(digest):
                    found.append(key[len(prefix):])
            if len(keys) < MAX_TAGS_PAGE:
                return found
            last = keys[-1]

    async def referrers(self, name: str, subject: Digest,
                        artifact_type: str | None = None) -> list[dict[str, object]]:
        """Descriptors of the manifests in the repository whose subject is `subject`."""
        prefix = paths.referrers(name, subject)
        keys = await self.driver.list(prefix, limit=MAX_REFERRERS)
        descriptors: list[dict[str, object]] = []
        for key in keys:
            try:
                descriptor = records.load(await self.driver.get(key, records.MAX_RECORD), key)
            except KeyNotFound:
                continue  # deleted while we listed
            if artifact_type is None or descriptor.get("artifactType") == artifact_type:
                descriptors.append(descriptor)
        return descriptors

    async def tags(self, name: str, last: str | None, limit: int | None) -> tuple[list[str], bool]:
        """One page of tags after `last`, in byte order, and whether more follow."""
        page = MAX_TAGS_PAGE if limit is None else max(0, min(limit, MAX_TAGS_PAGE))
        if page == 0:
            await self._require_repository(name)
            return [], False
        prefix = paths.tags(name)
        start = prefix + last if last else None
        keys = await self.driver.list(prefix, start_after=start, limit=page + 1)
        if not keys:
            await self._require_repository(name)
        names = [k[len(prefix):] for k in keys]
        return names[:page], len(names) > page

    async def _require_repository(self, name: str) -> None:
        if not await self.repositories.exists(name):
            raise NameUnknown(f"repository {name!r} not known to registry", {"name": name})


class _ByteCache:
    """LRU of immutable bytes, bounded by total size."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._items: OrderedDict[Digest, bytes] = OrderedDict()

    def get(self, digest: Digest) -> bytes | None:
        raw = self._items.get(digest)
        if raw is not None:
            self._items.move_to_end(digest)
        return raw

    def put(self, digest: Digest, raw: bytes) -> None:
        if len(raw) > self.capacity // 8 or digest in self._items:
            return
        self._items[digest] = raw
        self.used += len(raw)
        while self.used > self.capacity:
            _, old = self._items.popitem(last=False)
            self.used -= len(old)
