"""32 concurrent clients, each pushing and then pulling its own 32 MiB blob.

A section of bench/run.py (run it through that script). For each target, round and push
style (`push-monolithic`: POST then one PUT with the body; `push-chunked`: POST, PATCH of
16 MiB chunks, PUT ?digest=) a fresh server with empty storage takes `clients` pushes at
once, each client on its own connection and into its own repository; when every push has
answered, the same clients pull their blobs at once. On S3 the pull follows the 307 to
the S3 server, moto_server or RGW (`pull`), and a second server on the same bucket with
`redirect = false` serves `pull-streamed`.

Figures per phase: aggregate MB/s (all bytes over the wall time from the first request to
the last response), the server's CPU seconds per GiB moved, the S3 server's (moto_server;
RGW: ceph-mon + ceph-osd + radosgw), and the
server's peak RSS (VmHWM reset before the phase, summed over its process tree); the
measurement is bench/s3_throughput.py's `measure`. The client is `HttpConn` from
bench/manifests_rps.py on uvloop: one process, one thread, bodies sent from one reused
1 MiB buffer per client and received into one 256 KiB buffer per connection, so no blob is
ever held in memory. Blob contents are pseudo-random and distinct per client and round
(a random 1 MiB block, with each 1 MiB piece stamped with its blob and piece number), and
their digests are computed before any timing. Round 1 re-reads every blob untimed and
checks its sha256.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import statistics
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blob_throughput import MB, GiB, MiB
from common import Deployment, Server, Target, log
from manifests_rps import HttpConn, HttpError, run_async, split_url
from s3_throughput import measure

PIECE = MiB  # bytes per send (and per stamp)
PUSH_OPS = ("push-monolithic", "push-chunked")


@dataclass
class Blob:
    """Blob `index` of a run: `size` bytes made from `block`, each piece stamped."""

    block: bytes
    nonce: int
    index: int
    size: int
    digest: str = ""

    def pieces(self, start: int = 0, end: int | None = None) -> Iterator[memoryview]:
        """The bytes [start, end) in pieces of at most PIECE, from one reused buffer
        (a piece is valid until the next one is asked for). start is a multiple of PIECE."""
        end = self.size if end is None else end
        buf = bytearray(self.block)
        view = memoryview(buf)
        for offset in range(start, end, PIECE):
            struct.pack_into("<QQQ", buf, 0, self.nonce, self.index, offset)
            yield view[: min(PIECE, end - offset)]

    def compute_digest(self) -> None:
        h = hashlib.sha256()
        for piece in self.pieces():
            h.update(piece)
        self.digest = "sha256:" + h.hexdigest()


def make_blobs(clients: int, size: int) -> list[Blob]:
    block = os.urandom(PIECE)
    nonce = int.from_bytes(os.urandom(8), "little")
    blobs = [Blob(block, nonce, i, size) for i in range(clients)]
    for b in blobs:
        b.compute_digest()
    return blobs


def with_digest(target: str, digest: str) -> str:
    return f"{target}{'&' if '?' in target else '?'}digest={digest}"


async def push(server: Server, repo: str, blob: Blob, chunk: int | None) -> None:
    """One client's push: monolithic (chunk None) or PATCH chunks of `chunk` bytes."""
    host, port, _ = split_url(server.base_url, "/")
    conn = HttpConn(host, port, 64 * 1024)
    try:
        resp = await conn.request("POST", f"/v2/{repo}/blobs/uploads/", keep_body=True)
        if resp.status != 202 or "location" not in resp.headers:
            raise HttpError(f"{server.name}: POST uploads -> {resp.status}: {resp.body[:300]!r}")
        _, _, target = split_url(server.base_url, resp.headers["location"])
        octets = {"Content-Type": "application/octet-stream"}
        if chunk is None:
            resp = await conn.request("PUT", with_digest(target, blob.digest), octets,
                                      blob.pieces(), blob.size, keep_body=True)
        else:
            for start in range(0, blob.size, chunk):
                end = min(start + chunk, blob.size)
                headers = {**octets, "Content-Range": f"{start}-{end - 1}"}
                resp = await conn.request("PATCH", target, headers, blob.pieces(start, end),
                                          end - start, keep_body=True)
                if resp.status != 202 or "location" not in resp.headers:
                    raise HttpError(f"{server.name}: PATCH {start}-{end - 1} -> {resp.status}: "
                                    f"{resp.body[:300]!r}")
                _, _, target = split_url(server.base_url, resp.headers["location"])
            resp = await conn.request("PUT", with_digest(target, blob.digest), keep_body=True)
        if resp.status != 201:
            raise HttpError(f"{server.name}: PUT {blob.digest} -> {resp.status}: "
                            f"{resp.body[:300]!r}")
    finally:
        conn.close()


async def pull(server: Server, repo: str, blob: Blob,
               sink: Callable[[memoryview], None] | None = None) -> None:
    """One client's pull, following one redirect (S3: a presigned URL on the S3 server)."""
    host, port, _ = split_url(server.base_url, "/")
    conn = HttpConn(host, port)
    other: HttpConn | None = None
    try:
        resp = await conn.request("GET", f"/v2/{repo}/blobs/{blob.digest}", sink=sink)
        if resp.status in (301, 302, 303, 307, 308):
            rhost, rport, rtarget = split_url(server.base_url, resp.headers["location"])
            other = HttpConn(rhost, rport)
            resp = await other.request("GET", rtarget, sink=sink)
        if resp.status != 200 or resp.length != blob.size:
            raise HttpError(f"{server.name}: GET {blob.digest} -> {resp.status}, "
                            f"{resp.length} bytes")
    finally:
        conn.close()
        if other is not None:
            other.close()


async def verify(server: Server, repos: list[str], blobs: list[Blob]) -> None:
    for repo, blob in zip(repos, blobs, strict=True):
        h = hashlib.sha256()
        await pull(server, repo, blob, h.update)
        if "sha256:" + h.hexdigest() != blob.digest:
            raise HttpError(f"{server.name}: {repo} pulled wrong bytes for {blob.digest}")


def phase(coros: Callable[[], list[Any]]) -> Callable[[], dict[str, Any]]:
    """A measure() callback running the coroutines at once; client CPU and spread too."""

    def fn() -> dict[str, Any]:
        times: list[float] = []

        async def timed(coro: Any) -> None:
            t0 = time.perf_counter()
            await coro
            times.append(time.perf_counter() - t0)

        async def body() -> None:
            await asyncio.gather(*(timed(c) for c in coros()))

        cpu0 = time.process_time()
        run_async(body())
        return {"client_cpu_s": time.process_time() - cpu0,
                "client_seconds_median": statistics.median(times),
                "client_seconds_max": max(times)}

    return fn


def record(sample: dict[str, Any], total: int) -> dict[str, Any]:
    gib = total / GiB
    sample["mb_per_s"] = total / MB / sample["seconds"]
    sample["cpu_s_per_gib"] = sample.pop("registry_cpu_s") / gib
    s3_cpu = sample.pop("s3_server_cpu_s")  # moto_server, or RGW's daemons; None: no S3
    sample["s3_server_cpu_s_per_gib"] = None if s3_cpu is None else s3_cpu / gib
    sample["bytes"] = total
    return sample


def run_one(dep: Deployment, blobs: list[Blob], push_op: str, chunk: int, rnd: int,
            log_prefix: str) -> list[dict[str, Any]]:
    server = dep.server
    s3 = dep.s3
    repos = [f"bench/c{i:02d}-r{rnd}-{os.urandom(2).hex()}" for i in range(len(blobs))]
    total = sum(b.size for b in blobs)
    size_chunk = None if push_op == "push-monolithic" else chunk
    samples = []

    def log_sample(op: str, s: dict[str, Any]) -> None:
        s3_cpu = s["s3_server_cpu_s_per_gib"]
        s3_part = f"  {s3.name} {s3_cpu:5.2f}" if s3 is not None and s3_cpu is not None else ""
        log(f"{log_prefix} {op:<16}{s['mb_per_s']:9.1f} MB/s  {s['cpu_s_per_gib']:6.2f} CPU s/GiB"
            f"{s3_part}  {s['peak_rss_mib']:7.1f} MiB peak RSS  ({s['seconds']:.2f}s, "
            f"slowest client {s['client_seconds_max']:.2f}s, client CPU {s['client_cpu_s']:.2f}s)")

    s = record(measure(server, s3, phase(
        lambda: [push(server, r, b, size_chunk) for r, b in zip(repos, blobs, strict=True)]
    )), total)
    samples.append({**s, "op": push_op})
    log_sample(push_op, s)
    if rnd == 1:
        run_async(verify(server, repos, blobs))
    os.sync()
    pulls = [("pull", server)]
    if dep.streamed is not None:
        pulls.append(("pull-streamed", dep.streamed))
    for op, srv in pulls:
        if rnd == 1 and srv is not server:
            run_async(verify(srv, repos[:2], blobs[:2]))

        def coros(srv: Server = srv) -> list[Any]:
            return [pull(srv, r, b) for r, b in zip(repos, blobs, strict=True)]

        s = record(measure(srv, s3, phase(coros)), total)
        samples.append({**s, "op": op, "after": push_op})
        log_sample(op, s)
    return samples


def run(targets: list[Target], base: Path, rounds: int, clients: int, size: int,
        chunk: int) -> list[dict[str, Any]]:
    samples: list[dict[str, Any]] = []
    for rnd in range(1, rounds + 1):
        blobs = make_blobs(clients, size)  # new contents every round
        shift = (rnd - 1) % len(targets)
        for target in targets[shift:] + targets[:shift]:
            for push_op in PUSH_OPS:
                workdir = base / f"concurrency-{target.name}-r{rnd}-{push_op}"
                prefix = f"[concurrency round {rnd}/{rounds}] {target.name:<12}"
                with target.deploy(workdir, streamed=True) as dep:
                    for s in run_one(dep, blobs, push_op, chunk, rnd, prefix):
                        samples.append({**s, "target": target.name, "round": rnd})
                shutil.rmtree(workdir, ignore_errors=True)
                os.sync()
    return samples
