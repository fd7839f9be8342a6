"""Servers, machine info and JSON reports for bench/*.py (scripts: bench/ leads sys.path)."""

import argparse
import contextlib
import ctypes
import http.client
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
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


@dataclass
class RegistrySpec:
    name: str
    argv: list[str]  # launch() fills in {host} {port} {data_dir} {config}
    describe: str
    version: str | None = None
    config: str | None = None  # config.yml to write; launch() fills in {root} {port}

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
# Added for bench/run.py: the benchmark targets (our server on the filesystem or on S3 in
# a local moto_server, and Distribution), each deployed fresh into a work directory.
# --------------------------------------------------------------------------------------

# Our server runs with a settings file, not REGISTRY_* variables (Server.start removes
# those): pushes create their repository, and no background GC or lifecycle run competes
# with a measurement. Auth stays off (the default) and the server binds 127.0.0.1.
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
region = "us-east-1"
addressing_style = "path"
redirect = {redirect}
part_size = {part_size}
access_key_id = "testing"
secret_access_key = "testing"
"""
# Under `log:` in Distribution's config.yml: no access log and warnings only, because our
# server logs no requests by default either (the same choice as listing.py).
DISTRIBUTION_QUIET_LOG = """\
  level: warn
  accesslog:
    disabled: true
"""
TARGET_NAMES = ("ours-fs", "ours-s3", DISTRIBUTION, "ours-fs-granian", "ours-fs-nofsync",
                "ours-fs-workers")
DEFAULT_TARGETS = ("ours-fs", "ours-s3", DISTRIBUTION, "ours-fs-workers")
GRANIAN_SCRIPT = Path(__file__).resolve().parent / "granian_serve.py"
NOFSYNC_SETTINGS = """
[storage.filesystem]
fsync = false
"""
# ours-fs-workers: one worker process per core (`server.workers`), as Distribution uses them.
WORKERS = os.cpu_count() or 1
WORKERS_SETTINGS = f"""
[server]
workers = {WORKERS}
"""


@dataclass
class Backing:
    """What a target's storage needs besides a data dir: a moto_server and bucket for S3."""

    moto: Any = None  # s3_throughput.Moto
    bucket: str | None = None


@dataclass
class Deployment:
    server: Server
    backing: Backing
    # S3 only, when asked for: a second server on the same bucket with redirect = false,
    # so blob GETs stream through the registry instead of answering 307 to moto.
    streamed: Server | None = None

    @property
    def moto_pid(self) -> int | None:
        return None if self.backing.moto is None else int(self.backing.moto.pid)


@dataclass(frozen=True)
class Target:
    """One registry under test: `ours-fs`, `ours-s3` (moto_server), `distribution`,
    `ours-fs-granian` (ours-fs served by Granian instead of uvicorn), `ours-fs-nofsync`
    (ours-fs without fsync, like Distribution) or `ours-fs-workers` (ours-fs with one worker
    process per core)."""

    name: str
    python: str = sys.executable
    distribution_bin: str = DISTRIBUTION_BIN
    part_size: int = 8 * 1024 * 1024

    @property
    def kind(self) -> str:
        return DISTRIBUTION if self.name == DISTRIBUTION else OURS

    @property
    def backend(self) -> str:
        return "s3" if self.name == "ours-s3" else "filesystem"

    def describe(self) -> str:
        if self.kind == DISTRIBUTION:
            return f"{self.distribution_bin} serve <config.yml> (filesystem)"
        if self.name.endswith("-granian"):
            return f"{self.python} bench/granian_serve.py --config <settings.toml> ({self.backend})"
        extra = (", fsync off" if self.name.endswith("-nofsync") else
                 f", {WORKERS} workers" if self.name.endswith("-workers") else "")
        return f"{self.python} -m registry serve --config <settings.toml> ({self.backend}{extra})"

    def version(self) -> str | None:
        if self.kind == DISTRIBUTION:
            return run_quiet([self.distribution_bin, "--version"])
        return git_commit()

    @contextlib.contextmanager
    def backing(self, workdir: Path) -> Iterator[Backing]:
        """A fresh moto_server and bucket for ours-s3 (stopped on exit); nothing otherwise."""
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
        if self.backend == "s3":
            moto = backing.moto
            settings += OURS_BENCH_S3_SETTINGS.format(
                bucket=backing.bucket,
                endpoint=moto.url,
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
        return RegistrySpec(name, argv, self.describe(), None, settings)

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
                yield Deployment(server, backing, second)
            finally:
                server.stop()
                if second is not None:
                    second.stop()
