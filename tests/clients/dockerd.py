"""A private Docker engine (containerd + dockerd) for client round-trip tests.

Everything the engine owns lives under one short temporary directory (unix socket paths are
limited to ~107 bytes): containerd's root, state and sockets, dockerd's data root, exec root,
pid file and socket, the daemon configuration file, the trust key, and the docker CLI's
config directory. Nothing touches /var/lib/docker, /run/docker.sock or ~/.docker, so a
machine's own Docker (if any) is neither used nor disturbed.

The engine is started with flags that work in an unprivileged-network sandbox (no iptables,
no default bridge, cgroupfs driver). overlay2 is tried first, then vfs.

`start_docker` raises `DockerUnavailable` (with both daemons' logs) when the engine cannot be
started; the pytest fixture decides whether that is a skip or a failure.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT = 180.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
LOG_TAIL = 60
STORAGE_DRIVERS = ("overlay2", "vfs")


class DockerUnavailable(RuntimeError):
    """The engine could not be started here; the message carries the daemons' logs."""

    def __init__(self, summary: str, logs: str = "") -> None:
        super().__init__(f"{summary}\n{logs}" if logs else summary)
        self.summary = summary
        self.logs = logs


class DockerCommandError(AssertionError):
    """A docker CLI command failed or timed out (an AssertionError, so pytest shows it plainly)."""


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data


def tail(path: Path, lines: int = LOG_TAIL) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _version_tuple(text: str) -> tuple[int, ...]:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return (0,)
    return tuple(int(part) for part in match.groups(default="0"))


# --------------------------------------------------------------------------- command results


@dataclass(frozen=True)
class Result:
    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return (f"$ {' '.join(self.cmd)}\nexit status {self.returncode}\n"
                f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}")


# --------------------------------------------------------------------------- the engine


@dataclass
class DockerDaemon:
    root: Path
    socket_path: Path
    cli: str
    cli_version: tuple[int, ...]
    daemon_version: str
    storage_driver: str
    env: dict[str, str]
    dockerd_log: Path
    containerd_log: Path
    flags: list[str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    extra_logs: dict[str, Path] = field(default_factory=dict)
    """Further logs (e.g. the registry's) appended to a failed command's report."""

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    def diagnostics(self) -> str:
        parts = [f"--- dockerd log (last {LOG_TAIL} lines, {self.dockerd_log})",
                 tail(self.dockerd_log)]
        for name, path in self.extra_logs.items():
            parts += [f"--- {name} (last {LOG_TAIL} lines, {path})", tail(path)]
        return "\n".join(parts)

    def run(self, *args: str, timeout: float = DEFAULT_TIMEOUT, check: bool = True,
            input: bytes | None = None, env: dict[str, str] | None = None) -> Result:
        """Run the docker CLI against this engine; on failure raise with the full output."""
        cmd = [self.cli, *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input,
                                  env={**self.env, **(env or {})}, check=False)
        except subprocess.TimeoutExpired as exc:
            partial = Result(cmd, -1, _text(exc.stdout), _text(exc.stderr))
            raise DockerCommandError(
                f"docker timed out after {timeout}s\n{partial.describe()}\n"
                f"{self.diagnostics()}") from exc
        result = Result(cmd, proc.returncode, _text(proc.stdout), _text(proc.stderr))
        if check and result.returncode != 0:
            raise DockerCommandError(f"docker failed\n{result.describe()}\n{self.diagnostics()}")
        return result

    def inspect_image(self, ref: str) -> dict[str, Any]:
        data = json.loads(self.run("image", "inspect", ref).stdout)
        assert isinstance(data, list) and len(data) == 1, data
        image: dict[str, Any] = data[0]
        return image

    def image_exists(self, ref: str) -> bool:
        return self.run("image", "inspect", ref, check=False).returncode == 0

    def remove_images(self, *refs: str) -> None:
        """`docker rmi -f` every reference that exists (tags and digests alike)."""
        present = [ref for ref in refs if self.image_exists(ref)]
        if present:
            self.run("rmi", "-f", *present)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            _terminate(proc)
        self.processes.clear()
        _unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def _terminate(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve()).rstrip("/") + "/"
    found: list[str] = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 5:
                    continue
                # Mount points escape space, tab, newline and backslash as octal.
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
                if point == prefix.rstrip("/") or point.startswith(prefix):
                    found.append(point)
    except OSError:
        pass
    return found


def _unmount_under(root: Path) -> None:
    """Lazily unmount everything mounted below `root`, deepest first."""
    for point in sorted(_mounts_under(root), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False, timeout=30)


def _wait_for_socket(path: Path, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if path.exists():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                try:
                    s.connect(str(path))
                    return True
                except OSError:
                    pass
        time.sleep(0.1)
    return False


def _short_tempdir() -> Path:
    """A fresh directory whose paths leave room for socket names under the 107-byte limit."""
    base = os.environ.get("TMPDIR", "/tmp")
    if len(base) > 40 or not os.path.isdir(base):
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix="dkr-", dir=base))


def _containerd_config(root: Path) -> Path:
    config = root / "containerd.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{root}/ctd/root"\n'
        f'state = "{root}/ctd/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        "[grpc]\n"
        f'  address = "{root}/ctd.sock"\n'
        "[ttrpc]\n"
        f'  address = "{root}/ctd.sock.ttrpc"\n'
        "[debug]\n"
        f'  address = "{root}/ctd-debug.sock"\n'
    )
    return config


def _daemon_config(root: Path, dockerd_version: tuple[int, ...]) -> Path:
    """dockerd's own config file, so /etc/docker/daemon.json can neither add nor conflict."""
    config: dict[str, Any] = {}
    if dockerd_version[0] and dockerd_version < (23,):
        # Before 23.0 dockerd writes a libtrust key to /etc/docker/key.json by default.
        config["deprecated-key-path"] = str(root / "key.json")
    path = root / "daemon.json"
    path.write_text(json.dumps(config))
    return path


def start_docker(insecure_registries: Sequence[str],
                 storage_drivers: Sequence[str] | None = None) -> DockerDaemon:
    """Start containerd and dockerd under a fresh temporary directory.

    Raises DockerUnavailable (with logs) if a binary is missing or no storage driver works.
    """
    dockerd = shutil.which("dockerd")
    containerd = shutil.which("containerd")
    cli = os.environ.get("DOCKER_CLI") or shutil.which("docker")
    missing = [name for name, found in
               (("dockerd", dockerd), ("containerd", containerd), ("docker", cli)) if not found]
    if missing or dockerd is None or containerd is None or cli is None:
        raise DockerUnavailable(
            f"{', '.join(missing)} not on PATH (Debian: apt-get install -y docker.io)")
    if storage_drivers is None:
        override = os.environ.get("DOCKER_STORAGE_DRIVER")
        storage_drivers = [override] if override else list(STORAGE_DRIVERS)

    root = _short_tempdir()
    config_dir = root / "cli"
    config_dir.mkdir()
    (config_dir / "config.json").write_text("{}")
    socket_path = root / "docker.sock"
    env = {
        **os.environ,
        "DOCKER_HOST": f"unix://{socket_path}",
        "DOCKER_CONFIG": str(config_dir),
        "DOCKER_CLI_EXPERIMENTAL": "enabled",
        "DOCKER_CLI_HINTS": "false",
        "DOCKER_BUILDKIT": "0",
        "NO_PROXY": ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1,localhost"])),
        "no_proxy": ",".join(filter(None, [os.environ.get("no_proxy"), "127.0.0.1,localhost"])),
    }
    for name in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        env.pop(name, None)

    processes: list[subprocess.Popen[bytes]] = []
    containerd_log = root / "containerd.log"

    def give_up(message: str) -> DockerUnavailable:
        for proc in reversed(processes):
            _terminate(proc)
        report = [f"--- containerd log ({containerd_log})", tail(containerd_log)]
        for log in sorted(root.glob("dockerd-*.log")):
            report += [f"--- {log.name}", tail(log)]
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)
        return DockerUnavailable(message, "\n".join(report))

    # containerd
    ctd_socket = root / "ctd.sock"
    with open(containerd_log, "wb") as log:
        ctd = subprocess.Popen([containerd, "--config", str(_containerd_config(root))],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    processes.append(ctd)
    if not _wait_for_socket(ctd_socket, ctd, time.monotonic() + START_TIMEOUT):
        raise give_up(f"containerd did not start (exit status {ctd.poll()})")

    dockerd_version_text = subprocess.run([dockerd, "--version"], capture_output=True,
                                          text=True, timeout=30, check=False).stdout.strip()
    daemon_config = _daemon_config(root, _version_tuple(dockerd_version_text))

    failures: list[str] = []
    for driver in storage_drivers:
        data_root = root / f"data-{driver}"
        exec_root = root / "exec"
        flags = [
            "--config-file", str(daemon_config),
            "--data-root", str(data_root),
            "--exec-root", str(exec_root),
            "--pidfile", str(root / "dockerd.pid"),
            "-H", f"unix://{socket_path}",
            "--containerd", str(ctd_socket),
            "--storage-driver", driver,
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--exec-opt", "native.cgroupdriver=cgroupfs",
        ]
        for registry in insecure_registries:
            flags += ["--insecure-registry", registry]
        dockerd_log = root / f"dockerd-{driver}.log"
        with open(dockerd_log, "wb") as log:
            proc = subprocess.Popen([dockerd, *flags], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        if _wait_for_socket(socket_path, proc, deadline):
            daemon = DockerDaemon(
                root=root, socket_path=socket_path, cli=cli,
                cli_version=(0,), daemon_version=dockerd_version_text,
                storage_driver=driver, env=env, dockerd_log=dockerd_log,
                containerd_log=containerd_log, flags=flags,
                processes=[*processes, proc])
            info = daemon.run("info", "--format", "{{json .}}", check=False, timeout=60)
            if info.returncode == 0:
                actual = json.loads(info.stdout).get("Driver")
                if actual == driver:
                    cli_version = daemon.run("version", "--format", "{{.Client.Version}}",
                                             check=False, timeout=30).stdout
                    daemon.cli_version = _version_tuple(cli_version)
                    atexit.register(daemon.stop)
                    return daemon
                failures.append(f"{driver}: daemon reports storage driver {actual!r}")
            else:
                failures.append(f"{driver}: `docker info` failed\n{info.describe()}")
        else:
            last = tail(dockerd_log, 1).strip()
            failures.append(f"{driver}: dockerd did not answer on {socket_path} "
                            f"(exit status {proc.poll()}): {last}")
        _terminate(proc)
        _unmount_under(data_root)
        socket_path.unlink(missing_ok=True)
    raise give_up("dockerd did not start with any storage driver: " + "; ".join(failures))


# --------------------------------------------------------------------------- local images


def _tar_add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def _tar_add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = 0
    tar.addfile(info)


def write_rootfs_tar(path: Path, files: int = 3, size: int = 4096) -> Path:
    """A tiny root filesystem (a few directories and random files) for `docker import`."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("etc", "data", "data/nested"):
            _tar_add_dir(tar, directory)
        _tar_add_bytes(tar, "etc/hostname", b"imported\n")
        for i in range(files):
            folder = "data/nested" if i % 2 else "data"
            _tar_add_bytes(tar, f"{folder}/random-{i}.bin", os.urandom(size))
    return path


@dataclass(frozen=True)
class ArchiveImage:
    """An image written as a `docker save`-format archive."""

    path: Path
    ref: str
    image_id: str
    """sha256 of the config, which is what `docker load` reports as the image ID."""
    diff_ids: tuple[str, ...]
    architecture: str


def write_docker_archive(path: Path, ref: str, layer_sizes: Sequence[int], *,
                         architecture: str = "amd64") -> ArchiveImage:
    """Write a `docker load`-able archive: one random file per layer, tagged `ref`."""
    layers: list[tuple[str, bytes]] = []
    for i, size in enumerate(layer_sizes):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
            _tar_add_dir(layer, f"layer{i}")
            _tar_add_bytes(layer, f"layer{i}/random.bin", os.urandom(size))
        data = buf.getvalue()
        layers.append(("sha256:" + hashlib.sha256(data).hexdigest(), data))
    config = json.dumps({
        "architecture": architecture,
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": [f"NONCE={os.urandom(8).hex()}"], "Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [digest for digest, _ in layers]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"}
                    for i in range(len(layers))],
    }, separators=(",", ":")).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    manifest = [{
        "Config": f"{config_hex}.json",
        "RepoTags": [ref],
        "Layers": [f"{digest.split(':')[1]}/layer.tar" for digest, _ in layers],
    }]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        _tar_add_bytes(tar, f"{config_hex}.json", config)
        for digest, data in layers:
            hexdigest = digest.split(":")[1]
            _tar_add_dir(tar, hexdigest)
            _tar_add_bytes(tar, f"{hexdigest}/layer.tar", data)
        _tar_add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    return ArchiveImage(path=path, ref=ref, image_id=f"sha256:{config_hex}",
                        diff_ids=tuple(d for d, _ in layers), architecture=architecture)

