"""Helpers shared by the auth tests: an in-memory key store and a settable clock."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from auth.secrets import SecretBox, generate_secret_key


class FakeKeyStore:
    """Satisfies `auth.keys.KeyStore` in memory. Every call yields to the event loop first, so
    concurrent callers interleave the way they would against a real backend; records go
    through JSON, as they do in storage."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], str] = {}
        self.calls: list[tuple[str, str, str]] = []  # (method, kind, name)
        self.created: list[tuple[str, bool]] = []  # (name, created?)

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        await self._enter("get", kind, name)
        text = self.records.get((kind, name))
        return None if text is None else dict(json.loads(text))

    async def put(self, kind: str, name: str, record: dict[str, Any]) -> None:
        await self._enter("put", kind, name)
        self.records[kind, name] = json.dumps(record)

    async def create(self, kind: str, name: str, record: dict[str, Any]) -> bool:
        await self._enter("create", kind, name)
        created = (kind, name) not in self.records
        if created:
            self.records[kind, name] = json.dumps(record)
        self.created.append((name, created))
        return created

    async def delete(self, kind: str, name: str) -> bool:
        await self._enter("delete", kind, name)
        return self.records.pop((kind, name), None) is not None

    async def names(self, kind: str, last: str | None = None, limit: int = 1000) -> list[str]:
        await self._enter("names", kind, last or "")
        names = sorted(n for k, n in self.records if k == kind and (last is None or n > last))
        return names[:limit]

    async def _enter(self, method: str, kind: str, name: str) -> None:
        self.calls.append((method, kind, name))
        await asyncio.sleep(0)

    def record(self, name: str, kind: str = "signing-keys") -> dict[str, Any]:
        return dict(json.loads(self.records[kind, name]))


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def new_box() -> SecretBox:
    return SecretBox(generate_secret_key())
