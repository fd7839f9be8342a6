"""Image events (push, tag move, delete), queued durably in storage before the request that
raised them answers, then delivered at least once to each subscribed endpoint.

Layout: `events/pending/<endpoint>/<id>` holds one record per event and endpoint, written when
the event happens (filters are applied then; a subscription source, such as replication, may
name further queues per event: `replicate.<destination>`); `events/dead/<endpoint>/<id>` holds
what failed `max_attempts` times. Ids start with the time in nanoseconds, so a listing is in
time order and an endpoint's queue is delivered in that order (one sender per endpoint, chosen
by a lease; an event that keeps failing holds back the ones after it until it is delivered or
dead-lettered, which keeps each repository's events in order). A record is deleted only after
its endpoint acknowledged it: a crash in between means it is delivered again (at least once).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from storage import records
from storage.drivers.base import Driver
from storage.errors import KeyNotFound
from storage.listing import iter_keys

PENDING = "events/pending/"
DEAD = "events/dead/"
MAX_EVENT_RECORD = 64 * 1024


@dataclass(frozen=True, slots=True)
class Subscription:
    """Which events an endpoint wants: repository wildcards (none: all) and actions."""

    endpoint: str
    repositories: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()

    def wants(self, event: dict[str, Any]) -> bool:
        if self.actions and event["action"] not in self.actions:
            return False
        return not self.repositories or any(
            _wildcard(p).fullmatch(event["repository"]) for p in self.repositories)


@lru_cache(maxsize=256)
def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


class SubscriptionSource(Protocol):
    """Subscriptions decided per event when it is emitted (replication rules kept in storage):
    the queues, beside the configured endpoints, that should get it. May write its own
    bookkeeping first; an exception fails the emit, as a failed queue write does."""

    async def queues_for(self, event: dict[str, Any]) -> list[str]: ...


def new_id() -> str:
    return f"{time.time_ns():020d}-{os.urandom(6).hex()}"


class EventQueue:
    def __init__(self, driver: Driver, subscriptions: Iterable[Subscription] = (),
                 sources: Iterable[SubscriptionSource] = ()) -> None:
        self.driver = driver
        self.subscriptions = tuple(subscriptions)
        self.sources = list(sources)
        self.wakeup = asyncio.Event()  # set when this process queues something

    @property
    def enabled(self) -> bool:
        return bool(self.subscriptions or self.sources)

    def add_source(self, source: SubscriptionSource) -> None:
        self.sources.append(source)

    async def emit(self, action: str, repository: str, digest: str, tag: str | None = None,
                   media_type: str | None = None, size: int | None = None) -> None:
        """Queue an event for every endpoint that wants it (durable when this returns)."""
        if not self.enabled:
            return
        event: dict[str, Any] = {"id": new_id(), "time": time.time(), "action": action,
                                 "repository": repository, "digest": digest}
        if tag is not None:
            event["tag"] = tag
        if media_type is not None:
            event["mediaType"] = media_type
        if size is not None:
            event["size"] = size
        wanted = [s.endpoint for s in self.subscriptions if s.wants(event)]
        for source in self.sources:
            wanted += [q for q in await source.queues_for(event) if q not in wanted]
        await asyncio.gather(*(self.driver.put(f"{PENDING}{endpoint}/{event['id']}",
                                               records.dump({"event": event, "attempts": 0}))
                               for endpoint in wanted))
        if wanted:
            self.wakeup.set()

    async def pending(self, endpoint: str, limit: int = 100) -> list[tuple[str, dict[str, Any]]]:
        return await self._records(f"{PENDING}{endpoint}/", limit)

    async def dead(self, endpoint: str, limit: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        return await self._records(f"{DEAD}{endpoint}/", limit)

    async def _records(self, prefix: str, limit: int) -> list[tuple[str, dict[str, Any]]]:
        found = []
        for key in await self.driver.list(prefix, limit=limit):
            try:
                found.append((key, records.load(await self.driver.get(key, MAX_EVENT_RECORD),
                                                key)))
            except KeyNotFound:
                continue  # delivered meanwhile
        return found

    async def depth(self, queue: str, limit: int = 100_000) -> tuple[int, int]:
        """How many records wait in `queue` (pending) and how many were given up on (dead),
        each counted up to `limit`."""
        counts = []
        for prefix in (f"{PENDING}{queue}/", f"{DEAD}{queue}/"):
            n = 0
            async for _ in iter_keys(self.driver, prefix):
                n += 1
                if n >= limit:
                    break
            counts.append(n)
        return counts[0], counts[1]

    async def delivered(self, key: str) -> None:
        await self.driver.delete(key)

    async def failed(self, key: str, record: dict[str, Any], error: str,
                     retry_at: float) -> None:
        record = {**record, "attempts": int(record.get("attempts", 0)) + 1,
                  "lastError": error[:500], "retryAt": retry_at}
        await self.driver.put(key, records.dump(record))

    async def bury(self, endpoint: str, key: str, record: dict[str, Any], error: str) -> None:
        """Move an event that failed too often to the endpoint's dead-letter list."""
        event_id = key.rsplit("/", 1)[1]
        record = {**record, "attempts": int(record.get("attempts", 0)) + 1,
                  "lastError": error[:500], "diedAt": time.time()}
        await self.driver.put(f"{DEAD}{endpoint}/{event_id}", records.dump(record))
        await self.driver.delete(key)

    async def replay(self, endpoint: str, ids: Iterable[str] = ()) -> int:
        """Queue dead-lettered events again (all, or those named); how many."""
        wanted = set(ids)
        count = 0
        for key, record in await self.dead(endpoint, limit=100000):
            event_id = key.rsplit("/", 1)[1]
            if wanted and event_id not in wanted:
                continue
            fresh = {"event": record["event"], "attempts": 0}
            await self.driver.put(f"{PENDING}{endpoint}/{event_id}", records.dump(fresh))
            await self.driver.delete(key)
            count += 1
        if count:
            self.wakeup.set()
        return count
