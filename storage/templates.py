"""Repository creation templates: settings applied to repositories created for a name prefix.

A template for prefix `team` applies to every repository whose name starts with `team/`; the
prefix `ROOT` applies to every name. The longest matching prefix wins. A template says what it
is applied for (ECR's `appliedFor`): `CREATE_ON_PUSH` lets a push create the repository.
Records are opaque JSON here; the control plane gives them their ECR shape.
"""

from __future__ import annotations

from typing import Any

from storage import paths, records
from storage.drivers.base import Driver
from storage.errors import KeyNotFound

ROOT = "ROOT"
MAX_PAGE = 1000


def normalise(prefix: str) -> str:
    return prefix if prefix == ROOT else prefix.rstrip("/")


def candidates(name: str) -> list[str]:
    """Template prefixes that could apply to repository `name`, the most specific first."""
    parts = name.split("/")
    return ["/".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)] + [ROOT]


class TemplateStore:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    async def get(self, prefix: str) -> dict[str, Any] | None:
        key = paths.template(normalise(prefix))
        try:
            return records.load(await self.driver.get(key, records.MAX_RECORD), key)
        except KeyNotFound:
            return None

    async def create(self, prefix: str, record: dict[str, Any]) -> bool:
        """Store a new template; False when one exists for the prefix."""
        return await self.driver.put_if_absent(paths.template(normalise(prefix)),
                                               records.dump(record))

    async def put(self, prefix: str, record: dict[str, Any]) -> None:
        await self.driver.put(paths.template(normalise(prefix)), records.dump(record))

    async def delete(self, prefix: str) -> bool:
        key = paths.template(normalise(prefix))
        if not await self.driver.exists(key):
            return False
        await self.driver.delete(key)
        return True

    async def list(self, last: str | None, limit: int) -> tuple[list[str], bool]:
        """One page of template prefixes after `last` (key order), and whether more follow."""
        limit = max(0, min(limit, MAX_PAGE))
        start = paths.template(normalise(last)) if last else None
        keys = await self.driver.list(paths.templates(), start_after=start, limit=limit + 1)
        prefixes = [paths.prefix_from_template(k) for k in keys
                    if k.endswith(paths.TEMPLATE_SUFFIX)]
        return prefixes[:limit], len(prefixes) > limit

    async def match(self, name: str, applied_for: str) -> tuple[str, dict[str, Any]] | None:
        """The most specific template for `name` applied for `applied_for`, if any."""
        for prefix in candidates(name):
            record = await self.get(prefix)
            if record is not None and applied_for in record.get("appliedFor", ()):
                return prefix, record
        return None
