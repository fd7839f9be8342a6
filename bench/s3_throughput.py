#!/usr/bin/env python3
"""Blob throughput of our registry on S3 (moto_server, and Ceph's RADOS Gateway) next to the
filesystem driver.

The same random blob is pushed (one monolithic ``PUT``, and ``PATCH`` chunks of 16 MiB) and
pulled with the same client, ``curl``, on every store. On S3 the blob is pulled twice: with
``curl -L`` following the registry's 307 to a presigned URL (the bytes come from the S3
server), and through a second registry on the same bucket with ``storage.s3.redirect = false``
(the bytes stream through the registry). For every operation the script records MB/s, the
registry's CPU seconds per GiB, the S3 server's CPU seconds per GiB (it shares the machine's
cores, and on S3 it does much of the work) and the registry's peak RSS. Medians over
``--rounds``.

    python bench/s3_throughput.py                    # 256 MiB blob, 3 rounds, every store
    python bench/s3_throughput.py --size 64M --rounds 1
    python bench/s3_throughput.py --stores fs,rgw

The stores (``--stores``, default: every one available on this machine):

- ``fs``: the filesystem driver, a fresh data directory per push;
- ``moto``: a local ``moto_server``, fresh (server and bucket) per push. It is a CPU-bound
  Python emulator keeping objects in spooled temporary files: its figures show where the
  registry's own cost goes (its CPU per GiB) and what redirects save, not S3 throughput;
- ``rgw``: a single-node Ceph RADOS Gateway started once per run by ``.ci/rgw`` (ceph-mon,
  one ceph-osd on memstore, radosgw), a fresh bucket per push, deleted afterwards. A real S3
  implementation, but objects live in RAM, there is one OSD and no network, and its three
  daemons share the cores with the registry and curl; its CPU is theirs summed.

Needs Linux (/proc), curl, moto_server (``pip install 'moto[server]'``) for ``moto``, the
Ceph packages (``bash .ci/rgw install``) for ``rgw``, and our server's dependencies; servers,
RGW, machine info and the JSON report come from bench/common.py, and the blob, curl and
/proc helpers from bench/blob_throughput.py.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blob_throughput import (
    MB,
    Blob,
    GiB,
    KiB,
    MiB,
    TreeMonitor,
    check_blob,
    client_cpu_seconds,
    cpu_seconds,
    fmt_size,
    make_blob,
    parse_size,
    pull,
    push_monolithic,
    reset_peak_rss,
    run_curl,
    start_upload,
    tmp_filesystem,
    verify_pull,
)
from common import (
    OURS_BENCH_SETTINGS,
    RESULTS_DIR,
    RegistrySpec,
    S3Server,
    Server,
    _die_with_parent,
    git_commit,
    log,
    machine_info,
    parse_list,
    process_tree,
    read_text,
    rgw_missing,
    rgw_version,
    run_guarded,
    run_quiet,
    s3_pids,
    start_rgw,
    stop_rgws,
    write_report,
)

REGION = "us-east-1"
ACCESS_KEY = "testing"  # moto accepts any credentials
STORES = ("fs", "moto", "rgw")
S3_STORES = ("moto", "rgw")
FS_OPS = ("push-monolithic", "push-chunked", "pull")
S3_OPS = ("push-monolithic", "push-chunked", "pull-redirect", "pull-streamed")
# (store, op) rows of the table, in order
ROWS = tuple((store, op) for store in STORES for op in (FS_OPS if store == "fs" else S3_OPS))
METRICS = ("mb_per_s", "registry_cpu_s_per_gib", "s3_server_cpu_s_per_gib",
           "total_cpu_s_per_gib", "peak_rss_mib")

# Pushes create their repository, and no scheduled GC or lifecycle run competes.
FS_CONFIG = "# Written by bench/s3_throughput.py\n" + OURS_BENCH_SETTINGS.split("\n", 1)[1]
S3_CONFIG = """\
# Written by bench/s3_throughput.py
[storage]
driver = "s3"

[storage.s3]
bucket = "{bucket}"
endpoint_url = "{endpoint}"
region = "{region}"
addressing_style = "path"
redirect = {redirect}
part_size = {part_size}
access_key_id = "{key}"
secret_access_key = "{secret}"

""" + OURS_BENCH_SETTINGS.split("\n", 1)[1]


# --------------------------------------------------------------------------------------
# moto_server
# --------------------------------------------------------------------------------------


@dataclass
class Moto:
    """A moto_server process (common.S3Server)."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    name: str = "moto"
    region: str = REGION
    access_key_id: str = ACCESS_KEY
    secret_access_key: str = ACCESS_KEY

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid]

    def create_bucket(self) -> str:
        import boto3

        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.url, region_name=REGION,
                     aws_access_key_id=ACCESS_KEY,
                     aws_secret_access_key=ACCESS_KEY).create_bucket(Bucket=bucket)
        return bucket

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self in _LIVE_MOTOS:
            _LIVE_MOTOS.remove(self)


_LIVE_MOTOS: list[Moto] = []


def moto_command() -> list[str]:
    exe = shutil.which("moto_server")
    return [exe] if exe else [sys.executable, "-m", "moto.server"]


def start_moto(workdir: Path) -> Moto:
    """moto_server on a free loopback port, in its own process group, spooling to workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    log_path = workdir / "moto.log"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": ACCESS_KEY,
           "TMPDIR": str(workdir)}
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen([*moto_command(), "-H", "127.0.0.1", "-p", str(port)],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True, preexec_fn=_die_with_parent)
    moto = Moto(proc, port, log_path)
    _LIVE_MOTOS.append(moto)
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return moto
        if proc.poll() is not None or time.monotonic() > deadline:
            moto.stop()
            tail = "\n".join((read_text(str(log_path)) or "").splitlines()[-20:])
            raise RuntimeError(f"moto_server did not start\n{tail}")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------
# Registries
# --------------------------------------------------------------------------------------


def ours_argv(python: str) -> list[str]:
    return [python.replace("{", "{{").replace("}", "}}"), "-m", "registry", "serve",
            "--host", "{host}", "--port", "{port}", "--data-dir", "{data_dir}",
            "--config", "{config}"]


def filesystem_spec(python: str) -> RegistrySpec:
    return RegistrySpec("fs", ours_argv(python),
                        "registry serve --data-dir <fresh dir> (filesystem, fsync on)",
                        config=FS_CONFIG)


def s3_spec(python: str, s3: S3Server, bucket: str, redirect: bool,
            part_size: int) -> RegistrySpec:
    # launch() formats the config again with {root} and {port}: braces in values doubled
    def esc(v: str) -> str:
        return v.replace("{", "{{").replace("}", "}}")

    config = S3_CONFIG.format(bucket=esc(bucket), endpoint=esc(s3.url), region=esc(s3.region),
                              redirect=str(redirect).lower(), part_size=part_size,
                              key=esc(s3.access_key_id), secret=esc(s3.secret_access_key))
    name = s3.name if redirect else f"{s3.name}-streamed"
    return RegistrySpec(name, ours_argv(python),
                        f"registry serve --config <s3 on {s3.name}, "
                        f"redirect={str(redirect).lower()}>", config=config)


# --------------------------------------------------------------------------------------
# Chunked push with curl: one invocation, one connection, PATCH per chunk (--next), PUT
# --------------------------------------------------------------------------------------


def chunk_files(blob: Blob, chunk: int, directory: Path) -> list[tuple[Path, int, int]]:
    """The blob cut into chunk files (made once, before any timing): (path, start, end)."""
    directory.mkdir(exist_ok=True)
    out = []
    with open(blob.path, "rb") as f:
        for i, start in enumerate(range(0, blob.size, chunk)):
            path = directory / f"chunk-{i:05d}"
            data = f.read(chunk)
            if not path.exists() or path.stat().st_size != len(data):
                path.write_bytes(data)
            out.append((path, start, start + len(data) - 1))
    return out


def push_chunked_curl(server: Server, repo: str, blob: Blob, chunks: list[tuple[Path, int, int]],
                      workdir: Path) -> dict[str, Any]:
    location = start_upload(server, repo)
    args: list[str] = []
    for i, (path, start, end) in enumerate(chunks):
        if i:
            args.append("--next")
        args += ["-X", "PATCH", "-T", str(path), "-H", "Content-Type: application/octet-stream",
                 "-H", f"Content-Range: {start}-{end}", "-H", "Expect:", "-o", "/dev/null",
                 "-w", "%{http_code} %{size_upload} %header{location}\\n", location]
    digest_url = f"{location}{'&' if '?' in location else '?'}digest={blob.digest}"
    args += ["--next", "-X", "PUT", "-H", "Content-Length: 0", "-o", str(workdir / "put.txt"),
             "-w", "%{http_code} 0 -\\n", digest_url]
    fields = run_curl(args, f"{server.name} chunked push")
    answers = [fields[i:i + 3] for i in range(0, len(fields), 3)]
    for (code, uploaded, loc), (_, start, end) in zip(answers, chunks, strict=False):
        if code != "202" or int(float(uploaded)) != end - start + 1:
            raise RuntimeError(f"{server.name}: PATCH {start}-{end} -> {code}")
        if loc != "-" and not location.endswith(loc):
            raise RuntimeError(f"{server.name}: upload moved to {loc}; this client cannot follow")
    if len(answers) != len(chunks) + 1 or answers[-1][0] != "201":
        body = (read_text(str(workdir / "put.txt")) or "")[:500]
        raise RuntimeError(f"{server.name}: chunked PUT -> {answers[-1:]}: {body}")
    return {"requests": len(chunks) + 2, "chunk_size": chunks[0][2] + 1 if chunks else 0}


# --------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------


def measure(server: Server, s3: S3Server | None,
            fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run fn(); wall time, CPU of the registry's process tree, of the S3 server's (moto_server;
    RGW: ceph-mon + ceph-osd + radosgw; None without one) and of the client (curl, which has
    exited by then, plus this process for the http.client pushes), registry peak RSS."""
    pids = process_tree(server.pid)
    hwm_reset = reset_peak_rss(pids)
    monitor = TreeMonitor(server.pid)
    cpu0 = cpu_seconds(pids)
    s3_0 = cpu_seconds(s3_pids(s3))
    client0 = client_cpu_seconds()
    monitor.start()
    t0 = time.perf_counter()
    try:
        info = fn()
        elapsed = time.perf_counter() - t0
        cpu1 = cpu_seconds(process_tree(server.pid))
        s3_1 = cpu_seconds(s3_pids(s3))
    finally:
        monitor.stop()
    hwm_mib = sum(monitor.hwm_kib.values()) / KiB
    return {"seconds": elapsed, "registry_cpu_s": cpu1 - cpu0,
            "s3_server_cpu_s": None if s3 is None else s3_1 - s3_0,
            "client_cpu_s": client_cpu_seconds() - client0,
            "peak_rss_mib": hwm_mib if hwm_reset else monitor.peak_rss_sampled_kib / KiB,
            **info}


def finish(sample: dict[str, Any], size: int) -> dict[str, Any]:
    gib = size / GiB
    s3_cpu = sample["s3_server_cpu_s"]
    sample["mb_per_s"] = size / MB / sample["seconds"]
    sample["registry_cpu_s_per_gib"] = sample["registry_cpu_s"] / gib
    sample["s3_server_cpu_s_per_gib"] = None if s3_cpu is None else s3_cpu / gib
    sample["total_cpu_s_per_gib"] = (sample["registry_cpu_s"] + (s3_cpu or 0.0)) / gib
    return sample


def run_benchmark(args: argparse.Namespace, base: Path, result: dict[str, Any]) -> None:
    t = time.perf_counter()
    log(f"creating {fmt_size(args.size)} random blob in {base} ...")
    blob = make_blob(base, args.size)
    chunks = chunk_files(blob, args.chunk_size, base / "chunks")
    log(f"  {blob.digest} ({time.perf_counter() - t:.1f}s)")
    samples: list[dict[str, Any]] = []
    result.update(blob={"size": blob.size, "digest": blob.digest}, samples=samples)
    rgw = start_rgw(base / "rgw") if "rgw" in args.stores else None  # once per run (~2 s)

    for rnd in range(1, args.rounds + 1):
        order = args.stores if rnd % 2 else args.stores[::-1]
        for store in order:
            for push_op in ("push-monolithic", "push-chunked"):
                # Fresh data dir, fresh moto_server and bucket, or fresh bucket on RGW:
                # nothing to deduplicate.
                run = Run(args, blob, chunks, rnd, push_op, samples,
                          workdir=base / f"{store}-r{rnd}-{push_op}",
                          repo=f"bench/{push_op}-r{rnd}-{os.urandom(3).hex()}")
                if store == "fs":
                    run.filesystem()
                elif store == "moto":
                    moto = start_moto(run.workdir / "moto")
                    try:
                        run.s3(moto, moto.create_bucket())
                    finally:
                        moto.stop()
                else:
                    assert rgw is not None
                    bucket = rgw.create_bucket()
                    try:
                        run.s3(rgw, bucket)
                    finally:
                        rgw.remove_bucket(bucket)  # and free its RAM (RGW's GC, now)
                shutil.rmtree(run.workdir, ignore_errors=True)
    if rgw is not None:
        rgw.stop()


@dataclass
class Run:
    """One push style in one round on one backend: the push, then its pull(s)."""

    args: argparse.Namespace
    blob: Blob
    chunks: list[tuple[Path, int, int]]
    round: int
    push_op: str
    samples: list[dict[str, Any]]
    workdir: Path
    repo: str

    def push(self, server: Server) -> dict[str, Any]:
        if self.push_op == "push-monolithic":
            return push_monolithic(server, self.repo, self.blob, self.args.chunk_size,
                                   self.workdir)
        return push_chunked_curl(server, self.repo, self.blob, self.chunks, self.workdir)

    def pull(self, server: Server) -> dict[str, Any]:
        info = pull(server, self.repo, self.blob, self.args.chunk_size, self.workdir)
        return {**info, "after": self.push_op}

    def record(self, store: str, op: str, sample: dict[str, Any]) -> None:
        sample = finish(sample, self.blob.size)
        sample.update(store=store, backend="filesystem" if store == "fs" else "s3", op=op,
                      round=self.round)
        self.samples.append(sample)
        s3_cpu = sample["s3_server_cpu_s_per_gib"]
        s3_part = "" if s3_cpu is None else f"  {store} {s3_cpu:5.2f}"
        log(f"[round {self.round}/{self.args.rounds}] {store:<5} {op:<16}"
            f"{sample['mb_per_s']:8.1f} MB/s"
            f"  registry {sample['registry_cpu_s_per_gib']:5.2f}{s3_part} CPU s/GiB"
            f"  {sample['peak_rss_mib']:6.1f} MiB  ({sample['seconds']:.2f}s)")

    def filesystem(self) -> None:
        server = filesystem_spec(self.args.python).launch(self.workdir)
        try:
            self.record("fs", self.push_op,
                        measure(server, None, functools.partial(self.push, server)))
            check_blob(server, self.repo, self.blob)
            if self.round == 1:
                verify_pull(server, self.repo, self.blob)
            os.sync()  # this push's dirty pages are not written back during the pull
            self.record("fs", "pull", measure(server, None, functools.partial(self.pull, server)))
        finally:
            server.stop()

    def s3(self, s3: S3Server, bucket: str) -> None:
        """Registry `a` (redirects) takes the push and the redirected pull; registry `b` on
        the same bucket (redirect = false) streams the blob through itself."""
        servers: list[Server] = []
        store = s3.name
        try:
            for redirect, name in ((True, "redirect"), (False, "streamed")):
                spec = s3_spec(self.args.python, s3, bucket, redirect, self.args.part_size)
                servers.append(spec.launch(self.workdir / name))
            a, b = servers
            self.record(store, self.push_op, measure(a, s3, functools.partial(self.push, a)))
            check_blob(a, self.repo, self.blob)
            if self.round == 1:
                verify_pull(a, self.repo, self.blob)  # follows the redirect
                verify_pull(b, self.repo, self.blob)  # through the registry
            self.record(store, "pull-redirect", measure(a, s3, functools.partial(self.pull, a)))
            self.record(store, "pull-streamed", measure(b, s3, functools.partial(self.pull, b)))
        finally:
            for server in servers:
                server.stop()


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """{store: {op: {metric: {median, min, max}, "n"}}}, and ratio_over_fs.{store}.{op}."""
    summary: dict[str, Any] = {}
    for store, op in ROWS:
        rows = [s for s in samples if s["store"] == store and s["op"] == op]
        if not rows:
            continue
        entry: dict[str, Any] = {"n": len(rows)}
        for metric in (*METRICS, "seconds"):
            values = [r[metric] for r in rows if r[metric] is not None]
            if values:
                entry[metric] = {"median": statistics.median(values), "min": min(values),
                                 "max": max(values)}
        summary.setdefault(store, {})[op] = entry
    for store in S3_STORES:
        for op in ("push-monolithic", "push-chunked"):
            fs, s3 = summary.get("fs", {}).get(op), summary.get(store, {}).get(op)
            if fs and s3:
                summary.setdefault("ratio_over_fs", {}).setdefault(store, {})[op] = {
                    m: (s3[m]["median"] / fs[m]["median"] if fs[m]["median"] else None)
                    for m in ("mb_per_s", "registry_cpu_s_per_gib")}
    return summary


def format_table(summary: dict[str, Any], size: int, rounds: int) -> str:
    head = ("store", "operation", "MB/s", "registry CPU s/GiB", "S3 server CPU s/GiB",
            "total CPU s/GiB", "registry peak RSS MiB")
    rows: list[tuple[str, ...]] = []
    for store, op in ROWS:
        m = summary.get(store, {}).get(op)
        if m is None:
            continue
        s3 = m.get("s3_server_cpu_s_per_gib")
        rows.append((store, op, f"{m['mb_per_s']['median']:.1f}",
                     f"{m['registry_cpu_s_per_gib']['median']:.2f}",
                     "-" if s3 is None else f"{s3['median']:.2f}",
                     f"{m['total_cpu_s_per_gib']['median']:.2f}",
                     f"{m['peak_rss_mib']['median']:.1f}"))
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    out = [f"S3 (moto_server, Ceph RGW) vs filesystem: {fmt_size(size)} blob, medians of "
           f"{rounds} round(s) (pulls: 2 per round); MB = 10^6 bytes; S3 server CPU: "
           "moto_server, or ceph-mon + ceph-osd + radosgw", line(head)]
    prev = None
    for r in rows:
        if prev is not None and r[0] != prev:
            out.append("")
        prev = r[0]
        out.append(line(r))
    return "\n".join(out)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def moto_missing() -> str | None:
    """Why moto_server cannot run here, or None if it can."""
    if shutil.which("moto_server"):
        return None
    try:
        import moto.server  # noqa: F401
    except ImportError:
        return "moto_server not found (pip install 'moto[server]')"
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Blob push/pull throughput of our registry: S3 (moto_server, Ceph RGW) vs "
                    "filesystem.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", type=parse_size, default="256MiB",
                   help="blob size; K/M/G are binary (moto_server is CPU-bound: keep it modest)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (medians are reported)")
    p.add_argument("--stores", type=lambda t: parse_list(t, STORES, "store"), default=None,
                   help="stores, comma-separated, from fs,moto,rgw (default: every one "
                        "available here; moto or rgw missing is skipped with a message)")
    p.add_argument("--chunk-size", type=parse_size, default="16MiB",
                   help="PATCH size for the chunked push")
    p.add_argument("--part-size", type=parse_size, default="16MiB",
                   help="storage.s3.part_size of the S3 registries")
    p.add_argument("--python", default=sys.executable, help="python that runs our server")
    p.add_argument("--tmp-dir", type=Path, default=None,
                   help="blob, chunks, data dirs, moto's spool and RGW's state; "
                        "default: $TMPDIR or /tmp")
    p.add_argument("--output", type=Path, default=None,
                   help="JSON results path (default: bench/results/s3_throughput-<timestamp>.json)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs)")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if args.part_size < 5 * MiB:
        p.error("--part-size must be at least 5 MiB (S3's minimum)")
    return args


def choose_stores(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The stores to measure and the skipped ones with why. A store asked for by --stores that
    cannot run is an error; one that is merely available by default is skipped."""
    missing = {"moto": moto_missing(), "rgw": rgw_missing()}
    if args.stores is not None:
        for store in args.stores:
            if (why := missing.get(store)) is not None:
                raise SystemExit(f"{store}: {why}")
        return args.stores, {}
    skipped = {s: why for s, why in missing.items() if why is not None}
    for store, why in skipped.items():
        log(f"{store}: skipped: {why}")
    return [s for s in STORES if s not in skipped], skipped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("curl") is None:
        raise SystemExit("curl not found")
    args.stores, skipped = choose_stores(args)
    if "rgw" in args.stores and args.size > 1536 * MiB:
        # memstore holds the bucket in RAM, capped at 4 GiB (.ci/rgw): the object, its upload
        # parts until they are deleted, and the OSD refuses writes when nearly full
        raise SystemExit("rgw: --size at most 1.5 GiB (RGW's memstore holds 4 GiB)")
    base = Path(tempfile.mkdtemp(prefix="s3-bench-", dir=args.tmp_dir)).resolve()
    # blob + chunk copy + a data dir or moto's spool (parts, object, copy) + slack
    need = args.size * 6 + 256 * MiB
    if shutil.disk_usage(base).free < need:
        shutil.rmtree(base, ignore_errors=True)
        raise SystemExit(f"not enough free space in {base}: need {fmt_size(need)}")

    started = dt.datetime.now(dt.UTC)
    output = args.output or RESULTS_DIR / f"s3_throughput-{started:%Y%m%dT%H%M%SZ}.json"
    moto_version = run_quiet([args.python, "-c", "import moto; print(moto.__version__)"])
    boto_version = run_quiet([args.python, "-c", "import botocore; print(botocore.__version__)"])
    servers = {"fs": shlex.join(ours_argv(args.python)) + "  (config: FS_CONFIG)"}
    for store in S3_STORES:
        servers[store] = (shlex.join(ours_argv(args.python)) + f"  (config: S3_CONFIG on {store}"
                          ", redirect=true for push and pull-redirect, false for pull-streamed)")
    servers["moto_server"] = shlex.join([*moto_command(), "-H", "127.0.0.1", "-p", "<port>"])
    servers["rgw_server"] = ("bash .ci/rgw start <dir>: ceph-mon, ceph-osd (memstore), radosgw "
                             "(beast) on 127.0.0.1, one per run, a fresh bucket per push")
    report: dict[str, Any] = {
        "benchmark": "s3_throughput",
        "started": started.isoformat(),
        "complete": False,
        "args": {"size": args.size, "rounds": args.rounds, "stores": args.stores,
                 "skipped": skipped, "chunk_size": args.chunk_size,
                 "part_size": args.part_size, "python": args.python},
        "machine": machine_info({}, curl=run_quiet(["curl", "--version"]), moto=moto_version,
                                botocore=boto_version, ceph=rgw_version(),
                                tmp_filesystem=tmp_filesystem(base)),
        "servers": servers,
        "git_commit": git_commit(),
        "units": {
            "mb_per_s": "10^6 bytes/s",
            "registry_cpu_s_per_gib": "registry CPU seconds (user+sys, process tree) per 2^30 B",
            "s3_server_cpu_s_per_gib": "S3 server CPU seconds (user+sys) per 2^30 B: "
                                       "moto_server's process tree, or RGW's ceph-mon + "
                                       "ceph-osd + radosgw; absent for fs",
            "total_cpu_s_per_gib": "registry + S3 server",
            "peak_rss_mib": "registry peak RSS, 2^20 bytes",
        },
    }
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            run_benchmark(args, base, result)
            report["complete"] = True
        finally:
            for moto in list(_LIVE_MOTOS):
                moto.stop()
            stop_rgws()

    try:
        rc = run_guarded(run)
    finally:
        if args.keep_tmp:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    samples = result.get("samples", [])
    report.update(result)
    report["finished"] = dt.datetime.now(dt.UTC).isoformat()
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["summary"] = summarize(samples)
    if samples:
        print(format_table(report["summary"], args.size, args.rounds))
        write_report(output, report, indent=2)
    return rc


if __name__ == "__main__":
    sys.exit(main())
