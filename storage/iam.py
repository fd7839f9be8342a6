"""IAM records (users, groups, access keys, signing keys) and policy documents, kept in the
storage backend so that every replica sees the same identities. Records are opaque JSON here:
`auth/` gives them meaning (password hashes, encrypted secrets)."""

from __future__ import annotations

import re
from typing import Any

from storage import paths, records
from storage.drivers.base import Driver
from storage.errors import KeyNotFound

_NAME = re.compile(r"[A-Za-z0-9+=,.@_-]{1,128}")
MAX_POLICY = 64 * 1024


def check_record_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid name {name[:80]!r}: use letters, digits and +=,.@_-")
    return name


class IamStore:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        key = paths.iam_record(kind, check_record_name(name))
        try:
            return records.load(await self.driver.get(key, records.MAX_RECORD), key)
        except KeyNotFound:
            return None

    async def put(self, kind: str, name: str, record: dict[str, Any]) -> None:
        await self.driver.put(paths.iam_record(kind, check_record_name(name)),
                              records.dump(record))

    async def create(self, kind: str, name: str, record: dict[str, Any]) -> bool:
        """Store the record unless one of that name exists; True when created."""
        return await self.driver.put_if_absent(paths.iam_record(kind, check_record_name(name)),
                                               records.dump(record))

    async def delete(self, kind: str, name: str) -> bool:
        key = paths.iam_record(kind, check_record_name(name))
        if not await self.driver.exists(key):
            return False
        await self.driver.delete(key)
        return True

    async def names(self, kind: str, last: str | None = None, limit: int = 1000) -> list[str]:
        prefix = paths.iam_records(kind)
        keys = await self.driver.list(prefix, start_after=prefix + last if last else None,
                                      limit=limit)
        return [k[len(prefix):] for k in keys]

    # Policy documents are kept as the exact text the user supplied.

    async def repository_policy(self, repository: str) -> str | None:
        return await self._text(paths.repository_policy(repository))

    async def set_repository_policy(self, repository: str, text: str | None) -> None:
        await self._set_text(paths.repository_policy(repository), text)

    async def registry_policy(self) -> str | None:
        return await self._text(paths.registry_policy())

    async def set_registry_policy(self, text: str | None) -> None:
        await self._set_text(paths.registry_policy(), text)

    async def _text(self, key: str) -> str | None:
        try:
            return (await self.driver.get(key, MAX_POLICY)).decode()
        except KeyNotFound:
            return None

    async def _set_text(self, key: str, text: str | None) -> None:
        if text is None:
            await self.driver.delete(key)
        else:
            await self.driver.put(key, text.encode())
