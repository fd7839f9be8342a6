"""Manifests and tags.

Write order (nothing half-visible): manifest bytes at their content address, the revision record
that links them into the repository, the referrer record, the tag last. A manifest comes back
byte for byte as pushed, with the media type it was pushed with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from storage import paths, records
from storage.blobs import BlobStore
from storage.caches import PULLS_REMEMBERED, ByteCache, Lru, PullCache
from storage.content.digest import Digest
from storage.content.manifest import Manifest, parse_manifest
from storage.content.names import check_tag, is_tag
from storage.drivers.base import Driver
from storage.errors import (
    DigestInvalid,
    KeyNotFound,
    ManifestBlobUnknown,
    ManifestChildUnknown,
    ManifestUnknown,
    NameUnknown,
    RegistryError,
    StorageUnavailable,
    TagImmutable,
)
from storage.events import EventQueue
from storage.listing import iter_keys
from storage.repositories import RepositoryStore, tag_is_immutable

T = TypeVar("T")
MAX_TAGS_PAGE = 1000
MAX_REFERRERS = 10000
log = logging.getLogger("registry")
_CACHE_BYTES = 32 * 1024 * 1024
_PARSED_RECORDS = 4096  # of each kind (a few hundred bytes each)
PULL_RECORD_INTERVAL = 3600.0  # lastRecordedPullTime is written at most this often per image
_PULLS_REMEMBERED = 65536
_LIST_BATCH = 1000


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: Digest
    media_type: str
    raw: bytes
    pushed_at: float

    @property
    def size(self) -> int:
        return len(self.raw)


@dataclass(slots=True)
class ImageEntry:
    """One manifest of a repository as a listing of its revisions sees it."""

    digest: Digest
    tags: list[str] = field(default_factory=list)
    revision: bool = False  # False for a page that starts inside the tags of this digest
    last_key: str = ""  # the listing key this entry ends at (a page token)
    tag_keys: list[str] = field(default_factory=list)  # index key of each tag, same order


_CHECKS_AT_ONCE = 64  # storage calls a reference check keeps in flight


async def _in_slices(calls: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Await `calls` concurrently, `_CHECKS_AT_ONCE` at a time (an index may name thousands of
    manifests); their results in order."""
    results: list[T] = []
    try:
        for start in range(0, len(calls), _CHECKS_AT_ONCE):
            results += await asyncio.gather(*calls[start:start + _CHECKS_AT_ONCE])
    finally:
        for call in calls[len(results) + _CHECKS_AT_ONCE:]:
            call.close()  # never started: no "never awaited" warnings after a failure
    return results


def _immutable(name: str, tag: str) -> TagImmutable:
    return TagImmutable(
        f"The image tag '{tag}' already exists in the '{name}' repository and cannot be "
        "overwritten because the repository is immutable.", {"tag": tag})


class ManifestStore:
    def __init__(self, driver: Driver, repositories: RepositoryStore, blobs: BlobStore,
                 events: EventQueue | None = None, cache: PullCache | None = None) -> None:
        self.driver = driver
        self.repositories = repositories
        self.blobs = blobs
        self.events = events or EventQueue(driver)
        self._bytes = ByteCache(_CACHE_BYTES)  # immutable content, keyed by digest
        # Parsed records by their bytes: tag → digest, revision → (media type, push time).
        self._tag_records: Lru[bytes, Digest] = Lru(_PARSED_RECORDS)
        self._revision_records: Lru[bytes, tuple[str, float]] = Lru(_PARSED_RECORDS)
        self.cache = cache or PullCache(0.0, PULLS_REMEMBERED)
        self._pulls: OrderedDict[tuple[str, Digest], float] = OrderedDict()  # last pull noted

    # -- write ---------------------------------------------------------------------------------

    @staticmethod
    def check(reference: str, raw: bytes, content_type: str | None,
              extra_tags: Iterable[str] = ()) -> tuple[Manifest, list[str]]:
        """A push's manifest and tags, validated without touching storage: a caller that may
        create the repository for the push checks first, so a refused push stores nothing."""
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
        return manifest, tags

    async def put(self, name: str, reference: str, raw: bytes, content_type: str | None,
                  extra_tags: Iterable[str] = (),
                  settings: dict[str, Any] | None = None, cached: bool = False,
                  checked: tuple[Manifest, list[str]] | None = None) -> Manifest:
        """Store a manifest and point its tags at it. `settings` is the repository's settings
        record: an immutable tag that exists and points elsewhere refuses the whole push.
        `cached`: a pull-through cache copy, whose blobs and children arrive when pulled.
        `checked`: what `check` made of these same arguments, if the caller asked first."""
        manifest, tags = checked or self.check(reference, raw, content_type, extra_tags)
        sweeps = self.blobs.sweeps
        gc_before = await sweeps.repository_state(name)  # before the references are checked
        digest = manifest.digest
        blob_key = paths.blob(digest)
        # The catalog entry (ensured here) before any write: GC finds us through it.
        _, tag_digests, revision_before, bytes_stored, _ = await asyncio.gather(
            self._check_references(name, manifest) if not cached else asyncio.sleep(0),
            asyncio.gather(*(self.tag_digest(name, tag) for tag in tags)),
            self.revision_record(name, digest), self.driver.exists(blob_key),
            self.repositories.ensure(name))
        current = dict(zip(tags, tag_digests, strict=True))
        for tag, old in current.items():
            if old is not None and old != digest and tag_is_immutable(settings, tag):
                raise _immutable(name, tag)
        existed = revision_before is not None
        record: dict[str, object] = {
            "mediaType": manifest.media_type, "size": len(raw), "pushedAt": time.time(),
            "imageSize": await self._image_size(name, manifest),
        }
        if manifest.config is not None:
            record["artifactMediaType"] = manifest.config.media_type
        if manifest.subject is not None:
            record["subject"] = str(manifest.subject.digest)
        revision = records.dump(record)
        # In this order, made durable together: bytes, revision, referrer entry, tag index
        # entries, tags. A reader (or a crash) never sees a tag before what it points at, and
        # an index entry may be stale (ignored on read) but never missing.
        writes: list[tuple[str, bytes, bool]] = []
        if not bytes_stored:
            writes.append((blob_key, raw, False))
        writes.append((paths.revision(name, digest), revision, False))
        if manifest.subject is not None:
            writes.append((paths.referrer(name, manifest.subject.digest, digest),
                           self._referrer_record(manifest), False))
        moved = [tag for tag in tags if current[tag] != digest]
        writes += [(paths.tag_index_entry(name, digest, tag), b"", False) for tag in moved]
        value = records.dump({"digest": str(digest)})
        # Two pushes racing to create an immutable tag: exactly one wins.
        writes += [(paths.tag(name, tag), value,
                    current[tag] is None and tag_is_immutable(settings, tag)) for tag in moved]
        done = await self.driver.put_ordered(writes)
        self.cache.forget(name, moved)
        refused = []
        for tag, written in zip(moved, done[len(done) - len(moved):], strict=True):
            old = current[tag]
            if not written and await self.tag_digest(name, tag) != digest:
                await self.driver.delete(paths.tag_index_entry(name, digest, tag))
                refused.append(tag)
            elif old is not None:
                await self.driver.delete(paths.tag_index_entry(name, old, tag))
        if refused:
            raise _immutable(name, refused[0])
        try:
            await self._survive_gc(name, manifest, revision, cached, gc_before, bytes_stored)
        except ManifestBlobUnknown:
            await self._roll_back(name, manifest, current, existed)
            raise
        self._bytes.put(digest, raw)
        pushed: list[str | None] = [*tags] or [None]
        for pushed_tag in pushed:
            await self.events.emit("PUSH", name, str(digest), pushed_tag, manifest.media_type,
                                   len(raw))
        return manifest

    async def _survive_gc(self, name: str, manifest: Manifest, revision: bytes,
                          cached: bool, gc_before: bytes | None, bytes_stored: bool) -> None:
        """With everything written, make sure a GC pass that overlapped the push did not take
        what it stands on (storage/sweeps.py). If the repository's GC marker reads as it did
        before the references were checked, and no pass was running then, none overlapped.
        Otherwise a pass still running is waited out; one that listed the repository between
        our writes may have removed the revision (re-created here) or links it needs (then the
        push fails). Manifest bytes that were already stored (this push did not write them)
        may have been announced by a blob sweep: they are waited for and re-stored if taken."""
        digest = manifest.digest
        sweeps = self.blobs.sweeps
        gc_after = await sweeps.repository_state(name)
        if gc_after != gc_before or sweeps.running(gc_before):
            await sweeps.wait_repository(name)
            if not await self.driver.exists(paths.revision(name, digest)):
                await self.driver.put(paths.revision(name, digest), revision)
            if not cached:
                await self._check_references(name, manifest)
        # Only now that the revision is surely there (a blob sweep spares what it names).
        if bytes_stored and not await self.blobs.settled(digest):
            await self.driver.put(paths.blob(digest), manifest.raw)

    async def _roll_back(self, name: str, manifest: Manifest, before: dict[str, Digest | None],
                         existed: bool) -> None:
        """Undo a push that found its blobs gone: tags back to what they were, and the
        revision (and its referrer entry) removed unless it was there before."""
        digest = manifest.digest
        for tag, old in before.items():
            if await self.tag_digest(name, tag) != digest or old == digest:
                continue
            if old is None:
                await self.driver.delete(paths.tag(name, tag))
            else:
                await self.driver.put(paths.tag_index_entry(name, old, tag), b"")
                await self.driver.put(paths.tag(name, tag), records.dump({"digest": str(old)}))
            self.cache.forget(name, [tag])
            await self.driver.delete(paths.tag_index_entry(name, digest, tag))
        if not existed:
            if manifest.subject is not None:
                await self.driver.delete(paths.referrer(name, manifest.subject.digest, digest))
            await self.driver.delete(paths.revision(name, digest))
            self.cache.forget(name, digest=digest)

    async def _image_size(self, name: str, manifest: Manifest) -> int:
        """ECR's imageSizeInBytes: the layers' (compressed) sizes; for an index, its largest
        image."""
        if not manifest.is_index:
            return sum(d.size for d in manifest.layers)
        sizes = [0]
        for child in manifest.manifests:
            record = await self.revision_record(name, child.digest)
            if record is not None:
                sizes.append(int(record.get("imageSize", 0)))
        return max(sizes)

    async def _check_references(self, name: str, manifest: Manifest) -> None:
        blobs = manifest.blobs
        linked = await _in_slices([self.blobs.linked(name, d.digest) for d in blobs])
        missing = [str(d.digest) for d, ok in zip(blobs, linked, strict=True) if not ok]
        if missing:
            raise ManifestBlobUnknown(
                f"manifest references blobs unknown to the repository: {', '.join(missing)}",
                {"digests": missing},
            )
        known = await _in_slices([self.driver.exists(paths.revision(name, d.digest))
                                  for d in manifest.manifests])
        children = [str(d.digest) for d, ok in zip(manifest.manifests, known, strict=True)
                    if not ok]
        if children:
            raise ManifestChildUnknown(
                f"index references manifests unknown to the repository: {', '.join(children)}",
                {"digests": children},
            )

    @staticmethod
    def _referrer_record(manifest: Manifest) -> bytes:
        """The referrers API's descriptor of `manifest`, stored under its subject."""
        descriptor: dict[str, object] = {
            "mediaType": manifest.media_type,
            "digest": str(manifest.digest),
            "size": len(manifest.raw),
        }
        if manifest.effective_artifact_type:
            descriptor["artifactType"] = manifest.effective_artifact_type
        if manifest.annotations:
            descriptor["annotations"] = manifest.annotations
        return records.dump(descriptor)

    # -- read ----------------------------------------------------------------------------------

    async def resolve(self, name: str, reference: str, pull: bool = False) -> Digest:
        if not is_tag(reference):
            return Digest.parse(reference)
        tag = check_tag(reference)
        digest = await (self._pulled_tag(name, tag) if pull else self.tag_digest(name, tag))
        if digest is None:
            raise ManifestUnknown(f"manifest tagged {reference!r} not found",
                                  {"tag": reference})
        return digest

    async def _pulled_tag(self, name: str, tag: str) -> Digest | None:
        """`tag_digest` for a pull: from memory within `tag_cache_seconds` (pushes, deletes
        and every other reader read storage)."""
        started = time.monotonic()
        digest = self.cache.tag(name, tag, started)
        if digest is None:
            digest = await self.tag_digest(name, tag)
            if digest is not None:
                self.cache.keep_tag(name, tag, digest, started)
        return digest

    async def tag_digest(self, name: str, tag: str) -> Digest | None:
        """The digest `tag` points at, or None."""
        key = paths.tag(name, tag)
        try:
            data = await self.driver.get(key, records.MAX_RECORD)
        except KeyNotFound:
            return None
        # A tag record's digest is a function of its bytes alone: parsed once per content.
        digest = self._tag_records.get(data)
        if digest is None:
            try:
                digest = Digest.parse(str(records.load(data, key)["digest"]))
            except (KeyError, DigestInvalid):
                raise StorageUnavailable(f"corrupt record at {key}") from None
            self._tag_records.put(data, digest)
        return digest

    async def revision_record(self, name: str, digest: Digest) -> dict[str, Any] | None:
        """The revision record (media type, size, pushedAt, imageSize, ...), or None."""
        key = paths.revision(name, digest)
        try:
            return records.load(await self.driver.get(key, records.MAX_RECORD), key)
        except KeyNotFound:
            return None

    async def get(self, name: str, reference: str, pull: bool = False) -> StoredManifest:
        """The manifest by tag or digest: by tag one read of storage (the tag) when this
        process has served the revision before, by digest one (the revision, whose existence
        is the answer), plus the bytes when not cached. A `pull` may answer from memory
        within `tag_cache_seconds`."""
        digest = await self.resolve(name, reference, pull)
        started = time.monotonic()
        facts = self.cache.revisions.get((name, digest)) if is_tag(reference) or (
            pull and self.cache.seen(name, digest, started)) else None
        if facts is None:
            key = paths.revision(name, digest)
            try:
                data = await self.driver.get(key, records.MAX_RECORD)
            except KeyNotFound:
                raise ManifestUnknown(f"manifest {digest} not found",
                                      {"digest": str(digest)}) from None
            facts = self._revision_records.get(data)  # a function of the bytes alone
            if facts is None:
                record = records.load(data, key)
                facts = (str(record["mediaType"]), float(record.get("pushedAt", 0)))
                self._revision_records.put(data, facts)
            self.cache.revisions.put((name, digest), facts)
            self.cache.keep_seen(name, digest, started)
        raw = self._bytes.get(digest)
        if raw is None:
            try:
                raw = await self.driver.get(paths.blob(digest))
            except KeyNotFound:
                raise ManifestUnknown(f"manifest {digest} not found",
                                      {"digest": str(digest)}) from None
            self._bytes.put(digest, raw)
        return StoredManifest(digest, facts[0], raw, facts[1])

    async def delete(self, name: str, reference: str) -> None:
        """Delete a tag, or a manifest by digest together with every tag pointing at it."""
        if is_tag(reference):
            await self.untag(name, check_tag(reference))
            return
        digest = Digest.parse(reference)
        record = await self.revision_record(name, digest)
        if record is None:
            raise ManifestUnknown(f"manifest {digest} not found", {"digest": str(digest)})
        # Tags first, so that no tag ever points at a missing revision.
        for tag in await self.tags_of(name, digest):
            await self.driver.delete(paths.tag(name, tag))
            self.cache.forget(name, [tag])
        await self.driver.delete_prefix(paths.tag_index(name, digest))
        if record.get("subject"):
            await self.driver.delete(paths.referrer(name, Digest.parse(record["subject"]), digest))
        await self.driver.delete(paths.pull_record(name, digest))
        await self.driver.delete(paths.revision(name, digest))
        self.cache.forget(name, digest=digest)
        await self.events.emit("DELETE", name, str(digest), None, record.get("mediaType"))

    async def delete_untagged(self, name: str, digest: Digest) -> bool:
        """GC's delete: the revision goes only while no tag points at it, and never takes a
        tag with it (a push that tags it meanwhile re-creates the revision; sweeps.py)."""
        if await self.tags_of(name, digest):
            return False
        record = await self.revision_record(name, digest)
        if record is None:
            return False
        if record.get("subject"):
            await self.driver.delete(paths.referrer(name, Digest.parse(record["subject"]), digest))
        await self.driver.delete(paths.pull_record(name, digest))
        await self.driver.delete(paths.revision(name, digest))
        self.cache.forget(name, digest=digest)
        await self.driver.delete_prefix(paths.tag_index(name, digest))
        await self.events.emit("DELETE", name, str(digest), None, record.get("mediaType"))
        return True

    async def untag(self, name: str, tag: str) -> Digest:
        """Remove a tag (the manifest stays); the digest it pointed at."""
        old = await self.tag_digest(name, tag)
        if old is None:
            raise ManifestUnknown(f"manifest tagged {tag!r} not found", {"tag": tag})
        await self.driver.delete(paths.tag(name, tag))
        self.cache.forget(name, [tag])
        await self.driver.delete(paths.tag_index_entry(name, old, tag))
        await self.events.emit("DELETE", name, str(old), tag)
        return old

    async def tags_of(self, name: str, digest: Digest) -> list[str]:
        """Every tag of the repository that points at `digest`: its index, checked against
        the tag records."""
        prefix = paths.tag_index(name, digest)
        tags = [key[len(prefix):] async for key in iter_keys(self.driver, prefix)]
        return await self._verified(name, digest, tags)

    async def _verified(self, name: str, digest: Digest, tags: list[str]) -> list[str]:
        """The tags among `tags` whose record still points at `digest`."""
        pointed = await asyncio.gather(*(self.tag_digest(name, t) for t in tags))
        return [t for t, d in zip(tags, pointed, strict=True) if d == digest]

    async def images(self, name: str, after: str | None = None,
                     batch: int = _LIST_BATCH) -> AsyncIterator[ImageEntry]:
        """The repository's manifests in digest order, each with its (checked) tags, resuming
        after the listing position `after` (an entry's `last_key`, or a key of its tags)."""
        prefix = paths.revisions(name)
        cursor = prefix + after if after else None
        entry: ImageEntry | None = None
        batch = max(2, min(batch, _LIST_BATCH))
        while True:
            keys = await self.driver.list(prefix, start_after=cursor, limit=batch)
            done: list[ImageEntry] = []
            for key in keys:
                rest = key[len(prefix):]
                head, index, tag = rest.partition(paths.TAG_INDEX)
                try:
                    digest = Digest.parse(head.replace("/", ":", 1))
                except DigestInvalid:
                    continue
                if entry is not None and entry.digest != digest:
                    done.append(entry)
                    entry = None
                if entry is None:
                    entry = ImageEntry(digest, revision=not index)
                if index:
                    entry.tags.append(tag)
                    entry.tag_keys.append(rest)
                entry.last_key = rest
            finished = len(keys) < batch
            if finished and entry is not None:
                done.append(entry)
            for ready in await asyncio.gather(*(self._checked(name, e) for e in done)):
                if ready is not None:
                    yield ready
            if finished:
                return
            cursor = keys[-1]
            batch = _LIST_BATCH

    async def _checked(self, name: str, entry: ImageEntry) -> ImageEntry | None:
        valid = set(await self._verified(name, entry.digest, entry.tags))
        keys = [k for t, k in zip(entry.tags, entry.tag_keys, strict=True) if t in valid]
        entry.tags = [t for t in entry.tags if t in valid]
        entry.tag_keys = keys
        if not entry.revision and not entry.tags:
            return None
        return entry

    # -- pulls ---------------------------------------------------------------------------------

    async def note_pull(self, name: str, digest: Digest) -> None:
        """record_pull for a pull in progress: a pull never fails because the note could not
        be written."""
        try:
            await self.record_pull(name, digest)
        except RegistryError as exc:
            log.warning("could not record a pull of %s@%s: %s", name, digest, exc)

    async def record_pull(self, name: str, digest: Digest) -> None:
        """Note that the manifest was pulled: at most one write per image and hour, however
        many pulls (and replicas: a process that has not written lately reads first)."""
        now = time.time()
        remembered = self._pulls.get((name, digest))
        if remembered is not None and now - remembered < PULL_RECORD_INTERVAL:
            return
        if remembered is None:
            stored = await self.last_pull(name, digest)
            if stored is not None and now - stored < PULL_RECORD_INTERVAL:
                self._remember_pull(name, digest, stored)
                return
        await self.driver.put(paths.pull_record(name, digest), records.dump({"pulledAt": now}))
        self._remember_pull(name, digest, now)

    def _remember_pull(self, name: str, digest: Digest, when: float) -> None:
        self._pulls[(name, digest)] = when
        self._pulls.move_to_end((name, digest))
        while len(self._pulls) > _PULLS_REMEMBERED:
            self._pulls.popitem(last=False)

    async def last_pull(self, name: str, digest: Digest) -> float | None:
        key = paths.pull_record(name, digest)
        try:
            record = records.load(await self.driver.get(key, records.MAX_RECORD), key)
        except KeyNotFound:
            return None
        value = record.get("pulledAt")
        return float(value) if isinstance(value, int | float) else None

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
