"""Upload sessions: bytes and a small record in storage, so any process can continue any upload.

The running hash is cached in the process that wrote the previous chunk, keyed by the size it
covers; a process that lacks it (or finds the size moved on) rehashes the stored bytes.
Completion seals the data (no appender can change it afterwards), verifies the digest, then
moves it to its content address and links it: a crash leaves nothing visible or a complete blob.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

from storage import paths, records
from storage.blobs import BlobStore
from storage.content.digest import Digest, new_hasher
from storage.drivers.base import Driver
from storage.errors import (
    BlobUploadUnknown,
    DigestInvalid,
    KeyBusy,
    KeyNotFound,
    OffsetMismatch,
    UploadBusy,
    UploadOffsetMismatch,
)

_HASH_CACHE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class UploadSession:
    id: str
    repository: str
    algorithm: str
    started_at: float
    size: int
    committed: str | None = None  # the digest being committed, once verified


class UploadStore:
    def __init__(self, driver: Driver, blobs: BlobStore) -> None:
        self.driver = driver
        self.blobs = blobs
        # upload id -> (bytes covered, hasher); bounded, per process
        self._hashes: OrderedDict[str, tuple[int, Any]] = OrderedDict()

    async def start(self, name: str, algorithm: str = "sha256") -> UploadSession:
        new_hasher(algorithm)  # validates the algorithm
        upload_id = str(uuid.uuid4())
        started = time.time()
        record = {"repository": name, "algorithm": algorithm, "startedAt": started}
        await self.driver.put(paths.upload_info(upload_id), records.dump(record))
        return UploadSession(upload_id, name, algorithm, started, 0)

    async def get(self, name: str, upload_id: str) -> UploadSession:
        unknown = BlobUploadUnknown("upload session unknown", {"uuid": upload_id[:64]})
        if not _valid_id(upload_id):
            raise unknown
        key = paths.upload_info(upload_id)
        try:
            record = records.load(await self.driver.get(key, records.MAX_RECORD), key)
        except KeyNotFound:
            raise unknown from None
        if record.get("repository") != name:
            raise unknown
        return UploadSession(upload_id, name, str(record["algorithm"]),
                             float(record["startedAt"]), await self._size(upload_id),
                             record.get("committed"))

    async def _size(self, upload_id: str) -> int:
        try:
            return (await self.driver.stat(paths.upload_data(upload_id))).size
        except KeyNotFound:
            return 0

    async def append(self, session: UploadSession, chunks: AsyncIterable[bytes],
                     start: int | None = None) -> int:
        """Append a chunk; `start` (from Content-Range) must equal the current size."""
        offset = session.size if start is None else start
        if offset != session.size:
            raise UploadOffsetMismatch(
                f"chunk starts at {offset} but the upload has {session.size} bytes",
                session.size,
            )
        hasher = self._take_hasher(session.id, session.algorithm, offset)
        try:
            size = await self.driver.append(
                paths.upload_data(session.id), offset, chunks,
                hasher.update if hasher is not None else None,
            )
        except OffsetMismatch as exc:
            raise UploadOffsetMismatch(
                f"chunk starts at {offset} but the upload has {exc.size} bytes", exc.size
            ) from None
        except KeyBusy:
            raise UploadBusy("another request is writing to this upload") from None
        except KeyNotFound:
            raise BlobUploadUnknown("upload session unknown", {"uuid": session.id}) from None
        # Any other failure leaves no cache entry: the stored bytes are the truth.
        if hasher is not None:
            self._remember(session.id, size, hasher)
        return size

    async def complete(self, session: UploadSession, expected: Digest,
                       final: AsyncIterable[bytes] | None = None) -> int:
        """Verify and commit the upload as blob `expected` in the session's repository."""
        if session.committed == str(expected):
            # An earlier attempt verified and stored the bytes, then failed before the link.
            stored = await self.blobs.stored(expected)
            if stored is not None:
                await self.blobs.link(session.repository, expected)
                if not await self.blobs.settled(expected):
                    await self.cancel(session)
                    raise BlobUploadUnknown("the upload's blob was collected; upload it again",
                                            {"uuid": session.id})
                await self.cancel(session)
                return stored
        if final is not None:
            session = _with_size(session, await self.append(session, final))
        data_key = paths.upload_data(session.id)
        size = session.size  # as read with the session, or as the final append left it
        if size == 0 and not await self.driver.exists(data_key):
            await self.driver.put(data_key, b"")  # an empty blob never had a chunk
        try:
            await self.driver.seal(data_key, size)
        except (KeyBusy, OffsetMismatch):
            raise UploadBusy("another request is writing to this upload") from None
        except KeyNotFound:
            raise BlobUploadUnknown("upload session unknown", {"uuid": session.id}) from None
        actual = await self._digest(session.id, data_key, size, expected.algorithm)
        if actual != expected:
            await self.cancel(session)
            raise DigestInvalid(
                f"upload digest {expected} does not match the content ({actual})",
                {"expected": str(expected), "actual": str(actual)},
            )
        record = {"repository": session.repository, "algorithm": session.algorithm,
                  "startedAt": session.started_at, "committed": str(expected)}
        await self.driver.put(paths.upload_info(session.id), records.dump(record))
        # Link first, then look: a GC about to delete this content either sees the link or is
        # waited out, and the bytes are kept until we know the stored copy is there to stay.
        await self.blobs.link(session.repository, expected)
        if await self.blobs.settled(expected):
            await self.driver.delete(data_key)  # already stored: commits are idempotent
        else:
            await self.driver.move(data_key, paths.blob(expected))
        await self.cancel(session)
        return size

    async def cancel(self, session: UploadSession) -> None:
        self._hashes.pop(session.id, None)
        await self.driver.delete(paths.upload_info(session.id))
        await self.driver.delete_prefix(paths.upload(session.id))

    async def _digest(self, upload_id: str, key: str, size: int, algorithm: str) -> Digest:
        """The digest of the sealed bytes: from this process's running hash when it covers
        exactly them, else by reading them back."""
        cached = self._hashes.pop(upload_id, None)
        if cached is not None and cached[0] == size and cached[1].name == algorithm:
            return Digest(algorithm, cached[1].hexdigest())
        hasher = new_hasher(algorithm)
        await self.driver.scan(key, hasher.update)
        return Digest(algorithm, hasher.hexdigest())

    def _take_hasher(self, upload_id: str, algorithm: str, offset: int) -> Any:
        cached = self._hashes.pop(upload_id, None)
        if offset == 0:
            return new_hasher(algorithm)
        if cached is not None and cached[0] == offset:
            return cached[1]
        return None  # another process wrote the earlier bytes: rehash at completion

    def _remember(self, upload_id: str, size: int, hasher: Any) -> None:
        self._hashes[upload_id] = (size, hasher)
        self._hashes.move_to_end(upload_id)
        while len(self._hashes) > _HASH_CACHE_SIZE:
            self._hashes.popitem(last=False)


def _valid_id(upload_id: str) -> bool:
    try:
        return str(uuid.UUID(upload_id)) == upload_id
    except ValueError:
        return False


def _with_size(session: UploadSession, size: int) -> UploadSession:
    return UploadSession(session.id, session.repository, session.algorithm,
                         session.started_at, size, session.committed)
