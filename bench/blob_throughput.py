#!/usr/bin/env python3
"""Blob throughput benchmark: our registry vs. CNCF Distribution 2.8 (``docker-registry``).

For each registry this script starts a fresh server on a free loopback port with a fresh
data directory, pushes one random blob (monolithic PUT and chunked PATCH uploads), pulls it
back, and records throughput, server CPU time per GiB and peak server RSS.  Bulk transfers
use ``curl`` (monolithic push, pull) or a minimal ``http.client`` loop (chunked push, one
16 MiB buffer), because httpx tops out at a few hundred MB/s and would measure itself.

Usage (see bench/README.md):

    python bench/blob_throughput.py                      # 1 GiB, 3 rounds, both registries
    python bench/blob_throughput.py --size 256M --rounds 1
    python bench/blob_throughput.py --size 64M --rounds 1 --only distribution

Standard library only (Linux: reads /proc).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
MB = 1_000_000  # throughput unit: MB/s = 10**6 bytes per second

CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_INTERVAL = 0.05  # seconds between /proc samples of the server process tree

OURS = "ours"
DISTRIBUTION = "distribution"
REGISTRY_NAMES = (OURS, DISTRIBUTION)
PUSH_OPS = ("push-monolithic", "push-chunked")
OPS = (*PUSH_OPS, "pull")

DEFAULT_OURS_CMD = (
    f"{shlex.quote(sys.executable)} -m registry serve"
    " --host {host} --port {port} --data-dir {data_dir}"
)
DEFAULT_DISTRIBUTION_BIN = "/usr/bin/docker-registry"

DISTRIBUTION_CONFIG = """\
# Written by bench/blob_throughput.py; never edit /etc/docker/registry/config.yml for this.
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------

_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Parse '1GiB', '1G', '256M', '64MiB', '4096' (K/M/G/T are binary: 1M = 2**20)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (examples: 1G, 256M, 64MiB)")
    n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return n


def fmt_size(n: int) -> str:
    for unit, mult in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= mult:
            v = n / mult
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.2f} {unit}"
    return f"{n} B"


# --------------------------------------------------------------------------------------
# /proc helpers: process tree, CPU time, RSS, listening sockets
# --------------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat starting at field 3 (state); None if the process is gone."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """root and all its live descendants (scan of /proc/*/stat for parent pids)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if _read(f"/proc/{pid}/stat") is None:
            continue
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime+cutime+cstime summed over pids (cutime/cstime cover reaped children)."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            # fields[11..14] are stat fields 14..17: utime stime cutime cstime
            ticks += sum(int(x) for x in fields[11:15])
    return ticks / CLK_TCK


def mem_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in KiB, or None if the process is gone."""
    text = _read(f"/proc/{pid}/status")
    if text is None:
        return None
    rss = hwm = 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


def reset_peak_rss(pids: list[int]) -> bool:
    """Reset VmHWM to the current RSS (`echo 5 > /proc/PID/clear_refs`, Linux >= 4.0)."""
    ok = True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            ok = False
    return ok


def listening_addresses(pids: list[int]) -> list[tuple[str, int]]:
    """(ip, port) of every TCP socket in LISTEN state owned by one of pids."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        text = _read(table) or ""
        for line in text.splitlines()[1:]:
            cols = line.split()
            if len(cols) < 10 or cols[3] != "0A" or cols[9] not in inodes:  # 0A = LISTEN
                continue
            hex_ip, hex_port = cols[1].split(":")
            raw = bytes.fromhex(hex_ip)
            # /proc prints the address as host-endian 32-bit words
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((socket.inet_ntop(family, raw), int(hex_port, 16)))
    return found


def is_loopback(ip: str) -> bool:
    return ip == "::1" or ip.startswith(("127.", "::ffff:127."))


class TreeMonitor:
    """Samples VmRSS/VmHWM of a server's process tree every SAMPLE_INTERVAL in a thread."""

    def __init__(self, root_pid: int) -> None:
        self.root = root_pid
        self.pids = process_tree(root_pid)
        self.peak_rss_sampled_kib = 0
        self.hwm_kib: dict[int, int] = {}
        self.max_procs = len(self.pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        total = 0
        for pid in self.pids:
            m = mem_kib(pid)
            if m is None:
                continue
            total += m[0]
            self.hwm_kib[pid] = max(self.hwm_kib.get(pid, 0), m[1])
        self.peak_rss_sampled_kib = max(self.peak_rss_sampled_kib, total)

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(SAMPLE_INTERVAL):
            n += 1
            if n % 10 == 0:  # re-discover workers twice a second
                self.pids = process_tree(self.root)
                self.max_procs = max(self.max_procs, len(self.pids))
            self._sample()

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.pids = process_tree(self.root)
        self._sample()


# --------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM the server if this script dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def clean_env() -> dict[str, str]:
    """Environment for servers: no REGISTRY_* overrides (Distribution reads them as config)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}


_LIVE_SERVERS: list[Server] = []


@dataclass
class Server:
    name: str
    cmd: list[str]
    port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, n: int = 40) -> str:
        text = _read(str(self.log_path)) or ""
        return "\n".join(text.splitlines()[-n:])

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,  # so `python -m registry` works without `pip install -e`
                env=clean_env(),
                start_new_session=True,  # own process group: we can stop workers too
                preexec_fn=_die_with_parent,  # noqa: PLW1509 -- no other threads run here
            )
        _LIVE_SERVERS.append(self)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited early (rc={self.proc.returncode}); "
                    f"cmd: {shlex.join(self.cmd)}\n{self.log_tail()}"
                )
            try:
                status, _, _ = http_request(self.base_url, "GET", "/v2/", timeout=2)
                if status in (200, 401):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} did not answer /v2/ in {timeout}s\n{self.log_tail()}"
                )
            time.sleep(0.05)
        addrs = listening_addresses(process_tree(self.pid))
        exposed = [a for a in addrs if not is_loopback(a[0])]
        if exposed:
            raise RuntimeError(f"{self.name} listens on non-loopback addresses: {exposed}")

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Leftover workers in the server's own process group (the group id is its pid).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.proc = None
        if self in _LIVE_SERVERS:
            _LIVE_SERVERS.remove(self)


def stop_all_servers() -> None:
    for server in list(_LIVE_SERVERS):  # noqa: PERF101 -- stop() mutates the list
        with contextlib.suppress(Exception):
            server.stop()


@dataclass
class RegistrySpec:
    name: str
    make_cmd: Callable[[int, Path], list[str]]  # (port, data_dir) -> argv
    describe: str
    version: str | None = None

    def launch(self, workdir: Path) -> Server:
        """Start a server with a fresh, empty data dir under workdir (which must not exist)."""
        workdir.mkdir(parents=True)
        data_dir = workdir / "data"
        data_dir.mkdir()
        port = free_port()
        server = Server(
            name=self.name,
            cmd=self.make_cmd(port, data_dir),
            port=port,
            data_dir=data_dir,
            log_path=workdir / "server.log",
        )
        server.start()
        return server


def ours_spec(template: str) -> RegistrySpec:
    argv = shlex.split(template)
    if not any("{port}" in a for a in argv) or not any("{data_dir}" in a for a in argv):
        raise SystemExit("--ours-cmd must contain the {port} and {data_dir} placeholders")

    def make(port: int, data_dir: Path) -> list[str]:
        return [a.format(host="127.0.0.1", port=port, data_dir=data_dir) for a in argv]

    return RegistrySpec(OURS, make, template)


def distribution_spec(binary: str) -> RegistrySpec:
    path = shutil.which(binary)
    if path is None:
        raise SystemExit(f"{binary} not found (apt-get install -y docker-registry)")

    def make(port: int, data_dir: Path) -> list[str]:
        config = data_dir.parent / "config.yml"
        config.write_text(DISTRIBUTION_CONFIG.format(root=data_dir, port=port))
        return [path, "serve", str(config)]

    version = _run_quiet([path, "--version"])
    return RegistrySpec(DISTRIBUTION, make, f"{path} serve <config.yml>", version)


# --------------------------------------------------------------------------------------
# HTTP helpers
# --------------------------------------------------------------------------------------


def http_request(
    base_url: str,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 60,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    url = urllib.parse.urljoin(base_url + "/", target)
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def resolve(base_url: str, location: str | None) -> str:
    if not location:
        raise RuntimeError("response has no Location header")
    return urllib.parse.urljoin(base_url + "/", location)


def add_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    extra = "&".join(f"{k}={urllib.parse.quote(v, safe=':')}" for k, v in params.items())
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urllib.parse.urlunsplit(parts._replace(query=query))


def path_and_query(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def start_upload(server: Server, repo: str) -> str:
    status, headers, body = http_request(server.base_url, "POST", f"/v2/{repo}/blobs/uploads/")
    if status != 202:
        raise RuntimeError(f"{server.name}: POST uploads -> {status}: {body[:500]!r}")
    return resolve(server.base_url, headers.get("Location"))


CURL = ["curl", "--silent", "--show-error", "--noproxy", "*", "--http1.1"]


def run_curl(args: list[str], what: str) -> list[str]:
    """Run curl with a `-w` format; return its whitespace-separated write-out fields."""
    proc = subprocess.run([*CURL, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what}: curl rc={proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.split()


def _run_quiet(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------------------
# Operations (each returns client-side info; the server side is measured by measure())
# --------------------------------------------------------------------------------------


@dataclass
class Blob:
    path: Path
    size: int
    digest: str


def push_monolithic(
    server: Server, repo: str, blob: Blob, _chunk: int, workdir: Path
) -> dict[str, Any]:
    """POST /blobs/uploads/ then one `curl -T file` PUT ?digest= (curl streams from the file)."""
    loc = start_upload(server, repo)
    body_file = workdir / "put-response.txt"
    code, uploaded = run_curl(
        [
            "-X",
            "PUT",
            "-T",
            str(blob.path),
            "-H",
            "Content-Type: application/octet-stream",
            "-H",
            "Expect:",  # no 100-continue round trip (Go/Docker clients do not send it)
            "-o",
            str(body_file),
            "-w",
            "%{http_code} %{size_upload}",
            add_query(loc, digest=blob.digest),
        ],
        f"{server.name} monolithic PUT",
    )
    if code != "201" or int(float(uploaded)) != blob.size:
        raise RuntimeError(
            f"{server.name}: monolithic PUT -> {code}, uploaded {uploaded} bytes: "
            f"{(_read(str(body_file)) or '')[:500]}"
        )
    return {"requests": 2}


def push_chunked(
    server: Server, repo: str, blob: Blob, chunk: int, _workdir: Path
) -> dict[str, Any]:
    """POST, PATCH every `chunk` bytes (Content-Range start-end, inclusive), PUT ?digest=.

    One keep-alive http.client connection and one reusable buffer: no copy of the blob is
    ever held in memory, and sendall() of a memoryview is not a bottleneck at GB/s.
    """
    loc = start_upload(server, repo)
    parts = urllib.parse.urlsplit(loc)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=600)
    buf = bytearray(chunk)
    view = memoryview(buf)
    requests = 1
    try:
        with open(blob.path, "rb", buffering=0) as f:
            offset = 0
            while offset < blob.size:
                n = f.readinto(buf)
                if not n:
                    raise RuntimeError(f"short read of {blob.path} at {offset}")
                conn.request(
                    "PATCH",
                    path_and_query(loc),
                    body=view[:n],
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + n - 1}",
                        "Content-Length": str(n),
                    },
                )
                resp = conn.getresponse()
                body = resp.read()
                requests += 1
                if resp.status != 202:
                    raise RuntimeError(
                        f"{server.name}: PATCH {offset}-{offset + n - 1} -> {resp.status}: "
                        f"{body[:500]!r}"
                    )
                loc = resolve(server.base_url, resp.getheader("Location"))
                offset += n
        conn.request(
            "PUT",
            path_and_query(add_query(loc, digest=blob.digest)),
            headers={"Content-Length": "0"},
        )
        resp = conn.getresponse()
        body = resp.read()
        requests += 1
        if resp.status != 201:
            raise RuntimeError(f"{server.name}: chunked PUT -> {resp.status}: {body[:500]!r}")
    finally:
        conn.close()
    return {"requests": requests, "chunk_size": chunk}


def pull(server: Server, repo: str, blob: Blob, _chunk: int, _workdir: Path) -> dict[str, Any]:
    """`curl -o /dev/null` GET /v2/<repo>/blobs/<digest> (following redirects, if any)."""
    code, downloaded = run_curl(
        [
            "-L",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            f"{server.base_url}/v2/{repo}/blobs/{blob.digest}",
        ],
        f"{server.name} pull",
    )
    if code != "200" or int(float(downloaded)) != blob.size:
        raise RuntimeError(f"{server.name}: GET blob -> {code}, {downloaded} bytes")
    return {"requests": 1}


OP_FUNCS = {"push-monolithic": push_monolithic, "push-chunked": push_chunked, "pull": pull}


def check_blob(server: Server, repo: str, blob: Blob) -> None:
    """HEAD the pushed blob: 200, right Content-Length and (if sent) Docker-Content-Digest."""
    status, headers, _ = http_request(server.base_url, "HEAD", f"/v2/{repo}/blobs/{blob.digest}")
    length = headers.get("Content-Length")
    sent_digest = headers.get("Docker-Content-Digest")
    if status != 200 or length != str(blob.size) or sent_digest not in (None, blob.digest):
        raise RuntimeError(
            f"{server.name}: HEAD blob -> {status}, Content-Length {length}, digest {sent_digest}"
        )


def verify_pull(server: Server, repo: str, blob: Blob) -> None:
    """Untimed: pull through curl and re-hash the bytes, so a fast-but-wrong server fails."""
    h = hashlib.sha256()
    n = 0
    with subprocess.Popen(
        [*CURL, "-f", "-L", f"{server.base_url}/v2/{repo}/blobs/{blob.digest}"],
        stdout=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(4 * MiB):
            h.update(chunk)
            n += len(chunk)
    if proc.returncode != 0 or n != blob.size or f"sha256:{h.hexdigest()}" != blob.digest:
        raise RuntimeError(
            f"{server.name}: pulled {n} bytes with sha256 {h.hexdigest()} (rc={proc.returncode})"
        )


# --------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------


def measure(
    server: Server, op: str, repo: str, blob: Blob, chunk: int, workdir: Path
) -> dict[str, Any]:
    pids = process_tree(server.pid)
    hwm_reset = reset_peak_rss(pids)
    monitor = TreeMonitor(server.pid)
    cpu0 = cpu_seconds(pids)
    client0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_self0 = time.process_time()
    monitor.start()
    t0 = time.perf_counter()
    try:
        info = OP_FUNCS[op](server, repo, blob, chunk, workdir)
        elapsed = time.perf_counter() - t0
        cpu1 = cpu_seconds(process_tree(server.pid))
    finally:
        monitor.stop()
    client1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (client1.ru_utime + client1.ru_stime - client0.ru_utime - client0.ru_stime) + (
        time.process_time() - client_self0
    )
    gib = blob.size / GiB
    hwm_mib = sum(monitor.hwm_kib.values()) / KiB
    sampled_mib = monitor.peak_rss_sampled_kib / KiB
    server_cpu = cpu1 - cpu0
    return {
        "seconds": elapsed,
        "mb_per_s": blob.size / MB / elapsed,
        "server_cpu_s": server_cpu,
        "cpu_s_per_gib": server_cpu / gib,
        # VmHWM (kernel-tracked true peak) summed over the tree, reset just before the op;
        # falls back to the 50 ms VmRSS samples if the reset was not permitted.
        "peak_rss_mib": hwm_mib if hwm_reset else sampled_mib,
        "peak_rss_hwm_mib": hwm_mib,
        "peak_rss_sampled_mib": sampled_mib,
        "hwm_reset": hwm_reset,
        "server_processes": monitor.max_procs,
        "client_cpu_s": client_cpu,
        **info,
    }


def make_blob(directory: Path, size: int) -> Blob:
    """Random file written in 8 MiB chunks from os.urandom, hashed while it is written."""
    path = directory / "blob.bin"
    h = hashlib.sha256()
    remaining = size
    with open(path, "wb") as f:
        while remaining:
            data = os.urandom(min(8 * MiB, remaining))
            h.update(data)
            f.write(data)
            remaining -= len(data)
    os.sync()
    return Blob(path, size, f"sha256:{h.hexdigest()}")


def run_benchmark(
    args: argparse.Namespace, specs: list[RegistrySpec], base: Path, result: dict[str, Any]
) -> None:
    """Fill result["blob"] and result["samples"] (in place, so an interrupted run keeps them)."""
    t = time.perf_counter()
    log(f"creating {fmt_size(args.size)} random blob in {base} ...")
    blob = make_blob(base, args.size)
    log(f"  {blob.digest} ({time.perf_counter() - t:.1f}s)")

    samples: list[dict[str, Any]] = []
    result.update(blob={"size": blob.size, "digest": blob.digest}, samples=samples)
    for rnd in range(1, args.rounds + 1):
        # Interleave registries; alternate who goes first so drift/noise hits both equally.
        order = specs if rnd % 2 == 1 else specs[::-1]
        for spec in order:
            for push_op in PUSH_OPS:
                # Fresh server + fresh data dir per push: nothing to deduplicate against.
                workdir = base / f"{spec.name}-r{rnd}-{push_op}"
                repo = f"bench/{push_op}-r{rnd}-{os.urandom(3).hex()}"
                server = spec.launch(workdir)
                try:
                    for op in (push_op, "pull"):
                        sample = measure(server, op, repo, blob, args.chunk_size, workdir)
                        sample.update(
                            registry=spec.name,
                            op=op,
                            round=rnd,
                            repo=repo,
                            after=push_op if op == "pull" else None,
                        )
                        samples.append(sample)
                        label = op if op != "pull" else f"pull (after {push_op[5:]})"
                        log(
                            f"[round {rnd}/{args.rounds}] {spec.name:<12} {label:<23}"
                            f"{sample['mb_per_s']:9.1f} MB/s"
                            f"  {sample['cpu_s_per_gib']:6.2f} CPU s/GiB"
                            f"  {sample['peak_rss_mib']:8.1f} MiB peak RSS"
                            f"  ({sample['seconds']:.2f}s)"
                        )
                        if op != "pull":
                            check_blob(server, repo, blob)
                            if rnd == 1:
                                verify_pull(server, repo, blob)
                        os.sync()  # flush this op's dirty pages before the next measurement
                finally:
                    server.stop()
                shutil.rmtree(workdir, ignore_errors=True)
                os.sync()


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------

METRICS = ("mb_per_s", "cpu_s_per_gib", "peak_rss_mib")


def summarize(samples: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for op in OPS:
        per_op: dict[str, Any] = {}
        for name in names:
            rows = [s for s in samples if s["op"] == op and s["registry"] == name]
            if not rows:
                continue
            per_op[name] = {"n": len(rows)}
            for metric in (*METRICS, "seconds"):
                values = [r[metric] for r in rows]
                per_op[name][metric] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                }
        if OURS in per_op and DISTRIBUTION in per_op:
            per_op["ratio_ours_over_distribution"] = {
                m: _ratio(per_op[OURS][m]["median"], per_op[DISTRIBUTION][m]["median"])
                for m in METRICS
            }
        if per_op:
            summary[op] = per_op
    return summary


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def format_table(summary: dict[str, Any], size: int, rounds: int) -> str:
    head = ("operation", "registry", "MB/s", "CPU s/GiB", "peak RSS MiB")
    rows: list[tuple[str, ...]] = []
    for op, per_op in summary.items():
        for name in REGISTRY_NAMES:
            if name in per_op:
                m = per_op[name]
                rows.append(
                    (
                        op,
                        name,
                        f"{m['mb_per_s']['median']:.1f}",
                        f"{m['cpu_s_per_gib']['median']:.2f}",
                        f"{m['peak_rss_mib']['median']:.1f}",
                    )
                )
        ratio = per_op.get("ratio_ours_over_distribution")
        if ratio:
            rows.append(
                (
                    op,
                    "ours/distrib.",
                    *("n/a" if ratio[k] is None else f"{ratio[k]:.2f}x" for k in METRICS),
                )
            )
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    lines = [
        (
            f"Blob throughput: {fmt_size(size)} blob, medians of {rounds} round(s) "
            "(pull: 2 per round); MB = 10^6 bytes"
        ),
        "  ".join(
            h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths))
        ),
    ]
    prev = None
    for r in rows:
        if prev is not None and r[0] != prev:
            lines.append("")
        prev = r[0]
        lines.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            )
        )
    return "\n".join(lines)


def machine_info(base: Path) -> dict[str, Any]:
    cpuinfo = _read("/proc/cpuinfo") or ""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or None,
    )
    meminfo = _read("/proc/meminfo") or ""
    mem_total = next(
        (
            int(line.split()[1]) * KiB
            for line in meminfo.splitlines()
            if line.startswith("MemTotal:")
        ),
        None,
    )
    # Filesystem holding the blob and the data dirs (longest mount-point prefix).
    fs = None
    best = -1
    for line in (_read("/proc/mounts") or "").splitlines():
        dev, mnt, fstype = line.split()[:3]
        mnt = mnt.replace("\\040", " ")
        if (str(base) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) > best:
            best, fs = len(mnt), {"device": dev, "mount": mnt, "type": fstype}
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": f"{platform.system()} {platform.release()} {platform.version()}",
        "python": sys.version.split()[0],
        "python_full": sys.version,
        "mem_total_bytes": mem_total,
        "loadavg_start": os.getloadavg(),
        "curl": _run_quiet(["curl", "--version"]),
        "tmp_filesystem": fs,
    }


def git_commit() -> str | None:
    out = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() if out.returncode == 0 else None


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Blob push/pull throughput: our registry vs. CNCF Distribution 2.8.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--size",
        type=parse_size,
        default="1GiB",
        help="blob size; K/M/G are binary (256M = 256 MiB)",
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds (medians are reported)")
    p.add_argument("--only", choices=REGISTRY_NAMES, help="benchmark a single registry")
    p.add_argument(
        "--chunk-size", type=parse_size, default="16MiB", help="PATCH size for the chunked push"
    )
    p.add_argument(
        "--ours-cmd",
        default=DEFAULT_OURS_CMD,
        help="command starting our server; {host} {port} {data_dir} are substituted",
    )
    p.add_argument(
        "--distribution-bin", default=DEFAULT_DISTRIBUTION_BIN, help="CNCF Distribution binary"
    )
    p.add_argument(
        "--tmp-dir",
        type=Path,
        default=None,
        help="where the blob and all data dirs go (one filesystem); default: $TMPDIR or /tmp",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON results path (default: bench/results/blob_throughput-<timestamp>.json)",
    )
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (blob, server logs)")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    return args


def _sigterm(_signo: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM/SIGHUP unwind like Ctrl-C, so the finally-block stops the servers (SIGHUP only
    # if not ignored, e.g. under nohup).
    signal.signal(signal.SIGTERM, _sigterm)
    if signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:
        signal.signal(signal.SIGHUP, _sigterm)
    if shutil.which("curl") is None:
        raise SystemExit("curl not found")

    specs: list[RegistrySpec] = []
    if args.only in (None, OURS):
        specs.append(ours_spec(args.ours_cmd))
    if args.only in (None, DISTRIBUTION):
        specs.append(distribution_spec(args.distribution_bin))

    base = Path(tempfile.mkdtemp(prefix="blob-bench-", dir=args.tmp_dir)).resolve()
    # blob + at most one live data dir (+ a possible temp copy inside the server) + slack
    need = args.size * 4 + 256 * MiB
    free = shutil.disk_usage(base).free
    if free < need:
        shutil.rmtree(base, ignore_errors=True)
        raise SystemExit(
            f"not enough free space in {base}: need {fmt_size(need)}, have {fmt_size(free)}"
        )

    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    output = args.output or RESULTS_DIR / f"blob_throughput-{stamp}.json"
    report: dict[str, Any] = {
        "benchmark": "blob_throughput",
        "started": started.isoformat(),
        "complete": False,
        "args": {
            "size": args.size,
            "rounds": args.rounds,
            "only": args.only,
            "chunk_size": args.chunk_size,
            "ours_cmd": args.ours_cmd,
            "distribution_bin": args.distribution_bin,
        },
        "machine": machine_info(base),
        "registries": {s.name: {"cmd": s.describe, "version": s.version} for s in specs},
        "git_commit": git_commit(),
        "units": {
            "mb_per_s": "10^6 bytes/s",
            "cpu_s_per_gib": "server CPU seconds (user+sys, whole process tree) per 2^30 bytes",
            "peak_rss_mib": "2^20 bytes",
        },
    }
    result: dict[str, Any] = {}
    rc = 0
    try:
        run_benchmark(args, specs, base, result)
        report["complete"] = True
    except KeyboardInterrupt:
        log("\ninterrupted; stopping servers")
        rc = 130
    except Exception as exc:  # noqa: BLE001 -- report what we have, then fail
        log(f"\nerror: {exc}")
        rc = 1
    finally:
        stop_all_servers()
        if args.keep_tmp:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)

    samples = result.get("samples", [])
    report.update(result)
    report["finished"] = dt.datetime.now(dt.UTC).isoformat()
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["summary"] = summarize(samples, [s.name for s in specs])
    if samples:
        print(format_table(report["summary"], args.size, args.rounds))
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, output)
        log(f"wrote {output}" + ("" if report["complete"] else " (incomplete run)"))
    return rc


if __name__ == "__main__":
    sys.exit(main())
