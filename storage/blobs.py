"""Blobs: global content-addressed bytes, visible in a repository only through its link."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from storage import paths
from storage.caches import PullCache
from storage.content.digest import Digest
from storage.drivers.base import Driver
from storage.errors import BlobUnknown, KeyNotFound, RangeNotSatisfiable
from storage.repositories import RepositoryStore
from storage.sweeps import Sweeps


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: Digest
    size: int


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start


class BlobStore:
    def __init__(self, driver: Driver, repositories: RepositoryStore, sweeps: Sweeps,
                 cache: PullCache | None = None) -> None:
        self.sweeps = sweeps
        self.driver = driver
        self.repositories = repositories
        self.cache = cache or PullCache(0.0, 1)

    async def stat(self, name: str, digest: Digest, pull: bool = False) -> BlobInfo:
        """The blob as this repository sees it; BlobUnknown unless linked here and present.
        A `pull` may answer from memory within `repositories.tag_cache_seconds`."""
        started = time.monotonic()
        if pull:
            size = self.cache.blob(name, digest, started)
            if size is not None:
                return BlobInfo(digest, size)
        try:  # both at once where that helps (S3): a push checks every layer this way
            _, stat = await self.driver.stat_many([paths.layer_link(name, digest),
                                                   paths.blob(digest)])
        except KeyNotFound:
            raise BlobUnknown(f"blob {digest} unknown to repository", {"digest": str(digest)}) \
                from None
        self.cache.keep_blob(name, digest, stat.size, started)
        return BlobInfo(digest, stat.size)

    async def linked(self, name: str, digest: Digest) -> bool:
        try:
            await self.stat(name, digest)
        except BlobUnknown:
            return False
        return True

    async def stored(self, digest: Digest) -> int | None:
        """Size of the blob in the global store, whichever repository holds it."""
        try:
            return (await self.driver.stat(paths.blob(digest))).size
        except KeyNotFound:
            return None

    async def link(self, name: str, digest: Digest) -> None:
        # The catalog entry first: GC finds links through the catalog.
        await self.repositories.ensure(name)
        await self.driver.put(paths.layer_link(name, digest), str(digest).encode())

    async def settled(self, digest: Digest) -> bool:
        """After linking `digest`: wait out a GC deletion of it in progress, then whether the
        bytes exist (the caller supplies them again when not; see storage/sweeps.py)."""
        await self.sweeps.wait_blob(digest)
        return await self.stored(digest) is not None

    async def mount(self, name: str, digest: Digest, source: str | None,
                    readable: Callable[[str], Awaitable[bool]] | None = None) -> bool:
        """Link a blob that `source` (or, without a source, the registry) already holds.

        A mount never exposes a blob the caller could not read: `source` must link the blob
        and pass `readable`; without a source the blob may come from anywhere only when
        `readable` is None (no access control), else the caller must upload it."""
        if source is not None:
            if not await self.linked(source, digest):
                return False
            if readable is not None and not await readable(source):
                return False
        elif readable is not None or await self.stored(digest) is None:
            return False
        await self.link(name, digest)
        if not await self.settled(digest):  # collected meanwhile: the client uploads it
            await self.driver.delete(paths.layer_link(name, digest))
            self.cache.forget_blob(name, digest)
            return False
        return True

    async def unlink(self, name: str, digest: Digest) -> None:
        await self.stat(name, digest)
        await self.driver.delete(paths.layer_link(name, digest))
        self.cache.forget_blob(name, digest)

    def read(self, digest: Digest, byte_range: ByteRange | None = None) -> AsyncIterator[bytes]:
        if byte_range is None:
            return self.driver.read(paths.blob(digest))
        return self.driver.read(paths.blob(digest), byte_range.start, byte_range.end)

    async def redirect_url(self, digest: Digest, expires_in: int = 1200) -> str | None:
        return await self.driver.redirect_url(paths.blob(digest), expires_in)


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """One `bytes=` range per RFC 9110; None means serve the whole blob (absent, or a form we
    may ignore, such as several ranges). RangeNotSatisfiable when it lies beyond the end."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    if not sep:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                raise RangeNotSatisfiable("empty suffix range", size)
            return ByteRange(max(0, size - suffix), size)
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start >= size:
        raise RangeNotSatisfiable(f"range starts beyond the blob's {size} bytes", size)
    if end <= start:
        return None
    return ByteRange(start, min(end, size))
