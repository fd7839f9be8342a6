"""Image replication (ECR's private image replication): the registry's replication
configuration, which destinations a push goes to, and each image's status per destination.

The configuration is one record (`registry/replication`): ECR's `rules`, each with
`destinations` (`region`, `registryId`) and optional `repositoryFilters` (PREFIX_MATCH). A
destination is known to this process by the name the settings give it (`Target`).

Jobs ride on the durable event queue (storage/events.py): `ReplicationSource`, asked at each
emit, names the queue `replicate.<destination>` for every destination a rule matching the
pushed repository lists, so the job is in storage before the push answers. Before that it
notes the job under the image (`_replication/<destination>/<alg>/<hex>+jobs/<event id>`); the
copier (registry/replication.py) writes the outcome (`.../<alg>/<hex>`: COMPLETE or FAILED)
and then removes the note. An image's status for a destination is IN_PROGRESS while a noted
job is still queued, else the outcome recorded last.

Deletes are not replicated (nor are they by ECR), and neither are repositories a pull-through
cache rule covers: their manifests are stored before their blobs arrive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from storage import paths, records
from storage.content.digest import Digest
from storage.drivers.base import Driver
from storage.errors import KeyNotFound
from storage.events import DEAD, PENDING

QUEUE_PREFIX = "replicate."
CACHE_SECONDS = 5.0  # other replicas see a configuration change within this
NOTE_GRACE = 30.0  # a job note younger than this counts while its job is being written
IN_PROGRESS, COMPLETE, FAILED = "IN_PROGRESS", "COMPLETE", "FAILED"
MAX_JOBS_LISTED = 1000


@dataclass(frozen=True, slots=True)
class Target:
    """A destination the settings configure: its name here and its ECR identity."""

    name: str
    region: str
    registry_id: str


@dataclass(frozen=True, slots=True)
class Status:
    status: str
    failure_code: str | None = None


def queue_name(destination: str) -> str:
    return QUEUE_PREFIX + destination


def rule_matches(rule: dict[str, Any], repository: str) -> bool:
    filters = rule.get("repositoryFilters") or []
    return not filters or any(
        f.get("filterType") == "PREFIX_MATCH" and repository.startswith(str(f.get("filter")))
        for f in filters)


class ReplicationStore:
    def __init__(self, driver: Driver, targets: Iterable[Target] = (),
                 excluded: Callable[[str], Awaitable[bool]] | None = None) -> None:
        self.driver = driver
        self.targets = {(t.region, t.registry_id): t for t in targets}
        self.excluded = excluded  # repositories never replicated (pull-through caches)
        self._cached: tuple[float, dict[str, Any]] | None = None

    # -- the configuration ---------------------------------------------------------------------

    async def configuration(self, fresh: bool = False) -> dict[str, Any]:
        """The stored configuration (`{"rules": []}` when none), cached for a few seconds so
        a push does not read it from storage each time."""
        now = time.monotonic()
        if not fresh and self._cached is not None and now - self._cached[0] < CACHE_SECONDS:
            return self._cached[1]
        key = paths.replication_configuration()
        try:
            config = records.load(await self.driver.get(key, records.MAX_RECORD), key)
        except KeyNotFound:
            config = {"rules": []}
        self._cached = (now, config)
        return config

    async def put_configuration(self, config: dict[str, Any]) -> None:
        await self.driver.put(paths.replication_configuration(), records.dump(config))
        self._cached = (time.monotonic(), config)

    def target(self, region: str, registry_id: str) -> Target | None:
        return self.targets.get((region, registry_id))

    def destinations(self, config: dict[str, Any], repository: str) -> list[Target]:
        """The configured destinations the rules matching `repository` name, each once, in
        rule order (destinations the settings do not know are skipped)."""
        found: list[Target] = []
        for rule in config.get("rules", []):
            if not rule_matches(rule, repository):
                continue
            for destination in rule.get("destinations", []):
                target = self.target(str(destination.get("region")),
                                     str(destination.get("registryId")))
                if target is not None and target not in found:
                    found.append(target)
        return found

    # -- queueing (a subscription source of the event queue) -----------------------------------

    async def queues_for(self, event: dict[str, Any]) -> list[str]:
        if event.get("action") != "PUSH" or not self.targets:
            return []
        repository = str(event["repository"])
        targets = self.destinations(await self.configuration(), repository)
        if not targets or (self.excluded is not None and await self.excluded(repository)):
            return []
        digest = Digest.parse(str(event["digest"]))
        note = records.dump({"queuedAt": time.time()})
        await asyncio.gather(*(
            self.driver.put(paths.replication_job(repository, t.name, digest, str(event["id"])),
                            note)
            for t in targets))
        return [queue_name(t.name) for t in targets]

    # -- status --------------------------------------------------------------------------------

    async def finished(self, repository: str, digest: Digest, destination: str, event_id: str,
                       status: str, failure_code: str | None = None) -> None:
        """Record a job's outcome, then drop its note (the caller removes the job itself)."""
        record: dict[str, Any] = {"status": status, "at": time.time()}
        if failure_code is not None:
            record["failureCode"] = failure_code
        await self.driver.put(paths.replication_status(repository, destination, digest),
                              records.dump(record))
        await self.driver.delete(paths.replication_job(repository, destination, digest,
                                                       event_id))

    async def status(self, repository: str, digest: Digest, destination: str) -> Status | None:
        """IN_PROGRESS while a job for the image is queued, else the last outcome; None when
        the image was never queued for the destination."""
        prefix = paths.replication_jobs(repository, destination, digest)
        queue = queue_name(destination)
        for key in await self.driver.list(prefix, limit=MAX_JOBS_LISTED):
            event_id = key[len(prefix):]
            if await self.driver.exists(f"{PENDING}{queue}/{event_id}"):
                return Status(IN_PROGRESS)
            if await self.driver.exists(f"{DEAD}{queue}/{event_id}"):
                continue  # its outcome is recorded (or is about to be)
            if await self._young(key):
                return Status(IN_PROGRESS)  # noted, the job not yet written
        key = paths.replication_status(repository, destination, digest)
        try:
            record = records.load(await self.driver.get(key, records.MAX_RECORD), key)
        except KeyNotFound:
            return None
        code = record.get("failureCode")
        return Status(str(record.get("status", FAILED)),
                      str(code) if code is not None else None)

    async def _young(self, key: str) -> bool:
        try:
            record = records.load(await self.driver.get(key, records.MAX_RECORD), key)
        except KeyNotFound:
            return False
        return time.time() - float(record.get("queuedAt", 0)) < NOTE_GRACE
