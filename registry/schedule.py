"""Periodic jobs of a running server: every replica runs the loop, the storage lease decides
which one does the work each period."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from registry.events import deliver_forever
from registry.observability import Metrics
from registry.replication import replicate_forever, replication_store
from registry.settings import Settings
from storage.gc import GarbageCollector, GcOptions
from storage.lifecycle import run_all
from storage.replication import queue_name
from storage.store import Store

log = logging.getLogger("registry")


async def _periodic(store: Store, job: str, interval: float,
                    work: Callable[[], Awaitable[None]], metrics: Metrics | None) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            if await store.leases.acquire(job, interval * 0.9):
                await work()
                if metrics is not None:
                    metrics.job_runs.labels(job, "ok").inc()
                    metrics.job_last_success.labels(job).set_to_current_time()
        except asyncio.CancelledError:
            raise
        except Exception:
            if metrics is not None:
                metrics.job_runs.labels(job, "failed").inc()
            log.exception("periodic %s failed; it runs again in %ss", job, interval)


async def _queue_depths(store: Store, queues: list[str], metrics: Metrics,
                        interval: float) -> None:
    """Keep the queue-depth gauges current (counted in storage, so every replica reports the
    shared queues)."""
    while True:
        for queue in queues:
            try:
                pending, dead = await store.events.depth(queue)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("could not count queue %s", queue, exc_info=True)
                continue
            metrics.queue_depth.labels(queue, "pending").set(pending)
            metrics.queue_depth.labels(queue, "dead").set(dead)
        await asyncio.sleep(interval)


def gc_options(settings: Settings, **overrides: object) -> GcOptions:
    gc = settings.gc
    values: dict[str, object] = {
        "grace": float(gc.grace), "upload_max_age": float(gc.upload_max_age),
        "delete_untagged": gc.delete_untagged, "keep_referrers": gc.keep_referrers,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return GcOptions(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def scheduled_jobs(settings: Settings, store: Store,
                         metrics: Metrics | None = None) -> AsyncIterator[None]:
    tasks: list[asyncio.Task[None]] = []

    async def lifecycle() -> None:
        expired = await run_all(store.repositories, store.lifecycle)
        if any(expired.values()):
            log.info("lifecycle expired %d image(s) in %d repositories",
                     sum(expired.values()), sum(1 for n in expired.values() if n))

    async def collect() -> None:
        report = await GarbageCollector(store, gc_options(settings)).run()
        if metrics is not None:
            for kind, count in (("manifests", report.manifests_deleted),
                                ("links", report.links_deleted),
                                ("blobs", report.blobs_deleted),
                                ("bytes", report.bytes_freed),
                                ("uploads", report.uploads_purged)):
                metrics.gc_removed.labels(kind).inc(count)

    for endpoint in settings.events.endpoints:
        tasks.append(asyncio.create_task(deliver_forever(settings, store, endpoint, metrics)))
    replication_store(store, settings)  # pushes queue replication jobs from now on
    for destination in settings.replication.destinations:
        tasks.append(asyncio.create_task(
            replicate_forever(settings, store, destination, metrics)))
    queues = [e.name for e in settings.events.endpoints]
    queues += [queue_name(d.name) for d in settings.replication.destinations]
    if queues and metrics is not None:
        tasks.append(asyncio.create_task(
            _queue_depths(store, queues, metrics, settings.server.metrics_refresh)))
    if settings.gc.interval > 0:
        tasks.append(asyncio.create_task(
            _periodic(store, "gc", settings.gc.interval, collect, metrics)))
    if settings.lifecycle.interval > 0:
        tasks.append(asyncio.create_task(
            _periodic(store, "lifecycle", settings.lifecycle.interval, lifecycle, metrics)))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
