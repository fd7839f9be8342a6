#!/usr/bin/env python3
"""The high-availability deployment, measured: three replicas on one Ceph RGW bucket behind
haproxy, in one run.

Three `registry serve` replicas share one bucket of a local single-node Ceph RADOS Gateway
(`.ci/rgw`, through bench/common.py) and sit behind Debian's haproxy on 127.0.0.1, configured
as in tests/clients/test_high_availability.py: health checks on `/readyz` every 200 ms (down
after one failure, up after two successes), `option http-server-close` (a connection of its
own to a replica for every request, so each request is balanced anew), `retries 3` and
`option redispatch 1` (a refused connection is retried on another replica). The replicas run
with `server.drain_delay = 1`.

1. Steady state, everything up:
   - `transfers`: push (POST + one `curl -T` PUT) and pull (`curl -o /dev/null`) of a random
     `--size` blob through haproxy and straight to one replica, interleaved, `--rounds`
     times; MB/s and CPU seconds per GiB of the replicas (all three), haproxy, the S3 server
     (RGW's ceph-mon + ceph-osd + radosgw) and the client (curl and this process);
   - `manifests`: `GET` of 16 tagged manifests at 1, 16 and 64 connections, through haproxy
     and straight to one replica (manifests_rps.py's client and counting), requests/s and
     latency.
2. `failover`: for `--failover-seconds`, pushers push small images (a random layer, a config,
   a manifest by tag) and pullers `GET` manifests by tag, all through haproxy, while one
   replica is SIGKILLed at `--kill-at` and another SIGTERMed at `--drain-at` (it drains: its
   `/readyz` answers 503 for a second while it still serves) and started again once it has
   exited. Reported: requests attempted and failed by kind (5xx from haproxy, 5xx from a
   replica, connection errors, timeouts, other statuses), per phase; the longest gap without
   a successful request; after the kill, when the last failure happened, when haproxy marked
   the replica down (its stats socket, polled every 20 ms); for the drain, when haproxy took
   the replica out, when it exited, answered again and was back in; haproxy's retry and
   redispatch counters; and whether every acknowledged push still pulls afterwards.

    python bench/ha.py                          # ~2 min on 2 cores
    python bench/ha.py --size 256M --rounds 3
    python bench/ha.py --only failover --failover-seconds 60

Needs Linux (/proc), curl and haproxy (`apt-get install -y haproxy curl`), the Ceph packages
(`bash .ci/rgw install`), boto3 and our server's dependencies. Everything listens on 127.0.0.1
(checked in /proc); every process is stopped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime as dt
import functools
import io
import itertools
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from blob_throughput import (
    MB,
    Blob,
    GiB,
    MiB,
    client_cpu_seconds,
    cpu_seconds,
    fmt_size,
    make_blob,
    parse_size,
    pull,
    push_monolithic,
    tmp_filesystem,
    verify_pull,
)
from common import (
    OURS_BENCH_S3_SETTINGS,
    OURS_BENCH_SETTINGS,
    RESULTS_DIR,
    RegistrySpec,
    Rgw,
    Server,
    git_commit,
    log,
    machine_info,
    parse_list,
    process_tree,
    rgw_missing,
    rgw_version,
    run_guarded,
    run_quiet,
    s3_pids,
    start_rgw,
    write_report,
)
from manifests_rps import (
    OCI_MANIFEST,
    HttpConn,
    HttpError,
    ManifestSet,
    Response,
    make_set,
    run_async,
    run_level,
    setup,
    sha256_digest,
    split_url,
)

HAPROXY_BIN = "/usr/sbin/haproxy"
REPLICAS = 3
SECTIONS = ("transfers", "manifests", "failover")
PATHS = ("haproxy", "direct")  # through the balancer; straight to replica r0
PUSH_REPO = "bench/ha-push"
PULL_REPO = "bench/manifests"  # where manifests_rps.setup() puts its tags
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
REQUEST_TIMEOUT = 10.0  # seconds, per failover request; longer counts as a timeout
ERROR_PAUSE = 0.02  # seconds a failover client waits after a failure
POLL_INTERVAL = 0.02  # seconds between reads of haproxy's stats socket
KILLED, DRAINED = 0, 1  # indices of the replica SIGKILLed and of the one drained

# The balancer of tests/clients/test_high_availability.py, plus a stats socket (a Unix socket
# in the work directory) so the script can see when haproxy takes a replica out and back in.
HAPROXY_CONFIG = """\
# Written by bench/ha.py (the balancer of tests/clients/test_high_availability.py)
global
    maxconn 512
    stats socket {stats} mode 600 level operator
defaults
    mode http
    timeout connect 2s
    timeout client 300s
    timeout server 300s
    timeout http-request 30s
    # A connection of its own to a replica for every request, so each is balanced anew.
    option http-server-close
    # A replica that refuses the connection (killed, or stopping) is skipped for another.
    retries 3
    option redispatch 1
frontend registry
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 200ms fall 1 rise 2
{servers}
"""
REPLICA_SETTINGS = """
[server]
drain_delay = {drain_delay}
graceful_timeout = 30
"""


def esc(text: str) -> str:
    """A value put into a text that RegistrySpec.launch() formats again."""
    return text.replace("{", "{{").replace("}", "}}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------
# The deployment
# --------------------------------------------------------------------------------------


@dataclass
class Pids:
    """Roots of process trees whose CPU is counted together (what run_level and s3_pids
    read of an S3 server: its `pids`)."""

    pids: list[int]


@dataclass
class Cluster:
    rgw: Rgw
    bucket: str
    replicas: list[Server]
    balancer: Server
    stats_socket: Path
    config_text: str

    def replica_pids(self) -> list[int]:
        return [p for r in self.replicas if r.proc is not None for p in process_tree(r.pid)]

    def stat(self) -> list[dict[str, str]]:
        return haproxy_stat(self.stats_socket)


def replica_spec(args: argparse.Namespace, rgw: Rgw, bucket: str, name: str) -> RegistrySpec:
    settings = ("# Written by bench/ha.py\n" + OURS_BENCH_SETTINGS.split("\n", 1)[1]
                + REPLICA_SETTINGS.format(drain_delay=args.drain_delay)
                + OURS_BENCH_S3_SETTINGS.format(
                    bucket=bucket, endpoint=rgw.url, region=rgw.region,
                    redirect=str(args.redirect).lower(), part_size=args.part_size,
                    access_key_id=rgw.access_key_id, secret_access_key=rgw.secret_access_key))
    argv = [esc(args.python), "-m", "registry", "serve", "--config", "{config}",
            "--host", "{host}", "--port", "{port}", "--data-dir", "{data_dir}"]
    return RegistrySpec(name, argv, "registry serve --config <settings.toml> (s3 on RGW)",
                        config=esc(settings))


def start_cluster(args: argparse.Namespace, base: Path, rgw: Rgw, bucket: str) -> Cluster:
    """Three replicas on the bucket, then haproxy in front of them. Started by this thread:
    their PR_SET_PDEATHSIG (common.Server) fires when the thread that forked them ends."""
    replicas = [replica_spec(args, rgw, bucket, f"r{i}").launch(base / f"r{i}")
                for i in range(REPLICAS)]
    directory = base / "haproxy"
    directory.mkdir()
    port = free_port()
    stats = directory / "stats.sock"
    servers = "\n".join(f"    server {r.name} 127.0.0.1:{r.port} check" for r in replicas)
    text = HAPROXY_CONFIG.format(stats=stats, port=port, servers=servers)
    config = directory / "haproxy.cfg"
    config.write_text(text)
    balancer = Server("haproxy", [args.haproxy_bin, "-db", "-f", str(config)], port,
                      directory, directory / "haproxy.log")
    balancer.start()  # until GET /v2/ through it answers: a replica is up behind it
    cluster = Cluster(rgw, bucket, replicas, balancer, stats, text)
    wait_all_up(cluster, 30)
    return cluster


def haproxy_stat(path: Path) -> list[dict[str, str]]:
    """`show stat` on haproxy's stats socket: one dict per proxy and server (CSV columns)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(b"show stat\n")
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    text = b"".join(chunks).decode()
    return list(csv.DictReader(io.StringIO(text.removeprefix("# "))))


def server_rows(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {r["svname"]: r for r in rows
            if r.get("pxname") == "replicas" and r.get("svname") not in ("BACKEND", "FRONTEND")}


def wait_all_up(cluster: Cluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = {k: v["status"] for k, v in server_rows(cluster.stat()).items()}
        if len(status) == REPLICAS and all(s == "UP" for s in status.values()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"haproxy: not every replica came up in {timeout}s: {status}")
        time.sleep(0.05)


def counters(rows: list[dict[str, str]]) -> dict[str, int]:
    """haproxy's cumulative counters of interest (backend and frontend rows)."""
    def num(row: dict[str, str] | None, key: str) -> int:
        value = (row or {}).get(key) or "0"
        return int(value) if value.isdigit() else 0

    backend = next((r for r in rows if r["pxname"] == "replicas" and r["svname"] == "BACKEND"),
                   None)
    frontend = next((r for r in rows if r["pxname"] == "registry" and r["svname"] == "FRONTEND"),
                    None)
    return {
        "retries": num(backend, "wretr"),  # connection attempts retried
        "redispatches": num(backend, "wredis"),  # retried on another replica
        "backend_connection_errors": num(backend, "econ"),
        "backend_response_errors": num(backend, "eresp"),  # e.g. the replica died mid-answer
        "frontend_5xx": num(frontend, "hrsp_5xx"),  # 5xx sent to clients (its own and relayed)
        "frontend_requests": num(frontend, "req_tot"),
    }


# --------------------------------------------------------------------------------------
# Steady state: one blob through haproxy and straight to a replica
# --------------------------------------------------------------------------------------


def measure_transfer(cluster: Cluster, fn: Callable[[], dict[str, Any]],
                     size: int) -> dict[str, Any]:
    """Wall time and CPU of the replicas (all three), haproxy, RGW and the client."""
    groups: dict[str, Callable[[], list[int]]] = {
        "replicas": cluster.replica_pids,
        "haproxy": functools.partial(process_tree, cluster.balancer.pid),
        "s3_server": functools.partial(s3_pids, cluster.rgw)}
    before = {name: cpu_seconds(pids()) for name, pids in groups.items()}
    client0 = client_cpu_seconds()
    t0 = time.perf_counter()
    info = fn()
    elapsed = time.perf_counter() - t0
    after = {name: cpu_seconds(pids()) for name, pids in groups.items()}
    sample: dict[str, Any] = {"seconds": elapsed, "mb_per_s": size / MB / elapsed, **info}
    gib = size / GiB
    for name in groups:
        sample[f"{name}_cpu_s_per_gib"] = (after[name] - before[name]) / gib
    sample["client_cpu_s_per_gib"] = (client_cpu_seconds() - client0) / gib
    return sample


def run_transfers(args: argparse.Namespace, base: Path, cluster: Cluster,
                  report: dict[str, Any]) -> None:
    samples: list[dict[str, Any]] = []
    report["transfers"] = {"size": args.size, "rounds": args.rounds,
                           "redirect": args.redirect, "samples": samples}
    direct = cluster.replicas[0]
    targets = {"haproxy": cluster.balancer, "direct": direct}
    for rnd in range(1, args.rounds + 1):
        order = PATHS if rnd % 2 else PATHS[::-1]
        pushed: list[tuple[str, Blob]] = []
        for path in order:
            # A blob of its own per push: one already in the bucket would be deduplicated.
            directory = base / f"blob-r{rnd}-{path}"
            directory.mkdir()
            blob = make_blob(directory, args.size)
            repo = f"bench/ha-blob-{path}-r{rnd}"
            push = functools.partial(push_monolithic, targets[path], repo, blob, 0, directory)
            sample = measure_transfer(cluster, push, args.size)
            record(samples, sample, rnd, path, "push", via=path)
            pushed.append((repo, blob))
        if rnd == 1:  # untimed: the bytes pulled back through the balancer hash right
            for repo, blob in pushed:
                verify_pull(cluster.balancer, repo, blob)
        for path in order:
            for repo, blob in pushed:
                get = functools.partial(pull, targets[path], repo, blob, 0, base)
                sample = measure_transfer(cluster, get, args.size)
                record(samples, sample, rnd, path, "pull", pushed_via=repo.split("-")[2])
        for _, blob in pushed:
            blob.path.unlink()
    report["transfers"]["summary"] = summarize_transfers(samples)


def record(samples: list[dict[str, Any]], sample: dict[str, Any], rnd: int, path: str,
           op: str, **extra: Any) -> None:
    sample.update(round=rnd, path=path, op=op, **extra)
    samples.append(sample)
    log(f"[transfers round {rnd}] {op:<4} {path:<7} {sample['mb_per_s']:8.1f} MB/s  CPU s/GiB:"
        f" replicas {sample['replicas_cpu_s_per_gib']:.2f} haproxy "
        f"{sample['haproxy_cpu_s_per_gib']:.2f} RGW {sample['s3_server_cpu_s_per_gib']:.2f}"
        f" client {sample['client_cpu_s_per_gib']:.2f}  ({sample['seconds']:.2f}s)")


TRANSFER_METRICS = ("mb_per_s", "replicas_cpu_s_per_gib", "haproxy_cpu_s_per_gib",
                    "s3_server_cpu_s_per_gib", "client_cpu_s_per_gib")


def summarize_transfers(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """{op: {path: {metric: {median, min, max}, n}}} and {op: {"ratio": haproxy/direct MB/s}}."""
    out: dict[str, Any] = {}
    for op in ("push", "pull"):
        for path in PATHS:
            rows = [s for s in samples if s["op"] == op and s["path"] == path]
            if rows:
                entry: dict[str, Any] = {"n": len(rows)}
                for m in TRANSFER_METRICS:
                    values = [r[m] for r in rows]
                    entry[m] = {"median": statistics.median(values), "min": min(values),
                                "max": max(values)}
                out.setdefault(op, {})[path] = entry
        both = out.get(op, {})
        if "haproxy" in both and "direct" in both:
            both["ratio_haproxy_over_direct"] = (both["haproxy"]["mb_per_s"]["median"]
                                                 / both["direct"]["mb_per_s"]["median"])
    return out


# --------------------------------------------------------------------------------------
# Steady state: manifest GETs by tag (manifests_rps.py's client)
# --------------------------------------------------------------------------------------


def run_manifests(args: argparse.Namespace, cluster: Cluster, report: dict[str, Any]) -> None:
    samples: list[dict[str, Any]] = []
    report["manifests"] = {"levels": args.levels, "warmup": args.warmup,
                           "duration": args.duration, "samples": samples}
    direct = cluster.replicas[0]
    replicas = cast(Any, Pids([r.pid for r in cluster.replicas]))

    async def body() -> None:
        mset = make_set(b"ha-manifests")
        tags = await setup(cluster.balancer.base_url, mset)
        for i, clients in enumerate(args.levels):
            for path in PATHS if i % 2 == 0 else PATHS[::-1]:
                server = cluster.balancer if path == "haproxy" else direct
                # run_level counts CPU of `server_pid`'s tree (haproxy, or the replica) and,
                # in its S3 slot, of every replica
                s = await run_level(server.base_url, "get", clients, args.warmup,
                                    args.duration, tags, mset, f"{path}-c{clients}",
                                    server.pid, replicas)
                s["replicas_cpu_ms_per_req"] = s.pop("s3_server_cpu_ms_per_req")
                s["haproxy_cpu_ms_per_req"] = (s.pop("server_cpu_ms_per_req")
                                               if path == "haproxy" else None)
                s.update(path=path, op=f"get-c{clients}")
                samples.append(s)
                err = f"  {s['errors']} errors: {s['first_error']}" if s["errors"] else ""
                log(f"[manifests] get x{clients:<3} {path:<7} {s['rps']:7.0f} req/s  p50 "
                    f"{fmt(s['p50_ms'])} ms  p99 {fmt(s['p99_ms'])} ms  replicas "
                    f"{fmt(s['replicas_cpu_ms_per_req'], 3)} CPU ms/req{err}")

    run_async(body())


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# --------------------------------------------------------------------------------------
# Failover
# --------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the failover clients saw; times are seconds since the start of the loop."""

    t0: float
    attempted: Counter[str] = field(default_factory=Counter)  # by request kind
    successes: list[float] = field(default_factory=list)  # completion times
    sent_ok: list[float] = field(default_factory=list)  # send times of the successes
    failures: list[dict[str, Any]] = field(default_factory=list)
    images_pushed: int = 0
    images_failed: int = 0
    pushed: list[tuple[str, int]] = field(default_factory=list)  # (tag, manifest length)

    def now(self) -> float:
        return time.monotonic() - self.t0


def failure_kind(resp: Response) -> str:
    if resp.status >= 500:
        # haproxy's own error pages are HTML; the registry answers JSON
        html = resp.headers.get("content-type", "").startswith("text/html")
        return "5xx_haproxy" if html else "5xx_replica"
    return f"status_{resp.status}"


async def attempt(conn: HttpConn, tally: Tally, what: str, method: str, target: str,
                  expect: int, headers: dict[str, str] | None = None,
                  body: bytes | None = None, length: int | None = None) -> Response | None:
    """One request, counted: the response if it succeeded, None (and a failure) if not."""
    tally.attempted[what] += 1
    sent = tally.now()
    try:
        resp = await asyncio.wait_for(
            conn.request(method, target, headers, body, keep_body=True), REQUEST_TIMEOUT)
    except (TimeoutError, HttpError, OSError) as exc:  # OSError: reset, refused, broken pipe
        conn.close()  # a request cut off mid-way leaves the connection unusable
        if isinstance(exc, TimeoutError):
            kind = "timeout"
        elif isinstance(exc, HttpError):
            kind = "connection" if "closed the connection" in str(exc) else "protocol"
        else:
            kind = "connection"
        detail = f"{type(exc).__name__}: {exc}"
    else:
        if resp.status == expect and (length is None or resp.length == length):
            tally.successes.append(tally.now())
            tally.sent_ok.append(sent)
            return resp
        kind = failure_kind(resp)
        detail = f"{resp.status} {resp.body[:160]!r}"
    tally.failures.append({"t": tally.now(), "sent": sent, "kind": kind, "request": what,
                           "detail": detail})
    return None


async def push_image(conn: HttpConn, base_url: str, tally: Tally, tag: str,
                     layer_size: int) -> bool:
    """A random layer and its config (POST + monolithic PUT each), then the manifest by tag."""
    layer = os.urandom(layer_size)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]}},
                        separators=(",", ":")).encode()
    for data in (layer, config):
        resp = await attempt(conn, tally, "blob_post", "POST", f"/v2/{PUSH_REPO}/blobs/uploads/",
                             202)
        if resp is None:
            return False
        _, _, target = split_url(base_url, resp.headers.get("location", ""))
        sep = "&" if "?" in target else "?"
        if await attempt(conn, tally, "blob_put", "PUT",
                         f"{target}{sep}digest={sha256_digest(data)}", 201,
                         {"Content-Type": "application/octet-stream"}, data) is None:
            return False
    manifest = ManifestSet(config, layer).manifest(tag)
    if await attempt(conn, tally, "manifest_put", "PUT", f"/v2/{PUSH_REPO}/manifests/{tag}", 201,
                     {"Content-Type": OCI_MANIFEST}, manifest) is None:
        return False
    tally.pushed.append((tag, len(manifest)))
    return True


@dataclass
class Chaos:
    """The schedule, run in a thread: SIGKILL one replica, later SIGTERM another (it drains),
    wait for it to exit and start it again. Times are seconds since the loop's start. The
    restart runs on `launcher`, a thread that outlives the replica: a server's
    PR_SET_PDEATHSIG (common.Server) fires when the thread that forked it ends."""

    cluster: Cluster
    launcher: ThreadPoolExecutor
    t0: float
    kill_at: float
    drain_at: float
    events: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None
    abort: threading.Event = field(default_factory=threading.Event)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def until(self, at: float) -> bool:
        """Sleep until `at`; False if aborted meanwhile."""
        return not self.abort.wait(max(0.0, at - self.now()))

    def run(self) -> None:
        try:
            killed = self.cluster.replicas[KILLED]
            drained = self.cluster.replicas[DRAINED]
            if not self.until(self.kill_at):
                return
            assert killed.proc is not None and drained.proc is not None
            os.killpg(killed.pid, signal.SIGKILL)
            self.events["kill"] = self.now()
            killed.proc.wait(10)
            if not self.until(self.drain_at):
                return
            os.kill(drained.pid, signal.SIGTERM)  # drains: /readyz 503, serves drain_delay s
            self.events["drain_signal"] = self.now()
            self.events["drain_exit_status"] = drained.proc.wait(60)
            self.events["drain_exit"] = self.now()
            drained.stop()  # reaps leftovers of its process group
            if self.abort.is_set():
                return
            self.launcher.submit(drained.start).result(90)  # same port, until /v2/ answers
            self.events["restart_answering"] = self.now()
        except BaseException as exc:  # re-raised by the main thread
            self.error = exc


@dataclass
class StatsPoller:
    """Reads haproxy's stats socket every POLL_INTERVAL: each replica's status changes, and
    the first new session it got after each change to UP."""

    cluster: Cluster
    t0: float
    changes: list[dict[str, Any]] = field(default_factory=list)
    first_session_after_up: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0
    stop_event: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        last: dict[str, str] = {}
        waiting: dict[str, int] = {}  # server: its session count when it turned UP
        while not self.stop_event.wait(POLL_INTERVAL):
            try:
                rows = server_rows(self.cluster.stat())
            except (OSError, ValueError, KeyError):  # haproxy busy, or a torn answer
                self.errors += 1
                continue
            t = time.monotonic() - self.t0
            for name, row in rows.items():
                status, sessions = row["status"], int(row.get("stot") or 0)
                if name in last and status != last[name]:
                    self.changes.append({"t": t, "server": name, "from": last[name],
                                         "to": status, "check": row.get("check_status")})
                    if status == "UP":
                        waiting[name] = sessions
                    else:
                        waiting.pop(name, None)
                if name in waiting and sessions > waiting[name]:
                    self.first_session_after_up.setdefault(name, []).append(t)
                    del waiting[name]
                last[name] = status

    def first(self, server: str, to: str, after: float) -> float | None:
        return next((c["t"] for c in self.changes
                     if c["server"] == server and c["to"] == to and c["t"] >= after), None)


def run_failover(args: argparse.Namespace, cluster: Cluster, launcher: ThreadPoolExecutor,
                 report: dict[str, Any]) -> None:
    base_url = cluster.balancer.base_url
    host, port, _ = split_url(base_url, "/")
    pull_tags = run_async(setup(base_url, make_set(b"ha-failover")))
    counters0 = counters(cluster.stat())
    t0 = time.monotonic()
    tally = Tally(t0)
    chaos = Chaos(cluster, launcher, t0, args.kill_at, args.drain_at)
    poller = StatsPoller(cluster, t0)
    threads = [threading.Thread(target=chaos.run, name="chaos", daemon=True),
               threading.Thread(target=poller.run, name="haproxy-stats", daemon=True)]
    stop = args.failover_seconds
    log(f"[failover] {args.failover_seconds:g}s through haproxy: {args.pushers} pushers, "
        f"{args.pullers} pullers; SIGKILL r{KILLED} at {args.kill_at:g}s, SIGTERM "
        f"(drain) r{DRAINED} at {args.drain_at:g}s and start it again")

    async def pusher(cid: int) -> None:
        conn = HttpConn(host, port)
        n = 0
        try:
            while tally.now() < stop:
                n += 1
                if await push_image(conn, base_url, tally, f"p{cid}-{n}", args.layer_size):
                    tally.images_pushed += 1
                else:
                    tally.images_failed += 1
                    await asyncio.sleep(ERROR_PAUSE)
        finally:
            conn.close()

    async def puller(cid: int) -> None:
        conn = HttpConn(host, port)
        i = cid
        try:
            while tally.now() < stop:
                i += 1
                # the tags of the setup and, in turn, the images pushed during the loop
                if tally.pushed and i % 2:
                    repo, (tag, size) = PUSH_REPO, tally.pushed[(i // 2) % len(tally.pushed)]
                else:
                    repo, (tag, size) = PULL_REPO, pull_tags[(i // 2) % len(pull_tags)]
                if await attempt(conn, tally, "manifest_get", "GET",
                                 f"/v2/{repo}/manifests/{tag}", 200, {"Accept": OCI_MANIFEST},
                                 length=size) is None:
                    await asyncio.sleep(ERROR_PAUSE)
        finally:
            conn.close()

    async def loop() -> None:
        tasks = [*(pusher(c) for c in range(args.pushers)),
                 *(puller(c) for c in range(args.pullers))]
        await asyncio.gather(*tasks)

    for thread in threads:
        thread.start()
    try:
        run_async(loop())
        # Gaps and phases end where the clients stopped sending, not after the last answers
        # came in and the loop closed (that tail would count as a gap).
        end = min(tally.now(), stop)
        # the drained replica may still be starting: wait for it (bounded), then for haproxy
        threads[0].join(90)
        if chaos.error is not None:
            raise RuntimeError(f"failover schedule failed: {chaos.error}") from chaos.error
        deadline = time.monotonic() + 10
        while (poller.first(f"r{DRAINED}", "UP", chaos.events.get("drain_signal", 1e9)) is None
               and time.monotonic() < deadline):
            time.sleep(0.05)
    finally:
        chaos.abort.set()
        poller.stop_event.set()
        for thread in threads:
            thread.join(90)
    counters1 = counters(cluster.stat())
    lost = run_async(check_pushed(base_url, tally.pushed))
    result = analyze(args, tally, chaos.events, poller, end)
    result["haproxy_counters"] = {k: counters1[k] - counters0[k] for k in counters0}
    result["acknowledged_pushes_lost"] = lost
    result["stats_poll_errors"] = poller.errors
    report["failover"] = result
    log_failover(result)


async def check_pushed(base_url: str, pushed: list[tuple[str, int]]) -> list[str]:
    """Every image whose manifest PUT was answered 201 pulls back through haproxy; the tags
    that do not (with what they answered)."""
    host, port, _ = split_url(base_url, "/")
    conn = HttpConn(host, port)
    lost = []
    try:
        for tag, size in pushed:
            resp = await conn.request("GET", f"/v2/{PUSH_REPO}/manifests/{tag}",
                                      {"Accept": OCI_MANIFEST})
            if resp.status != 200 or resp.length != size:
                lost.append(f"{tag}: {resp.status} ({resp.length} bytes)")
    finally:
        conn.close()
    return lost


def longest_gap(successes: list[float], start: float, end: float) -> dict[str, float | None]:
    """The longest time in [start, end] without a successful request completing."""
    inside = sorted(t for t in successes if start <= t <= end)
    points = [start, *inside, end]
    best, at = 0.0, start
    for a, b in itertools.pairwise(points):
        if b - a > best:
            best, at = b - a, a
    return {"seconds": best, "from": at}


def phase_counts(tally: Tally, start: float, end: float) -> dict[str, Any]:
    """Requests that completed in [start, end): succeeded, failed by kind; the longest gap."""
    ok = sum(1 for t in tally.successes if start <= t < end)
    failed = Counter(f["kind"] for f in tally.failures if start <= f["t"] < end)
    return {"start": start, "end": end, "succeeded": ok, "failed": sum(failed.values()),
            "failed_by_kind": dict(failed),
            "requests_per_s": (ok + sum(failed.values())) / (end - start) if end > start else None,
            "longest_gap": longest_gap(tally.successes, start, end)}


def analyze(args: argparse.Namespace, tally: Tally, events: dict[str, Any],
            poller: StatsPoller, end: float) -> dict[str, Any]:
    kill = events.get("kill")
    drain = events.get("drain_signal")
    failures = tally.failures
    by_kind = Counter(f["kind"] for f in failures)
    result: dict[str, Any] = {
        "seconds": end,
        "schedule": {"kill_at": args.kill_at, "drain_at": args.drain_at,
                     "killed": f"r{KILLED}", "drained": f"r{DRAINED}"},
        "events": events,
        "requests_attempted": sum(tally.attempted.values()),
        "requests_attempted_by_kind": dict(tally.attempted),
        "requests_succeeded": len(tally.successes),
        "requests_failed": len(failures),
        "failed_by_kind": dict(by_kind),
        "images_pushed": tally.images_pushed,
        "image_attempts_failed": tally.images_failed,
        "longest_gap": longest_gap(tally.successes, 0.0, end),
        "haproxy_status_changes": poller.changes,
        "haproxy_first_session_after_up": poller.first_session_after_up,
        "failures": failures[:200],
        "failures_truncated": max(0, len(failures) - 200),
    }
    bounds = [0.0, kill if kill is not None else end, drain if drain is not None else end, end]
    result["phases"] = {name: phase_counts(tally, a, b) for name, a, b in zip(
        ("before_kill", "after_kill", "after_drain"), bounds, bounds[1:], strict=False)}
    if kill is not None:
        window_end = drain if drain is not None else end
        after = [f for f in failures if kill <= f["t"] < window_end]
        sent_after = [t for t in tally.sent_ok if t >= kill]
        ok_after = [t for t in tally.successes if t >= kill]
        down = poller.first(f"r{KILLED}", "DOWN", kill - 0.5)
        result["kill"] = {
            "at": kill,
            "failures": len(after),
            "last_failure_after_s": (after[-1]["t"] - kill) if after else None,
            "first_success_after_s": (ok_after[0] - kill) if ok_after else None,
            # of a request sent after the kill (one in flight elsewhere says less)
            "first_success_sent_after_s": ((min(tally.successes[i] for i, s in enumerate(
                tally.sent_ok) if s >= kill) - kill) if sent_after else None),
            "haproxy_marked_down_after_s": None if down is None else down - kill,
            "longest_gap_s": longest_gap(tally.successes, kill, min(window_end, kill + 5))[
                "seconds"],
        }
    if drain is not None:
        after = [f for f in failures if f["t"] >= drain]
        name = f"r{DRAINED}"
        down = poller.first(name, "DOWN", drain - 0.5)
        up = poller.first(name, "UP", drain)
        served = next((t for t in poller.first_session_after_up.get(name, []) if t >= drain),
                      None)

        def rel(t: float | None) -> float | None:
            return None if t is None else t - drain

        result["drain"] = {
            "at": drain,
            "failures": len(after),
            "haproxy_marked_down_after_s": rel(down),
            "exited_after_s": rel(events.get("drain_exit")),
            "answering_again_after_s": rel(events.get("restart_answering")),
            "haproxy_marked_up_after_s": rel(up),
            "first_request_after_s": rel(served),
        }
    return result


def log_failover(r: dict[str, Any]) -> None:
    log(f"[failover] {r['requests_attempted']} requests, {r['requests_failed']} failed "
        f"{r['failed_by_kind']}; {r['images_pushed']} images pushed; longest gap "
        f"{r['longest_gap']['seconds'] * 1000:.0f} ms at {r['longest_gap']['from']:.2f}s; "
        f"lost {len(r['acknowledged_pushes_lost'])}")


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def table(rows: list[tuple[str, ...]], right_from: int = 1) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i >= right_from else c.ljust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]


def format_report(report: dict[str, Any]) -> str:
    out: list[str] = []
    tr = report.get("transfers", {}).get("summary")
    if tr:
        t = report["transfers"]
        out.append(f"Transfers: {fmt_size(t['size'])} blob, medians of {t['rounds']} round(s), "
                   f"redirect={str(t['redirect']).lower()}; MB = 10^6 B; CPU s/GiB")
        rows: list[tuple[str, ...]] = [("op", "path", "MB/s", "vs direct", "replicas",
                                        "haproxy", "RGW", "client")]
        for op in ("push", "pull"):
            for path in PATHS:
                m = tr.get(op, {}).get(path)
                if m is None:
                    continue
                ratio = tr[op].get("ratio_haproxy_over_direct")
                rows.append((op, path, f"{m['mb_per_s']['median']:.1f}",
                             f"{ratio:.2f}" if path == "haproxy" and ratio else "",
                             *(f"{m[k]['median']:.2f}" for k in TRANSFER_METRICS[1:])))
        out += [*table(rows, 2), ""]
    man = report.get("manifests", {}).get("samples")
    if man:
        out.append("Manifest GET by tag: requests/s (p99 ms); CPU ms per request of the "
                   "replicas (all three) and of haproxy")
        rows = [("clients", "haproxy", "direct", "haproxy/direct", "replicas via haproxy",
                 "haproxy", "replicas direct")]
        for clients in report["manifests"]["levels"]:
            by = {s["path"]: s for s in man if s["clients"] == clients}
            lb, d = by.get("haproxy"), by.get("direct")
            if lb is None or d is None:
                continue
            rows.append((str(clients), f"{lb['rps']:.0f} ({fmt(lb['p99_ms'], 1)})",
                         f"{d['rps']:.0f} ({fmt(d['p99_ms'], 1)})",
                         f"{lb['rps'] / d['rps']:.2f}" if d["rps"] else "-",
                         fmt(lb["replicas_cpu_ms_per_req"], 3),
                         fmt(lb["haproxy_cpu_ms_per_req"], 3),
                         fmt(d["replicas_cpu_ms_per_req"], 3)))
        errors = sum(s["errors"] for s in man)
        out += [*table(rows), *([f"  ({errors} errors)"] if errors else []), ""]
    f = report.get("failover")
    if f:
        out.append(f"Failover: {f['seconds']:.1f}s through haproxy, SIGKILL "
                   f"{f['schedule']['killed']} at {f['schedule']['kill_at']:g}s, drain and "
                   f"restart {f['schedule']['drained']} at {f['schedule']['drain_at']:g}s")
        rows = [("phase", "succeeded", "failed", "by kind", "req/s", "longest gap ms")]
        for name, p in f["phases"].items():
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(p["failed_by_kind"].items())) or "-"
            rows.append((name, str(p["succeeded"]), str(p["failed"]), kinds,
                         fmt(p["requests_per_s"], 0), f"{p['longest_gap']['seconds'] * 1e3:.0f}"))
        rows.append(("all", str(f["requests_succeeded"]), str(f["requests_failed"]),
                     ", ".join(f"{k} {v}" for k, v in sorted(f["failed_by_kind"].items())) or "-",
                     f"{f['requests_attempted'] / f['seconds']:.0f}",
                     f"{f['longest_gap']['seconds'] * 1e3:.0f}"))
        out += table(rows, 1)

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v * 1000:.0f} ms"

        if k := f.get("kill"):
            out.append(f"kill: {k['failures']} failures, the last {ms(k['last_failure_after_s'])}"
                       f" after; first success of a request sent after it "
                       f"{ms(k['first_success_sent_after_s'])}; haproxy marked it DOWN after "
                       f"{ms(k['haproxy_marked_down_after_s'])}")
        if d := f.get("drain"):
            out.append(f"drain: {d['failures']} failures; haproxy DOWN after "
                       f"{ms(d['haproxy_marked_down_after_s'])}, exited "
                       f"{ms(d['exited_after_s'])}, answering again "
                       f"{ms(d['answering_again_after_s'])}, haproxy UP "
                       f"{ms(d['haproxy_marked_up_after_s'])}, first request "
                       f"{ms(d['first_request_after_s'])}")
        c = f["haproxy_counters"]
        out.append(f"haproxy: {c['retries']} retries, {c['redispatches']} redispatches, "
                   f"{c['frontend_5xx']} 5xx sent; images pushed {f['images_pushed']} "
                   f"(failed attempts {f['image_attempts_failed']}), acknowledged and lost: "
                   f"{len(f['acknowledged_pushes_lost'])}")
    return "\n".join(out)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad levels {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"bad levels {text!r}")
    return levels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Three replicas on one Ceph RGW bucket behind haproxy: steady-state "
                    "throughput and request rate, and failover (a replica killed, one drained).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--only", type=lambda t: parse_list(t, SECTIONS, "section"),
                   default=list(SECTIONS),
                   help=f"sections, comma-separated, from {','.join(SECTIONS)}")
    p.add_argument("--size", type=parse_size, default="128MiB", help="blob of the transfers")
    p.add_argument("--rounds", type=int, default=2, help="transfer rounds (medians)")
    p.add_argument("--redirect", action="store_true",
                   help="storage.s3.redirect = true: pulls answer 307 to RGW (the bytes bypass "
                        "haproxy and the replicas); default: streamed through them")
    p.add_argument("--part-size", type=parse_size, default="16MiB", help="storage.s3.part_size")
    p.add_argument("--levels", type=parse_levels, default=[1, 16, 64],
                   help="manifest GET connections")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds per level, not counted")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per level, counted")
    p.add_argument("--failover-seconds", type=float, default=30.0, help="failover loop length")
    p.add_argument("--kill-at", type=float, default=8.0, help="SIGKILL r0 at this second")
    p.add_argument("--drain-at", type=float, default=16.0,
                   help="SIGTERM (drain) r1 at this second, then start it again")
    p.add_argument("--drain-delay", type=int, default=1, help="server.drain_delay of replicas")
    p.add_argument("--pushers", type=int, default=2, help="failover clients pushing images")
    p.add_argument("--pullers", type=int, default=2, help="failover clients pulling manifests")
    p.add_argument("--layer-size", type=parse_size, default="64KiB",
                   help="random layer of each image pushed during failover")
    p.add_argument("--python", default=sys.executable, help="python that runs the replicas")
    p.add_argument("--haproxy-bin", default=HAPROXY_BIN, help="haproxy binary")
    p.add_argument("--tmp-dir", type=Path, default=None,
                   help="blobs, replica logs, haproxy config, RGW state; default $TMPDIR or /tmp")
    p.add_argument("--output", type=Path, default=None,
                   help="JSON results path (default: bench/results/ha-<timestamp>.json)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs)")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if args.part_size < 5 * MiB:
        p.error("--part-size must be at least 5 MiB (S3's minimum)")
    if 2 * args.rounds * args.size > 1536 * MiB:
        p.error("2 x --rounds x --size must stay under 1.5 GiB (RGW's memstore holds 4 GiB)")
    if not 0 < args.kill_at < args.drain_at < args.failover_seconds:
        p.error("need 0 < --kill-at < --drain-at < --failover-seconds")
    if args.pushers < 0 or args.pullers < 0 or args.pushers + args.pullers == 0:
        p.error("need at least one failover client")
    if args.warmup < 0 or args.duration <= 0:
        p.error("--warmup >= 0 and --duration > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("curl", args.haproxy_bin):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (apt-get install -y haproxy curl)")
    if (why := rgw_missing()) is not None:
        raise SystemExit(f"rgw: {why}")
    base = Path(tempfile.mkdtemp(prefix="ha-bench-", dir=args.tmp_dir)).resolve()
    if len(str(base / "haproxy" / "stats.sock")) > 100:
        raise SystemExit(f"{base}: too long for a Unix socket path; use a shorter --tmp-dir")
    need = 2 * args.size + 64 * MiB
    if shutil.disk_usage(base).free < need:
        shutil.rmtree(base, ignore_errors=True)
        raise SystemExit(f"not enough free space in {base}: need {fmt_size(need)}")
    started = dt.datetime.now(dt.UTC)
    output = args.output or RESULTS_DIR / f"ha-{started:%Y%m%dT%H%M%SZ}.json"
    argv_text = shlex.join([args.python, "-m", "registry", "serve", "--config", "<settings>",
                            "--host", "127.0.0.1", "--port", "<port>", "--data-dir", "<dir>"])
    report: dict[str, Any] = {
        "benchmark": "ha",
        "started": started.isoformat(),
        "complete": False,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine_info({}, curl=run_quiet(["curl", "--version"]),
                                haproxy=run_quiet([args.haproxy_bin, "-v"]), ceph=rgw_version(),
                                tmp_filesystem=tmp_filesystem(base)),
        "servers": {"replicas": f"{REPLICAS} x {argv_text}, storage s3 on one RGW bucket, "
                                f"drain_delay={args.drain_delay}, "
                                f"redirect={str(args.redirect).lower()}",
                    "rgw": "bash .ci/rgw start <dir>: ceph-mon, ceph-osd (memstore), radosgw "
                           "on 127.0.0.1"},
        "git_commit": git_commit(),
        # the replicas run from the work tree: uncommitted changes there are measured too
        "git_dirty": bool(run_quiet(["git", "-C", str(Path(__file__).resolve().parent.parent),
                                     "status", "--porcelain", "--", "registry", "storage"])),
        "units": {
            "mb_per_s": "10^6 bytes/s",
            "*_cpu_s_per_gib": "CPU seconds (user+sys, process trees) per 2^30 B: replicas "
                               "(all three), haproxy, s3_server (ceph-mon + ceph-osd + "
                               "radosgw), client (curl and this process)",
            "rps": "requests per second completed in the counted window",
            "failover times": "seconds since the start of the failover loop; *_after_s since "
                              "the kill or the drain signal",
        },
    }

    def body() -> None:
        t = time.perf_counter()
        rgw = start_rgw(base / "rgw")
        bucket = rgw.create_bucket()
        # The failover restarts a replica on this thread; it lives until the cluster stops.
        launcher = ThreadPoolExecutor(1, thread_name_prefix="launcher")
        try:
            cluster = start_cluster(args, base, rgw, bucket)
            report["servers"]["haproxy_config"] = cluster.config_text
            log(f"3 replicas {[r.base_url for r in cluster.replicas]} behind haproxy "
                f"{cluster.balancer.base_url} ({time.perf_counter() - t:.1f}s)")
            if "transfers" in args.only:
                run_transfers(args, base, cluster, report)
            if "manifests" in args.only:
                run_manifests(args, cluster, report)
            if "failover" in args.only:
                run_failover(args, cluster, launcher, report)
            cluster.balancer.stop()
            with ThreadPoolExecutor(REPLICAS) as pool:  # each drains for drain_delay
                list(pool.map(Server.stop, cluster.replicas))
            for replica in cluster.replicas:
                text = (replica.log_path.read_text(errors="replace")
                        if replica.log_path.exists() else "")
                if "Traceback" in text:
                    report.setdefault("replica_tracebacks", []).append(replica.name)
            report["complete"] = True
        finally:
            launcher.shutdown()
            with contextlib.suppress(Exception):
                rgw.remove_bucket(bucket)  # and free memstore's RAM
            report["seconds"] = time.perf_counter() - t

    try:
        rc = run_guarded(body)
    finally:
        if args.keep_tmp:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    report["finished"] = dt.datetime.now(dt.UTC).isoformat()
    report["machine"]["loadavg_end"] = os.getloadavg()
    if any(k in report for k in SECTIONS):
        print(format_report(report))
        write_report(output, report, indent=2)
    return rc


if __name__ == "__main__":
    sys.exit(main())
