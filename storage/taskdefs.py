"""Which images each ECS task definition family holds in use (`registry taskdef`).

A family holds an in-use mark (storage/lifecycle.py) on every image its last resolved task
definition pins, under one holder name of its own, so that lifecycle policies and GC keep
them. The record `taskdefs/<family>` lists exactly those images, so that a new resolve of the
family, or its release, removes exactly the marks it made and never another holder's.

Order (no mark that the record does not name): before a mark is made, the record names its
image; a mark is removed before the record forgets it.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from storage import records
from storage.content.digest import Digest
from storage.drivers.base import Driver
from storage.errors import DigestInvalid, KeyNotFound, StorageUnavailable
from storage.lifecycle import LifecycleStore

TASKDEFS = "taskdefs"
# ECS's family grammar: also exactly what a storage key component and a holder may contain.
FAMILY = re.compile(r"[A-Za-z0-9_-]{1,255}")
_HOLDER_PREFIX = "taskdef."
_HOLDER_MAX = 255


def family_record(family: str) -> str:
    """`taskdefs/<family>`: the images (repository, digest) the family's last resolved task
    definition pins. Families match ECS's grammar, so one is one safe key component.
    (Belongs in storage/paths.py with the rest of the tree.)"""
    return f"{TASKDEFS}/{check_family(family)}"


def check_family(family: str) -> str:
    if not FAMILY.fullmatch(family):
        raise ValueError(f"invalid task definition family {family[:64]!r}: use up to 255 "
                         "letters, digits, _ and -")
    return family


def holder(family: str) -> str:
    """The in-use holder name of a family: `taskdef.<family>`, shortened with a hash of the
    family when that would exceed the holder limit (distinct families, distinct holders)."""
    name = _HOLDER_PREFIX + check_family(family)
    if len(name) <= _HOLDER_MAX:
        return name
    tag = hashlib.sha256(family.encode()).hexdigest()[:16]
    return f"{name[:_HOLDER_MAX - len(tag) - 1]}.{tag}"


@dataclass(frozen=True, slots=True, order=True)
class Held:
    """One image a family holds in use."""

    repository: str
    digest: Digest


class TaskDefStore:
    """The images each family holds, and the in-use marks that go with them."""

    def __init__(self, driver: Driver, lifecycle: LifecycleStore) -> None:
        self.driver = driver
        self.lifecycle = lifecycle

    async def held(self, family: str) -> list[Held] | None:
        """What the family holds, or None when no record of it exists."""
        key = family_record(family)
        try:
            record = records.load(await self.driver.get(key, records.MAX_RECORD), key)
        except KeyNotFound:
            return None
        try:
            return [Held(str(i["repository"]), Digest.parse(str(i["digest"])))
                    for i in record["images"]]
        except (KeyError, TypeError, DigestInvalid):
            raise StorageUnavailable(f"corrupt record at {key}") from None

    async def hold(self, family: str, images: Iterable[Held]) -> list[Held]:
        """Mark `images` in use for the family, replacing what it held before (marks on
        images it no longer pins are removed). Returns the images it no longer holds."""
        new = sorted(set(images))
        previous = await self.held(family)
        if previous is None and not new:
            return []  # holds nothing, and never did: no record
        old = previous or []
        stale = sorted(set(old) - set(new))
        if set(new) - set(old):
            await self._write(family, sorted(set(old) | set(new)))
        name, reason = holder(family), f"task definition {family}"
        for image in new:
            await self.lifecycle.protect(image.repository, image.digest, name, reason)
        for image in stale:
            await self.lifecycle.unprotect(image.repository, image.digest, name)
        await self._write(family, new)
        return stale

    async def release(self, family: str) -> list[Held] | None:
        """Remove the family's marks and its record; what it held, or None when unknown."""
        held = await self.held(family)
        if held is None:
            return None
        name = holder(family)
        for image in held:
            await self.lifecycle.unprotect(image.repository, image.digest, name)
        await self.driver.delete(family_record(family))
        return held

    async def _write(self, family: str, images: list[Held]) -> None:
        await self.driver.put(family_record(family), records.dump({
            "family": family, "updatedAt": time.time(),
            "images": [{"repository": i.repository, "digest": str(i.digest)} for i in images]}))
