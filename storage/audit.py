"""The audit trail: every control-plane change and every delete, who, what, when, from where.

One small record per entry under `audit/<yyyy>/<mm>/<dd>/<time-ns>-<random>`, so a listing is in
time order and a day's entries are one prefix. Records hold names and parameters, never secrets
(the callers leave out secret and bulky parameters)."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from storage import records
from storage.drivers.base import Driver
from storage.errors import KeyNotFound

PREFIX = "audit/"


class AuditLog:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    async def record(self, actor: str, action: str, target: str, address: str | None,
                     detail: dict[str, Any] | None = None) -> None:
        now = time.time()
        day = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y/%m/%d")
        key = f"{PREFIX}{day}/{time.time_ns():020d}-{os.urandom(4).hex()}"
        entry: dict[str, Any] = {"time": now, "actor": actor, "action": action,
                                 "target": target, "address": address}
        if detail:
            entry["detail"] = detail
        await self.driver.put(key, records.dump(entry))

    async def entries(self, since: float = 0.0) -> AsyncIterator[dict[str, Any]]:
        """Entries from `since` on, oldest first."""
        start = None
        if since > 0:
            day = dt.datetime.fromtimestamp(since, dt.UTC).strftime("%Y/%m/%d")
            start = f"{PREFIX}{day}/{int(since * 1e9):020d}"
        last = start
        while True:
            keys = await self.driver.list(PREFIX, start_after=last, limit=1000)
            for key in keys:
                try:
                    yield records.load(await self.driver.get(key, records.MAX_RECORD), key)
                except KeyNotFound:
                    continue
            if len(keys) < 1000:
                return
            last = keys[-1]
