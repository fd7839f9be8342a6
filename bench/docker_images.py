"""`docker push` and `docker pull` of a 5-layer, 200 MB image.

A section of bench/run.py (run it through that script). It starts a private Docker engine
(containerd + dockerd as root under a temporary directory, `--iptables=false
--bridge=none`, overlay2 or else vfs) with tests/clients/dockerd.py, the module the client
tests use; if the engine cannot start, the section is reported as skipped with the reason.

The image is written once as a `docker save`-style archive, streamed to disk (each layer
one file of random bytes, so gzip cannot shrink it), and loaded with `docker load`
(untimed). For each round and target, a fresh server with empty storage; then

- `push`: `docker tag` the image as `127.0.0.1:<port>/bench/docker:r<round>` and time
  `docker push` (dockerd compresses each layer with gzip while it uploads, as it always
  does, so this figure includes the engine's compression on both registries alike);
- `pull`: `docker rmi -f` the image (every tag, so no layer is left locally), then time
  `docker pull` (download, gunzip, extraction into the storage driver), and check that
  the pulled image has the same ID.

MB/s is the image's uncompressed layer bytes over the wall time of the CLI command.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from common import REPO_ROOT, Target, log

MB = 1_000_000
BASE_REF = "bench/docker-image:base"
TIMEOUT = 1800.0


class RandomReader(io.RawIOBase):
    """`size` random bytes, read in whatever pieces the caller asks for."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.left)
        b[:n] = os.urandom(n)
        self.left -= n
        return n


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
    tar.addfile(info)


def write_archive(directory: Path, layers: int, layer_size: int) -> tuple[Path, str, int]:
    """(archive path, image ID, layer bytes) of a `docker load`-able image tagged BASE_REF;
    every layer is written to disk and hashed from there (bounded memory)."""
    directory.mkdir(parents=True, exist_ok=True)
    layer_files: list[tuple[str, Path]] = []
    total = 0
    for i in range(layers):
        path = directory / f"layer-{i}.tar"
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_dir(tar, f"layer{i}")
            info = tarfile.TarInfo(f"layer{i}/random.bin")
            info.size, info.mode, info.mtime = layer_size, 0o644, 0
            tar.addfile(info, io.BufferedReader(RandomReader(layer_size), 1 << 20))
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        layer_files.append(("sha256:" + h.hexdigest(), path))
        total += path.stat().st_size
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": [f"NONCE={os.urandom(8).hex()}"], "Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [d for d, _ in layer_files]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"}
                    for i in range(layers)],
    }, separators=(",", ":")).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    manifest = [{"Config": f"{config_hex}.json", "RepoTags": [BASE_REF],
                 "Layers": [f"{d.split(':')[1]}/layer.tar" for d, _ in layer_files]}]
    archive = directory / "image.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, f"{config_hex}.json", config)
        for digest, path in layer_files:
            _add_dir(tar, digest.split(":")[1])
            tar.add(path, arcname=f"{digest.split(':')[1]}/layer.tar")
        _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
    for _, path in layer_files:
        path.unlink()
    return archive, f"sha256:{config_hex}", total


def run(targets: list[Target], base: Path, rounds: int, layers: int,
        layer_size: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(samples, section info); info["skipped"] holds the reason when docker cannot start."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.append(str(REPO_ROOT))
    try:
        from tests.clients.dockerd import DockerUnavailable, start_docker
    except ImportError as exc:
        return [], {"skipped": f"cannot import tests/clients/dockerd.py: {exc}"}
    try:
        daemon = start_docker(insecure_registries=["127.0.0.0/8"])
    except DockerUnavailable as exc:
        log(f"[docker] skipped: {exc.summary}")
        return [], {"skipped": exc.summary, "logs": exc.logs[-4000:]}
    info: dict[str, Any] = {"engine": daemon.daemon_version,
                            "storage_driver": daemon.storage_driver,
                            "cli": ".".join(map(str, daemon.cli_version))}
    samples: list[dict[str, Any]] = []
    try:
        t0 = time.perf_counter()
        archive, image_id, total = write_archive(base / "docker-image", layers, layer_size)
        daemon.run("load", "-i", str(archive), timeout=TIMEOUT)
        archive.unlink()
        info.update(layers=layers, layer_bytes=total, image_id=image_id)
        log(f"[docker] {daemon.daemon_version}, {daemon.storage_driver}; image {image_id[:19]}"
            f" ({layers} layers, {total / MB:.0f} MB) loaded in {time.perf_counter() - t0:.1f}s")
        for rnd in range(1, rounds + 1):
            shift = (rnd - 1) % len(targets)
            for target in targets[shift:] + targets[:shift]:
                workdir = base / f"docker-{target.name}-r{rnd}"
                with target.deploy(workdir) as dep:
                    ref = f"127.0.0.1:{dep.server.port}/bench/docker:r{rnd}"
                    daemon.extra_logs["registry log"] = dep.server.log_path
                    daemon.run("tag", BASE_REF, ref)
                    times = {}
                    os.sync()
                    t = time.perf_counter()
                    daemon.run("push", ref, timeout=TIMEOUT)
                    times["push"] = time.perf_counter() - t
                    daemon.run("rmi", "-f", image_id)
                    if daemon.image_exists(image_id):
                        raise RuntimeError(f"docker rmi -f {image_id} left the image")
                    os.sync()
                    t = time.perf_counter()
                    daemon.run("pull", ref, timeout=TIMEOUT)
                    times["pull"] = time.perf_counter() - t
                    pulled = daemon.inspect_image(ref)["Id"]
                    if pulled != image_id:
                        raise RuntimeError(f"pulled image {pulled}, pushed {image_id}")
                    daemon.run("tag", ref, BASE_REF)
                    daemon.run("rmi", ref)
                    for op, seconds in times.items():
                        samples.append({"op": op, "target": target.name, "round": rnd,
                                        "seconds": seconds, "mb_per_s": total / MB / seconds})
                    log(f"[docker round {rnd}/{rounds}] {target.name:<12} push "
                        f"{times['push']:6.2f}s  pull {times['pull']:6.2f}s")
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        daemon.extra_logs.pop("registry log", None)
        daemon.stop()
    return samples, info
