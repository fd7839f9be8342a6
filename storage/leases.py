"""Leases: one replica at a time does a periodic job (lifecycle runs, garbage collection).

A lease is a record `leases/<job>` naming its holder and when it lapses. Taking it is a
put-if-absent; a lapsed lease is removed and taken again, and only one of several replicas
racing for it wins the put. Leases only avoid duplicate work: every job they guard is safe to
run twice."""

from __future__ import annotations

import time
import uuid

from storage import paths, records
from storage.drivers.base import Driver
from storage.errors import KeyBusy, KeyNotFound


class Leases:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.holder = uuid.uuid4().hex  # this process

    async def acquire(self, job: str, ttl: float, now: float | None = None) -> bool:
        """Take (or renew) the lease on `job` for `ttl` seconds; False when another holds it."""
        now = time.time() if now is None else now
        key = paths.lease(job)
        record = records.dump({"holder": self.holder, "until": now + ttl})
        if await self.driver.put_if_absent(key, record):
            return True
        try:
            current = records.load(await self.driver.get(key, records.MAX_RECORD), key)
        except KeyNotFound:
            return await self.driver.put_if_absent(key, record)
        if current.get("holder") == self.holder:
            await self.driver.put(key, record)
            return True
        if float(current.get("until", 0)) > now:
            return False
        try:
            await self.driver.delete(key)
        except KeyBusy:  # another replica is taking the lapsed lease this very moment
            return False
        return await self.driver.put_if_absent(key, record)

    async def release(self, job: str) -> None:
        key = paths.lease(job)
        try:
            current = records.load(await self.driver.get(key, records.MAX_RECORD), key)
        except KeyNotFound:
            return
        if current.get("holder") == self.holder:
            await self.driver.delete(key)
