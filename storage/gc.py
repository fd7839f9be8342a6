"""Online garbage collection: mark and sweep while the registry serves pushes and pulls.

One run, with `cutoff = start - grace` (nothing younger than the cutoff is ever removed):

1. Per repository, under its sweep marker (storage/sweeps.py):
   a. manifests: keep what is tagged, marked in use, pushed after the cutoff, a child of a kept
      index, or (setting) a referrer of a kept manifest; delete the rest (untagged manifests);
   b. links: list the remaining revisions again, and delete the links no remaining manifest
      references, unless written after the cutoff (a push whose manifest is still to come).
2. Blobs: every blob that no repository links and no revision names, stored before the
   cutoff, is announced with a tombstone; then every repository's links and revisions are
   listed again; what is still unreferenced is deleted (batched: DeleteObjects on S3).
3. Upload sessions started before `upload_max_age` are purged (their S3 multipart uploads are
   aborted with them).

Killed at any point, a run leaves a registry that serves every referenced image (nothing is
deleted before the protocol says it may be), and the next run finishes the work; tombstones and
markers left behind lapse at their deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from storage import paths, records
from storage.content import mediatypes as mt
from storage.content.digest import Digest
from storage.content.manifest import parse_manifest
from storage.errors import DigestInvalid, KeyNotFound, ManifestInvalid, ManifestUnknown
from storage.listing import iter_keys
from storage.sweeps import MARGIN, SWEEP_TTL, TOMB_TTL

if TYPE_CHECKING:
    from storage.store import Store

T = TypeVar("T")
log = logging.getLogger("registry")
_PAGE = 1000
_CONCURRENCY = 32


@dataclass(frozen=True, slots=True)
class GcOptions:
    grace: float = 3600.0
    upload_max_age: float = 24 * 3600.0
    delete_untagged: bool = True
    keep_referrers: bool = True
    dry_run: bool = False


@dataclass(slots=True)
class GcReport:
    repositories: int = 0
    manifests_deleted: int = 0
    links_deleted: int = 0
    blobs_deleted: int = 0
    bytes_freed: int = 0
    uploads_purged: int = 0
    blobs_spared: int = 0  # announced, then found linked again
    dry_run: bool = False
    started_at: float = 0.0
    finished_at: float = 0.0
    deleted_manifests: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (f"gc {verb} {self.manifests_deleted} manifest(s), {self.links_deleted} "
                f"link(s), {self.blobs_deleted} blob(s) ({self.bytes_freed} bytes) and "
                f"{self.uploads_purged} stale upload(s) in {self.repositories} "
                f"repositories ({self.finished_at - self.started_at:.1f} s)")


class GarbageCollector:
    def __init__(self, store: Store, options: GcOptions | None = None) -> None:
        self.store = store
        self.driver = store.driver
        self.options = options or GcOptions()
        self._limit = asyncio.Semaphore(_CONCURRENCY)
        # A dry run deletes nothing, so it remembers what it would have deleted.
        self._dropped: dict[str, set[Digest]] = {}

    async def run(self) -> GcReport:
        report = GcReport(dry_run=self.options.dry_run, started_at=time.time())
        cutoff = report.started_at - self.options.grace
        async for name in self._repositories():
            report.repositories += 1
            await self._sweep_repository(name, cutoff, report)
        await self._sweep_blobs(cutoff, report)
        await self._purge_uploads(report)
        report.finished_at = time.time()
        log.info("%s", report.summary())
        if not self.options.dry_run:
            await self.store.audit.record("gc", "gc:run", "*", None, {
                "manifests": report.manifests_deleted, "links": report.links_deleted,
                "blobs": report.blobs_deleted, "bytesFreed": report.bytes_freed,
                "uploads": report.uploads_purged,
                "deletedManifests": report.deleted_manifests[:200]})
        return report

    # -- listings ------------------------------------------------------------------------------

    def _repositories(self) -> AsyncIterator[str]:
        return self.store.repositories.names()

    def _keys(self, prefix: str) -> AsyncIterator[str]:
        return iter_keys(self.driver, prefix)

    async def _links(self, name: str) -> set[Digest]:
        prefix = paths.layers(name)
        found = set()
        async for key in self._keys(prefix):
            digest = _digest_of(key[len(prefix):])
            if digest is not None:
                found.add(digest)
        return found

    async def _revisions(self, name: str) -> set[Digest]:
        prefix = paths.revisions(name)
        found = set()
        async for key in self._keys(prefix):
            rest = key[len(prefix):]
            if paths.TAG_INDEX not in rest:
                digest = _digest_of(rest)
                if digest is not None:
                    found.add(digest)
        return found

    # -- 1. repositories -----------------------------------------------------------------------

    async def _sweep_repository(self, name: str, cutoff: float, report: GcReport) -> None:
        sweeps = self.store.sweeps
        until = await sweeps.begin_repository(name)
        try:
            until = await self._sweep_manifests(name, cutoff, report, until)
            await self._sweep_links(name, cutoff, report, until)
        except _Lapsed:
            log.warning("gc: the pass over %s ran past its deadline; the rest is left for the "
                        "next run", name)
        finally:
            await sweeps.end_repository(name)

    async def _renewed(self, name: str, until: float) -> float:
        """Renew the repository's marker when half its time is gone; refuse to go on past it
        (a stalled run must not delete after waiting pushes stopped waiting)."""
        now = time.time()
        if now > until - MARGIN:
            raise _Lapsed(name)
        if until - now < SWEEP_TTL / 2:
            return await self.store.sweeps.begin_repository(name)
        return until

    async def _sweep_manifests(self, name: str, cutoff: float, report: GcReport,
                               until: float) -> float:
        manifests = self.store.manifests
        entries = [e async for e in manifests.images(name) if e.revision]
        if not self.options.delete_untagged or not entries:
            return until
        recorded = await _gather(self._limit, [manifests.revision_record(name, e.digest)
                                               for e in entries])
        marks = await self.store.lifecycle.in_use(name)
        keep: set[Digest] = set()
        subjects: dict[Digest, list[Digest]] = {}
        for entry, record in zip(entries, recorded, strict=True):
            if record is None:
                continue
            if (entry.tags or str(entry.digest) in marks
                    or float(record.get("pushedAt", 0)) >= cutoff):
                keep.add(entry.digest)
            subject = _parse(record.get("subject"))
            if subject is not None and self.options.keep_referrers:
                subjects.setdefault(subject, []).append(entry.digest)
        media = {e.digest: (r or {}).get("mediaType") for e, r in zip(entries, recorded,
                                                                      strict=True)}
        # Close over what kept manifests hold on to: index children, referrers.
        pending = list(keep)
        while pending:
            digest = pending.pop()
            held = list(subjects.get(digest, ()))
            if media.get(digest) in mt.INDEXES:
                held += await self._children(name, digest)
            for other in held:
                if other not in keep:
                    keep.add(other)
                    pending.append(other)
        for entry in entries:
            if entry.digest in keep:
                continue
            until = await self._renewed(name, until)
            if not self.options.dry_run and not await manifests.delete_untagged(name,
                                                                                entry.digest):
                continue  # tagged (or gone) meanwhile
            report.manifests_deleted += 1
            report.deleted_manifests.append(f"{name}@{entry.digest}")
            self._drop(name, entry.digest)
        return until

    async def _children(self, name: str, digest: Digest) -> list[Digest]:
        try:
            stored = await self.store.manifests.get(name, str(digest))
            index = parse_manifest(stored.raw, stored.media_type, digest.algorithm)
        except (ManifestUnknown, ManifestInvalid):
            return []
        return [d.digest for d in index.manifests]

    async def _references(self, name: str, digests: set[Digest]) -> set[Digest]:
        """The blobs (config and layers) the given manifests of the repository reference."""

        async def blobs_of(digest: Digest) -> list[Digest]:
            try:
                stored = await self.store.manifests.get(name, str(digest))
                manifest = parse_manifest(stored.raw, stored.media_type, digest.algorithm)
            except (ManifestUnknown, ManifestInvalid):
                return []
            return [d.digest for d in manifest.blobs]

        found: set[Digest] = set()
        for blobs in await _gather(self._limit, [blobs_of(d) for d in digests]):
            found.update(blobs)
        return found

    async def _sweep_links(self, name: str, cutoff: float, report: GcReport,
                           until: float) -> None:
        remaining = await self._revisions(name) - self._dropped.get(name, set())
        referenced = await self._references(name, remaining)
        for digest in await self._links(name) - referenced:
            key = paths.layer_link(name, digest)
            try:
                if (await self.driver.stat(key)).modified >= cutoff:
                    continue
            except KeyNotFound:
                continue
            until = await self._renewed(name, until)
            report.links_deleted += 1
            self._drop(name, digest)
            if not self.options.dry_run:
                await self.driver.delete(key)
                self.store.pulls.forget_blob(name, digest)

    # -- 2. blobs ------------------------------------------------------------------------------

    async def _in_use(self) -> set[Digest]:
        """Every blob some repository links or names as a manifest."""
        used: set[Digest] = set()
        async for name in self._repositories():
            found = await self._links(name) | await self._revisions(name)
            used |= found - self._dropped.get(name, set())
        return used

    def _drop(self, name: str, digest: Digest) -> None:
        if self.options.dry_run:
            self._dropped.setdefault(name, set()).add(digest)

    async def _sweep_blobs(self, cutoff: float, report: GcReport) -> None:
        used = await self._in_use()
        candidates: dict[Digest, int] = {}
        async for key in self._keys(f"{paths.BLOBS}/"):
            digest = _digest_of_blob(key)
            if digest is None or digest in used:
                continue
            try:
                stat = await self.driver.stat(key)
            except KeyNotFound:
                continue
            if stat.modified < cutoff:
                candidates[digest] = stat.size
        if not candidates:
            return
        if self.options.dry_run:
            report.blobs_deleted = len(candidates)
            report.bytes_freed = sum(candidates.values())
            return
        sweeps = self.store.sweeps
        until = time.time() + TOMB_TTL
        await _gather(self._limit, [sweeps.announce_blob(d, until) for d in candidates])
        # Looked at only after every tombstone is down: a link written before a tombstone was
        # is seen here; one written after it waits for us (storage/sweeps.py).
        still_used = await self._in_use()
        doomed = []
        for digest in candidates:
            if digest in still_used:
                report.blobs_spared += 1
            else:
                doomed.append(digest)
        for start in range(0, len(doomed), _PAGE):
            batch = doomed[start:start + _PAGE]
            if time.time() > until - MARGIN:
                log.warning("gc: blob sweep ran past its tombstones' deadline; %d blob(s) are "
                            "left for the next run", len(doomed) - start)
                break
            await self.driver.delete_many([paths.blob(d) for d in batch])
            report.blobs_deleted += len(batch)
            report.bytes_freed += sum(candidates[d] for d in batch)
        await self.driver.delete_many([paths.gc_tomb(d) for d in candidates])

    # -- 3. uploads ----------------------------------------------------------------------------

    async def _purge_uploads(self, report: GcReport) -> None:
        oldest = time.time() - self.options.upload_max_age
        prefix = f"{paths.UPLOADS}/"
        seen: set[str] = set()
        async for key in self._keys(prefix):
            upload_id = key[len(prefix):].split("/", 1)[0]
            if upload_id in seen:
                continue
            seen.add(upload_id)
            if await self._upload_started(upload_id, key) >= oldest:
                continue
            report.uploads_purged += 1
            if not self.options.dry_run:
                await self.driver.delete_prefix(paths.upload(upload_id))

    async def _upload_started(self, upload_id: str, key: str) -> float:
        info = paths.upload_info(upload_id)
        try:
            record = records.load(await self.driver.get(info, records.MAX_RECORD), info)
            return float(record.get("startedAt", 0))
        except KeyNotFound:
            try:  # bytes without a record: as old as the bytes
                return (await self.driver.stat(key)).modified
            except KeyNotFound:
                return time.time()


class _Lapsed(Exception):
    """The repository's sweep marker is about to lapse: stop deleting in it."""


def _digest_of(rest: str) -> Digest | None:
    """`sha256/<hex>` (a link or revision key's tail) as a digest."""
    try:
        return Digest.parse(rest.replace("/", ":", 1))
    except DigestInvalid:
        return None


def _digest_of_blob(key: str) -> Digest | None:
    parts = key.split("/")
    if len(parts) != 4:
        return None
    return _digest_of(f"{parts[1]}/{parts[3]}")


def _parse(value: object) -> Digest | None:
    if not isinstance(value, str):
        return None
    try:
        return Digest.parse(value)
    except DigestInvalid:
        return None


async def _gather(limit: asyncio.Semaphore, tasks: list[Awaitable[T]]) -> list[T]:
    async def one(task: Awaitable[T]) -> T:
        async with limit:
            return await task
    return list(await asyncio.gather(*(one(t) for t in tasks)))
