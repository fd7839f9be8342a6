"""`create_app(settings)`: the one place that wires the registry together."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from auth.errors import AuthError
from registry import ecr, errors, token
from registry.auth import build_auth, key_refresher
from registry.fastlane import FastLane
from registry.limits import RateLimiter, SharedLimits
from registry.logs import StartupFailed
from registry.observability import (
    InstrumentedDriver,
    Metrics,
    RequestMiddleware,
    healthz,
    metrics_endpoint,
    readyz,
)
from registry.pullthrough import PullThroughCache
from registry.schedule import scheduled_jobs
from registry.settings import Settings
from registry.v2 import routes as v2_routes
from storage.drivers import load_driver
from storage.drivers.base import Driver
from storage.errors import RegistryError
from storage.events import Subscription
from storage.store import Store

log = logging.getLogger("registry")


def build_driver(settings: Settings) -> Driver:
    storage = settings.storage
    if storage.driver == "filesystem":
        return load_driver(
            "filesystem",
            root=Path(storage.filesystem.root),
            fsync=storage.filesystem.fsync,
            max_threads=storage.max_threads,
            metadata_threads=storage.filesystem.metadata_threads,
            loop_reads=storage.filesystem.loop_reads,
        )
    if storage.driver == "s3":
        s3 = storage.s3
        return load_driver(
            "s3",
            bucket=s3.bucket, prefix=s3.prefix, region=s3.region, endpoint_url=s3.endpoint_url,
            addressing_style=s3.addressing_style, part_size=s3.part_size, redirect=s3.redirect,
            redirect_expiry=s3.redirect_expiry, server_side_encryption=s3.server_side_encryption,
            kms_key_id=s3.kms_key_id, storage_class=s3.storage_class,
            access_key_id=s3.access_key_id, secret_access_key=s3.secret_access_key,
            session_token=s3.session_token, max_attempts=s3.max_attempts,
            max_threads=storage.max_threads,
        )
    return load_driver(storage.driver)


def build_store(settings: Settings, metrics: Metrics | None = None) -> Store:
    """The storage every part of the registry (server and commands) works through."""
    subscriptions = [Subscription(e.name, e.repositories, e.actions)
                     for e in settings.events.endpoints]
    driver = build_driver(settings)
    if metrics is not None:
        driver = InstrumentedDriver(driver, metrics)
    return Store(driver, settings.repositories.create_on_push, subscriptions,
                 settings.repositories.tag_cache_seconds)


def create_app(settings: Settings, shared_limits: SharedLimits | None = None) -> Starlette:
    """`shared_limits`: the rate-limit buckets and upload counts of `server.workers`."""
    metrics = Metrics()
    limiter = RateLimiter(settings.limits, shared_limits)
    store = build_store(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        running = contextlib.AsyncExitStack()
        try:
            app.state.auth = await build_auth(settings, store, shared_limits)
            await running.enter_async_context(key_refresher(app.state.auth))
            await running.enter_async_context(scheduled_jobs(settings, store, metrics))
        except Exception as exc:  # one line; the traceback only at debug level
            log.debug("start-up failed", exc_info=True)
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            log.error("cannot start: %s", message)
            await running.aclose()
            await store.close()
            raise StartupFailed(message) from None
        async with running:
            yield
        await app.state.pull_through.close()
        await store.close()
        # The counterpart of the start-up line: periodic jobs are stopped, storage is closed.
        log.info("registry stopped")

    routes = [
        *v2_routes(),
        Route("/token", token.get_token, methods=["GET"], name="token"),
        Route("/token", token.post_token, methods=["POST"]),
        Route("/.well-known/jwks.json", token.jwks, methods=["GET"], name="jwks"),
        Route("/", ecr.handle, methods=["POST"], name="ecr"),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    exception_handlers: dict[Any, Any] = {
        RegistryError: errors.registry_error_handler,
        AuthError: errors.auth_error_handler,
        HTTPException: errors.http_error_handler,
        ClientDisconnect: errors.client_gone_handler,
        Exception: errors.unexpected_error_handler,
    }
    pulls = [route for route in routes
             if isinstance(route, Route) and route.name in FastLane.ROUTES]
    app = Starlette(
        routes=routes,
        exception_handlers=exception_handlers,
        lifespan=lifespan,
        middleware=[Middleware(RequestMiddleware, settings=settings, metrics=metrics,
                               limiter=limiter),
                    Middleware(FastLane, routes=pulls, exception_handlers=exception_handlers)],
    )
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = metrics
    app.state.limits = limiter
    app.state.pull_through = PullThroughCache(settings, store)
    app.state.auth = None  # set at start-up when auth is enabled
    return app
