"""Repositories and the catalog: one marker key per repository."""

from __future__ import annotations

import time

from storage import paths, records
from storage.drivers.base import Driver
from storage.errors import NameUnknown

MAX_PAGE = 1000


class RepositoryStore:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    async def ensure(self, name: str) -> None:
        """Record the repository in the catalog (idempotent: a stat once it exists)."""
        await self.driver.put_if_absent(
            paths.catalog_marker(name), records.dump({"createdAt": time.time()})
        )

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
