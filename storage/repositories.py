"""Repositories and the catalog: one marker key per repository."""

from __future__ import annotations

import time
from typing import Any

from storage import paths, records
from storage.drivers.base import Driver
from storage.errors import KeyNotFound, NameUnknown

MAX_PAGE = 1000


class RepositoryStore:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver

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
        # Only this repository's own folders: nested repositories (name/sub) live beside them.
        for folder in ("_layers/", "_manifests/"):
            await self.driver.delete_prefix(f"{paths.repository(name)}/{folder}")
        await self.driver.delete(paths.repository_policy(name))

    async def exists(self, name: str) -> bool:
        return await self.driver.exists(paths.catalog_marker(name))

    async def require(self, name: str) -> None:
        if not await self.exists(name):
            raise NameUnknown(f"repository {name!r} not known to registry", {"name": name})

    async def list(self, last: str | None, limit: int) -> tuple[list[str], bool]:
        """One page of repository names after `last`, and whether more follow."""
        limit = max(0, min(limit, MAX_PAGE))
        start = paths.catalog_marker(last) if last else None
        keys = await self.driver.list(paths.catalog(), start_after=start, limit=limit + 1)
        names = [paths.name_from_catalog_marker(k) for k in keys
                 if k.endswith(paths.CATALOG_SUFFIX)]
        return names[:limit], len(names) > limit
