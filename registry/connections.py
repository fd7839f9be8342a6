"""Every connection bounded in time and number, TLS included.

uvicorn reads requests as fast as clients send them and keeps a connection for as long as the
client does: a client sending a header line every few seconds, or a body a byte at a time,
holds a socket (and a file descriptor) forever, and enough of them starve everyone. The
`Guard` of one server process bounds that:

- At most `max_connections` open connections, and `max_connections_per_address` from one
  client address (trusted proxies are exempt: every client behind them shares their address).
  A connection over a cap gets a short `503` with `Retry-After` and is closed at once.
- `header_timeout`: the seconds from a connection's first byte (or a request's, on a kept-alive
  connection) until its request headers are complete; a connection that sends nothing at all is
  closed after as long. The TLS handshake counts against the same time.
- `body_timeout`: a request body that stops arriving (while the server is reading it) for this
  long ends the connection. The request sees a disconnect, exactly as if the client had gone: an
  upload keeps the bytes it received and the client may resume it.
- `idle_timeout`: a kept-alive connection with no request (uvicorn's keep-alive timeout).

TLS is done here rather than by uvicorn, so the caps and the handshake deadline apply before a
handshake's cost is paid, and so the certificate can change under a running server (`Tls`): a
connection is admitted as TCP, then gets asyncio's TLS layer (the one `loop.start_tls` uses,
put in place at once so no early byte can miss it), then is handed to the HTTP protocol. The
deadlines are checked by one sweep a second over all connections, which costs the request path
nothing but a timestamp.

A plain-HTTP port receiving a TLS handshake (every docker, podman and skopeo tries TLS first)
says once, at warning level, what to do about it, and then only at debug level.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from asyncio import sslproto
from typing import Any

from registry.settings import ServerSettings

log = logging.getLogger("registry")

_SWEEP = 1.0  # seconds between looks at every connection's deadlines
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
         b"Connection: close\r\n\r\n")
_PLAIN = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 44\r\n"
          b"Connection: close\r\n\r\nThis port speaks plain HTTP, not HTTPS/TLS.\n")


class Guard:
    """The connection bookkeeping of one server process."""

    def __init__(self, settings: ServerSettings, tls: Any = None,
                 max_connections: int | None = None, metrics: Any = None) -> None:
        self.settings = settings
        self.metrics = metrics  # registry.observability.Metrics, or None
        self.tls = tls  # a registry.tls.Tls, or None for plain HTTP
        self.max_connections = (settings.max_connections if max_connections is None
                                else max_connections)
        self.per_address = settings.max_connections_per_address
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]
        self.by_address: dict[str, int] = {}
        self.total = 0
        self.connections: set[Any] = set()  # admitted, past any handshake
        self._sweeping: asyncio.TimerHandle | None = None
        self._warned_tls = False

    def admit(self, address: str) -> bool:
        if self.max_connections and self.total >= self.max_connections:
            return False
        if self.per_address and self.by_address.get(address, 0) >= self.per_address \
                and not self._is_trusted(address):
            return False
        self.total += 1
        self.by_address[address] = self.by_address.get(address, 0) + 1
        if self.metrics is not None:
            self.metrics.connections.inc()
        return True

    def ended(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.connections_ended.labels(reason).inc()

    def release(self, address: str) -> None:
        if self.metrics is not None:
            self.metrics.connections.dec()
        self.total -= 1
        left = self.by_address[address] - 1
        if left:
            self.by_address[address] = left
        else:
            del self.by_address[address]

    def _is_trusted(self, address: str) -> bool:
        if not self.trusted:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def start_sweeping(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sweeping is None:
            self._sweeping = loop.call_later(_SWEEP, self._sweep, loop)

    def stop(self) -> None:
        if self._sweeping is not None:
            self._sweeping.cancel()

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        header, body = self.settings.header_timeout, self.settings.body_timeout
        for connection in list(self.connections):
            reason = connection.expired(now, header, body)
            if reason is not None:
                self.ended(reason)
                connection.end()
        self._sweeping = loop.call_later(_SWEEP, self._sweep, loop)

    def tls_on_plain_port(self, address: str) -> None:
        level = logging.DEBUG if self._warned_tls else logging.WARNING
        self._warned_tls = True
        log.log(level, "a client at %s started a TLS handshake on this plain-HTTP port: serve "
                "TLS ([server.tls] cert_file and key_file), or tell the client this registry "
                "speaks plain HTTP (docker: insecure-registries in daemon.json; podman, "
                "skopeo, buildah: --tls-verify=false)%s", address,
                "" if level == logging.DEBUG else " (further ones are logged at debug level)")


def guarded(base: type[asyncio.Protocol], guard: Guard) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class `base` with the guard's caps, deadlines and TLS."""

    class Guarded(base):  # type: ignore[valid-type, misc]
        _address = ""
        _admitted = False
        _started = False  # uvicorn's protocol has seen the connection
        _request_began: float | None = None  # a request's headers are awaited since
        _last_data = 0.0
        _cycle: Any = None
        _spoke = False  # any bytes received yet
        _handshaking = False  # TLS: the layer is in place, its handshake not yet done

        def connection_made(self, transport: Any) -> None:
            if self._handshaking:  # the TLS layer's transport, the handshake done
                self._handshaking = False
                self._request_began = self._last_data = time.monotonic()
                self._start(transport)
                return
            peer = transport.get_extra_info("peername")
            self._address = str(peer[0]) if peer else ""
            loop = asyncio.get_running_loop()
            guard.start_sweeping(loop)
            if not guard.admit(self._address):
                guard.ended("over_cap")
                transport.write(_BUSY)
                transport.close()
                return
            self._admitted = True
            self._request_began = self._last_data = time.monotonic()
            guard.connections.add(self)
            self._tcp = transport
            if guard.tls is None:
                self._start(transport)
                return
            # The TLS layer goes between the transport and this protocol at once, before any
            # byte is read: the event loop may already hold the ClientHello (uvloop does), and
            # `loop.start_tls` would install its layer only on a later turn of the loop.
            self._handshaking = True
            waiter = loop.create_future()
            waiter.add_done_callback(self._handshake_done)
            layer = sslproto.SSLProtocol(
                loop, self, guard.tls.context, waiter, server_side=True,
                ssl_handshake_timeout=max(math.ceil(guard.settings.header_timeout), 1))
            transport.set_protocol(layer)
            layer.connection_made(transport)

        def _handshake_done(self, waiter: asyncio.Future[Any]) -> None:
            exc = waiter.exception() if not waiter.cancelled() else None
            if waiter.cancelled() or exc is not None:
                log.debug("TLS handshake with %s failed: %s", self._address, exc)
                guard.ended("tls_handshake")
                self._tcp.abort()
                self._forget()

        def _start(self, transport: Any) -> None:
            self._started = True
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            if not self._started:
                return
            self._last_data = now = time.monotonic()
            cycle = self.cycle
            if self._request_began is None and (cycle is None or cycle.response_complete):
                self._request_began = now  # the first bytes of the next request
            if not self._spoke:
                self._spoke = True
                if guard.tls is None and data[:1] == b"\x16" and data[1:2] == b"\x03":
                    guard.tls_on_plain_port(self._address)
                    # An HTTP answer, not a bare close: that is how Go clients (docker's
                    # CLI with --insecure, for one) learn the port is plain HTTP and retry.
                    self.transport.write(_PLAIN)
                    self.transport.close()
                    return
            super().data_received(data)
            if self.cycle is not self._cycle:  # headers complete: a request began
                self._cycle = self.cycle
                self._request_began = None

        def connection_lost(self, exc: Exception | None) -> None:
            self._forget()
            if self._started:
                super().connection_lost(exc)

        def _forget(self) -> None:
            if self._admitted:
                self._admitted = False
                guard.connections.discard(self)
                guard.release(self._address)

        def expired(self, now: float, header_timeout: float, body_timeout: float
                    ) -> str | None:
            """Why this connection must end now, if it must."""
            if self._request_began is not None:
                late = now - self._request_began > header_timeout
                return ("handshake_timeout" if not self._started else "header_timeout"
                        ) if late else None
            cycle = self.cycle
            if cycle is None or cycle.response_complete or not cycle.more_body:
                return None
            flow = self.flow
            if flow is not None and flow.read_paused:
                return None  # the server is behind, not the client
            return "body_timeout" if now - self._last_data > body_timeout else None

        def end(self) -> None:
            log.debug("closing the connection from %s: past its deadline", self._address)
            if self._started:
                self.transport.close()
            else:
                self._tcp.abort()

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


def raise_open_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit; returns the limit now."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def connection_budget(settings: ServerSettings, open_files: int) -> int:
    """`max_connections`, kept below the open-file limit with room for storage files,
    threads' sockets and the listening sockets (0: the limit is the only cap)."""
    room = max(open_files - max(128, open_files // 10), 16)
    return min(settings.max_connections, room) if settings.max_connections else room
