"""The loop both event delivery and replication run: one worker per queue across every replica
(a storage lease picks it), batches in queue order, a wake-up when something is queued, and
retry delays that double up to a ceiling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from storage.store import Store

log = logging.getLogger("registry")
LEASE_TTL = 15.0
POLL = 0.5
BATCH = 100


class Retries(Protocol):
    # Read-only: the settings that satisfy it are frozen dataclasses.
    @property
    def backoff(self) -> float: ...
    @property
    def max_backoff(self) -> float: ...


def retry_delay(settings: Retries, attempts: int) -> float:
    """Seconds before retry number `attempts`: `backoff`, doubled each time, at most
    `max_backoff`."""
    return float(min(settings.max_backoff, settings.backoff * 2 ** max(0, attempts - 1)))


def counter(metric: Any | None, name: str) -> Callable[[str], None]:
    """Counts results for queue `name` on a Prometheus counter labelled (name, result), or
    nothing without one."""
    if metric is None:
        return lambda result: None
    return lambda result: metric.labels(name, result).inc()


class Lease:
    """This process's hold on a queue's lease, renewed when a third of its life has passed
    rather than at every look at the queue."""

    def __init__(self, store: Store, job: str) -> None:
        self.store = store
        self.job = job
        self.renew_at = 0.0

    @property
    def valid(self) -> bool:
        """Whether the last renewal succeeded (no other replica may have taken over)."""
        return self.renew_at > 0

    async def held(self) -> bool:
        if time.monotonic() < self.renew_at:
            return True
        if not await self.store.leases.acquire(self.job, LEASE_TTL):
            self.renew_at = 0.0
            return False
        self.renew_at = time.monotonic() + LEASE_TTL / 3
        return True

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[None]:
        """Keep renewing while a batch runs: one item may take longer than the lease lasts."""

        async def renew() -> None:
            while True:
                await asyncio.sleep(max(0.1, self.renew_at - time.monotonic()))
                with contextlib.suppress(Exception):
                    await self.held()

        task = asyncio.create_task(renew())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def work_forever(store: Store, job: str, what: str,
                       batch: Callable[[Lease], Awaitable[float]]) -> None:
    """While this process holds lease `job`, run `batch` (which returns how long to wait before
    the next one; a push wakes the wait early); `what` names the work in logs."""
    queue = store.events
    lease = Lease(store, job)
    try:
        while True:
            try:
                if not await lease.held():
                    await asyncio.sleep(LEASE_TTL / 3)
                    continue
                async with lease.kept():
                    pause = await batch(lease)
                if pause > 0:
                    queue.wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(queue.wakeup.wait(), pause)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; retrying", what)
                await asyncio.sleep(POLL)
    finally:
        with contextlib.suppress(Exception):
            await store.leases.release(job)
