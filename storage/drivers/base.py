"""The storage driver contract: bytes at `/`-separated keys, nothing more.

Keys form a tree, as paths do: no key is also the folder of another key (the storage layout
in `storage/paths.py` never needs that). A driver knows nothing of digests, manifests or
repositories. Every blocking call (file I/O,
boto3) happens inside the driver behind one bounded thread boundary, so the stores above are
plain coroutines that never block the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from storage.errors import StorageUnavailable

Observer = Callable[[bytes | memoryview], object]  # hashlib's update takes either


@dataclass(frozen=True, slots=True)
class Stat:
    size: int
    modified: float  # seconds since the epoch


class Driver(Protocol):
    name: str

    async def get(self, key: str, max_size: int | None = None) -> bytes:
        """The whole value of a small object: KeyNotFound if absent, DriverError if larger
        than max_size."""

    async def put(self, key: str, data: bytes) -> None:
        """Store a small object atomically: readers see the old value or the new, never a mix."""

    async def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create the object unless it exists; True when this call created it."""

    async def put_ordered(self, items: list[tuple[str, bytes, bool]]) -> list[bool]:
        """Store several small objects so that they become visible in the given order, each
        `(key, data, if_absent)` as `put` (if_absent False) or `put_if_absent` would; the result
        of each. A reader that sees an object sees every object before it. Drivers may make
        them durable together before the first becomes visible (the filesystem fsyncs them in
        parallel)."""

    async def stat(self, key: str) -> Stat:
        """Size and modification time. KeyNotFound if absent."""

    async def stat_many(self, keys: list[str]) -> list[Stat]:
        """`stat` of each key, in order; KeyNotFound if any is absent. At once where the backend
        gains from it (S3 round trips), one after the other where each is immediate."""

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove one object; absent is not an error. KeyBusy: another request wrote it at
        the same moment (it is there, as that request left it)."""

    async def delete_many(self, keys: list[str]) -> None:
        """Delete every key (missing ones are fine); batched where the backend can."""

    async def delete_prefix(self, prefix: str) -> None:
        """Remove every object whose key starts with `prefix` (a `/`-terminated folder)."""

    async def list(
        self, prefix: str, start_after: str | None = None, limit: int | None = None
    ) -> list[str]:
        """Keys under `prefix` (a `/`-terminated folder), recursively, in byte order of the
        whole key, strictly after `start_after`, at most `limit`: one page costs one page."""

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream bytes [start, end) of an object in bounded chunks. KeyNotFound if absent."""

    async def append(
        self, key: str, offset: int, chunks: AsyncIterable[bytes], observe: Observer | None = None
    ) -> int:
        """Append a stream to an object that must currently be exactly `offset` bytes long
        (0 creates it). One appender per key at a time: another gets KeyBusy, or, if it
        finds out only at the end, OffsetMismatch with the size the first recorded.
        OffsetMismatch carries the real size; a sealed object refuses appends with KeyNotFound.
        `observe` sees every byte that is written, in order, in the driver's thread. Returns
        the new size.
        Bytes received before a failure stay appended. `stat` reports the size appended so far;
        `read` and `scan` are only meaningful once the object is sealed."""

    async def seal(self, key: str, size: int) -> None:
        """Close an appended object to further appends and make it a plain, durable object
        at the same key, provided it is exactly `size` bytes long (OffsetMismatch otherwise;
        KeyBusy while an append is running). Idempotent on a sealed object of that size."""

    async def scan(self, key: str, observe: Observer) -> int:
        """Feed the whole object to `observe` in the driver's thread; returns its size."""

    async def move(self, src: str, dst: str) -> None:
        """Make `src` durable and place it at `dst` atomically (replacing dst), then drop src."""

    async def redirect_url(self, key: str, expires_in: int) -> str | None:
        """A URL a client may GET the object from directly, or None when not supported."""

    async def close(self) -> None: ...


async def probe_write(driver: Driver, key: str) -> str | None:
    """Write and remove a small object at `key`: None when that works, else what is wrong (how
    /readyz learns that storage which refused writes takes them again)."""
    try:
        await driver.put(key, b"probe")
        await driver.delete(key)
    except StorageUnavailable as exc:
        return exc.message
    return None
