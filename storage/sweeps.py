"""How garbage collection and pushes stay out of each other's way, with no lock service.

GC announces what it is about to do, then looks; a push acts, then looks for announcements.
With storage that reads its own writes (a filesystem, S3 since 2020), one of the two always
sees the other:

- Blobs. Before deleting unreferenced blobs, GC writes a tombstone per blob
  (`gc/tombs/<alg>/<hex>`, valid until a deadline) and only then lists every repository's links
  again; a blob linked meanwhile is spared. Whoever links a blob (an upload's completion, a
  mount, a manifest's own bytes) writes the link first and then looks for a tombstone: if one
  is there it waits until GC has finished with that blob, and then checks that the blob still
  exists, supplying the bytes again (or refusing the mount) if not.
- Repositories. Before deleting a repository's untagged manifests and unreferenced links, GC
  writes `repositories/<name>/_gc` (renewed while it works) and only then lists the
  repository. A manifest push writes its revision first and then looks for that marker: if a
  pass is in progress it waits for the end, re-creates its revision if GC removed it, and
  checks that every blob it references is still linked, else fails MANIFEST_BLOB_UNKNOWN.
  The marker outlives the pass (its deadline set to 0, a new pass id each pass), so a push
  that reads it before its reference check and again after its writes, and finds the same
  finished record both times, knows that no pass ran in between and skips those checks.

Announcements carry a deadline. Waiters stop waiting at the deadline (a GC that died leaves
nothing blocking for long); GC stops deleting `MARGIN` seconds before it, so nobody acts on a
lapsed announcement that GC still honours, as long as clocks agree to within the margin.
"""

from __future__ import annotations

import asyncio
import secrets
import time

from storage import paths, records
from storage.content.digest import Digest
from storage.drivers.base import Driver
from storage.errors import KeyNotFound, StorageUnavailable

TOMB_TTL = 600.0
SWEEP_TTL = 120.0
MARGIN = 30.0
_POLL_FIRST, _POLL_MAX = 0.05, 1.0


class Sweeps:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    # -- GC's side ------------------------------------------------------------------------------

    async def announce_blob(self, digest: Digest, until: float) -> None:
        await self.driver.put(paths.gc_tomb(digest), records.dump({"until": until}))

    async def begin_repository(self, name: str, ttl: float = SWEEP_TTL,
                               pass_id: str | None = None) -> float:
        """Announce (or renew) a pass over repository `name`; its deadline."""
        until = time.time() + ttl
        record = {"until": until, "pass": pass_id or secrets.token_hex(8)}
        await self.driver.put(paths.gc_sweep(name), records.dump(record))
        return until

    async def end_repository(self, name: str) -> None:
        """The pass is over; its record stays, finished, as a trace that a pass happened."""
        record = {"until": 0, "ended": time.time(), "pass": secrets.token_hex(8)}
        await self.driver.put(paths.gc_sweep(name), records.dump(record))

    # -- everyone else's side -------------------------------------------------------------------

    async def wait_blob(self, digest: Digest) -> bool:
        """Wait while GC may be deleting blob `digest`; whether it had to wait."""
        return await self._wait(paths.gc_tomb(digest))

    async def repository_state(self, name: str) -> bytes | None:
        """The repository's marker as stored (None if no pass ever ran): two equal reads
        that are not `running` mean no pass began or ended between them."""
        try:
            return await self.driver.get(paths.gc_sweep(name), records.MAX_RECORD)
        except KeyNotFound:
            return None

    @staticmethod
    def running(state: bytes | None) -> bool:
        """Whether a marker read by `repository_state` announces a pass in progress (or one
        whose record cannot be read: assume the worst)."""
        if state is None:
            return False
        try:
            until = records.load(state, "gc marker").get("until")
        except StorageUnavailable:
            return True
        return not isinstance(until, int | float) or until > time.time()

    async def wait_repository(self, name: str) -> bool:
        """Wait while a GC pass over repository `name` is in progress; whether it waited."""
        return await self._wait(paths.gc_sweep(name))

    async def _wait(self, key: str) -> bool:
        delay = _POLL_FIRST
        waited = False
        while True:
            until = await self._deadline(key)
            if until is None or until <= time.time():
                return waited
            waited = True
            await asyncio.sleep(min(delay, max(0.0, until - time.time())))
            delay = min(delay * 2, _POLL_MAX)

    async def _deadline(self, key: str) -> float | None:
        try:
            record = records.load(await self.driver.get(key, records.MAX_RECORD), key)
        except KeyNotFound:
            return None
        value = record.get("until")
        return float(value) if isinstance(value, int | float) else None
