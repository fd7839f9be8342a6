"""A fault-injecting, recording HTTP/1.1 reverse proxy for tests: in front of a `moto_server`
to make S3 fail, or in front of a registry to see what reached it.

    proxy = FaultProxy(moto.url).start()          # 127.0.0.1:<free port>, one thread per connection
    proxy.slow_down(fraction=0.2)                  # 20 % of all requests: 503 SlowDown
    proxy.slow_down(operation="UploadPart")        # every UploadPart: 503 until cleared
    proxy.drop("after", operation="CompleteMultipartUpload", count=1)
    proxy.clear()                                  # no faults from now on
    proxy.count(operation="UploadPart", action="503")

Each connection carries one request (`Connection: close` both ways; clients reconnect). The
request body is streamed through as it arrives (Content-Length or chunked framing, relayed as
is); `Expect: 100-continue` is answered by the proxy itself, which then streams the body
upstream. Responses are relayed byte for byte until the upstream closes.

A fault matches a request by method, query substring, S3 operation (classified from method,
query and headers), or any predicate; it fires on the next `count` matches, or on a `fraction`
of them (seeded, so runs repeat), or on every match. Actions:

- "503": read and discard the body, answer `503 SlowDown` with an S3 XML error body;
- "drop-before": read and discard the body, then close without an answer (never forwarded);
- "drop-after": forward the request, read the whole upstream answer (so S3 applied it), then
  close without an answer: the client cannot tell whether the request took effect.

A request that repeats one the proxy faulted less than `RETRY_WINDOW` seconds before (same
method, path and query: how an SDK retries) is recorded as a retry. `spare_retries=True` never
faults a retry, so a fault that must be outlived by retries (any client making two attempts or
more, backing off less than the window) is outlived no matter how the dice fall. Retries are
judged by what arrives, not by any client's retry headers; an identical request that happens
to arrive meanwhile counts as a retry too (and is spared). Every request is recorded
(`requests`, `count`).
"""

from __future__ import annotations

import contextlib
import io
import math
import random
import socket
import socketserver
import threading
import time
import typing
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

ACTIONS = ("503", "drop-before", "drop-after")
RETRY_WINDOW = 30.0  # seconds; botocore backs off 20 s at most
_BUFFER = 64 * 1024
_MAX_HEADER_LINE = 64 * 1024
_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
    b"<RequestId>faultproxy</RequestId><HostId>faultproxy</HostId></Error>"
)


@dataclass(frozen=True)
class Request:
    """What a fault can match on: the request line and headers (names in lower case)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]

    @property
    def operation(self) -> str:
        return s3_operation(self.method, self.query, self.headers)

    @property
    def key(self) -> tuple[str, str, str]:
        """What a retry repeats."""
        return self.method, self.path, self.query


def s3_operation(method: str, query: str, headers: dict[str, str]) -> str:
    """The S3 API operation of a request (path-style or virtual-host, object or bucket)."""
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    copy = "x-amz-copy-source" in headers
    if method == "PUT":
        if "partNumber" in params and "uploadId" in params:
            return "UploadPartCopy" if copy else "UploadPart"
        return "CopyObject" if copy else "PutObject"
    if method == "POST":
        if "uploads" in params:
            return "CreateMultipartUpload"
        if "uploadId" in params:
            return "CompleteMultipartUpload"
        if "delete" in params:
            return "DeleteObjects"
        return "PostObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in params else "DeleteObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "GET":
        if "uploads" in params:
            return "ListMultipartUploads"
        if "uploadId" in params:
            return "ListParts"
        if "list-type" in params:
            return "ListObjectsV2"
        return "GetObject"
    return method


@dataclass
class Fault:
    action: str
    method: str | None = None
    query: str | None = None  # substring of the raw query string, e.g. "partNumber="
    operation: str | None = None  # e.g. "UploadPart", see s3_operation()
    predicate: Callable[[Request], bool] | None = None
    count: int | None = None  # fire on the next `count` matches only
    fraction: float | None = None  # fire on this share of matches
    spare_retries: bool = False
    matched: int = 0  # matching requests seen
    fired: int = 0  # of which faulted

    def matches(self, request: Request) -> bool:
        if self.method is not None and request.method != self.method.upper():
            return False
        if self.query is not None and self.query not in request.query:
            return False
        if self.operation is not None and request.operation != self.operation:
            return False
        return self.predicate is None or self.predicate(request)

    @property
    def exhausted(self) -> bool:
        return self.count is not None and self.fired >= self.count


@dataclass
class Seen:
    """One request as the proxy saw it and what it did with it (recorded when it arrives;
    `status` and `body_bytes` are filled in as it goes)."""

    method: str
    path: str
    query: str
    operation: str
    action: str  # "forward" or one of ACTIONS
    retry: bool  # it repeats a request the proxy faulted
    status: int | None = None  # upstream status when forwarded (also for drop-after)
    body_bytes: int = 0  # request body bytes read so far


@dataclass
class FaultProxy:
    upstream: str
    seed: int = 0
    host: str = "127.0.0.1"
    faults: list[Fault] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self._random = random.Random(self.seed)
        self._faulted: dict[tuple[str, str, str], float] = {}  # key -> when last faulted
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._server = _Server((self.host, 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="faultproxy", daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ----------------------------------------------------------------------------

    def add(self, action: str, **match: object) -> Fault:
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, not {action!r}")
        fault = Fault(action, **match)  # type: ignore[arg-type]
        with self._lock:
            self.faults.append(fault)
        return fault

    def slow_down(self, **match: object) -> Fault:
        """Answer matching requests with 503 SlowDown."""
        return self.add("503", **match)

    def drop(self, when: str, **match: object) -> Fault:
        """Close matching connections without an answer, `when` = "before" or "after"
        forwarding them."""
        if when not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")
        return self.add(f"drop-{when}", **match)

    def remove(self, fault: Fault) -> None:
        with self._lock:
            if fault in self.faults:
                self.faults.remove(fault)

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self._faulted.clear()

    def count(self, *, operation: str | None = None, method: str | None = None,
              action: str | None = None, query: str | None = None, path: str | None = None,
              status: int | None = None, retries_only: bool = False) -> int:
        """Requests seen that match every filter given (`path`: a prefix of the decoded path,
        `query`: a substring of the raw query)."""
        with self._lock:
            seen = list(self.requests)
        return sum(
            1 for s in seen
            if (operation is None or s.operation == operation)
            and (method is None or s.method == method.upper())
            and (action is None or s.action == action)
            and (query is None or query in s.query)
            and (path is None or urllib.parse.unquote(s.path).startswith(path))
            and (status is None or s.status == status)
            and (not retries_only or s.retry)
        )

    def _choose(self, request: Request) -> tuple[Fault | None, bool]:
        """The fault to apply (None: forward), and whether the request is a retry."""
        now = time.monotonic()
        with self._lock:
            retry = now - self._faulted.get(request.key, -math.inf) < RETRY_WINDOW
            for fault in self.faults:
                if fault.exhausted or not fault.matches(request):
                    continue
                fault.matched += 1
                if fault.spare_retries and retry:
                    continue
                if fault.fraction is not None and self._random.random() >= fault.fraction:
                    continue
                fault.fired += 1
                self._faulted[request.key] = now
                return fault, retry
        return None, retry

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    proxy: FaultProxy


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        proxy = self.server.proxy
        client: socket.socket = self.request
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rfile = typing.cast(io.BufferedReader, client.makefile("rb", buffering=_BUFFER))
        try:
            head = _read_head(rfile)
            if head is None:
                return
            request_line, header_lines = head
            method, target, _version = request_line.split(" ", 2)
            headers = _header_dict(header_lines)
            path, _, query = target.partition("?")
            request = Request(method.upper(), path, query, headers)
            fault, retry = proxy._choose(request)
            action = fault.action if fault is not None else "forward"
            seen = Seen(request.method, path, query, request.operation, action=action,
                        retry=retry)
            proxy._record(seen)
            if headers.get("expect", "").lower() == "100-continue":
                client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            if action in ("503", "drop-before"):
                seen.body_bytes = _relay_body(rfile, headers, None)
                if action == "503":
                    client.sendall(
                        b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                        + f"Content-Length: {len(_SLOW_DOWN)}\r\n".encode()
                        + b"x-amz-request-id: faultproxy\r\nConnection: close\r\n\r\n"
                        + (b"" if request.method == "HEAD" else _SLOW_DOWN))
                return
            self._forward(request_line, header_lines, headers, rfile, client, seen)
        except (OSError, ValueError):
            return  # the client went away, or sent something we cannot parse
        finally:
            with contextlib.suppress(OSError):
                rfile.close()

    def _forward(self, request_line: str, header_lines: list[str], headers: dict[str, str],
                 rfile: io.BufferedReader, client: socket.socket, seen: Seen) -> None:
        answer = seen.action == "forward"
        upstream = socket.create_connection(self.server.proxy._upstream, timeout=300)
        with upstream:
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            kept = [line for line in header_lines
                    if line.split(":", 1)[0].strip().lower() not in
                    ("connection", "expect", "keep-alive", "proxy-connection")]
            head = "\r\n".join([request_line, *kept, "Connection: close", "", ""])
            upstream.sendall(head.encode("latin-1"))
            seen.body_bytes = _relay_body(rfile, headers, upstream)
            ufile = typing.cast(io.BufferedReader, upstream.makefile("rb", buffering=_BUFFER))
            with ufile:
                response = _read_head(ufile)
                if response is None:
                    return
                status_line, response_headers = response
                seen.status = int(status_line.split(" ", 2)[1])
                kept = [line for line in response_headers
                        if line.split(":", 1)[0].strip().lower()
                        not in ("connection", "keep-alive")]
                if answer:
                    client.sendall("\r\n".join(
                        [status_line, *kept, "Connection: close", "", ""]).encode("latin-1"))
                while data := ufile.read1(_BUFFER):
                    if answer:
                        client.sendall(data)


def _read_head(rfile: io.BufferedReader) -> tuple[str, list[str]] | None:
    """The start line and header lines of a message; None at a clean EOF."""
    lines: list[str] = []
    while True:
        raw = rfile.readline(_MAX_HEADER_LINE)
        if not raw:
            if lines:
                raise ValueError("connection closed inside the header")
            return None
        line = raw.decode("latin-1").rstrip("\r\n")
        if not line:
            if not lines:
                continue  # tolerate stray CRLF between messages
            return lines[0], lines[1:]
        lines.append(line)


def _header_dict(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def _relay_body(rfile: io.BufferedReader, headers: dict[str, str],
                sink: socket.socket | None) -> int:
    """Stream the request body (Content-Length or chunked framing, relayed as is) to `sink`,
    or discard it; returns the payload size."""
    read = rfile.read1
    readline = rfile.readline

    def send(data: bytes) -> None:
        if sink is not None:
            sink.sendall(data)

    if "chunked" in headers.get("transfer-encoding", "").lower():
        total = 0
        while True:
            size_line = readline(_MAX_HEADER_LINE)
            if not size_line:
                raise ValueError("connection closed inside a chunked body")
            send(size_line)
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = readline(_MAX_HEADER_LINE)
                    send(trailer)
                    if trailer in (b"\r\n", b"\n", b""):
                        return total
            remaining = size + 2  # the chunk and its CRLF
            while remaining:
                data = read(min(_BUFFER, remaining))
                if not data:
                    raise ValueError("connection closed inside a chunk")
                send(data)
                remaining -= len(data)
            total += size
    remaining = int(headers.get("content-length", "0") or 0)
    total = remaining
    while remaining:
        data = read(min(_BUFFER, remaining))
        if not data:
            raise ValueError("connection closed inside the body")
        send(data)
        remaining -= len(data)
    return total
