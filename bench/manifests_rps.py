"""Manifest GET and HEAD (by tag, by digest), blob HEAD and manifest PUT requests per second
at 1, 16 and 64 concurrent clients.

A section of bench/run.py (run it through that script). It also holds the load generator
the concurrency and fanout sections use: `HttpConn`, a minimal HTTP/1.1 keep-alive client on
raw non-blocking sockets (uvloop when installed). Its cost per request is a few tens of
microseconds of Python, well under what aiohttp or httpx spend, but still about half a core
at these rates, which a 2-core machine takes from the server. So the GETs run through `wrk`
(C, one thread) when it is installed (`client="wrk"`, the default of bench/run.py then):
`run_wrk_level` writes a Lua script that sends the same requests as the Python client, in
turn, and checks every status. wrk 4.1 cannot measure HEAD (its parser waits for a HEAD
response's body), so the HEADs and `put` stay on the Python client. The client's own CPU
use is reported next to every figure (`client_cpu`: the share of one core the client
process, or wrk, used).

For each target and round: a fresh server with empty storage; one config blob and one
layer (small) are pushed to `bench/manifests`, and `GET_TAGS` (16) OCI manifests that differ
by an annotation are pushed under tags `g-000`…; then, for each operation and each level of
concurrency, every client holds one connection and sends requests back to back for
`warmup` seconds (not counted), then `duration` seconds (counted):

- `get`: `GET /v2/bench/manifests/manifests/<tag>` with the OCI manifest `Accept`, over the
  tags in turn; the body is read and its length checked;
- `head`: the same with `HEAD`;
- `get_digest`, `head_digest`: the same by digest (`/manifests/sha256:…`, the digests of
  those tags); a HEAD's `Content-Length` must be the manifest's length;
- `blob_head`: `HEAD /v2/bench/manifests/blobs/<digest>` of the config and the layer in
  turn; its `Content-Length` must be the blob's size;
- `put`: `PUT /v2/bench/manifests/manifests/<new tag>` of a manifest never pushed before
  (its annotation holds the client and request number), so each request stores new content.

The reads come first and `put` last, so they run on a repository of `GET_TAGS` tags. On a
target with auth on (`Deployment.credentials`) the client first gets a Bearer token from the
token endpoint (`bearer_token`) and sends it with every request, the setup's pushes too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from blob_throughput import cpu_seconds
from common import Deployment, S3Server, Target, log, process_tree, s3_pids

T = TypeVar("T")

REPO = "bench/manifests"
GET_TAGS = 16
SETUP_CONCURRENCY = 8
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OPS = ("get", "head", "get_digest", "head_digest", "blob_head", "put")  # reads before put
LABELS = {"get": "GET", "head": "HEAD", "get_digest": "GET by digest",
          "head_digest": "HEAD by digest", "blob_head": "blob HEAD", "put": "PUT"}
METHODS = {"get": "GET", "head": "HEAD", "get_digest": "GET", "head_digest": "HEAD",
           "blob_head": "HEAD", "put": "PUT"}
LEVELS = (1, 16, 64)
EXPECTED = {"get": 200, "head": 200, "get_digest": 200, "head_digest": 200, "blob_head": 200,
            "put": 201}
HEAD_LENGTH_CHECKED = ("head_digest", "blob_head")  # Content-Length must be the size
CLIENTS = ("wrk", "python")
# The ops wrk runs with client="wrk". wrk 4.1's HTTP parser is never told a request was a
# HEAD, so it waits for the body that the Content-Length of a HEAD answer announces (and
# counts no request): HEADs stay on the Python client, as does `put`.
WRK_OPS = ("get", "get_digest")
WRK_RESULT = "bench-wrk-result"  # the line the Lua script's done() prints


def default_client() -> str:
    """wrk when it is on PATH, else the Python client."""
    return "wrk" if shutil.which("wrk") else "python"


# --------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------


class HttpError(RuntimeError):
    pass


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes  # empty unless the request asked to keep it
    length: int  # body bytes received


Body = bytes | Iterable[bytes | bytearray | memoryview] | None
Sink = Callable[[memoryview], None]


class HttpConn:
    """One keep-alive HTTP/1.1 connection. Requests on it are sequential; the response
    body goes to `sink` chunk by chunk (never collected) unless `keep_body` is set."""

    def __init__(self, host: str, port: int, bufsize: int = 256 * 1024) -> None:
        self.host, self.port = host, port
        self.sock: socket.socket | None = None
        self.buf = bytearray(bufsize)
        self.view = memoryview(self.buf)
        self.start = self.end = 0  # unread bytes are buf[start:end]
        self.host_header = f"{host}:{port}".encode()

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (self.host, self.port))
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.start = self.end = 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def _fill(self) -> None:
        """Read more bytes after buf[end] (compacting first if the buffer is full)."""
        assert self.sock is not None
        if self.end == len(self.buf):
            if self.start == 0:
                raise HttpError("response header larger than the read buffer")
            n = self.end - self.start
            self.buf[:n] = self.buf[self.start : self.end]
            self.start, self.end = 0, n
        got = await asyncio.get_running_loop().sock_recv_into(self.sock, self.view[self.end :])
        if not got:
            raise HttpError(f"{self.host}:{self.port} closed the connection")
        self.end += got

    async def _line(self) -> bytes:
        while (i := self.buf.find(b"\r\n", self.start, self.end)) < 0:
            await self._fill()
        line = bytes(self.buf[self.start : i])
        self.start = i + 2
        return line

    async def _exactly(self, n: int, out: bytearray | None, sink: Sink | None) -> None:
        while n:
            if self.start == self.end:
                self.start = self.end = 0
                await self._fill()
            take = min(n, self.end - self.start)
            chunk = self.view[self.start : self.start + take]
            if out is not None:
                out += chunk
            if sink is not None:
                sink(chunk)
            self.start += take
            n -= take

    async def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: Body = None,
        content_length: int | None = None,
        keep_body: bool = False,
        sink: Sink | None = None,
    ) -> Response:
        if self.sock is None:
            await self.connect()
        assert self.sock is not None
        loop = asyncio.get_running_loop()
        head = [f"{method} {target} HTTP/1.1\r\n".encode(), b"Host: ", self.host_header, b"\r\n"]
        for k, v in (headers or {}).items():
            head.append(f"{k}: {v}\r\n".encode())
        if isinstance(body, bytes):
            content_length = len(body)
        if content_length is not None:
            head.append(f"Content-Length: {content_length}\r\n".encode())
        elif method in ("PUT", "POST", "PATCH"):
            head.append(b"Content-Length: 0\r\n")
        head.append(b"\r\n")
        if isinstance(body, bytes):
            await loop.sock_sendall(self.sock, b"".join(head) + body)
        else:
            await loop.sock_sendall(self.sock, b"".join(head))
            for chunk in body or ():
                await loop.sock_sendall(self.sock, chunk)
        # Status line and headers
        while True:
            status_line = await self._line()
            parts = status_line.split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise HttpError(f"bad status line {status_line[:100]!r}")
            status = int(parts[1])
            resp_headers: dict[str, str] = {}
            while line := await self._line():
                name, _, value = line.partition(b":")
                resp_headers[name.strip().lower().decode()] = value.strip().decode()
            if status != 100:
                break
        out = bytearray() if keep_body else None
        length = 0
        if method == "HEAD" or status in (204, 304):
            pass
        elif "chunked" in resp_headers.get("transfer-encoding", "").lower():
            while (size := int((await self._line()).split(b";")[0], 16)) != 0:
                await self._exactly(size, out, sink)
                length += size
                await self._line()
            while await self._line():  # trailers
                pass
        elif (cl := resp_headers.get("content-length")) is not None:
            length = int(cl)
            await self._exactly(length, out, sink)
        else:
            raise HttpError(f"{method} {target} -> {status} without Content-Length")
        if resp_headers.get("connection", "").lower() == "close":
            self.close()
        return Response(status, resp_headers, bytes(out) if out is not None else b"", length)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop when it is installed (the server uses it too)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def split_url(base_url: str, location: str) -> tuple[str, int, str]:
    """(host, port, path?query) of a Location, relative to base_url."""
    url = urllib.parse.urlsplit(urllib.parse.urljoin(base_url + "/", location))
    target = url.path + (f"?{url.query}" if url.query else "")
    return url.hostname or "127.0.0.1", url.port or 80, target


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def push_small_blob(conn: HttpConn, base_url: str, repo: str, data: bytes,
                          headers: dict[str, str] | None = None) -> str:
    """POST + monolithic PUT of a small blob on conn (the upload stays on the same server);
    `headers` (Authorization) go with both requests."""
    resp = await conn.request("POST", f"/v2/{repo}/blobs/uploads/", headers, keep_body=True)
    if resp.status != 202 or "location" not in resp.headers:
        raise HttpError(f"POST /v2/{repo}/blobs/uploads/ -> {resp.status}: {resp.body[:300]!r}")
    _, _, target = split_url(base_url, resp.headers["location"])
    digest = sha256_digest(data)
    sep = "&" if "?" in target else "?"
    resp = await conn.request(
        "PUT", f"{target}{sep}digest={digest}",
        {**(headers or {}), "Content-Type": "application/octet-stream"}, data, keep_body=True,
    )
    if resp.status != 201:
        raise HttpError(f"PUT blob {digest} -> {resp.status}: {resp.body[:300]!r}")
    return digest


async def bearer_token(base_url: str, credentials: tuple[str, str], scope: str) -> str:
    """A token by the Docker token protocol: `GET /v2/` answers 401 with `WWW-Authenticate:
    Bearer realm=...,service=...`; `GET <realm>?service=...&scope=<scope>` with Basic
    credentials answers `{"token": ...}`."""
    host, port, _ = split_url(base_url, "/")
    conn = HttpConn(host, port)
    try:
        resp = await conn.request("GET", "/v2/", keep_body=True)
        challenge = resp.headers.get("www-authenticate", "")
        if resp.status != 401 or not challenge.lower().startswith("bearer "):
            raise HttpError(f"GET /v2/ -> {resp.status}, WWW-Authenticate {challenge!r}: "
                            "expected a Bearer challenge")
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if "realm" not in params:
            raise HttpError(f"no realm in WWW-Authenticate {challenge!r}")
        rhost, rport, target = split_url(base_url, params["realm"])
        query = urllib.parse.urlencode(
            {**({"service": params["service"]} if "service" in params else {}), "scope": scope})
        basic = base64.b64encode(":".join(credentials).encode()).decode()
        if (rhost, rport) != (host, port):
            conn.close()
            conn = HttpConn(rhost, rport)
        sep = "&" if "?" in target else "?"
        resp = await conn.request("GET", f"{target}{sep}{query}",
                                  {"Authorization": f"Basic {basic}"}, keep_body=True)
        if resp.status != 200:
            raise HttpError(f"GET {target} (scope {scope}) -> {resp.status}: {resp.body[:300]!r}")
        body = json.loads(resp.body)
        token = body.get("token") or body.get("access_token")
        if not token:
            raise HttpError(f"token endpoint answered no token: {resp.body[:300]!r}")
        return str(token)
    finally:
        conn.close()


async def auth_headers(dep: Deployment, repo: str) -> dict[str, str]:
    """{"Authorization": "Bearer ..."} for pull and push on repo if the deployment needs
    credentials, else {}."""
    if dep.credentials is None:
        return {}
    token = await bearer_token(dep.server.base_url, dep.credentials,
                               f"repository:{repo}:pull,push")
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------


@dataclass
class ManifestSet:
    config: bytes
    layer: bytes
    template: tuple[bytes, bytes] = (b"", b"")  # manifest bytes around the annotation value

    def __post_init__(self) -> None:
        marker = "@@N@@"
        text = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(self.config),
                           "size": len(self.config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": sha256_digest(self.layer),
                            "size": len(self.layer)}],
                "annotations": {"org.example.bench": marker},
            },
            separators=(",", ":"),
        ).encode()
        before, after = text.split(marker.encode())
        self.template = (before, after)

    def manifest(self, label: str) -> bytes:
        return self.template[0] + label.encode() + self.template[1]


def make_set(seed: bytes) -> ManifestSet:
    layer = hashlib.sha256(seed + b"layer").digest() * 32  # 1 KiB
    config = json.dumps(
        {"architecture": "amd64", "os": "linux",
         "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]}},
        separators=(",", ":"),
    ).encode()
    return ManifestSet(config, layer)


async def setup(base_url: str, mset: ManifestSet,
                headers: dict[str, str] | None = None) -> list[tuple[str, int]]:
    """Blobs and GET_TAGS tagged manifests (`headers`, e.g. Authorization, on every request);
    returns [(tag, manifest length)]."""
    host, port, _ = split_url(base_url, "/")
    conns = [HttpConn(host, port) for _ in range(SETUP_CONCURRENCY)]
    tags = [f"g-{i:03d}" for i in range(GET_TAGS)]

    async def put_tags(conn: HttpConn, mine: list[str]) -> None:
        for tag in mine:
            resp = await conn.request("PUT", f"/v2/{REPO}/manifests/{tag}",
                                      {**(headers or {}), "Content-Type": OCI_MANIFEST},
                                      mset.manifest(tag), keep_body=True)
            if resp.status != 201:
                raise HttpError(f"PUT manifest {tag} -> {resp.status}: {resp.body[:300]!r}")

    try:
        await push_small_blob(conns[0], base_url, REPO, mset.config, headers)
        await push_small_blob(conns[0], base_url, REPO, mset.layer, headers)
        n = len(conns)
        await asyncio.gather(*(put_tags(c, tags[i::n]) for i, c in enumerate(conns)))
        return [(tag, len(mset.manifest(tag))) for tag in tags]
    finally:
        for c in conns:
            c.close()


def read_targets(op: str, tags: list[tuple[str, int]], mset: ManifestSet) -> list[tuple[str, int]]:
    """(path, expected length) that a read op goes through in turn: the tags setup() pushed,
    their digests, or the two blobs."""
    if op == "blob_head":
        return [(f"/v2/{REPO}/blobs/{sha256_digest(b)}", len(b)) for b in (mset.config, mset.layer)]
    if op in ("get_digest", "head_digest"):
        return [(f"/v2/{REPO}/manifests/{sha256_digest(mset.manifest(tag))}", size)
                for tag, size in tags]
    return [(f"/v2/{REPO}/manifests/{tag}", size) for tag, size in tags]


def read_headers(op: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    """The headers of a read op's requests: `headers` (Authorization), and the OCI manifest
    Accept unless the op reads blobs."""
    return {**(headers or {}), **({} if op == "blob_head" else {"Accept": OCI_MANIFEST})}


def response_problem(op: str, path: str, resp: Response, size: int) -> str | None:
    """What is wrong with an answer to op on path (expected length `size`), or None: the
    status, the body's length of a GET, the Content-Length of a HEAD by digest or of a blob."""
    method = METHODS[op]
    if (resp.status == EXPECTED[op] and (method != "GET" or resp.length == size)
            and (op not in HEAD_LENGTH_CHECKED
                 or resp.headers.get("content-length") == str(size))):
        return None
    return (f"{method} {path} -> {resp.status} ({resp.length} bytes,"
            f" Content-Length {resp.headers.get('content-length')})")


@dataclass
class LevelResult:
    requests: int = 0
    errors: int = 0
    first_error: str | None = None
    latencies: list[float] = field(default_factory=list)


async def run_level(
    base_url: str, op: str, clients: int, warmup: float, duration: float,
    tags: list[tuple[str, int]], mset: ManifestSet, label: str, server_pid: int,
    s3: S3Server | None = None, headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One op at one level on the Python client; `headers` (Authorization) on every request."""
    host, port, _ = split_url(base_url, "/")
    conns = [HttpConn(host, port, 64 * 1024) for _ in range(clients)]
    await asyncio.gather(*(c.connect() for c in conns))
    result = LevelResult()
    counter = 0
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup
    stop = start + duration
    accept = read_headers(op, headers)
    put_headers = {**(headers or {}), "Content-Type": OCI_MANIFEST}
    method = METHODS[op]
    reads = [] if op == "put" else read_targets(op, tags, mset)

    async def client(cid: int, conn: HttpConn) -> None:
        nonlocal counter
        i = cid
        while loop.time() < stop:
            if op == "put":
                counter += 1
                tag = f"{label}-{counter}"
                path = f"/v2/{REPO}/manifests/{tag}"
                call: Awaitable[Response] = conn.request(
                    "PUT", path, put_headers, mset.manifest(tag))
                size = 0
            else:
                path, size = reads[i % len(reads)]
                i += 1
                call = conn.request(method, path, accept)
            t0 = time.perf_counter()
            resp = await call
            elapsed = time.perf_counter() - t0
            if not start <= loop.time() <= stop:  # count what completes in the window
                continue
            if (problem := response_problem(op, path, resp, size)) is not None:
                result.errors += 1
                if result.first_error is None:
                    result.first_error = problem
                if resp.status >= 500 or resp.status == 429:
                    await asyncio.sleep(0.01)
                continue
            result.requests += 1
            result.latencies.append(elapsed)

    # CPU and wall time over the counted window only
    tasks = [asyncio.create_task(client(i, c)) for i, c in enumerate(conns)]
    try:
        await asyncio.sleep(max(0.0, start - loop.time()))
        pids = process_tree(server_pid)
        cpu0, client0, t0 = cpu_seconds(pids), time.process_time(), time.perf_counter()
        s3_0 = cpu_seconds(s3_pids(s3))
        await asyncio.sleep(max(0.0, stop - loop.time()))
        cpu1, client1, t1 = (cpu_seconds(process_tree(server_pid)), time.process_time(),
                             time.perf_counter())
        s3_1 = cpu_seconds(s3_pids(s3))
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in conns:
            c.close()
    wall = t1 - t0
    lat = sorted(result.latencies)  # empty if no request completed in the window
    return {
        "rps": result.requests / duration,
        "p50_ms": statistics.median(lat) * 1000 if lat else None,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else None,
        "server_cpu_ms_per_req": (cpu1 - cpu0) * 1000 / result.requests if lat else None,
        # moto_server's, or RGW's ceph-mon + ceph-osd + radosgw; None without an S3 server
        "s3_server_cpu_ms_per_req": ((s3_1 - s3_0) * 1000 / result.requests
                                     if lat and s3 is not None else None),
        "client_cpu": (client1 - client0) / wall if wall > 0 else 0.0,
        "requests": result.requests,
        "errors": result.errors,
        "first_error": result.first_error,
        "clients": clients,
    }


# --------------------------------------------------------------------------------------
# wrk as the load generator of the GETs
# --------------------------------------------------------------------------------------

# The Lua script wrk runs: @REQUESTS@ (the raw requests, as Lua strings), @EXPECTED@ (the
# status) and @WHAT@ are filled in by write_wrk_script. Every connection sends the requests
# in turn (one thread, so one counter); `response` counts answers whose status is not the
# expected one (wrk's own count is of statuses above 399 only); done() prints one line.
WRK_SCRIPT = """\
-- Written by bench/manifests_rps.py: @WHAT@.
local reqs = {
@REQUESTS@
}
local count = #reqs
local index = 0
bad_status = 0
first_bad_status = 0

function request()
  index = index % count + 1
  return reqs[index]
end

function response(status, headers, body)
  if status ~= @EXPECTED@ then
    bad_status = bad_status + 1
    if first_bad_status == 0 then first_bad_status = status end
  end
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  local bad, first = 0, 0
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("bad_status")
    if first == 0 then first = thread:get("first_bad_status") end
  end
  local e = summary.errors
  io.write(string.format("@MARKER@ requests=%.0f bad_status=%.0f first_bad_status=%.0f"
    .. " connect=%.0f read=%.0f write=%.0f timeout=%.0f duration_us=%.0f p50_us=%.0f"
    .. " p99_us=%.0f\\n", summary.requests, bad, first, e.connect, e.read, e.write,
    e.timeout, summary.duration, latency:percentile(50), latency:percentile(99)))
end
"""


def write_wrk_script(path: Path, base_url: str, op: str, tags: list[tuple[str, int]],
                     mset: ManifestSet, headers: dict[str, str] | None = None) -> Path:
    """The Lua script of a read op: the requests HttpConn sends (request line, Host, the
    op's headers), over read_targets in turn."""
    host, port, _ = split_url(base_url, "/")
    lines = "".join(f"{k}: {v}\r\n" for k, v in read_headers(op, headers).items())
    requests = [f"{METHODS[op]} {target} HTTP/1.1\r\nHost: {host}:{port}\r\n{lines}\r\n"
                for target, _ in read_targets(op, tags, mset)]
    # A JSON string of printable ASCII and CR LF is a Lua string literal (its only escapes
    # are then \r, \n, \" and \\, which Lua reads alike).
    if not all(r.replace("\r\n", "").isascii() and r.replace("\r\n", "").isprintable()
               for r in requests):
        raise ValueError(f"{op}: a request wrk's script cannot hold: {requests[0]!r}")
    literals = ",\n".join(f"  {json.dumps(r)}" for r in requests)
    what = f"{op}, {len(requests)} requests in turn on {host}:{port}"
    text = (WRK_SCRIPT.replace("@WHAT@", what).replace("@REQUESTS@", literals)
            .replace("@EXPECTED@", str(EXPECTED[op])).replace("@MARKER@", WRK_RESULT))
    path.write_text(text)
    return path


def run_wrk(base_url: str, script: Path, clients: int,
            seconds: float) -> tuple[dict[str, int], float, float]:
    """`wrk -t1 -c<clients> -d<seconds>s --latency -s <script>`: (the numbers its done()
    printed, wrk's CPU seconds, wall seconds). wrk takes whole seconds, so a shorter run is
    given the next whole second and stopped with SIGINT after `seconds` (wrk then stops
    within 0.1 s and reports as usual)."""
    whole = max(1, math.ceil(seconds))
    argv = ["wrk", "-t1", f"-c{clients}", f"-d{whole}s", "--latency", "-s", str(script),
            base_url + "/"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        if seconds < whole:
            time.sleep(seconds)
            proc.send_signal(signal.SIGINT)
        assert proc.stdout is not None
        out = proc.stdout.read().decode(errors="replace")
        # wait4, not wait: its resource usage is wrk's own CPU time
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.stdout is not None:
        proc.stdout.close()
    line = next((x for x in out.splitlines() if x.startswith(WRK_RESULT + " ")), None)
    if proc.returncode != 0 or line is None:
        raise HttpError(f"{shlex.join(argv)} -> rc {proc.returncode}, no result line:\n"
                        + out[-1500:])
    fields = {k: int(float(v)) for k, _, v in
              (item.partition("=") for item in line.split()[1:])}
    return fields, usage.ru_utime + usage.ru_stime, wall


async def validate_reads(base_url: str, op: str, tags: list[tuple[str, int]], mset: ManifestSet,
                         headers: dict[str, str] | None = None) -> str | None:
    """One request per path of a read op through HttpConn, before wrk runs it (not counted):
    the status and length checks the Python client makes of every answer (wrk checks the
    status only), so a server that answers wrongly cannot look fast. The first problem found,
    or None."""
    host, port, _ = split_url(base_url, "/")
    conn = HttpConn(host, port)
    try:
        for path, size in read_targets(op, tags, mset):
            resp = await conn.request(METHODS[op], path, read_headers(op, headers))
            if (problem := response_problem(op, path, resp, size)) is not None:
                return problem
    finally:
        conn.close()
    return None


def run_wrk_level(
    base_url: str, op: str, clients: int, warmup: float, duration: float, script: Path,
    server_pid: int, s3: S3Server | None = None,
) -> dict[str, Any]:
    """One op at one level through wrk: a warm-up run (not counted), then the counted run;
    the server's CPU over the counted run, wrk's rates and percentiles (wrk's own, which
    include its correction for coordinated omission), the same keys as run_level."""
    if warmup > 0:
        run_wrk(base_url, script, clients, warmup)
    cpu0, s3_0 = cpu_seconds(process_tree(server_pid)), cpu_seconds(s3_pids(s3))
    res, wrk_cpu, wall = run_wrk(base_url, script, clients, duration)
    cpu1, s3_1 = cpu_seconds(process_tree(server_pid)), cpu_seconds(s3_pids(s3))
    ok = res["requests"] - res["bad_status"]
    socket_errors = res["connect"] + res["read"] + res["write"] + res["timeout"]
    seconds = res["duration_us"] / 1e6
    problems = []
    if res["bad_status"]:
        problems.append(f"{res['bad_status']} answers not {EXPECTED[op]} (first:"
                        f" {res['first_bad_status']})")
    if socket_errors:
        problems.append(f"wrk socket errors: connect {res['connect']}, read {res['read']},"
                        f" write {res['write']}, timeout {res['timeout']}")
    return {
        "rps": ok / seconds if seconds > 0 else 0.0,
        "p50_ms": res["p50_us"] / 1000 if ok else None,
        "p99_ms": res["p99_us"] / 1000 if ok else None,
        "server_cpu_ms_per_req": (cpu1 - cpu0) * 1000 / ok if ok else None,
        "s3_server_cpu_ms_per_req": ((s3_1 - s3_0) * 1000 / ok
                                     if ok and s3 is not None else None),
        "client_cpu": wrk_cpu / wall if wall > 0 else 0.0,  # wrk's, over its whole run
        "requests": ok,
        "errors": res["bad_status"] + socket_errors,
        "first_error": "; ".join(problems) or None,
        "clients": clients,
        "wrk_seconds": seconds,
    }


# --------------------------------------------------------------------------------------
# The section
# --------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def invalid_sample(clients: int, problem: str) -> dict[str, Any]:
    """A level not run: the untimed check before wrk found a wrong answer."""
    return {"rps": None, "p50_ms": None, "p99_ms": None, "server_cpu_ms_per_req": None,
            "s3_server_cpu_ms_per_req": None, "client_cpu": None, "requests": 0, "errors": 1,
            "first_error": f"not run, the check before it failed: {problem}", "clients": clients}


def measure_target(
    dep: Deployment, warmup: float, duration: float, levels: Iterable[int], rnd: int,
    client: str = "python", workdir: Path | None = None,
) -> list[dict[str, Any]]:
    """Every op at every level on one deployment. client="wrk": the WRK_OPS through wrk (its
    Lua scripts go to workdir, default the server's directory), the others on HttpConn."""
    mset = make_set(f"{dep.server.name}-{rnd}".encode())
    samples = []
    base_url = dep.server.base_url
    scripts = workdir or dep.server.data_dir.parent

    async def body() -> None:
        auth = await auth_headers(dep, REPO)  # {} unless the target has auth on
        tags = await setup(base_url, mset, auth)
        for op in OPS:
            by_wrk = client == "wrk" and op in WRK_OPS
            problem = script = None
            if by_wrk:
                problem = await validate_reads(base_url, op, tags, mset, auth)
                if problem is None:
                    script = write_wrk_script(scripts / f"wrk-{op}.lua", base_url, op, tags,
                                              mset, auth)
            for clients in levels:
                label = f"r{rnd}-{op}-c{clients}"
                if problem is not None:
                    s = invalid_sample(clients, problem)
                elif script is not None:
                    s = run_wrk_level(base_url, op, clients, warmup, duration, script,
                                      dep.server.pid, dep.s3)
                else:
                    s = await run_level(base_url, op, clients, warmup, duration, tags, mset,
                                        label, dep.server.pid, dep.s3, headers=auth)
                s["op"] = f"{op}-c{clients}"
                s["client"] = "wrk" if by_wrk else "python"
                samples.append(s)
                err = f"  {s['errors']} errors: {s['first_error']}" if s["errors"] else ""
                s3 = (f"  {dep.s3.name} {fmt(s['s3_server_cpu_ms_per_req'], 3)}"
                      if dep.s3 is not None else "")
                share = "-" if s["client_cpu"] is None else f"{s['client_cpu']:.0%}"
                log(f"    {op:<11} x{clients:<3} {fmt(s['rps'], 0):>9} req/s"
                    f"  p50 {fmt(s['p50_ms'])} ms  p99 {fmt(s['p99_ms'])} ms"
                    f"  server {fmt(s['server_cpu_ms_per_req'], 3)}{s3} CPU ms/req"
                    f"  {s['client']} {share} of a core{err}")

    run_async(body())
    return samples


def run(
    targets: list[Target], base: Path, rounds: int, warmup: float, duration: float,
    levels: Iterable[int] = LEVELS, client: str = "python",
) -> list[dict[str, Any]]:
    """The section: every target in every round (rotated). client: "wrk" (WRK_OPS through
    wrk, the rest on HttpConn) or "python" (all on HttpConn)."""
    if client not in CLIENTS:
        raise ValueError(f"client must be one of {CLIENTS}, not {client!r}")
    if client == "wrk" and shutil.which("wrk") is None:
        raise RuntimeError("wrk not found (apt-get install -y wrk)")
    samples: list[dict[str, Any]] = []
    levels = list(levels)
    # Every target's data stays until all are measured. Deleting tens of thousands of small
    # files makes the next creations on ext4 without a journal (this machine's root) scan past
    # the freed inodes for minutes (`recently_deleted`, seen in `perf`): whoever ran right after
    # a deletion paid for it, 1.5 ms of CPU per PUT more in one measurement.
    workdirs: list[Path] = []
    try:
        for rnd in range(1, rounds + 1):
            shift = (rnd - 1) % len(targets)
            for target in targets[shift:] + targets[:shift]:
                log(f"[manifests round {rnd}/{rounds}] {target.name}")
                workdir = base / f"manifests-{target.name}-r{rnd}"
                workdirs.append(workdir)
                with target.deploy(workdir) as dep:
                    for s in measure_target(dep, warmup, duration, levels, rnd, client, workdir):
                        samples.append({**s, "target": target.name, "round": rnd})
    finally:
        for workdir in workdirs:
            shutil.rmtree(workdir, ignore_errors=True)
    return samples
