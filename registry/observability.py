"""What an operator sees: Prometheus metrics, one log line per request, a request id, health.

- `RequestMiddleware` (plain ASGI, so streaming bodies pass untouched) gives every request an
  id (a sane incoming `X-Request-Id` is kept, else a new one; either way it is returned), counts
  requests, latency and bytes per route, and, with `server.request_log`, logs one line per
  request (text, or JSON with `server.log_format = "json"`): id, client, method, path (never
  the query string, which may hold a signed URL's signature), route, status, bytes, duration,
  identity, repository, and the ECR operation. Tokens and secrets never reach the line.
- Tokens issued are `registry_http_requests{route="token",status="200"}`; refusals by auth
  are `registry_auth_denials` by kind.
- `InstrumentedDriver` times every storage operation by driver and operation, and counts
  errors.
- `/healthz`: the process answers. `/readyz`: storage answers, signing keys are loaded when
  auth is on, and the server is not draining (SIGTERM turns it false first).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from registry.errors import error_response
from registry.limits import RateLimiter
from registry.settings import Settings
from storage import paths
from storage.errors import RateLimited

log = logging.getLogger("registry.requests")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# Our request ids: a random per-process prefix and a counter (32 hex digits, like a UUID's
# hex form) instead of a random draw per request. They identify; they guard nothing.
_ID_PREFIX = secrets.token_hex(8)
_id_numbers = itertools.count()


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_numbers):016x}"


def _new_id_prefix() -> None:
    """A forked worker (`server.workers`) draws a prefix of its own."""
    global _ID_PREFIX, _id_numbers
    _ID_PREFIX = secrets.token_hex(8)
    _id_numbers = itertools.count()


os.register_at_fork(after_in_child=_new_id_prefix)


_TARGET = "amazonec2containerregistry_v20150921."
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ROUTES: list[tuple[re.Pattern[str], str]] = [
    # Most requests first. No path matches two of the /v2/ patterns except blob_upload's and
    # blob's ("…/blobs/uploads/x"), which keep their order.
    (re.compile(r"^/v2/(?P<name>.+)/manifests/[^/]+$"), "manifest"),
    (re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/[^/]*$"), "blob_upload"),
    (re.compile(r"^/v2/(?P<name>.+)/blobs/[^/]+$"), "blob"),
    (re.compile(r"^/v2/?$"), "base"),
    (re.compile(r"^/v2/_catalog$"), "catalog"),
    (re.compile(r"^/v2/(?P<name>.+)/tags/list$"), "tags"),
    (re.compile(r"^/v2/(?P<name>.+)/referrers/[^/]+$"), "referrers"),
    (re.compile(r"^/token$"), "token"),
    (re.compile(r"^/\.well-known/jwks\.json$"), "jwks"),
    (re.compile(r"^/(healthz|readyz)$"), "health"),
    (re.compile(r"^/metrics$"), "metrics"),
    (re.compile(r"^/$"), "ecr"),
]


def classify(path: str) -> tuple[str, str | None]:
    """The route label of a path (bounded: metrics never get one label per repository), and
    the repository it names."""
    for pattern, route in _ROUTES:
        match = pattern.match(path)
        if match:
            return route, match.groupdict().get("name")
    return "other", None


class Metrics:
    """The registry's metrics, on a registry of their own (one per app). With `server.workers`
    (prometheus-client's multi-process mode) each process's samples go to files, the
    exposition sums them, and gauges say how: requests in flight add up over the live
    processes, a queue depth (counted in storage by each) is the latest count, a job's last
    success the latest time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("registry_http_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("registry_http_request_duration_seconds",
                                 "Time to answer, body included", ["route", "method"],
                                 buckets=_LATENCY, registry=r)
        self.received = Counter("registry_http_received_bytes", "Request body bytes",
                                ["route"], registry=r)
        self.sent = Counter("registry_http_sent_bytes", "Response body bytes", ["route"],
                            registry=r)
        self.in_flight = Gauge("registry_http_requests_in_flight", "Requests being answered",
                               ["route"], registry=r,
                               multiprocess_mode="livesum")
        self.ecr_operations = Counter("registry_ecr_operations", "ECR API calls",
                                      ["operation", "status"], registry=r)
        self.storage_latency = Histogram("registry_storage_operation_duration_seconds",
                                         "Storage operations", ["driver", "operation"],
                                         buckets=_LATENCY, registry=r)
        self.storage_errors = Counter("registry_storage_errors", "Failed storage operations",
                                      ["driver", "operation", "error"], registry=r)
        self.denials = Counter("registry_auth_denials", "Requests refused by auth",
                               ["reason"], registry=r)
        self.job_runs = Counter("registry_job_runs", "Periodic job runs", ["job", "result"],
                                registry=r)
        self.gc_removed = Counter("registry_gc_removed", "What garbage collection removed",
                                  ["kind"], registry=r)
        self.events = Counter("registry_events_delivered", "Event deliveries",
                              ["endpoint", "result"], registry=r)
        self.replications = Counter("registry_replication_copies",
                                    "Images copied to replication destinations",
                                    ["destination", "result"], registry=r)
        self.uploads = Gauge("registry_blob_uploads_in_progress",
                             "Blob upload requests receiving data", registry=r,
                             multiprocess_mode="livesum")
        self.tokens = Counter("registry_tokens_issued", "Bearer tokens issued by /token",
                              ["kind"], registry=r)
        self.queue_depth = Gauge("registry_queue_depth",
                                 "Events and replication jobs waiting (pending) or given up "
                                 "on (dead), counted in storage", ["queue", "state"],
                                 registry=r, multiprocess_mode="mostrecent")
        self.job_last_success = Gauge("registry_job_last_success_timestamp_seconds",
                                      "When a periodic job (gc, lifecycle) last succeeded here",
                                      ["job"], registry=r, multiprocess_mode="max")
        self.connections = Gauge("registry_connections_open", "Client connections open",
                                 registry=r, multiprocess_mode="livesum")
        self.connections_ended = Counter("registry_connections_ended",
                                         "Connections the server refused or closed: over a "
                                         "cap, past a deadline, a failed TLS handshake",
                                         ["reason"], registry=r)
        self.draining = False

    def exposition(self) -> bytes:
        if values.ValueClass is values.MutexValue:  # one process
            return generate_latest(self.registry)
        return generate_latest(summed_registry())


def summed_registry() -> CollectorRegistry:
    """Every process's metrics, summed (prometheus-client's multi-process mode: the files in
    PROMETHEUS_MULTIPROC_DIR, read at each collection)."""
    summed = CollectorRegistry()
    MultiProcessCollector(summed)  # type: ignore[no-untyped-call]  # unannotated upstream
    return summed


_LABEL_SETS = 1024  # label values remembered by RequestMiddleware (methods come from clients)


class RequestMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics,
                 limiter: RateLimiter | None = None) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.limiter = limiter
        # Labelled metric children, looked up once per label values (`labels()` costs a lock
        # and a dict build on every call; the label sets are few and bounded).
        self._routes: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}
        self._statuses: dict[tuple[str, str, str], Any] = {}

    def _per_route(self, route: str, method: str) -> tuple[Any, Any, Any, Any]:
        """(requests in flight, latency, bytes received, bytes sent) for route and method."""
        found = self._routes.get((route, method))
        if found is None:
            m = self.metrics
            found = (m.in_flight.labels(route), m.latency.labels(route, method),
                     m.received.labels(route), m.sent.labels(route))
            if len(self._routes) < _LABEL_SETS:
                self._routes[(route, method)] = found
        return found

    def _answered(self, route: str, method: str, status: str) -> Any:
        found = self._statuses.get((route, method, status))
        if found is None:
            found = self.metrics.requests.labels(route, method, status)
            if len(self._statuses) < _LABEL_SETS:
                self._statuses[(route, method, status)] = found
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if incoming and _REQUEST_ID.fullmatch(incoming) \
            else _new_request_id()
        route, repository = classify(scope.get("path", ""))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["route"] = route  # classified once: rate limits read it
        method = scope.get("method", "GET")
        operation = None
        if route == "ecr":
            target = headers.get(b"x-amz-target", b"").decode("latin-1")
            if target.lower().startswith(_TARGET):
                operation = target[len(_TARGET):][:64]
        counts = {"in": 0, "out": 0, "status": 500}
        metrics = self.metrics
        refusal: list[bytes] = []  # the start of an error answer's body, for `_log_refused`

        async def receive_counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                counts["in"] += len(message.get("body", b""))
            return message

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                counts["status"] = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                counts["out"] += len(body)
                if counts["status"] in _REFUSALS and not refusal:
                    refusal.append(body[:4096])
            await send(message)

        uploading = (self.limiter is not None and route == "blob_upload"
                     and method in ("POST", "PATCH", "PUT"))
        if uploading:
            assert self.limiter is not None
            try:
                self.limiter.start_upload()
            except RateLimited as exc:
                response = error_response(Request(scope), "TOOMANYREQUESTS", 429, exc.message,
                                          None, {"Retry-After": str(exc.retry_after)})
                await response(scope, receive_counted, send_counted)
                metrics.requests.labels(route, method, "429").inc()
                return
        per_route = self._per_route(route, method)
        gauge = per_route[0]
        gauge.inc()
        receiving = route == "blob_upload" and method in ("POST", "PATCH", "PUT")
        if receiving:
            metrics.uploads.inc()
        try:
            await self.app(scope, receive_counted, send_counted)
        finally:
            gauge.dec()
            if receiving:
                metrics.uploads.dec()
            if uploading:
                assert self.limiter is not None
                self.limiter.end_upload()
            elapsed = time.perf_counter() - started
            status = str(counts["status"])
            self._answered(route, method, status).inc()
            per_route[1].observe(elapsed)
            if counts["in"]:
                per_route[2].inc(counts["in"])
            if counts["out"]:
                per_route[3].inc(counts["out"])
            if operation is not None:
                metrics.ecr_operations.labels(operation, status).inc()
            if self.settings.server.request_log:
                self._log(scope, request_id, route, repository, operation, counts, elapsed)
            if counts["status"] in _REFUSALS:
                _log_refused(scope, request_id, route, repository, operation, counts["status"],
                             refusal[0] if refusal else b"", b"authorization" in headers)

    def _log(self, scope: Scope, request_id: str, route: str, repository: str | None,
             operation: str | None, counts: dict[str, int], elapsed: float) -> None:
        client = scope.get("client")
        identity = (scope.get("state") or {}).get("identity")
        caller = getattr(identity, "caller", None)
        record: dict[str, Any] = {
            "request_id": request_id,
            "client": client[0] if client else None,
            "method": scope.get("method"),
            "path": scope.get("path"),
            "route": route,
            "status": counts["status"],
            "bytes_in": counts["in"],
            "bytes_out": counts["out"],
            "duration_ms": round(elapsed * 1000, 2),
        }
        if caller is not None:
            record["identity"] = getattr(caller, "user", None) or "anonymous"
        if repository is not None:
            record["repository"] = repository
        if operation is not None:
            record["operation"] = operation
        # In JSON lines (registry.logs.JsonLines) the fields are the line's own members.
        log.info("%s", " ".join(f"{k}={v}" for k, v in record.items() if v is not None),
                 extra={"fields": record})


# Statuses that may be a refusal worth a line at the default level (see `_log_refused`).
_REFUSALS = frozenset({400, 401, 403, 404, 429})
# ECR API errors that refuse the caller (a bad signature, an unknown key, policy, throttling).
_ECR_REFUSALS = frozenset({
    "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
    "IncompleteSignatureException", "MissingAuthenticationTokenException",
    "ExpiredTokenException", "ThrottlingException", "TooManyRequestsException"})


def _log_refused(scope: Scope, request_id: str, route: str, repository: str | None,
                 operation: str | None, status: int, body: bytes, credentials: bool) -> None:
    """One INFO line for a request the registry refused: policy (403, AccessDenied), a rate
    limit (429), credentials that did not authenticate (401 when some were sent: without,
    a 401 is the ordinary challenge), a push to a repository that does not exist
    (NAME_UNKNOWN). Missing blobs and manifests are a client's ordinary questions: no line."""
    if route != "ecr" and (status == 400 or (status == 404 and b"NAME_UNKNOWN" not in body)
                           or (status == 401 and not credentials)):
        return  # the common answers, decided without parsing the body
    code, message = "", ""
    try:
        answer = json.loads(body) if body else {}
    except ValueError:
        answer = {}
    if isinstance(answer, dict):
        if route == "ecr":
            code = str(answer.get("__type", "")).rpartition("#")[2]
            message = str(answer.get("message", ""))
        elif isinstance(answer.get("errors"), list) and answer["errors"]:
            first = answer["errors"][0]
            if isinstance(first, dict):
                code, message = str(first.get("code", "")), str(first.get("message", ""))
    if route == "ecr":
        if code not in _ECR_REFUSALS:
            return
    elif not (status in (403, 429) or (status == 401 and credentials)
              or code == "NAME_UNKNOWN"):
        return
    state = scope.get("state") or {}
    caller = getattr(state.get("identity"), "caller", None) or state.get("caller")
    client = scope.get("client")
    record: dict[str, Any] = {
        "request_id": request_id, "status": status, "code": code or None,
        "method": scope.get("method"), "path": scope.get("path"),
        "repository": repository, "operation": operation,
        "identity": (getattr(caller, "user", None) or "anonymous") if caller else None,
        "client": client[0] if client else None,
    }
    text = " ".join(f"{k}={v}" for k, v in record.items() if v is not None)
    log.info("refused: %s: %s", text, message[:300],
             extra={"fields": {**record, "event": "refused", "reason": message[:300]}})


class InstrumentedDriver:
    """A storage driver that times each operation; everything else passes through."""

    _TIMED = frozenset({"get", "put", "put_if_absent", "put_ordered", "stat", "stat_many",
                        "exists", "delete", "delete_many", "delete_prefix", "list", "append",
                        "seal", "scan", "move", "redirect_url"})

    def __init__(self, driver: Any, metrics: Metrics) -> None:
        self._driver = driver
        self._metrics = metrics
        self.name = driver.name

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._driver, attribute)
        if attribute not in self._TIMED:
            return value
        metrics, driver = self._metrics, self.name
        latency = metrics.storage_latency.labels(driver, attribute)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await value(*args, **kwargs)
            except Exception as exc:
                if type(exc).__name__ != "KeyNotFound":  # an answer, not a failure
                    metrics.storage_errors.labels(driver, attribute, type(exc).__name__).inc()
                raise
            finally:
                latency.observe(time.perf_counter() - started)

        setattr(self, attribute, timed)  # built once: later lookups skip __getattr__
        return timed


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    problems = []
    if metrics.draining:
        problems.append("draining")
    settings: Settings = request.app.state.settings
    if settings.auth.enabled and request.app.state.auth is None:
        problems.append("signing keys not loaded")
    driver = request.app.state.store.driver
    try:
        await asyncio.wait_for(driver.exists("registry/ready"), 5)
    except Exception:
        problems.append("storage unreachable")
    else:
        if getattr(driver, "write_failure", None):  # writes failed: ready once one works
            # This process's own probe (each of the workers forked from one supervisor too).
            failure = await driver.probe_write(
                paths.write_probe(f"{socket.gethostname()}-{os.getpid()}"))
            if failure is not None:
                problems.append(failure)
    if problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
    return JSONResponse({"status": "ready"})


async def metrics_endpoint(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if settings.server.metrics_port:  # served on their own port, not here
        return Response(status_code=404)
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def start_metrics_server(settings: Settings, metrics: Metrics) -> Callable[[], None] | None:
    """`[server] metrics_port`: the metrics on a port of their own (prometheus-client's
    server, in a thread), so the registry's public port need not expose them. Returns how to
    stop it."""
    server = settings.server
    if not server.metrics_port:
        return None
    httpd, thread = start_http_server(server.metrics_port, server.metrics_host or server.host,
                                      registry=metrics.registry)
    log.info("metrics on http://%s:%d/metrics", server.metrics_host or server.host,
             server.metrics_port)

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)

    return stop
