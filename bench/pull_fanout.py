"""200 clients pulling one 5-layer image at once, as the nodes of a cluster do when a
deployment rolls out: the `fanout` section of bench/run.py (run it through that script).

For each target and round: a fresh server with empty storage; one image is pushed to
`bench/fanout:v1` (an OCI manifest, its config and `len(layer_sizes)` layers of random bytes,
each blob POST + one monolithic PUT). Then `clients` asyncio clients start at once, each on a
connection of its own (`HttpConn` from manifests_rps.py: raw sockets on uvloop, bodies read
into the buffer and dropped, never kept), and each does what a node does on a pull:
`GET /v2/bench/fanout/manifests/v1` (OCI manifest `Accept`), then `GET` of the config blob
and of every layer in turn, following a redirect (an S3 target's 307 to a presigned URL) on a
second connection. Every answer must be 200 with the blob's size; client 0 also hashes the
manifest and every blob (sha256). On a target with auth on, one Bearer token (pull and push
on the repository) is fetched before the push and sent by every client to the registry
(not to a redirect's host).

Figures per target and round: the wall time from the start until the last client finished
(`total_s`), the median and 99th percentile of the clients' own times (connect to last byte),
the aggregate MB/s (every client's bytes over `total_s`), the server's CPU seconds over that
time (process tree: workers included), the S3 server's on S3 targets, and this process's
(the clients') share of a core. A client that fails (status, size, digest, connection) is
counted in `failed`, and that sample then has no timings: a server that fails some clients
must not look fast.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import resource
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import MB, Deployment, MiB, S3Server, Target, cpu_seconds, log, process_tree, s3_pids
from manifests_rps import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    HttpConn,
    HttpError,
    auth_headers,
    fmt,
    push_small_blob,
    run_async,
    sha256_digest,
    split_url,
)

REPO = "bench/fanout"
TAG = "v1"
CLIENTS = 200
LAYER_SIZES = (1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB, 16 * MiB)
BUFSIZE = 256 * 1024  # each client's read buffer
REDIRECTS = (301, 302, 303, 307, 308)


@dataclass
class Image:
    config: bytes
    layers: list[bytes]
    manifest: bytes

    @property
    def blobs(self) -> list[tuple[str, int]]:
        """(digest, size) of the config, then of each layer: what a pull fetches in turn."""
        return [(sha256_digest(b), len(b)) for b in (self.config, *self.layers)]

    @property
    def size(self) -> int:
        """Bytes one pull receives: the manifest and every blob."""
        return len(self.manifest) + sum(len(b) for b in (self.config, *self.layers))


def make_image(layer_sizes: Sequence[int]) -> Image:
    layers = [os.urandom(n) for n in layer_sizes]  # random: nothing compresses or dedups
    config = json.dumps(
        {"architecture": "amd64", "os": "linux",
         "rootfs": {"type": "layers", "diff_ids": [sha256_digest(b) for b in layers]}},
        separators=(",", ":"),
    ).encode()
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
         "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config),
                    "size": len(config)},
         "layers": [{"mediaType": OCI_LAYER, "digest": sha256_digest(b), "size": len(b)}
                    for b in layers]},
        separators=(",", ":"),
    ).encode()
    return Image(config, layers, manifest)


async def push_image(base_url: str, image: Image, headers: dict[str, str]) -> None:
    host, port, _ = split_url(base_url, "/")
    conn = HttpConn(host, port)
    try:
        for blob in (image.config, *image.layers):
            await push_small_blob(conn, base_url, REPO, blob, headers)
        resp = await conn.request("PUT", f"/v2/{REPO}/manifests/{TAG}",
                                  {**headers, "Content-Type": OCI_MANIFEST}, image.manifest,
                                  keep_body=True)
        if resp.status != 201:
            raise HttpError(f"PUT manifest {TAG} -> {resp.status}: {resp.body[:300]!r}")
    finally:
        conn.close()


async def pull(base_url: str, image: Image, headers: dict[str, str], verify: bool) -> int:
    """One node's pull on a connection of its own: manifest by tag, config, layers (a redirect
    followed on a second connection). Raises HttpError on a wrong answer; returns the bytes
    received."""
    host, port, _ = split_url(base_url, "/")
    conn = HttpConn(host, port, BUFSIZE)
    others: dict[tuple[str, int], HttpConn] = {}
    try:
        path = f"/v2/{REPO}/manifests/{TAG}"
        resp = await conn.request("GET", path, {**headers, "Accept": OCI_MANIFEST},
                                  keep_body=verify)
        if resp.status != 200 or resp.length != len(image.manifest):
            raise HttpError(f"GET {path} -> {resp.status}, {resp.length} bytes"
                            f" (expected 200, {len(image.manifest)})")
        if verify and resp.body != image.manifest:
            raise HttpError(f"GET {path}: not the manifest pushed")
        received = resp.length
        for digest, size in image.blobs:
            h = hashlib.sha256() if verify else None
            sink = h.update if h is not None else None
            path = f"/v2/{REPO}/blobs/{digest}"
            resp = await conn.request("GET", path, headers, sink=sink)
            hops = 0
            while resp.status in REDIRECTS and "location" in resp.headers:
                if (hops := hops + 1) > 3:
                    raise HttpError(f"GET {path}: more than 3 redirects")
                rhost, rport, target = split_url(base_url, resp.headers["location"])
                if (rhost, rport) == (host, port):
                    resp = await conn.request("GET", target, headers, sink=sink)
                    continue
                if (other := others.get((rhost, rport))) is None:
                    other = others[rhost, rport] = HttpConn(rhost, rport, BUFSIZE)
                # a presigned URL carries its own credentials: no Authorization to it
                resp = await other.request("GET", target, sink=sink)
            if resp.status != 200 or resp.length != size:
                raise HttpError(f"GET {path} -> {resp.status}, {resp.length} bytes"
                                f" (expected 200, {size})")
            if h is not None and f"sha256:{h.hexdigest()}" != digest:
                raise HttpError(f"GET {path}: the bytes hash to sha256:{h.hexdigest()}")
            received += size
        return received
    finally:
        conn.close()
        for other in others.values():
            other.close()


def percentile(values: list[float], q: float) -> float:
    """The q-quantile of values as manifests_rps counts its p99 (no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def measure(dep: Deployment, image: Image, clients: int) -> dict[str, Any]:
    """Push the image, then `clients` pulls at once; the figures of one sample."""
    base_url = dep.server.base_url
    s3: S3Server | None = dep.s3

    async def body() -> dict[str, Any]:
        headers = await auth_headers(dep, REPO)  # {} unless the target has auth on
        await push_image(base_url, image, headers)

        async def client(i: int) -> tuple[float, int, str | None]:
            t = time.perf_counter()
            try:
                n = await pull(base_url, image, headers, verify=i == 0)
            except (OSError, HttpError, ValueError) as exc:
                return time.perf_counter() - t, 0, f"client {i}: {type(exc).__name__}: {exc}"
            return time.perf_counter() - t, n, None

        cpu0, s3_0 = cpu_seconds(process_tree(dep.server.pid)), cpu_seconds(s3_pids(s3))
        own0, t0 = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*(client(i) for i in range(clients)))
        t1, own1 = time.perf_counter(), time.process_time()
        cpu1, s3_1 = cpu_seconds(process_tree(dep.server.pid)), cpu_seconds(s3_pids(s3))
        errors = [e for _, _, e in results if e is not None]
        times = [s for s, _, e in results if e is None]
        total = t1 - t0
        ok = not errors
        return {
            "clients": clients,
            "total_s": total if ok else None,
            "client_p50_s": statistics.median(times) if ok else None,
            "client_p99_s": percentile(times, 0.99) if ok else None,
            "mb_per_s": sum(n for _, n, _ in results) / MB / total if ok else None,
            "server_cpu_s": cpu1 - cpu0,
            "s3_server_cpu_s": s3_1 - s3_0 if s3 is not None else None,
            "client_cpu": (own1 - own0) / total if total > 0 else 0.0,
            "failed": len(errors),
            "first_error": errors[0] if errors else None,
            "wall_s": total,
        }

    return run_async(body())


def raise_open_files(clients: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit (the servers it starts
    inherit it) and check that it covers `clients` connections, each with a possible
    redirect connection; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    need = 2 * clients + 256
    if soft != resource.RLIM_INFINITY and soft < need:
        raise RuntimeError(f"open-file limit {soft} < {need} needed for {clients} clients"
                           " (raise the hard limit: ulimit -Hn)")
    return soft


def run(targets: list[Target], base: Path, rounds: int, clients: int = CLIENTS,
        layer_sizes: Sequence[int] = LAYER_SIZES) -> list[dict[str, Any]]:
    raise_open_files(clients)
    image = make_image(layer_sizes)
    samples: list[dict[str, Any]] = []
    for rnd in range(1, rounds + 1):
        shift = (rnd - 1) % len(targets)
        for target in targets[shift:] + targets[:shift]:
            workdir = base / f"fanout-{target.name}-r{rnd}"
            try:
                with target.deploy(workdir) as dep:
                    s = measure(dep, image, clients)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            samples.append({**s, "op": "pull", "target": target.name, "round": rnd})
            s3 = (f"  {dep.s3.name} {fmt(s['s3_server_cpu_s'])} CPU s"
                  if dep.s3 is not None else "")
            err = f"  {s['failed']} clients failed: {s['first_error']}" if s["failed"] else ""
            log(f"[fanout round {rnd}/{rounds}] {target.name:<16} {clients} clients:"
                f" {fmt(s['total_s'])} s total ({fmt(s['wall_s'])} s wall), per client"
                f" p50 {fmt(s['client_p50_s'])} s p99 {fmt(s['client_p99_s'])} s,"
                f" {fmt(s['mb_per_s'], 0)} MB/s, server {fmt(s['server_cpu_s'])} CPU s{s3},"
                f" client {s['client_cpu']:.0%} of a core{err}")
    return samples
