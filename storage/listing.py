"""Every key under a prefix, page by page (one driver listing per page, never all at once)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from storage.drivers.base import Driver

PAGE = 1000


async def iter_keys(driver: Driver, prefix: str, start_after: str | None = None,
                    page: int = PAGE) -> AsyncIterator[str]:
    last = start_after
    while True:
        keys = await driver.list(prefix, start_after=last, limit=page)
        for key in keys:
            yield key
        if len(keys) < page:
            return
        last = keys[-1]
