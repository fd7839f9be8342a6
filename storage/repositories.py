"""Repositories and the catalog: one marker key per repository, holding its settings record.

The settings record is ECR's repository shape, stored as the control plane writes it:
`createdAt`, `imageTagMutability`, `imageTagMutabilityExclusionFilters`,
`imageScanningConfiguration`, `encryptionConfiguration`, `tags`.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import lru_cache
from typing import Any

from storage import paths, records
from storage.caches import PullCache
from storage.drivers.base import Driver
from storage.errors import KeyNotFound, NameUnknown, RepositoryNotCreated
from storage.templates import TemplateStore

MAX_PAGE = 1000
CREATE_ON_PUSH = "CREATE_ON_PUSH"
PULL_THROUGH_CACHE = "PULL_THROUGH_CACHE"


@lru_cache(maxsize=1024)
def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def tag_is_immutable(record: dict[str, Any] | None, tag: str) -> bool:
    """Whether an existing `tag` may not be moved, by the repository's mutability setting.

    With `IMMUTABLE_WITH_EXCLUSION` the tags matching an exclusion filter stay mutable; with
    `MUTABLE_WITH_EXCLUSION` exactly those are immutable. Filters are wildcards (`*`)."""
    mode = (record or {}).get("imageTagMutability", "MUTABLE")
    if mode == "IMMUTABLE":
        return True
    if mode not in ("IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION"):
        return False
    filters = (record or {}).get("imageTagMutabilityExclusionFilters") or []
    excluded = any(_wildcard(str(f.get("filter", ""))).fullmatch(tag)
                   for f in filters if isinstance(f, dict))
    return excluded if mode == "MUTABLE_WITH_EXCLUSION" else not excluded


def record_from_template(template: dict[str, Any]) -> dict[str, Any]:
    """A new repository's settings record from a creation template (or `{}`: the defaults)."""
    record: dict[str, Any] = {
        "createdAt": time.time(),
        "imageTagMutability": template.get("imageTagMutability", "MUTABLE"),
        "imageTagMutabilityExclusionFilters":
            template.get("imageTagMutabilityExclusionFilters", []),
        "imageScanningConfiguration": {"scanOnPush": False},
        "encryptionConfiguration":
            template.get("encryptionConfiguration", {"encryptionType": "AES256"}),
        "tags": template.get("resourceTags", []),
    }
    return record


class RepositoryStore:
    def __init__(self, driver: Driver, templates: TemplateStore,
                 create_on_push: bool = False, cache: PullCache | None = None) -> None:
        self.driver = driver
        self.templates = templates
        self.create_on_push = create_on_push  # as if a ROOT template allowed it
        self.cache = cache or PullCache(0.0, 1)

    async def for_push(self, name: str,
                       may_create: Callable[[], Awaitable[None]] | None = None) -> dict[str, Any]:
        """The settings of the repository a push goes to, creating it when a creation template
        (or the `create_on_push` setting) allows; else NameUnknown saying how to create it.
        `may_create` raises when the caller may not create repositories."""
        record = await self.get(name)
        if record is not None:
            return record
        found = await self.templates.match(name, CREATE_ON_PUSH)
        if found is None and not self.create_on_push:
            raise RepositoryNotCreated(name)
        if may_create is not None:
            await may_create()
        return await self._create_from(name, found[1] if found else {})

    async def for_pull_through(self, name: str) -> dict[str, Any]:
        """The settings of a pull-through cache repository, created on its first pull with the
        most specific PULL_THROUGH_CACHE creation template (or the defaults)."""
        record = await self.get(name)
        if record is not None:
            return record
        found = await self.templates.match(name, PULL_THROUGH_CACHE)
        return await self._create_from(name, found[1] if found else {})

    async def _create_from(self, name: str, template: dict[str, Any]) -> dict[str, Any]:
        record = record_from_template(template)
        if await self.create(name, record):
            policy = template.get("repositoryPolicy")
            if isinstance(policy, str) and policy:
                await self.driver.put(paths.repository_policy(name), policy.encode())
            lifecycle = template.get("lifecyclePolicy")
            if isinstance(lifecycle, str) and lifecycle:
                await self.driver.put(paths.lifecycle_policy(name), lifecycle.encode())
            return record
        return await self.get(name) or record  # created meanwhile by someone else

    async def ensure(self, name: str) -> None:
        """Record the repository in the catalog (idempotent: a stat once it exists)."""
        await self.driver.put_if_absent(
            paths.catalog_marker(name), records.dump({"createdAt": time.time()})
        )

    async def create(self, name: str, record: dict[str, Any]) -> bool:
        """Create the repository with its settings record; False when it exists already."""
        return await self.driver.put_if_absent(paths.catalog_marker(name), records.dump(record))

    async def get(self, name: str) -> dict[str, Any] | None:
        """The repository's settings record (at least `createdAt`), or None."""
        key = paths.catalog_marker(name)
        try:
            return records.load(await self.driver.get(key, records.MAX_RECORD), key)
        except KeyNotFound:
            return None

    async def put(self, name: str, record: dict[str, Any]) -> None:
        await self.driver.put(paths.catalog_marker(name), records.dump(record))

    async def is_empty(self, name: str) -> bool:
        """No tags and no manifests."""
        for prefix in (paths.tags(name), paths.revisions(name)):
            if await self.driver.list(prefix, limit=1):
                return False
        return True

    async def delete(self, name: str) -> None:
        """Remove the repository: its catalog entry first, then everything under it."""
        await self.driver.delete(paths.catalog_marker(name))
        self.cache.forget_repository(name)
        # Only this repository's own folders: nested repositories (name/sub) live beside them.
        for folder in ("_layers/", "_manifests/"):
            await self.driver.delete_prefix(f"{paths.repository(name)}/{folder}")
        await self.driver.delete(paths.repository_policy(name))
        for key in (paths.lifecycle_policy(name), paths.lifecycle_state(name),
                    paths.lifecycle_preview(name)):
            await self.driver.delete(key)
        await self.driver.delete_prefix(paths.in_use_marks(name))
        await self.driver.delete_prefix(paths.replication(name))

    async def exists(self, name: str) -> bool:
        return await self.driver.exists(paths.catalog_marker(name))

    async def require(self, name: str) -> None:
        if not await self.exists(name):
            raise NameUnknown(f"repository {name!r} not known to registry", {"name": name})

    async def names(self) -> AsyncIterator[str]:
        """Every repository name, in order, a page of the catalog at a time."""
        last: str | None = None
        while True:
            names, more = await self.list(last, MAX_PAGE)
            for name in names:
                yield name
            if not more or not names:
                return
            last = names[-1]

    async def list(self, last: str | None, limit: int) -> tuple[list[str], bool]:
        """One page of repository names after `last`, and whether more follow."""
        limit = max(0, min(limit, MAX_PAGE))
        start = paths.catalog_marker(last) if last else None
        keys = await self.driver.list(paths.catalog(), start_after=start, limit=limit + 1)
        names = [paths.name_from_catalog_marker(k) for k in keys
                 if k.endswith(paths.CATALOG_SUFFIX)]
        return names[:limit], len(names) > limit
