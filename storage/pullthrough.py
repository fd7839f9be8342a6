"""Pull-through cache rules, upstream credentials, and when a cached tag was last checked.

A rule maps a repository prefix of ours (`hub`, or `ROOT` for every name) to an upstream
registry URL and, optionally, an upstream repository prefix: `hub/library/nginx` here is
`library/nginx` there (or `<upstreamRepositoryPrefix>/library/nginx`). The longest matching
prefix wins. Upstream credentials are stored sealed (auth/secrets.py does the sealing; records
here are opaque), named like ECR's Secrets Manager secrets `ecr-pullthroughcache/<name>`.
"""

from __future__ import annotations

import time
from typing import Any

from storage import paths, records
from storage.drivers.base import Driver
from storage.errors import KeyNotFound

ROOT = "ROOT"
_CACHE_SECONDS = 5.0


def normalise(prefix: str) -> str:
    return prefix if prefix == ROOT else prefix.rstrip("/")


class PullThroughStore:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self._rules: tuple[float, dict[str, dict[str, Any]]] | None = None

    # -- rules ---------------------------------------------------------------------------------

    async def get(self, prefix: str) -> dict[str, Any] | None:
        key = paths.pull_through_rule(normalise(prefix))
        try:
            return records.load(await self.driver.get(key, records.MAX_RECORD), key)
        except KeyNotFound:
            return None

    async def create(self, prefix: str, record: dict[str, Any]) -> bool:
        self._rules = None
        return await self.driver.put_if_absent(paths.pull_through_rule(normalise(prefix)),
                                               records.dump(record))

    async def put(self, prefix: str, record: dict[str, Any]) -> None:
        self._rules = None
        await self.driver.put(paths.pull_through_rule(normalise(prefix)), records.dump(record))

    async def delete(self, prefix: str) -> None:
        self._rules = None
        await self.driver.delete(paths.pull_through_rule(normalise(prefix)))

    async def all(self) -> dict[str, dict[str, Any]]:
        """Every rule by prefix (few: ECR allows 50), cached for a few seconds per process so
        a pull does not list storage; other replicas see a change within that time."""
        now = time.monotonic()
        if self._rules is not None and now - self._rules[0] < _CACHE_SECONDS:
            return self._rules[1]
        rules: dict[str, dict[str, Any]] = {}
        prefix = paths.pull_through_rules()
        for key in await self.driver.list(prefix, limit=1000):
            if not key.endswith(paths.RULE_SUFFIX):
                continue
            try:
                rules[paths.prefix_from_rule(key)] = records.load(
                    await self.driver.get(key, records.MAX_RECORD), key)
            except KeyNotFound:
                continue
        self._rules = (now, rules)
        return rules

    async def match(self, name: str) -> tuple[str, dict[str, Any]] | None:
        """The rule for repository `name` (the longest prefix; ROOT last), if any."""
        rules = await self.all()
        parts = name.split("/")
        for n in range(len(parts) - 1, 0, -1):
            prefix = "/".join(parts[:n])
            if prefix in rules:
                return prefix, rules[prefix]
        if ROOT in rules:
            return ROOT, rules[ROOT]
        return None

    # -- upstream credentials (sealed by the caller) ---------------------------------------------

    async def secret(self, name: str) -> str | None:
        try:
            return (await self.driver.get(paths.upstream_secret(name), 64 * 1024)).decode()
        except KeyNotFound:
            return None

    async def put_secret(self, name: str, sealed: str) -> None:
        await self.driver.put(paths.upstream_secret(name), sealed.encode())

    async def delete_secret(self, name: str) -> bool:
        key = paths.upstream_secret(name)
        if not await self.driver.exists(key):
            return False
        await self.driver.delete(key)
        return True

    # -- cached tags -----------------------------------------------------------------------------

    async def checked_at(self, name: str, tag: str) -> float | None:
        key = paths.upstream_check(name, tag)
        try:
            record = records.load(await self.driver.get(key, records.MAX_RECORD), key)
        except KeyNotFound:
            return None
        value = record.get("checkedAt")
        return float(value) if isinstance(value, int | float) else None

    async def mark_checked(self, name: str, tag: str) -> None:
        await self.driver.put(paths.upstream_check(name, tag),
                              records.dump({"checkedAt": time.time()}))


def upstream_repository(rule_prefix: str, rule: dict[str, Any], name: str) -> str:
    """Our repository `name` under a rule, as the upstream names it."""
    rest = name if rule_prefix == ROOT else name[len(rule_prefix) + 1:]
    upstream_prefix = rule.get("upstreamRepositoryPrefix")
    if upstream_prefix and upstream_prefix != ROOT:
        return f"{upstream_prefix.rstrip('/')}/{rest}"
    return rest
