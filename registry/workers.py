"""`server.workers = N`: N processes answering on one port.

One Python process runs one event loop on one core at a time; this is how the registry uses
more. The supervisor reserves the port, names a directory for the workers' metrics, and forks
the workers. Each builds its own app (event loop, storage driver and threads, rate limits)
and listens on the port with SO_REUSEPORT; the kernel gives each new connection to one of
them. Everything the workers must agree on already lives in storage, as between replicas;
rate limits, the upload cap and the login throttle are shared through memory mapped by the
supervisor (`registry.limits.SharedLimits`), so they hold for the whole machine as for one
process.

The supervisor itself runs no event loop and no threads (forking a threaded process can
deadlock the child), and only watches:
- SIGTERM/SIGINT go to every worker, which drains as a lone server does (`drain_delay`,
  then `graceful_timeout`); the supervisor exits when the last worker has. A second signal is
  passed on as well (uvicorn then stops at once).
- SIGHUP goes to every worker (each reloads its TLS certificate); nothing stops.
- A worker that dies is replaced: its in-flight requests are lost, as in a crash, and nothing
  partial becomes visible. One that could not start, or died within `STARTUP_GRACE` seconds of
  its start, stops the whole server instead (a configuration that cannot start would
  otherwise be retried forever).
- Metrics: prometheus-client's multi-process mode. Every worker writes its samples to files in
  the directory; any worker's /metrics, or the supervisor on `server.metrics_port`, answers
  with the sum over all of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.server
import logging
import os
import select
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from registry.limits import SharedLimits
from registry.observability import summed_registry
from registry.settings import Settings

log = logging.getLogger("registry")

COULD_NOT_START = 3  # a worker's exit status when its app failed to start (uvicorn's too)
STARTUP_GRACE = 2.0  # a worker dying sooner is not restarted either
_POLL = 0.2  # seconds between looks at signals and exited workers


def _address(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host.strip("[]"), port)


def reserve(host: str, port: int) -> socket.socket:
    """The supervisor's hold on the port: bound with SO_REUSEPORT, never listening (the kernel
    spreads connections over the listening sockets only). Binding here first turns a port in
    use into one clear error at start-up."""
    family, address = _address(host, port)
    # First as any server would bind: SO_REUSEPORT alone would let a second registry started
    # on this port by mistake join the first one's workers and take half its connections.
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def listen(host: str, port: int) -> socket.socket:
    """A worker's own listening socket on the shared port. One socket accepted from by all
    workers would not do: whichever worker wakes first accepts a whole burst of connections
    (16 clients connecting at once all landed on one of two workers, which then did all the
    work); with SO_REUSEPORT the kernel spreads them by address and port."""
    family, address = _address(host, port)
    return socket.create_server(address, family=family, backlog=2048, reuse_port=True)


def multiprocess_metrics(directory: str) -> None:
    """Make metrics created from now on write to files in `directory` (prometheus-client
    decides at import time from PROMETHEUS_MULTIPROC_DIR; the module may be imported already,
    so its choice is made again here)."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


# (listening socket, shared limits, what to call once it serves) -> exit status
Worker = Callable[[socket.socket, SharedLimits | None, Callable[[], None] | None], int]


def serve_workers(settings: Settings, run_worker: Worker, started: str) -> int:
    """Reserve the port, fork `server.workers` processes running `run_worker(listening socket,
    shared limits, ready)`, watch them; returns the exit status. The first worker starts
    alone and the rest once it serves, when `started` is logged: a configuration that cannot
    start says so once, in the first worker's one line."""
    server = settings.server
    try:
        sock = reserve(server.host, server.port)
    except OSError as exc:
        log.error("cannot listen on %s port %d: %s", server.host, server.port, exc.strerror)
        return 1
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    directory = given or tempfile.mkdtemp(prefix="registry-metrics-")
    os.makedirs(directory, exist_ok=True)
    for stale in Path(directory).glob("*.db"):  # files of an earlier run's processes
        stale.unlink(missing_ok=True)
    multiprocess_metrics(directory)
    supervisor = Supervisor(settings, sock, run_worker, started)
    try:
        return supervisor.run()
    finally:
        supervisor.close()
        if not given:
            shutil.rmtree(directory, ignore_errors=True)


class Supervisor:
    def __init__(self, settings: Settings, sock: socket.socket, run_worker: Worker,
                 started: str = "") -> None:
        self.settings = settings
        self.started = started
        self.sock = sock
        self.run_worker = run_worker
        limits = settings.limits
        shared = limits.enabled or limits.max_concurrent_uploads > 0 or settings.auth.enabled
        self.limits = SharedLimits(settings.server.workers) if shared else None
        self.workers: dict[int, tuple[float, int]] = {}  # pid -> (when it started, its slot)
        self.pending: list[int] = []  # signals received, not yet passed on
        self.stopping = False
        self.failed = False
        self.metrics_server: http.server.HTTPServer | None = None

    def run(self) -> int:
        server = self.settings.server
        if server.metrics_port:
            host = server.metrics_host or server.host
            try:
                self.metrics_server = metrics_server(host, server.metrics_port)
            except OSError as exc:
                log.error("cannot serve metrics on %s port %d: %s", host, server.metrics_port,
                          exc.strerror)
                return 1
            log.info("metrics (all workers) on http://%s:%d/metrics", host, server.metrics_port)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        if not self._first_worker():
            return 0 if self.stopping else COULD_NOT_START
        log.info("%s", self.started)
        for _ in range(server.workers - 1):
            self._spawn()
        while self.workers:
            self._wait()
            self._pass_on_signals()
            self._reap()
        log.info("all workers stopped")
        return COULD_NOT_START if self.failed else 0

    def _first_worker(self) -> bool:
        """Start one worker and wait until it serves (True) or exits (False: it has said why;
        a signal meanwhile stops it too)."""
        reader, writer = os.pipe()
        try:
            pid = self._spawn(writer)
            os.close(writer)
            writer = -1
            while True:
                ready, _, _ = select.select([reader], [], [], _POLL)
                if ready and os.read(reader, 1):
                    return True
                if self.pending:
                    self._pass_on_signals()
                finished, _ = os.waitpid(pid, os.WNOHANG)
                if finished or ready:  # exited, or closed the pipe without a word
                    if not finished:
                        os.waitpid(pid, 0)
                    self.workers.pop(pid, None)
                    if self.limits is not None:
                        self.limits.forget_worker(0)
                    return False
        finally:
            os.close(reader)
            if writer >= 0:
                os.close(writer)

    def close(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.server_close()
        self.sock.close()

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.pending.append(sig)

    def _wait(self) -> None:
        """Sleep a poll interval, answering metrics scrapes meanwhile."""
        if self.metrics_server is None:
            time.sleep(_POLL)
            return
        ready, _, _ = select.select([self.metrics_server], [], [], _POLL)
        if ready:
            self.metrics_server.handle_request()

    def _pass_on_signals(self) -> None:
        while self.pending:
            sig = self.pending.pop(0)
            if sig == signal.SIGHUP:
                self._signal_all(sig)
                continue
            if not self.stopping:
                log.info("%s: stopping %d workers", signal.Signals(sig).name, len(self.workers))
            self.stopping = True
            self._signal_all(sig)

    def _signal_all(self, sig: int) -> None:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.workers.clear()
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            started, slot = worker
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # its live gauges go
            if self.limits is not None:
                self.limits.forget_worker(slot)  # its uploads in flight are over
            if self.stopping:
                continue
            how = describe_exit(status)
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == COULD_NOT_START:
                log.error("worker %d could not start; stopping the server", pid)
            elif time.monotonic() - started < STARTUP_GRACE:
                log.error("worker %d %s within %.0fs of starting; stopping the server",
                          pid, how, STARTUP_GRACE)
            else:
                log.error("worker %d %s; starting another", pid, how)
                self._spawn()
                continue
            self.failed = self.stopping = True
            self._signal_all(signal.SIGTERM)

    def _spawn(self, ready_fd: int = -1) -> int:
        supervisor = os.getpid()
        taken = {slot for _, slot in self.workers.values()}
        slot = min(set(range(self.settings.server.workers)) - taken)
        pid = os.fork()
        if pid:
            self.workers[pid] = (time.monotonic(), slot)
            return pid
        code = COULD_NOT_START
        try:  # the child never returns into the supervisor's frames
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)  # uvicorn installs its own
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the TLS watch takes it
            # Signals come from the supervisor only (a terminal's Ctrl-C reaches the whole
            # process group, and a second SIGINT would make uvicorn skip draining), and a
            # worker whose supervisor is killed outright is told to stop.
            os.setpgid(0, 0)
            die_with_parent()
            if os.getppid() != supervisor:  # it died before the request took effect
                return 0  # (never returns: the finally exits the process)
            if self.metrics_server is not None:
                self.metrics_server.socket.close()
            self.sock.close()
            if self.limits is not None:
                self.limits.worker = slot
            server = self.settings.server
            code = self.run_worker(listen(server.host, server.port), self.limits,
                                   None if ready_fd < 0 else lambda: _say_ready(ready_fd))
        except SystemExit as exc:  # uvicorn's way out when the app cannot start
            code = exc.code if isinstance(exc.code, int) else COULD_NOT_START
        except BaseException:
            log.exception("worker %d failed", os.getpid())
        finally:
            logging.shutdown()
            os._exit(code)


def _say_ready(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, b"1")
        os.close(fd)


def die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent exits (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def metrics_server(host: str, port: int) -> http.server.HTTPServer:
    """The workers' summed metrics, answered one scrape at a time by the supervisor's loop."""
    from prometheus_client.exposition import MetricsHandler

    class Handler(MetricsHandler):
        timeout = 10  # a stalled scraper holds up the supervisor's loop no longer
        registry = summed_registry()

    family, address = _address(host, port)

    class Server(http.server.HTTPServer):
        address_family = family

    return Server(address, Handler)
