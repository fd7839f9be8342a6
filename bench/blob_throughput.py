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

Standard library only (Linux: reads /proc). Servers, machine info and the JSON report
come from bench/common.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

# The `X as X` imports live in common and are re-exported (mypy strict) for the other bench
# scripts that import them from here.
from common import CURL as CURL
from common import (
    DISTRIBUTION,
    OURS,
    REGISTRY_NAMES,
    RESULTS_DIR,
    RegistrySpec,
    Server,
    add_server_args,
    git_commit,
    log,
    machine_info,
    process_tree,
    read_text,
    registry_specs,
    run_guarded,
    run_quiet,
    write_report,
)
from common import MB as MB
from common import Blob as Blob
from common import GiB as GiB
from common import KiB as KiB
from common import MiB as MiB
from common import cpu_seconds as cpu_seconds
from common import fmt_size as fmt_size
from common import make_blob as make_blob
from common import parse_size as parse_size
from common import verify_pull as verify_pull

SAMPLE_INTERVAL = 0.05  # seconds between /proc samples of the server process tree

PUSH_OPS = ("push-monolithic", "push-chunked")
OPS = (*PUSH_OPS, "pull")

# Under `log:` in Distribution's config.yml (the rest is common.DISTRIBUTION_CONFIG).
DISTRIBUTION_LOG = """\
  level: info
  fields:
    service: registry
"""


# --------------------------------------------------------------------------------------
# /proc helpers: client CPU, RSS (cpu_seconds, process_tree and stat_fields are in common.py)
# --------------------------------------------------------------------------------------


def client_cpu_seconds() -> float:
    """CPU seconds of this process and of its exited children (curl): the client's side of a
    measurement. The servers still run, so they are not in RUSAGE_CHILDREN."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime + time.process_time()


def mem_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in KiB, or None if the process is gone."""
    text = read_text(f"/proc/{pid}/status")
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


def run_curl(args: list[str], what: str) -> list[str]:
    """Run curl with a `-w` format; return its whitespace-separated write-out fields."""
    proc = subprocess.run([*CURL, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{what}: curl rc={proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.split()


# --------------------------------------------------------------------------------------
# Operations (each returns client-side info; the server side is measured by measure())
# --------------------------------------------------------------------------------------


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
            f"{(read_text(str(body_file)) or '')[:500]}"
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
    client0 = client_cpu_seconds()
    monitor.start()
    t0 = time.perf_counter()
    try:
        info = OP_FUNCS[op](server, repo, blob, chunk, workdir)
        elapsed = time.perf_counter() - t0
        cpu1 = cpu_seconds(process_tree(server.pid))
    finally:
        monitor.stop()
    client_cpu = client_cpu_seconds() - client0
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
            h.ljust(w) if i < 2 else h.rjust(w)
            for i, (h, w) in enumerate(zip(head, widths, strict=True))
        ),
    ]
    prev = None
    for r in rows:
        if prev is not None and r[0] != prev:
            lines.append("")
        prev = r[0]
        lines.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(lines)


def tmp_filesystem(base: Path) -> dict[str, str] | None:
    """Filesystem holding the blob and the data dirs (longest mount-point prefix)."""
    fs = None
    best = -1
    for line in (read_text("/proc/mounts") or "").splitlines():
        dev, mnt, fstype = line.split()[:3]
        mnt = mnt.replace("\\040", " ")
        if (str(base) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) > best:
            best, fs = len(mnt), {"device": dev, "mount": mnt, "type": fstype}
    return fs


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
    add_server_args(
        p,
        "blob_throughput",
        "where the blob and all data dirs go (one filesystem)",
        "keep the temp dir (blob, server logs)",
    )
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("curl") is None:
        raise SystemExit("curl not found")
    specs = registry_specs(args, "blob_throughput.py", DISTRIBUTION_LOG)

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
        "machine": machine_info(
            {}, curl=run_quiet(["curl", "--version"]), tmp_filesystem=tmp_filesystem(base)
        ),
        "registries": {s.name: {"cmd": s.describe, "version": s.version} for s in specs},
        "git_commit": git_commit(),
        "units": {
            "mb_per_s": "10^6 bytes/s",
            "cpu_s_per_gib": "server CPU seconds (user+sys, whole process tree) per 2^30 bytes",
            "peak_rss_mib": "2^20 bytes",
        },
    }
    result: dict[str, Any] = {}

    def run() -> None:
        run_benchmark(args, specs, base, result)
        report["complete"] = True

    try:
        rc = run_guarded(run)  # stops the servers; Ctrl-C, SIGTERM and SIGHUP end up here
    finally:
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
        write_report(output, report, indent=2)
    return rc


if __name__ == "__main__":
    sys.exit(main())
