"""Run the app under uvicorn with graceful shutdown on SIGTERM, logging with secrets redacted."""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import ipaddress
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from registry.app import create_app
from registry.connections import Guard, connection_budget, guarded, raise_open_file_limit
from registry.limits import SharedLimits
from registry.logs import configure_logging
from registry.observability import Metrics, start_metrics_server
from registry.settings import Settings
from registry.startup import storage_problem
from registry.tls import Tls, TlsError

log = logging.getLogger("registry")


def tune_allocator() -> bool:
    """Keep glibc from giving every ~256 KB request-body chunk fresh mmap'd pages.

    Measured (1 GiB upload, curl, 2 cores): 1.6x the push throughput; with 32 concurrent
    64 MiB uploads, peak RSS unchanged (about 92 MB either way). Two arenas instead of glibc's
    eight per core: each of the driver's data threads otherwise kept freed 1 MiB read buffers
    in an arena of its own; 32 concurrent 32 MiB pulls peaked at 357 MiB, now 160-166 (as
    fast). Environment settings of the same knobs (MALLOC_*_) win; other C libraries are left
    alone."""
    if any(name.startswith("MALLOC_") for name in os.environ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold, m_arena_max = -1, -2, -3, -8
    mallopt(m_mmap_threshold, 64 * 1024 * 1024)
    mallopt(m_trim_threshold, 256 * 1024 * 1024)
    mallopt(m_top_pad, 64 * 1024 * 1024)
    mallopt(m_arena_max, 2)
    return True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_anonymous(settings: Settings) -> str | None:
    """Why the server must not start: serving without authentication beyond loopback needs
    auth enabled or anonymous access said explicitly."""
    if settings.auth.enabled or settings.auth.allow_anonymous or is_loopback(settings.server.host):
        return None
    return (
        f"refusing to serve on {settings.server.host} without authentication: enable it "
        "([auth] enabled = true, or REGISTRY_AUTH_ENABLED=true, with auth.secret_key), or "
        "pass --allow-anonymous (REGISTRY_AUTH_ALLOW_ANONYMOUS=true) to serve everyone"
    )


def serve(settings: Settings) -> int:
    """Run the server; every reason it cannot start is one line on stderr and a non-zero
    status (2: the settings or the data directory, 1: the port, 3: the app's start-up)."""
    configure_logging(settings)
    reason = refuse_anonymous(settings) or storage_problem(settings)
    if reason is not None:
        log.error("%s", reason)
        return 2
    server = settings.server
    open_files = raise_open_file_limit()
    try:
        tls = Tls(server.tls) if server.tls.cert_file else None
    except TlsError as exc:
        log.error("%s", exc)
        return 2
    if tls is not None:  # until the running server's TLS watch takes SIGHUP: not a stop
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if server.tune_malloc:
        tune_allocator()
    storage = settings.storage
    where = (str(Path(storage.filesystem.root).resolve()) if storage.driver == "filesystem"
             else f"s3://{storage.s3.bucket}/{storage.s3.prefix}")
    host = f"[{server.host}]" if ":" in server.host else server.host
    scheme = "https" if tls is not None else "http"
    started = f"registry listening on {scheme}://{host}:{server.port}, storage {where} " \
              f"({storage.driver})"
    if server.workers > 1:
        from registry.workers import serve_workers

        return serve_workers(
            settings, lambda sock, shared, ready: run_worker(settings, sock, shared, open_files,
                                                              ready),
            f"{started}, {server.workers} workers")
    try:
        sock = listen_once(server.host, server.port)
    except OSError as exc:
        log.error("cannot listen on %s port %d: %s", server.host, server.port,
                  os.strerror(exc.errno) if exc.errno else exc)
        return 1
    app = create_app(settings)
    stop_metrics = start_metrics_server(settings, app.state.metrics)
    try:
        return run_server(app, settings, sock, tls, open_files, lambda: log.info("%s", started))
    finally:
        sock.close()
        if stop_metrics is not None:
            stop_metrics()


def listen_once(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host.strip("[]"), port), family=family, backlog=2048)


def run_worker(settings: Settings, sock: socket.socket, shared: SharedLimits | None,
               open_files: int, ready: Callable[[], None] | None) -> int:
    """One of `server.workers` processes: an app of its own, on its own listening socket,
    with the rate limits all workers share, and its own TLS context watching the files (the
    supervisor checked that they load)."""
    tls = Tls(settings.server.tls) if settings.server.tls.cert_file else None
    return run_server(create_app(settings, shared), settings, sock, tls, open_files, ready)


def run_server(app: Starlette, settings: Settings, sock: socket.socket, tls: Tls | None = None,
               open_files: int = 1024, ready: Callable[[], None] | None = None) -> int:
    """Serve until stopped: 0, or 3 when the app could not start (uvicorn's status for it).
    `ready` is called once the app has started and the port is served (the start-up line is
    logged then, so a failed start-up is one line)."""
    server = settings.server
    guard = Guard(server, tls, connection_budget(server, open_files), app.state.metrics)
    base: type[asyncio.Protocol]
    if importlib.util.find_spec("httptools"):
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    config = uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http=guarded(base, guard),
        lifespan="on",
        access_log=server.access_log,
        log_level=None,  # configure_logging set the levels
        timeout_graceful_shutdown=server.graceful_timeout,
        timeout_keep_alive=server.idle_timeout,  # type: ignore[arg-type]  # a float works
        server_header=False,
        # X-Forwarded-For / -Proto are believed only from the configured proxies (uvicorn's
        # default trusts 127.0.0.1, which would let any local process choose its address).
        forwarded_allow_ips=list(server.trusted_proxies),
        log_config=None,
    )
    runner = DrainingServer(config, app.state.metrics, server.drain_delay, guard, ready)
    runner.run(sockets=[sock])
    return 0 if runner.started else 3


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT: readiness goes false at once; after `drain_delay` seconds (still
    serving, so a load balancer can take us out) uvicorn's own graceful shutdown starts: stop
    accepting, let in-flight requests finish within `graceful_timeout`, exit."""

    def __init__(self, config: uvicorn.Config, metrics: Metrics, drain_delay: float,
                 guard: Guard | None = None, ready: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.metrics = metrics
        self.drain_delay = drain_delay
        self.guard = guard
        self.ready = ready
        self._draining = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.ready is not None:
            self.ready()
        if self.started and self.guard is not None:
            loop = asyncio.get_running_loop()
            self.guard.start_sweeping(loop)
            if self.guard.tls is not None:
                self.guard.tls.watch(loop)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.guard is not None:
            self.guard.stop()
            if self.guard.tls is not None:
                self.guard.tls.stop()
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self.drain_delay <= 0:
            self.metrics.draining = True
            super().handle_exit(sig, frame)
            return
        self._draining = True
        self.metrics.draining = True
        log.info("draining: readiness is false; stopping in %ss", self.drain_delay)
        loop = asyncio.get_event_loop()
        loop.call_later(self.drain_delay, super().handle_exit, sig, frame)

