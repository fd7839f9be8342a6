"""Event delivery: the queued events (storage/events.py) to each configured HTTP endpoint, in
EventBridge's `ECR Image Action` shape or Distribution's notification envelope.

Every replica runs a sender per endpoint; a lease in storage lets one of them deliver, in queue
order. A failure is retried with exponential backoff (the events behind it wait: per-repository
order holds); after `max_attempts` the event goes to the dead-letter list
(`registry events list --dead`, `registry events replay`)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from registry.queue_worker import BATCH, LEASE_TTL, POLL, Lease, counter, retry_delay, work_forever
from registry.settings import EventEndpoint, Settings
from storage.store import Store

if TYPE_CHECKING:
    from registry.observability import Metrics

log = logging.getLogger("registry")
DISTRIBUTION_TYPE = "application/vnd.docker.distribution.events.v2+json"


def _iso(seconds: float) -> str:
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def eventbridge(event: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """EventBridge's `ECR Image Action` event, as ECR sends it."""
    detail: dict[str, Any] = {"result": "SUCCESS", "repository-name": event["repository"],
                              "image-digest": event["digest"], "action-type": event["action"]}
    if event.get("tag"):
        detail["image-tag"] = event["tag"]
    if event.get("mediaType"):
        detail["manifest-media-type"] = event["mediaType"]
    return {
        "version": "0",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, event["id"])),
        "detail-type": "ECR Image Action",
        "source": "aws.ecr",
        "account": settings.auth.account_id,
        "time": _iso(float(event["time"]))[:19] + "Z",
        "region": settings.auth.region,
        "resources": [],
        "detail": detail,
    }


def distribution(event: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Distribution's notification envelope with one event."""
    base = (settings.server.public_url or
            f"http://{settings.server.host}:{settings.server.port}").rstrip("/")
    target: dict[str, Any] = {
        "mediaType": event.get("mediaType", ""),
        "digest": event["digest"],
        "repository": event["repository"],
        "url": f"{base}/v2/{event['repository']}/manifests/{event['digest']}",
    }
    if event.get("size") is not None:
        target["size"] = target["length"] = event["size"]
    if event.get("tag"):
        target["tag"] = event["tag"]
    return {"events": [{
        "id": event["id"],
        "timestamp": _iso(float(event["time"])),
        "action": event["action"].lower(),
        "target": target,
        "request": {},
        "actor": {},
        "source": {"addr": base.split("://", 1)[-1]},
    }]}


def body_of(endpoint: EventEndpoint, event: dict[str, Any],
            settings: Settings) -> tuple[bytes, str]:
    if endpoint.format == "distribution":
        return json.dumps(distribution(event, settings)).encode(), DISTRIBUTION_TYPE
    return json.dumps(eventbridge(event, settings)).encode(), "application/json"


async def send(client: httpx.AsyncClient, endpoint: EventEndpoint, event: dict[str, Any],
               settings: Settings) -> str | None:
    """Deliver one event; None on success, else what went wrong (no header values in it)."""
    body, content_type = body_of(endpoint, event, settings)
    try:
        response = await client.post(endpoint.url, content=body, timeout=endpoint.timeout,
                                     headers={**endpoint.headers, "Content-Type": content_type})
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}"
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


async def deliver_forever(settings: Settings, store: Store, endpoint: EventEndpoint,
                          metrics: Metrics | None = None) -> None:
    count = counter(metrics.events if metrics is not None else None, endpoint.name)
    async with httpx.AsyncClient() as client:
        await work_forever(
            store, f"events.{endpoint.name}", f"event delivery to {endpoint.name}",
            lambda lease: _deliver_batch(settings, store, endpoint, client, lease, count))


async def _deliver_batch(settings: Settings, store: Store, endpoint: EventEndpoint,
                         client: httpx.AsyncClient, lease: Lease,
                         count: Callable[[str], None]) -> float:
    """Deliver queued events in order until one fails, the batch ends or the lease is lost
    (another replica may deliver the next one: order holds); how long to wait before looking
    again."""
    queue = store.events
    batch = await queue.pending(endpoint.name, BATCH)
    if not batch:
        return POLL
    for key, record in batch:
        if not lease.valid:
            return POLL
        wait = float(record.get("retryAt", 0)) - time.time()
        if wait > 0:
            return min(wait, LEASE_TTL / 3)  # the head of the queue is backing off
        error = await send(client, endpoint, record["event"], settings)
        if error is None:
            await queue.delivered(key)
            count("delivered")
        else:
            attempts = int(record.get("attempts", 0)) + 1
            if attempts >= endpoint.max_attempts:
                log.warning("event %s to %s failed %d times (%s): dead-lettered",
                            record["event"]["id"], endpoint.name, attempts, error)
                await queue.bury(endpoint.name, key, record, error)
                count("dead")
                continue
            count("failed")
            delay = retry_delay(endpoint, attempts)
            await queue.failed(key, record, error, time.time() + delay)
            return min(delay, LEASE_TTL / 3)
    return 0.0 if len(batch) == BATCH else POLL
