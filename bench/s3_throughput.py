#!/usr/bin/env python3
"""Blob throughput of our registry on S3 (a local ``moto_server``) next to the filesystem driver.

The same random blob is pushed (one monolithic ``PUT``, and ``PATCH`` chunks of 16 MiB) and
pulled with the same client, ``curl``, on both drivers. On S3 the blob is pulled twice: with
``curl -L`` following the registry's 307 to a presigned URL (the bytes come from moto), and
through a second registry on the same bucket with ``storage.s3.redirect = false`` (the bytes
stream through the registry). For every operation the script records MB/s, the registry's
CPU seconds per GiB, moto_server's CPU seconds per GiB (it shares the machine's cores, and on
S3 it does most of the work), and the registry's peak RSS. Medians over ``--rounds``.

    python bench/s3_throughput.py                    # 256 MiB blob, 3 rounds (~1 min)
    python bench/s3_throughput.py --size 64M --rounds 1
    python bench/s3_throughput.py --only s3

moto_server is CPU-bound and keeps objects in spooled temporary files, so its figures are those
of a local S3 emulator, not of S3: use them to see where the registry's own cost goes (its CPU
per GiB) and what redirects save, not to predict S3 throughput. Every push gets a fresh
moto_server and bucket (or a fresh data directory), so nothing is deduplicated.

Needs Linux (/proc), curl, moto_server (``pip install 'moto[server]'``) and our server's
dependencies; servers, machine info and the JSON report come from bench/common.py, and the
blob, curl and /proc helpers from bench/blob_throughput.py.
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
    Server,
    _die_with_parent,
    git_commit,
    log,
    machine_info,
    process_tree,
    read_text,
    run_guarded,
    run_quiet,
    write_report,
)

REGION = "us-east-1"
ACCESS_KEY = "testing"  # moto accepts any credentials
BACKENDS = ("filesystem", "s3")
# (backend, op) rows of the table, in order
ROWS = (
    ("filesystem", "push-monolithic"),
    ("filesystem", "push-chunked"),
    ("filesystem", "pull"),
    ("s3", "push-monolithic"),
    ("s3", "push-chunked"),
    ("s3", "pull-redirect"),
    ("s3", "pull-streamed"),
)
METRICS = ("mb_per_s", "registry_cpu_s_per_gib", "moto_cpu_s_per_gib", "total_cpu_s_per_gib",
           "peak_rss_mib")

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
secret_access_key = "{key}"

""" + OURS_BENCH_SETTINGS.split("\n", 1)[1]  # pushes create repositories, no schedules


# --------------------------------------------------------------------------------------
# moto_server
# --------------------------------------------------------------------------------------


@dataclass
class Moto:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

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


def ours_argv(python: str, config: bool) -> list[str]:
    argv = [python.replace("{", "{{").replace("}", "}}"), "-m", "registry", "serve",
            "--host", "{host}", "--port", "{port}", "--data-dir", "{data_dir}"]
    return [*argv, "--config", "{config}"] if config else argv


def filesystem_spec(python: str) -> RegistrySpec:
    return RegistrySpec("filesystem", ours_argv(python, False),
                        "registry serve --data-dir <fresh dir> (filesystem, fsync on)")


def s3_spec(python: str, moto: Moto, bucket: str, redirect: bool, part_size: int) -> RegistrySpec:
    config = S3_CONFIG.format(bucket=bucket, endpoint=moto.url, region=REGION,
                              redirect=str(redirect).lower(), part_size=part_size, key=ACCESS_KEY)
    # launch() formats the config with {root} and {port}: escape nothing else (none present)
    name = "s3" if redirect else "s3-noredirect"
    return RegistrySpec(name, ours_argv(python, True),
                        f"registry serve --config <s3 on moto, redirect={str(redirect).lower()}>",
                        config=config)


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


def measure(server: Server, moto: Moto | None,
            fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run fn(); wall time, CPU of the registry's and moto's process trees and of the client
    (curl, which has exited by then, plus this process for the http.client pushes), registry
    peak RSS."""
    pids = process_tree(server.pid)
    hwm_reset = reset_peak_rss(pids)
    monitor = TreeMonitor(server.pid)
    cpu0 = cpu_seconds(pids)
    moto0 = cpu_seconds(process_tree(moto.pid)) if moto else 0.0
    client0 = client_cpu_seconds()
    monitor.start()
    t0 = time.perf_counter()
    try:
        info = fn()
        elapsed = time.perf_counter() - t0
        cpu1 = cpu_seconds(process_tree(server.pid))
        moto1 = cpu_seconds(process_tree(moto.pid)) if moto else 0.0
    finally:
        monitor.stop()
    hwm_mib = sum(monitor.hwm_kib.values()) / KiB
    return {"seconds": elapsed, "registry_cpu_s": cpu1 - cpu0, "moto_cpu_s": moto1 - moto0,
            "client_cpu_s": client_cpu_seconds() - client0,
            "peak_rss_mib": hwm_mib if hwm_reset else monitor.peak_rss_sampled_kib / KiB,
            **info}


def finish(sample: dict[str, Any], size: int) -> dict[str, Any]:
    gib = size / GiB
    sample["mb_per_s"] = size / MB / sample["seconds"]
    sample["registry_cpu_s_per_gib"] = sample["registry_cpu_s"] / gib
    sample["moto_cpu_s_per_gib"] = sample["moto_cpu_s"] / gib
    sample["total_cpu_s_per_gib"] = (sample["registry_cpu_s"] + sample["moto_cpu_s"]) / gib
    return sample


def run_benchmark(args: argparse.Namespace, base: Path, result: dict[str, Any]) -> None:
    t = time.perf_counter()
    log(f"creating {fmt_size(args.size)} random blob in {base} ...")
    blob = make_blob(base, args.size)
    chunks = chunk_files(blob, args.chunk_size, base / "chunks")
    log(f"  {blob.digest} ({time.perf_counter() - t:.1f}s)")
    samples: list[dict[str, Any]] = []
    result.update(blob={"size": blob.size, "digest": blob.digest}, samples=samples)
    backends = [b for b in BACKENDS if args.only in (None, b)]

    for rnd in range(1, args.rounds + 1):
        order = backends if rnd % 2 else backends[::-1]
        for backend in order:
            for push_op in ("push-monolithic", "push-chunked"):
                # Fresh data dir, or fresh moto_server and bucket: nothing to deduplicate.
                run = Run(args, blob, chunks, rnd, push_op, samples,
                          workdir=base / f"{backend}-r{rnd}-{push_op}",
                          repo=f"bench/{push_op}-r{rnd}-{os.urandom(3).hex()}")
                if backend == "filesystem":
                    run.filesystem()
                else:
                    run.s3()
                shutil.rmtree(run.workdir, ignore_errors=True)


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

    def record(self, backend: str, op: str, sample: dict[str, Any]) -> None:
        sample = finish(sample, self.blob.size)
        sample.update(backend=backend, op=op, round=self.round)
        self.samples.append(sample)
        log(f"[round {self.round}/{self.args.rounds}] {backend:<10} {op:<16}"
            f"{sample['mb_per_s']:8.1f} MB/s"
            f"  registry {sample['registry_cpu_s_per_gib']:5.2f}"
            f"  moto {sample['moto_cpu_s_per_gib']:5.2f} CPU s/GiB"
            f"  {sample['peak_rss_mib']:6.1f} MiB  ({sample['seconds']:.2f}s)")

    def filesystem(self) -> None:
        server = filesystem_spec(self.args.python).launch(self.workdir)
        try:
            self.record("filesystem", self.push_op,
                        measure(server, None, functools.partial(self.push, server)))
            check_blob(server, self.repo, self.blob)
            if self.round == 1:
                verify_pull(server, self.repo, self.blob)
            os.sync()  # this push's dirty pages are not written back during the pull
            self.record("filesystem", "pull",
                        measure(server, None, functools.partial(self.pull, server)))
        finally:
            server.stop()

    def s3(self) -> None:
        """Registry `a` (redirects) takes the push and the redirected pull; registry `b` on
        the same bucket (redirect = false) streams the blob through itself."""
        moto = start_moto(self.workdir / "moto")
        servers: list[Server] = []
        try:
            bucket = moto.create_bucket()
            for redirect, name in ((True, "redirect"), (False, "streamed")):
                spec = s3_spec(self.args.python, moto, bucket, redirect, self.args.part_size)
                servers.append(spec.launch(self.workdir / name))
            a, b = servers
            self.record("s3", self.push_op, measure(a, moto, functools.partial(self.push, a)))
            check_blob(a, self.repo, self.blob)
            if self.round == 1:
                verify_pull(a, self.repo, self.blob)  # follows the redirect
                verify_pull(b, self.repo, self.blob)  # through the registry
            self.record("s3", "pull-redirect", measure(a, moto, functools.partial(self.pull, a)))
            self.record("s3", "pull-streamed", measure(b, moto, functools.partial(self.pull, b)))
        finally:
            for server in servers:
                server.stop()
            moto.stop()


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for backend, op in ROWS:
        rows = [s for s in samples if s["backend"] == backend and s["op"] == op]
        if not rows:
            continue
        entry: dict[str, Any] = {"n": len(rows)}
        for metric in (*METRICS, "seconds"):
            values = [r[metric] for r in rows]
            entry[metric] = {"median": statistics.median(values), "min": min(values),
                             "max": max(values)}
        summary.setdefault(backend, {})[op] = entry
    for op in ("push-monolithic", "push-chunked"):
        fs, s3 = summary.get("filesystem", {}).get(op), summary.get("s3", {}).get(op)
        if fs and s3:
            summary.setdefault("ratio_s3_over_filesystem", {})[op] = {
                m: (s3[m]["median"] / fs[m]["median"] if fs[m]["median"] else None)
                for m in ("mb_per_s", "registry_cpu_s_per_gib")}
    return summary


def format_table(summary: dict[str, Any], size: int, rounds: int) -> str:
    head = ("backend", "operation", "MB/s", "registry CPU s/GiB", "moto CPU s/GiB",
            "total CPU s/GiB", "registry peak RSS MiB")
    rows: list[tuple[str, ...]] = []
    for backend, op in ROWS:
        m = summary.get(backend, {}).get(op)
        if m is None:
            continue
        moto = "-" if backend == "filesystem" else f"{m['moto_cpu_s_per_gib']['median']:.2f}"
        rows.append((backend, op, f"{m['mb_per_s']['median']:.1f}",
                     f"{m['registry_cpu_s_per_gib']['median']:.2f}", moto,
                     f"{m['total_cpu_s_per_gib']['median']:.2f}",
                     f"{m['peak_rss_mib']['median']:.1f}"))
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    out = [f"S3 (moto_server) vs filesystem: {fmt_size(size)} blob, medians of {rounds} "
           "round(s) (pulls: 2 per round); MB = 10^6 bytes", line(head)]
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Blob push/pull throughput of our registry: S3 (moto_server) vs filesystem.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", type=parse_size, default="256MiB",
                   help="blob size; K/M/G are binary (moto_server is CPU-bound: keep it modest)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (medians are reported)")
    p.add_argument("--only", choices=BACKENDS, help="benchmark one storage driver only")
    p.add_argument("--chunk-size", type=parse_size, default="16MiB",
                   help="PATCH size for the chunked push")
    p.add_argument("--part-size", type=parse_size, default="16MiB",
                   help="storage.s3.part_size of the S3 registries")
    p.add_argument("--python", default=sys.executable, help="python that runs our server")
    p.add_argument("--tmp-dir", type=Path, default=None,
                   help="blob, chunks, data dirs and moto's spool; default: $TMPDIR or /tmp")
    p.add_argument("--output", type=Path, default=None,
                   help="JSON results path (default: bench/results/s3_throughput-<timestamp>.json)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs)")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    if args.part_size < 5 * MiB:
        p.error("--part-size must be at least 5 MiB (S3's minimum)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("curl") is None:
        raise SystemExit("curl not found")
    if args.only != "filesystem" and not shutil.which("moto_server"):
        try:
            import moto.server  # noqa: F401
        except ImportError:
            raise SystemExit("moto_server not found (pip install 'moto[server]')") from None
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
    report: dict[str, Any] = {
        "benchmark": "s3_throughput",
        "started": started.isoformat(),
        "complete": False,
        "args": {"size": args.size, "rounds": args.rounds, "only": args.only,
                 "chunk_size": args.chunk_size, "part_size": args.part_size,
                 "python": args.python},
        "machine": machine_info({}, curl=run_quiet(["curl", "--version"]), moto=moto_version,
                                botocore=boto_version, tmp_filesystem=tmp_filesystem(base)),
        "servers": {
            "filesystem": shlex.join(ours_argv(args.python, False)),
            "s3": shlex.join(ours_argv(args.python, True)) + "  (config: S3_CONFIG, "
                  "redirect=true for push and pull-redirect, false for pull-streamed)",
            "moto": shlex.join([*moto_command(), "-H", "127.0.0.1", "-p", "<port>"]),
        },
        "git_commit": git_commit(),
        "units": {
            "mb_per_s": "10^6 bytes/s",
            "registry_cpu_s_per_gib": "registry CPU seconds (user+sys, process tree) per 2^30 B",
            "moto_cpu_s_per_gib": "moto_server CPU seconds (user+sys, process tree) per 2^30 B",
            "total_cpu_s_per_gib": "registry + moto_server",
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
