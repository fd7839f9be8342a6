"""Servers, machine info, JSON reports, sizes, random blobs and /proc CPU time for bench/*.py
(scripts: bench/ leads sys.path)."""

import argparse
import base64
import contextlib
import ctypes
import hashlib
import http.client
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
OURS = "ours"
DISTRIBUTION = "distribution"
REGISTRY_NAMES = (OURS, DISTRIBUTION)
DEFAULT_OURS_CMD = (
    "env REGISTRY_REPOSITORIES_CREATE_ON_PUSH=true REGISTRY_GC_INTERVAL=0"
    " REGISTRY_LIFECYCLE_INTERVAL=0 "
    f"{shlex.quote(sys.executable)} -m registry serve"
    " --host {host} --port {port} --data-dir {data_dir}"
)
DISTRIBUTION_BIN = "/usr/bin/docker-registry"
LOOPBACK = ("127.", "::ffff:127.")  # address prefixes; and "::1"
KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
MB = 1_000_000  # throughput unit: MB/s = 10**6 bytes per second
CLK_TCK = os.sysconf("SC_CLK_TCK")
CURL = ["curl", "--silent", "--show-error", "--noproxy", "*", "--http1.1"]
DISTRIBUTION_CONFIG = """\
# Written by bench/{script}; never edit /etc/docker/registry/config.yml for this.
version: 0.1
log:
{log}storage:
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


def read_text(path: str) -> str | None:
    with contextlib.suppress(OSError), open(path) as f:
        return f.read()
    return None


def run_quiet(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat starting at field 3 (state); None if the process is gone."""
    text = read_text(f"/proc/{pid}/stat")
    return None if text is None else text[text.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """root and all its live descendants (scan of /proc/*/stat for parent pids)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := stat_fields(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if read_text(f"/proc/{pid}/stat") is not None:
            tree.append(pid)
            todo.extend(children.get(pid, ()))
    return tree


def listening_addresses(pids: list[int]) -> Iterator[tuple[str, int]]:
    """(ip, port) of every TCP socket in LISTEN state owned by one of pids."""
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    inodes.add(os.readlink(fd.path))  # "socket:[<inode>]" for sockets
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in (read_text(table) or "").splitlines()[1:]:
            cols = line.split()  # cols[3] "0A" is LISTEN
            if len(cols) < 10 or cols[3] != "0A" or f"socket:[{cols[9]}]" not in inodes:
                continue
            hex_ip, hex_port = cols[1].split(":")
            raw = bytes.fromhex(hex_ip)
            # /proc prints the address as host-endian 32-bit words
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            yield socket.inet_ntop(family, raw), int(hex_port, 16)


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM the server if this script dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


@dataclass
class Server:
    name: str
    cmd: list[str]
    port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    pid: int = 0  # of the running server, which leads its own process group
    ca_file: Path | None = None  # set: the server speaks HTTPS, with a certificate it signed

    @property
    def base_url(self) -> str:
        return f"{'http' if self.ca_file is None else 'https'}://127.0.0.1:{self.port}"

    @property
    def curl_args(self) -> list[str]:
        """curl options to reach base_url: trust ca_file, if any."""
        return [] if self.ca_file is None else ["--cacert", str(self.ca_file)]

    def ssl_context(self) -> ssl.SSLContext | None:
        """None for plain HTTP; else a client context trusting ca_file (only)."""
        if self.ca_file is None:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file))

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        """An unopened connection to the server: HTTPS trusting ca_file if set, else HTTP."""
        if self.ca_file is None:
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        return http.client.HTTPSConnection(
            "127.0.0.1", self.port, timeout=timeout, context=self.ssl_context()
        )

    def start(self, timeout: float = 60.0) -> None:
        """Start, wait for /v2/, then check in /proc that it listens on loopback only."""
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,  # so `python -m registry` works without `pip install -e`
                # No REGISTRY_* overrides: both servers read them as config.
                env={k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")},
                start_new_session=True,  # own process group: stop() reaches workers too
                preexec_fn=_die_with_parent,
            )
        self.pid = self.proc.pid
        _LIVE_SERVERS.append(self)
        deadline = time.monotonic() + timeout
        while True:
            conn = self.connection(timeout=2)
            with contextlib.closing(conn), contextlib.suppress(OSError, http.client.HTTPException):
                conn.request("GET", "/v2/")
                if conn.getresponse().status in (200, 401):
                    break
            if (rc := self.proc.poll()) is not None or time.monotonic() > deadline:
                why = (
                    f"did not answer /v2/ in {timeout}s"
                    if rc is None
                    else f"exited early (rc={rc}); cmd: {shlex.join(self.cmd)}"
                )
                log_tail = (read_text(str(self.log_path)) or "").splitlines()[-40:]
                raise RuntimeError(f"{self.name} {why}\n" + "\n".join(log_tail))
            time.sleep(0.05)
        addrs = listening_addresses(process_tree(self.pid))
        exposed = [a for a in addrs if not (a[0] == "::1" or a[0].startswith(LOOPBACK))]
        if exposed:
            raise RuntimeError(f"{self.name} listens on non-loopback addresses: {exposed}")

    def stop(self) -> None:
        if (proc := self.proc) is None:
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


_LIVE_SERVERS: list[Server] = []


# --------------------------------------------------------------------------------------
# Sizes, random blobs, /proc CPU time
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


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime+cutime+cstime summed over pids (cutime/cstime cover reaped children)."""
    ticks = 0
    for pid in pids:
        fields = stat_fields(pid)
        if fields is not None:
            # fields[11..14] are stat fields 14..17: utime stime cutime cstime
            ticks += sum(int(x) for x in fields[11:15])
    return ticks / CLK_TCK


@dataclass
class Blob:
    path: Path
    size: int
    digest: str


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


def verify_pull(server: Server, repo: str, blob: Blob) -> None:
    """Untimed: pull through curl and re-hash the bytes, so a fast-but-wrong server fails."""
    h = hashlib.sha256()
    n = 0
    with subprocess.Popen(
        [*CURL, *server.curl_args, "-f", "-L", f"{server.base_url}/v2/{repo}/blobs/{blob.digest}"],
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


@dataclass
class RegistrySpec:
    name: str
    argv: list[str]  # launch() fills in {host} {port} {data_dir} {config}
    describe: str
    version: str | None = None
    config: str | None = None  # config.yml to write; launch() fills in {root} {port}
    # Called with (config file, data dir) after the config is written, before the server
    # starts: ours-fs-auth creates its user there with the CLI.
    prepare: Callable[[Path, Path], None] | None = None

    def launch(self, workdir: Path) -> Server:
        """Start a server on a free loopback port, data dir under workdir (must not exist)."""
        workdir.mkdir(parents=True)
        (data_dir := workdir / "data").mkdir()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        config = workdir / "config.yml"
        if self.config is not None:
            config.write_text(self.config.format(root=data_dir, port=port))
        if self.prepare is not None:
            self.prepare(config, data_dir)
        fill = {"host": "127.0.0.1", "port": port, "data_dir": data_dir, "config": config}
        cmd = [a.format(**fill) for a in self.argv]
        server = Server(self.name, cmd, port, data_dir, workdir / "server.log")
        server.start()
        return server


def registry_specs(args: argparse.Namespace, script: str, log_yaml: str) -> list[RegistrySpec]:
    """Registries chosen by --only. Distribution's config.yml: DISTRIBUTION_CONFIG with
    {script} and {log} (log_yaml) filled in here, {root} and {port} by launch()."""
    specs = []
    if args.only in (None, OURS):
        argv = shlex.split(args.ours_cmd)
        if not any("{port}" in a for a in argv) or not any("{data_dir}" in a for a in argv):
            raise SystemExit("--ours-cmd must contain the {port} and {data_dir} placeholders")
        specs.append(RegistrySpec(OURS, argv, args.ours_cmd))
    if args.only in (None, DISTRIBUTION):
        if (path := shutil.which(args.distribution_bin)) is None:
            missing = f"{args.distribution_bin} not found (apt-get install -y docker-registry)"
            raise SystemExit(missing)
        config = DISTRIBUTION_CONFIG.replace("{script}", script).replace("{log}", log_yaml)
        version = run_quiet([path, "--version"])
        argv = [path.replace("{", "{{").replace("}", "}}"), "serve", "{config}"]
        describe = f"{path} serve <config.yml>"
        specs.append(RegistrySpec(DISTRIBUTION, argv, describe, version, config))
    return specs


def add_server_args(p: argparse.ArgumentParser, name: str, tmp_dir: str, keep: str) -> None:
    """--ours-cmd, --distribution-bin, --tmp-dir, --output and --keep-tmp, in this order."""
    ours = "command starting our server; {host} {port} {data_dir} are substituted"
    p.add_argument("--ours-cmd", default=DEFAULT_OURS_CMD, help=ours)
    p.add_argument("--distribution-bin", default=DISTRIBUTION_BIN, help="CNCF Distribution binary")
    tmp = f"{tmp_dir}; default: $TMPDIR or /tmp"
    p.add_argument("--tmp-dir", type=Path, default=None, help=tmp)
    output = f"JSON results path (default: bench/results/{name}-<timestamp>.json)"
    p.add_argument("--output", type=Path, default=None, help=output)
    p.add_argument("--keep-tmp", action="store_true", help=keep)


def parse_list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    """A comma-separated option's values (argparse type): each one of `allowed`, in its order."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"unknown {what} {bad}; choose from {', '.join(allowed)}")
    return [x for x in allowed if x in items]


def run_guarded(body: Callable[[], None]) -> int:
    """Run body, stop all servers: 0, 1 (error), 130 (Ctrl-C, SIGTERM, SIGHUP if not ignored)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if signal.getsignal(signal.SIGHUP) == signal.SIG_DFL:
        signal.signal(signal.SIGHUP, signal.default_int_handler)
    try:
        body()
    except KeyboardInterrupt:
        log("\ninterrupted; stopping servers")
        return 130
    except Exception as exc:
        log(f"\nerror: {exc}")
        return 1
    finally:
        for server in list(_LIVE_SERVERS):
            with contextlib.suppress(Exception):
                server.stop()
        stop_rgws()  # not our children: nothing else would end them
    return 0


def machine_info(versions: dict[str, Any], **extra: Any) -> dict[str, Any]:
    def line(path: str, prefix: str) -> str | None:
        return next((x for x in (read_text(path) or "").splitlines() if x.startswith(prefix)), None)

    model = line("/proc/cpuinfo", "model name")
    mem = line("/proc/meminfo", "MemTotal:")
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model.split(":", 1)[1].strip() if model else platform.processor() or None,
        "kernel": f"{platform.system()} {platform.release()} {platform.version()}",
        "python": sys.version.split()[0],
        "python_full": sys.version,
        **versions,  # of tools the benchmark uses, e.g. httpx
        "mem_total_bytes": int(mem.split()[1]) * 1024 if mem else None,
        "loadavg_start": os.getloadavg(),
        **extra,
    }


def git_commit() -> str | None:
    cmd = ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else None


def write_report(output: Path, report: dict[str, Any], indent: int) -> None:
    """Write the JSON results atomically (temp file, then rename) and log the path."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=indent) + "\n")
    os.replace(tmp, output)
    log(f"wrote {output}" + ("" if report["complete"] else " (incomplete run)"))


# --------------------------------------------------------------------------------------
# S3 servers: moto_server (bench/s3_throughput.py's Moto) and Ceph's RADOS Gateway (.ci/rgw)
# --------------------------------------------------------------------------------------


class S3Server(Protocol):
    """What a benchmark needs of a local S3 server: where it is, how to sign for it, a fresh
    bucket, and the processes whose CPU is the S3 server's."""

    @property
    def name(self) -> str: ...  # "moto" or "rgw"
    @property
    def url(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def access_key_id(self) -> str: ...
    @property
    def secret_access_key(self) -> str: ...
    @property
    def pids(self) -> list[int]: ...  # roots of the process trees counted as its CPU

    def create_bucket(self) -> str: ...


def s3_pids(s3: S3Server | None) -> list[int]:
    """Every live process of the S3 server (its roots and their descendants); [] for none."""
    return [] if s3 is None else [p for root in s3.pids for p in process_tree(root)]


RGW_SCRIPT = REPO_ROOT / ".ci" / "rgw"
RGW_PROGRAMS = ("radosgw", "ceph-mon", "ceph-osd", "radosgw-admin")
RGW_DAEMONS = ("mon.a", "osd.0", "client.rgw")  # .ci/rgw writes DIR/run/<daemon>.pid


def rgw_missing() -> str | None:
    """Why RGW cannot run on this machine, or None if it can."""
    if not RGW_SCRIPT.is_file():
        return f"{RGW_SCRIPT} not found"
    missing = [p for p in RGW_PROGRAMS if shutil.which(p) is None]
    if missing:
        return f"{', '.join(missing)} not installed (bash .ci/rgw install, as root)"
    return None


def rgw_version() -> str | None:
    return run_quiet(["radosgw", "--version"]) if shutil.which("radosgw") else None


@dataclass
class Rgw:
    """A single-node Ceph RADOS Gateway started by `.ci/rgw start DIR`: ceph-mon, one
    ceph-osd keeping objects in RAM (memstore, 4 GiB) and radosgw on 127.0.0.1. The daemons
    fork into the background (they are not our children and do not die with this script):
    stop() or stop_rgws(), which run_guarded calls on the way out, ends them."""

    state_dir: Path
    url: str = ""
    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    pids: list[int] = field(default_factory=list)  # ceph-mon, ceph-osd, radosgw
    name: str = "rgw"

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.url, region_name=self.region,
                            aws_access_key_id=self.access_key_id,
                            aws_secret_access_key=self.secret_access_key,
                            config=Config(s3={"addressing_style": "path"}))

    def create_bucket(self) -> str:
        bucket = f"bench-{os.urandom(6).hex()}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def remove_bucket(self, bucket: str) -> None:
        """Delete the bucket with its objects and unfinished uploads, then run RGW's garbage
        collection now: deleted data stays in memstore (RAM) until it runs, which it would do
        only after `rgw_gc_obj_min_wait` (2 hours), and a run pushes more than 4 GiB."""
        client = self.client()
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"],
                                              UploadId=upload["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=bucket)
        self.admin("gc", "process", "--include-all")

    def admin(self, *argv: str) -> str:
        """radosgw-admin on this instance; its output."""
        cmd = ["radosgw-admin", "-c", str(self.state_dir / "ceph.conf"), *argv]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} -> rc {done.returncode}: {done.stderr[-500:]}")
        return done.stdout

    def stop(self) -> None:
        """`.ci/rgw stop DIR`: SIGKILL the daemons (memstore keeps nothing) and remove DIR."""
        global _SHARED_RGW
        if self in _LIVE_RGWS:
            _LIVE_RGWS.remove(self)
        if _SHARED_RGW is self:
            _SHARED_RGW = None
        done = subprocess.run(["bash", str(RGW_SCRIPT), "stop", str(self.state_dir)],
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            log(f"rgw: stop {self.state_dir} failed: {done.stderr.strip()}")


_LIVE_RGWS: list[Rgw] = []
_SHARED_RGW: Rgw | None = None


def start_rgw(state_dir: Path, timeout: float = 300) -> Rgw:
    """Start RGW with its state in state_dir (created; must be empty or absent): endpoint,
    region and credentials from DIR/env, the daemons' pids from DIR/run/*.pid; then check in
    /proc that the daemons listen on loopback only."""
    if (why := rgw_missing()) is not None:
        raise RuntimeError(f"RGW cannot run: {why}")
    state_dir.mkdir(parents=True, exist_ok=True)
    rgw = Rgw(state_dir.resolve())
    _LIVE_RGWS.append(rgw)  # before starting: an interrupted start is cleaned up too
    t0 = time.perf_counter()
    done = subprocess.run(["bash", str(RGW_SCRIPT), "start", str(rgw.state_dir)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        rgw.stop()
        raise RuntimeError(f"RGW did not start (rc {done.returncode}):\n"
                           f"{done.stdout[-2000:]}{done.stderr[-4000:]}")
    env: dict[str, str] = {}
    for line in (read_text(str(rgw.state_dir / "env")) or "").splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key.strip()] = value.strip()
    try:
        rgw.url, rgw.region = env["RGW_ENDPOINT"], env["RGW_REGION"]
        rgw.access_key_id = env["RGW_ACCESS_KEY_ID"]
        rgw.secret_access_key = env["RGW_SECRET_ACCESS_KEY"]
        rgw.pids = [int((rgw.state_dir / "run" / f"{d}.pid").read_text()) for d in RGW_DAEMONS]
    except (KeyError, OSError, ValueError) as exc:
        rgw.stop()
        raise RuntimeError(f"RGW started but {rgw.state_dir} lacks {exc}") from None
    daemons = [p for root in rgw.pids for p in process_tree(root)]
    exposed = [a for a in listening_addresses(daemons)
               if not (a[0] == "::1" or a[0].startswith(LOOPBACK))]
    if exposed or not rgw.url.startswith("http://127."):
        rgw.stop()
        raise RuntimeError(f"RGW ({rgw.url}) listens on non-loopback addresses: {exposed}")
    log(f"RGW up at {rgw.url} (region {rgw.region}, pids {rgw.pids}) "
        f"in {time.perf_counter() - t0:.1f}s")
    return rgw


def shared_rgw(parent: Path) -> Rgw:
    """The run's one RGW, started on first use with its state in parent/rgw; stop_rgws()
    (run_guarded does) ends it. Targets get a fresh bucket on it, not a fresh RGW."""
    global _SHARED_RGW
    if _SHARED_RGW is None:
        _SHARED_RGW = start_rgw(parent / "rgw")
    return _SHARED_RGW


def stop_rgws() -> None:
    for rgw in list(_LIVE_RGWS):
        with contextlib.suppress(Exception):
            rgw.stop()


# --------------------------------------------------------------------------------------
# Added for bench/run.py: the benchmark targets (our server on the filesystem, or on S3 in
# a local moto_server or Ceph RGW, and Distribution), each deployed fresh into a work directory.
# --------------------------------------------------------------------------------------

# Our server runs with a settings file, not REGISTRY_* variables (Server.start removes
# those): pushes create their repository, and no background GC or lifecycle run competes
# with a measurement. Auth stays off (the default; on for ours-fs-auth, AUTH_SETTINGS) and the
# server binds 127.0.0.1.
OURS_BENCH_SETTINGS = """\
# Written by bench/run.py
[repositories]
create_on_push = true

[gc]
interval = 0

[lifecycle]
interval = 0
"""
OURS_BENCH_S3_SETTINGS = """
[storage]
driver = "s3"

[storage.s3]
bucket = "{bucket}"
endpoint_url = "{endpoint}"
region = "{region}"
addressing_style = "path"
redirect = {redirect}
part_size = {part_size}
access_key_id = "{access_key_id}"
secret_access_key = "{secret_access_key}"
"""
# Under `log:` in Distribution's config.yml: no access log and warnings only, because our
# server logs no requests by default either (the same choice as listing.py).
DISTRIBUTION_QUIET_LOG = """\
  level: warn
  accesslog:
    disabled: true
"""
TARGET_NAMES = ("ours-fs", "ours-s3", "ours-rgw", DISTRIBUTION, "ours-fs-granian",
                "ours-fs-nofsync", "ours-fs-workers", "ours-fs-cache", "ours-fs-auth")
DEFAULT_TARGETS = ("ours-fs", "ours-s3", DISTRIBUTION, "ours-fs-workers")
GRANIAN_SCRIPT = Path(__file__).resolve().parent / "granian_serve.py"
NOFSYNC_SETTINGS = """
[storage.filesystem]
fsync = false
"""
# ours-fs-cache: pulls may answer a tag (and that a digest exists) from memory for 1 s.
TAG_CACHE_SETTING = "tag_cache_seconds = 1\n"  # under [repositories]
# ours-fs-workers: one worker process per core (`server.workers`), as Distribution uses them.
WORKERS = os.cpu_count() or 1
WORKERS_SETTINGS = f"""
[server]
workers = {WORKERS}
"""
# ours-fs-auth: auth on, tokens that outlive a run, one user (AUTH_USER) created with the CLI
# before the server starts, allowed to push and pull bench/* (AUTH_POLICY). Clients log in
# with the Docker token protocol (manifests_rps.bearer_token). The password is this
# process's own, random: every server is fresh and on loopback.
AUTH_SETTINGS = """
[auth]
enabled = true
secret_key = "{secret_key}"
token_ttl = 3600
"""
AUTH_USER = "bench"
AUTH_PASSWORD = secrets.token_hex(16)
AUTH_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{
        "Effect": "Allow",
        # pull, push, and creating the repository on its first push (create_on_push)
        "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:PutImage",
                   "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload",
                   "ecr:BatchCheckLayerAvailability", "ecr:CreateRepository"],
        "Resource": "arn:aws:ecr:us-east-1:000000000000:repository/bench/*",
    }],
}


def add_bench_user(python: str, config: Path, data_dir: Path) -> None:
    """`registry user add` AUTH_USER and `registry policy attach` AUTH_POLICY to it, with the
    server's settings file and data dir (RegistrySpec.prepare of ours-fs-auth)."""
    policy = config.with_name("bench-policy.json")
    policy.write_text(json.dumps(AUTH_POLICY, indent=1) + "\n")
    common = ["--config", str(config), "--data-dir", str(data_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    for argv, stdin in (
        (["user", "add", *common, "--password-stdin", AUTH_USER], AUTH_PASSWORD + "\n"),
        (["policy", "attach", *common, "--user", AUTH_USER, str(policy)], ""),
    ):
        cmd = [python, "-m", "registry", *argv]
        done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, cwd=REPO_ROOT,
                              env=env, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} -> rc {done.returncode}: "
                               f"{(done.stderr or done.stdout)[-1000:]}")


@dataclass
class Backing:
    """What a target's storage needs besides a data dir: for S3, the S3 server (moto_server
    or RGW) and a bucket on it."""

    s3: S3Server | None = None  # s3_throughput.Moto or Rgw
    bucket: str | None = None


@dataclass
class Deployment:
    server: Server
    backing: Backing
    # S3 only, when asked for: a second server on the same bucket with redirect = false,
    # so blob GETs stream through the registry instead of answering 307 to moto.
    streamed: Server | None = None
    # ours-fs-auth: (user, password) to log in with (manifests_rps.bearer_token); else None
    credentials: tuple[str, str] | None = None

    @property
    def s3(self) -> S3Server | None:
        return self.backing.s3


@dataclass(frozen=True)
class Target:
    """One registry under test: `ours-fs`, `ours-s3` (moto_server), `ours-rgw` (Ceph RGW),
    `distribution`, `ours-fs-granian` (ours-fs served by Granian instead of uvicorn),
    `ours-fs-nofsync` (ours-fs without fsync, like Distribution), `ours-fs-workers` (ours-fs
    with one worker process per core), `ours-fs-cache` (ours-fs with a 1 s tag cache) or
    `ours-fs-auth` (ours-fs with auth on: clients need a Bearer token)."""

    name: str
    python: str = sys.executable
    distribution_bin: str = DISTRIBUTION_BIN
    part_size: int = 8 * 1024 * 1024

    @property
    def kind(self) -> str:
        return DISTRIBUTION if self.name == DISTRIBUTION else OURS

    @property
    def backend(self) -> str:
        return "s3" if self.name in ("ours-s3", "ours-rgw") else "filesystem"

    @property
    def auth(self) -> bool:
        """Whether clients must log in (Deployment.credentials)."""
        return self.name.endswith("-auth")

    def describe(self) -> str:
        if self.kind == DISTRIBUTION:
            return f"{self.distribution_bin} serve <config.yml> (filesystem)"
        if self.name.endswith("-granian"):
            return f"{self.python} bench/granian_serve.py --config <settings.toml> ({self.backend})"
        extra = (", fsync off" if self.name.endswith("-nofsync") else
                 f", {WORKERS} workers" if self.name.endswith("-workers") else
                 ", tag cache 1 s" if self.name.endswith("-cache") else
                 ", auth on" if self.auth else
                 " on moto_server" if self.name == "ours-s3" else
                 " on Ceph RGW (.ci/rgw)" if self.name == "ours-rgw" else "")
        return f"{self.python} -m registry serve --config <settings.toml> ({self.backend}{extra})"

    def version(self) -> str | None:
        if self.kind == DISTRIBUTION:
            return run_quiet([self.distribution_bin, "--version"])
        return git_commit()

    @contextlib.contextmanager
    def backing(self, workdir: Path) -> Iterator[Backing]:
        """ours-s3: a fresh moto_server and bucket (stopped on exit). ours-rgw: a fresh bucket
        on the run's one RGW (shared_rgw, started on first use with its state next to
        workdir, in workdir's parent), deleted on exit. Nothing otherwise."""
        if self.name == "ours-rgw":
            rgw = shared_rgw(workdir.parent)
            bucket = rgw.create_bucket()
            try:
                yield Backing(rgw, bucket)
            finally:
                try:
                    rgw.remove_bucket(bucket)
                except Exception as exc:  # the figures stand; RGW keeps the data in RAM
                    log(f"rgw: could not remove bucket {bucket}: {exc}")
            return
        if self.backend != "s3":
            yield Backing()
            return
        from s3_throughput import start_moto  # lazy: s3_throughput imports this module

        moto = start_moto(workdir / "moto")
        try:
            yield Backing(moto, moto.create_bucket())
        finally:
            moto.stop()

    def spec(self, backing: Backing, redirect: bool = True) -> RegistrySpec:
        """The RegistrySpec that launches this target on `backing`."""
        if self.kind == DISTRIBUTION:
            if (path := shutil.which(self.distribution_bin)) is None:
                missing = f"{self.distribution_bin} not found (apt-get install -y docker-registry)"
                raise RuntimeError(missing)
            config = DISTRIBUTION_CONFIG.replace("{script}", "run.py").replace(
                "{log}", DISTRIBUTION_QUIET_LOG
            )
            argv = [path.replace("{", "{{").replace("}", "}}"), "serve", "{config}"]
            return RegistrySpec(self.name, argv, self.describe(), self.version(), config)
        settings = OURS_BENCH_SETTINGS
        if self.name.endswith("-nofsync"):
            settings += NOFSYNC_SETTINGS
        if self.name.endswith("-workers"):
            settings += WORKERS_SETTINGS
        if self.name.endswith("-cache"):  # a second [repositories] table would be invalid TOML
            settings = settings.replace("[repositories]\n", "[repositories]\n" + TAG_CACHE_SETTING)
        prepare = None
        if self.auth:
            secret_key = base64.b64encode(os.urandom(32)).decode()
            settings += AUTH_SETTINGS.format(secret_key=secret_key)
            python = self.python

            def prepare(config: Path, data_dir: Path) -> None:
                add_bench_user(python, config, data_dir)
        if self.backend == "s3":
            s3 = backing.s3
            assert s3 is not None
            settings += OURS_BENCH_S3_SETTINGS.format(
                bucket=backing.bucket,
                endpoint=s3.url,
                region=s3.region,
                access_key_id=s3.access_key_id,
                secret_access_key=s3.secret_access_key,
                redirect=str(redirect).lower(),
                part_size=self.part_size,
            )
        program = ([str(GRANIAN_SCRIPT).replace("{", "{{").replace("}", "}}")]
                   if self.name.endswith("-granian") else ["-m", "registry", "serve"])
        argv = [
            self.python.replace("{", "{{").replace("}", "}}"),
            *program, "--config", "{config}",
            "--host", "{host}", "--port", "{port}", "--data-dir", "{data_dir}",
        ]
        name = self.name if redirect else f"{self.name}-streamed"
        return RegistrySpec(name, argv, self.describe(), None, settings, prepare)

    @contextlib.contextmanager
    def deploy(self, workdir: Path, streamed: bool = False) -> Iterator[Deployment]:
        """Fresh server(s) on free loopback ports with empty storage; all stopped on exit."""
        workdir.mkdir(parents=True, exist_ok=True)
        with self.backing(workdir) as backing:
            server = self.spec(backing).launch(workdir / "server")
            second = None
            try:
                if streamed and self.backend == "s3":
                    second = self.spec(backing, redirect=False).launch(workdir / "streamed")
                credentials = (AUTH_USER, AUTH_PASSWORD) if self.auth else None
                yield Deployment(server, backing, second, credentials)
            finally:
                server.stop()
                if second is not None:
                    second.stop()
