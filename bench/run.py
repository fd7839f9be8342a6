#!/usr/bin/env python3
"""The benchmark suite: our registry (filesystem, and S3 on a local moto_server or, with the
`ours-rgw` target, Ceph RGW) next to CNCF Distribution 2.8 on the same machine, with the same
clients, in interleaved rounds.

Sections (`--only` picks some; see bench/README.md for what each measures):

    limits       this machine's ceilings: single-core sha256, sendfile over loopback
    blobs        one 1 GiB blob: push (monolithic, 16 MiB chunks), pull; CPU s/GiB, peak RSS
    concurrency  32 clients at once, each pushing then pulling its own 32 MiB blob
    manifests    manifest GET, HEAD (by tag, by digest), blob HEAD and manifest PUT requests
                 per second at 1, 16 and 64 clients (GETs through wrk when it is installed)
    fanout       200 clients pulling one 5-layer image (31 MiB) at once
    listing      tags list and catalog latency at 10,000 entries (bench/listing.py)
    docker       `docker push` and `docker pull` of a 5-layer, 200 MB image

Every figure is the median over `--rounds` rounds; in each round every target runs on a
fresh server with empty storage, and the target that goes first rotates between rounds.
The table shows the targets side by side, ours/Distribution ratios and the targets of
issues 10 and 21 (PASS/MISS; a miss does not fail the run). The JSON report, with every sample,
the machine and the git commit, goes to bench/results/run-<UTC timestamp>.json.

    python bench/run.py                 # everything, full size (tens of minutes)
    python bench/run.py --quick         # small sizes, one round (about 2 minutes)
    python bench/run.py --only manifests,concurrency --rounds 1
    python bench/run.py --only blobs,manifests --targets ours-fs,ours-s3,ours-rgw --rounds 1
    python bench/run.py --only manifests,fanout --targets ours-fs,ours-fs-auth,distribution
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import concurrent_blobs
import docker_images
import machine_limits
import manifests_rps
import pull_fanout
from blob_throughput import (
    Blob,
    GiB,
    KiB,
    MiB,
    check_blob,
    fmt_size,
    make_blob,
    parse_size,
    pull,
    push_chunked,
    push_monolithic,
    tmp_filesystem,
    verify_pull,
)
from common import (
    DEFAULT_TARGETS,
    DISTRIBUTION,
    DISTRIBUTION_BIN,
    RESULTS_DIR,
    TARGET_NAMES,
    Deployment,
    Target,
    git_commit,
    log,
    machine_info,
    parse_list,
    rgw_missing,
    rgw_version,
    run_guarded,
    run_quiet,
    write_report,
)
from s3_throughput import measure, moto_missing

SECTIONS = ("limits", "blobs", "concurrency", "manifests", "fanout", "listing", "docker")
# Sections whose clients log in; the others skip targets with auth on (ours-fs-auth).
AUTH_SECTIONS = ("manifests", "fanout")
MB = 1_000_000


@dataclass(frozen=True)
class Sizes:
    limits: int
    blob: int
    chunk: int
    clients: int
    client_blob: int
    client_chunk: int
    levels: tuple[int, ...]
    warmup: float
    duration: float
    listing: int
    listing_s3: int  # setup through moto_server runs at about 12 tags/s
    listing_repeat: int
    listing_warmup: int
    settle: float  # listing: seconds between setup and timing (see bench/README.md)
    layers: int
    layer_size: int
    fanout_clients: int
    fanout_layers: tuple[int, ...]


FULL = Sizes(limits=GiB, blob=GiB, chunk=16 * MiB, clients=32, client_blob=32 * MiB,
             client_chunk=16 * MiB, levels=(1, 16, 64), warmup=1.0, duration=4.0,
             listing=10_000, listing_s3=1_000, listing_repeat=200, listing_warmup=10,
             settle=3.0, layers=5, layer_size=40_000_000, fanout_clients=200,
             fanout_layers=(1 * MiB, 2 * MiB, 4 * MiB, 8 * MiB, 16 * MiB))
QUICK = Sizes(limits=256 * MiB, blob=64 * MiB, chunk=16 * MiB, clients=32,
              client_blob=2 * MiB, client_chunk=1 * MiB, levels=(1, 16, 64), warmup=0.2,
              duration=0.6, listing=200, listing_s3=200, listing_repeat=20, listing_warmup=2,
              settle=2.5, layers=5, layer_size=4_000_000, fanout_clients=200,
              fanout_layers=(64 * KiB, 128 * KiB, 256 * KiB, 512 * KiB, 1 * MiB))


# --------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    sizes: Sizes
    targets: list[Target]
    base: Path
    _blobs: dict[int, Blob] = field(default_factory=dict)

    def rotation(self, rnd: int) -> list[Target]:
        shift = (rnd - 1) % len(self.targets)
        return self.targets[shift:] + self.targets[:shift]

    def blob(self, size: int) -> Blob:
        """A random blob file of `size` bytes, made once (limits and blobs share it)."""
        if size not in self._blobs:
            t = time.perf_counter()
            log(f"creating a {fmt_size(size)} random blob in {self.base} ...")
            (directory := self.base / f"blob-{size}").mkdir()
            self._blobs[size] = blob = make_blob(directory, size)
            log(f"  {blob.digest} ({time.perf_counter() - t:.1f}s)")
        return self._blobs[size]


def section_limits(ctx: Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    blob = ctx.blob(ctx.sizes.limits)
    samples = machine_limits.run(blob.path, blob.size, ctx.args.rounds)
    return samples, {"size": blob.size, **machine_limits.info()}


def blob_sample(s: dict[str, Any], size: int) -> dict[str, Any]:
    gib = size / GiB
    s["mb_per_s"] = size / MB / s["seconds"]
    s["cpu_s_per_gib"] = s.pop("registry_cpu_s") / gib
    s3_cpu = s.pop("s3_server_cpu_s")  # moto_server, or RGW's three daemons; None: no S3
    s["s3_server_cpu_s_per_gib"] = None if s3_cpu is None else s3_cpu / gib
    s["client_cpu_s_per_gib"] = s.pop("client_cpu_s") / gib
    # What the machine's cores allow when the client, the registry (and the S3 server) share
    # them: the rate if every core were busy all the time with this work.
    busy = (s["cpu_s_per_gib"] + (s["s3_server_cpu_s_per_gib"] or 0.0)
            + s["client_cpu_s_per_gib"])
    s["cpu_bound_mb_per_s"] = (os.cpu_count() or 1) * GiB / MB / busy if busy > 0 else None
    return s


def one_blob(dep: Deployment, blob: Blob, push_op: str, rnd: int, rounds: int,
             name: str, workdir: Path, chunk: int) -> list[dict[str, Any]]:
    server, s3 = dep.server, dep.s3
    repo = f"bench/{push_op}-r{rnd}-{os.urandom(3).hex()}"
    fn = push_monolithic if push_op == "push-monolithic" else push_chunked
    out = []

    def keep(op: str, s: dict[str, Any]) -> None:
        s = blob_sample(s, blob.size)
        out.append({**s, "op": op})
        s3_cpu = s["s3_server_cpu_s_per_gib"]
        s3_part = f"  {s3.name} {s3_cpu:5.2f}" if s3 is not None and s3_cpu is not None else ""
        bound = s["cpu_bound_mb_per_s"]
        log(f"[blobs round {rnd}/{rounds}] {name:<12} {op:<16}{s['mb_per_s']:9.1f} MB/s"
            f"  {s['cpu_s_per_gib']:6.2f} CPU s/GiB{s3_part}"
            f"  client {s['client_cpu_s_per_gib']:5.2f}  {s['peak_rss_mib']:7.1f} MiB"
            f" peak RSS  ({s['seconds']:.2f}s; CPU-bound {bound or 0:.0f} MB/s)")

    keep(push_op, measure(server, s3, lambda: fn(server, repo, blob, chunk, workdir)))
    check_blob(server, repo, blob)
    if rnd == 1:
        verify_pull(server, repo, blob)  # curl -L: on S3 through the presigned URL
        if dep.streamed is not None:
            verify_pull(dep.streamed, repo, blob)
    os.sync()
    keep("pull", measure(server, s3, lambda: pull(server, repo, blob, chunk, workdir)))
    if (streamed := dep.streamed) is not None:
        keep("pull-streamed",
             measure(streamed, s3, lambda: pull(streamed, repo, blob, chunk, workdir)))
    return out


def section_blobs(ctx: Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    blob = ctx.blob(ctx.sizes.blob)
    samples: list[dict[str, Any]] = []
    for rnd in range(1, ctx.args.rounds + 1):
        for target in ctx.rotation(rnd):
            for push_op in ("push-monolithic", "push-chunked"):
                workdir = ctx.base / f"blobs-{target.name}-r{rnd}-{push_op}"
                with target.deploy(workdir, streamed=True) as dep:
                    for s in one_blob(dep, blob, push_op, rnd, ctx.args.rounds, target.name,
                                      workdir, ctx.sizes.chunk):
                        samples.append({**s, "target": target.name, "round": rnd})
                shutil.rmtree(workdir, ignore_errors=True)
                os.sync()
    return samples, {"size": blob.size, "chunk_size": ctx.sizes.chunk, "digest": blob.digest}


def section_concurrency(ctx: Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    s = ctx.sizes
    samples = concurrent_blobs.run(ctx.targets, ctx.base, ctx.args.rounds, s.clients,
                                   s.client_blob, s.client_chunk)
    return samples, {"clients": s.clients, "blob_size": s.client_blob,
                     "chunk_size": s.client_chunk}


def section_manifests(ctx: Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    s = ctx.sizes
    client = ctx.args.client
    samples = manifests_rps.run(ctx.targets, ctx.base, ctx.args.rounds, s.warmup, s.duration,
                                s.levels, client)
    return samples, {"levels": list(s.levels), "warmup_s": s.warmup, "duration_s": s.duration,
                     "tags_read": manifests_rps.GET_TAGS, "client": client,
                     "wrk_ops": list(manifests_rps.WRK_OPS) if client == "wrk" else [],
                     "wrk": run_quiet(["wrk", "--version"]) if client == "wrk" else None}


def section_fanout(ctx: Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    s = ctx.sizes
    samples = pull_fanout.run(ctx.targets, ctx.base, ctx.args.rounds, s.fanout_clients,
                              s.fanout_layers)
    return samples, {"clients": s.fanout_clients, "layer_sizes": list(s.fanout_layers),
                     "repository": pull_fanout.REPO, "tag": pull_fanout.TAG}


def section_listing(ctx: Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import listing  # needs httpx

    s = ctx.sizes
    ns = argparse.Namespace(seed="listing", concurrency=16, settle=s.settle,
                            warmup=s.listing_warmup, repeat=s.listing_repeat, keep_tmp=False)
    samples: list[dict[str, Any]] = []
    info: dict[str, Any] = {"entries": s.listing, "entries_s3": s.listing_s3,
                            "page": listing.PAGE, "repeat": s.listing_repeat, "setup": {},
                            "problems": {}}
    # Setup (N tags and N repositories) dominates, so each target runs once, not per round.
    for target in ctx.targets:
        workdir = ctx.base / f"listing-{target.name}"
        workdir.mkdir()
        with target.backing(workdir) as backing:
            entries = s.listing_s3 if target.backend == "s3" else s.listing
            run = listing.run_one(target.spec(backing), entries, workdir, ns)
        info["setup"][target.name] = run.setup
        if run.problems:
            info["problems"][target.name] = run.problems
        for op in listing.OPS:
            r = run.results[op]
            samples.append({"op": op, "target": target.name, "round": 1, "size": entries,
                            "median_ms": r["median_ms"], "p90_ms": r["p90_ms"],
                            "entries": r["entries"]})
        shutil.rmtree(workdir, ignore_errors=True)
    return samples, info


def section_docker(ctx: Context) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    s = ctx.sizes
    return docker_images.run(ctx.targets, ctx.base, ctx.args.rounds, s.layers, s.layer_size)


SECTION_FUNCS: dict[str, Callable[[Context], tuple[list[dict[str, Any]], dict[str, Any]]]] = {
    "limits": section_limits,
    "blobs": section_blobs,
    "concurrency": section_concurrency,
    "manifests": section_manifests,
    "fanout": section_fanout,
    "listing": section_listing,
    "docker": section_docker,
}


# --------------------------------------------------------------------------------------
# Summary, targets, table
# --------------------------------------------------------------------------------------

HIGHER, LOWER = "higher", "lower"
BLOB_OPS = ("push-monolithic", "push-chunked", "pull", "pull-streamed")
BLOB_METRICS = (("mb_per_s", "MB/s", HIGHER), ("cpu_s_per_gib", "CPU s/GiB", LOWER),
                ("s3_server_cpu_s_per_gib", "S3 server CPU s/GiB", LOWER),
                ("peak_rss_mib", "peak RSS MiB", LOWER))
FANOUT_METRICS = (("total_s", "pull: all done s", LOWER),
                  ("client_p50_s", "pull: per client p50 s", LOWER),
                  ("client_p99_s", "pull: per client p99 s", LOWER),
                  ("mb_per_s", "pull: aggregate MB/s", HIGHER),
                  ("server_cpu_s", "pull: server CPU s", LOWER),
                  ("s3_server_cpu_s", "pull: S3 server CPU s", LOWER),
                  ("failed", "pull: failed clients", LOWER))
READ_OPS = tuple(op for op in manifests_rps.OPS if op != "put")
AUTH_RATIO = 0.8  # issue 21: with auth on, reads at least 80% of their rate with it off


def rows_for(section: str, levels: tuple[int, ...]) -> list[tuple[str, str, str, str]]:
    """(op, metric, label, better) of the section's table rows, in order."""
    if section == "limits":
        return [(op, "mb_per_s", f"{op} MB/s", HIGHER) for op in machine_limits.OPS]
    if section in ("blobs", "concurrency"):
        return [(op, m, f"{op} {label}", better) for op in BLOB_OPS
                for m, label, better in BLOB_METRICS]
    if section == "manifests":
        return [(f"{op}-c{c}", m, f"{manifests_rps.LABELS[op]} x{c} {label}", better)
                for op in manifests_rps.OPS for c in levels
                for m, label, better in (("rps", "req/s", HIGHER), ("p99_ms", "p99 ms", LOWER))]
    if section == "listing":
        return [(op, "median_ms", f"{op} ms", LOWER)
                for op in ("tags-first", "tags-last", "catalog-first", "catalog-last")]
    if section == "fanout":
        return [("pull", m, label, better) for m, label, better in FANOUT_METRICS]
    if section == "docker":
        return [(op, "seconds", f"docker {op} s", LOWER) for op in ("push", "pull")]
    return []


def summarize(samples: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{op: {target: {metric: {median, min, max}, "n": n}}} over the numeric metrics."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in samples:
        groups.setdefault((s["op"], s["target"]), []).append(s)
    for (op, target), rows in groups.items():
        entry: dict[str, Any] = {"n": len(rows)}
        for key in rows[0]:
            values = [r.get(key) for r in rows]
            nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
            if key != "round" and nums and len(nums) == len(values):
                entry[key] = {"median": statistics.median(nums), "min": min(nums),
                              "max": max(nums)}
        out.setdefault(op, {})[target] = entry
    return out


def median(summary: dict[str, Any], op: str, target: str, metric: str) -> float | None:
    value = summary.get(op, {}).get(target, {}).get(metric)
    return None if value is None else float(value["median"])


def check(group: str, what: str, value: float | None, reference: float | None, better: str,
          factor: float = 1.0) -> dict[str, Any] | None:
    if value is None or reference is None:
        return None
    bound = reference * factor
    ok = value >= bound if better == HIGHER else value <= bound
    return {"group": group, "what": what, "value": value, "bound": bound, "pass": ok}


def evaluate(summaries: dict[str, Any], levels: tuple[int, ...]) -> list[dict[str, Any]]:
    """The targets of issues 10 and 21 as PASS/MISS checks. `fs`: ours-fs, like for like with
    Distribution's filesystem storage; `s3`: ours-s3, informative (moto does the work); `rgw`:
    ours-rgw, informative (RGW shares the cores); `auth-ratio`: ours-fs-auth's read rates
    over ours-fs's in the same run, at least AUTH_RATIO."""
    checks: list[dict[str, Any] | None] = []
    limits = summaries.get("limits", {})
    sha = median(limits, "sha256", "machine", "mb_per_s")
    sendfile = median(limits, "sendfile-curl", "machine", "mb_per_s")
    for name, group in (("ours-fs", "fs"), ("ours-s3", "s3"), ("ours-rgw", "rgw"),
                        ("ours-fs-granian", "granian"), ("ours-fs-nofsync", "nofsync"),
                        ("ours-fs-workers", "workers"), ("ours-fs-cache", "cache"),
                        ("ours-fs-auth", "auth")):
        for section, summary in summaries.items():
            for op, metric, label, better in rows_for(section, levels):
                ref_op = "pull" if op == "pull-streamed" else op
                ref = median(summary, ref_op, DISTRIBUTION, metric)
                checks.append(check(group, f"{section}: {label} >= Distribution's"
                                    if better == HIGHER else
                                    f"{section}: {label} <= Distribution's",
                                    median(summary, op, name, metric), ref, better))
        for section in ("blobs", "concurrency"):
            summary = summaries.get(section, {})
            for op in ("push-monolithic", "push-chunked"):
                checks.append(check(group, f"{section}: {op} MB/s >= 70% of sha256",
                                    median(summary, op, name, "mb_per_s"), sha, HIGHER, 0.7))
            for op in ("pull", "pull-streamed"):
                checks.append(check(group, f"{section}: {op} MB/s >= 70% of sendfile",
                                    median(summary, op, name, "mb_per_s"), sendfile, HIGHER, 0.7))
        if 64 in levels:
            manifests = summaries.get("manifests", {})
            checks.append(check(group, "manifests: GET x64 req/s >= Distribution's (headline)",
                                median(manifests, "get-c64", name, "rps"),
                                median(manifests, "get-c64", DISTRIBUTION, "rps"), HIGHER))
        fanout = summaries.get("fanout", {})
        checks.append(check(group, "fanout: all clients done s <= Distribution's (headline)",
                            median(fanout, "pull", name, "total_s"),
                            median(fanout, "pull", DISTRIBUTION, "total_s"), LOWER))
        for op in ("push-monolithic", "push-chunked"):
            rss = median(summaries.get("blobs", {}), op, name, "peak_rss_mib")
            checks.append(check(group, f"blobs: peak RSS during {op} < 150 MB",
                                None if rss is None else rss * MiB / MB, 150.0, LOWER))
    manifests = summaries.get("manifests", {})
    for op in READ_OPS:
        for c in levels:
            on = median(manifests, f"{op}-c{c}", "ours-fs-auth", "rps")
            off = median(manifests, f"{op}-c{c}", "ours-fs", "rps")
            label = f"{manifests_rps.LABELS[op]} x{c} req/s"
            ratio = check("auth-ratio", f"manifests: {label} with auth >= "
                          f"{AUTH_RATIO:.0%} of ours-fs's", on, off, HIGHER, AUTH_RATIO)
            if ratio is not None:
                ratio.update(op=op, clients=c, ratio=on / off if on is not None and off else None)
            checks.append(ratio)
    return [c for c in checks if c is not None]


def fmt_value(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def format_tables(report: dict[str, Any]) -> str:
    names = [t for t in TARGET_NAMES if t in report["targets"]]
    levels = tuple(report["sizes"]["levels"])
    lines: list[str] = []
    for section, data in report["sections"].items():
        head = f"== {section}: {describe_section(section, report)}"
        if data.get("error"):
            lines += [head, f"   ERROR: {data['error']}", ""]
            continue
        if data.get("info", {}).get("skipped"):
            lines += [head, f"   SKIPPED: {data['info']['skipped']}", ""]
            continue
        summary = report["summary"].get(section, {})
        cols = ["machine"] if section == "limits" else names
        ratio_cols = [] if section == "limits" or DISTRIBUTION not in names else [
            n for n in names if n != DISTRIBUTION]
        table = [("figure", *cols, *(f"{n}/dist" for n in ratio_cols))]
        for op, metric, label, better in rows_for(section, levels):
            values = [median(summary, op, c, metric) for c in cols]
            if all(v is None for v in values):
                continue
            ratios = []
            ref = median(summary, "pull" if op == "pull-streamed" else op, DISTRIBUTION, metric)
            for n in ratio_cols:
                v = median(summary, op, n, metric)
                if v is None or not ref:
                    ratios.append("-")
                    continue
                ok = v >= ref if better == HIGHER else v <= ref
                ratios.append(f"{v / ref:.2f}x {'ok' if ok else 'MISS'}")
            table.append((label, *(fmt_value(v) for v in values), *ratios))
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        lines.append(head)
        for r in table:
            lines.append("   " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                           for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        lines.append("")
    checks = report.get("checks", [])
    if checks:
        lines.append("== targets (issues 10, 21): PASS/MISS; `s3` and `rgw` rows are informative "
                     "(the S3 server shares the cores)")
        absolute = [c for c in checks if c["group"] != "auth-ratio" and (
            "Distribution's" not in c["what"] or "headline" in c["what"])]
        for c in absolute:
            if c["group"] == "fs":
                lines.append(f"   {'PASS' if c['pass'] else 'MISS'}  {c['what']}: "
                             f"{fmt_value(c['value'])} vs {fmt_value(c['bound'])}")
        for group in ("fs", "workers", "cache", "auth", "nofsync", "granian", "s3", "rgw"):
            rel = [c for c in checks if c["group"] == group and "Distribution's" in c["what"]
                   and "headline" not in c["what"]]
            if rel:
                misses = [c["what"].split(" >=")[0].split(" <=")[0] for c in rel if not c["pass"]]
                lines.append(f"   [{group}] every figure at least Distribution's: "
                             f"{len(rel) - len(misses)}/{len(rel)} PASS"
                             + (f"; MISS: {', '.join(misses)}"
                                if misses and group not in ("s3", "rgw") else ""))
        for group, name in (("workers", "ours-fs-workers"), ("cache", "ours-fs-cache"),
                            ("auth", "ours-fs-auth"), ("nofsync", "ours-fs-nofsync"),
                            ("granian", "ours-fs-granian"), ("s3", "ours-s3"),
                            ("rgw", "ours-rgw")):
            others = [c for c in absolute if c["group"] == group]
            if others:
                passed = sum(c["pass"] for c in others)
                lines.append(f"   [{group}] the targets above on {name}: {passed}/{len(others)} "
                             "PASS (see `checks` in the JSON)")
        lines += auth_lines([c for c in checks if c["group"] == "auth-ratio"])
    return "\n".join(lines)


def auth_lines(ratios: list[dict[str, Any]]) -> list[str]:
    """Issue 21's auth target: every read rate of ours-fs-auth over ours-fs's, one line per op."""
    if not ratios:
        return []
    lines = [f"   [auth on/off] read req/s, ours-fs-auth over ours-fs in this run (issue 21: at"
             f" least {AUTH_RATIO:.0%} of auth off): {sum(c['pass'] for c in ratios)}/"
             f"{len(ratios)} PASS"]
    for op in READ_OPS:
        mine = [c for c in ratios if c["op"] == op]
        if mine:
            lines.append(f"      {manifests_rps.LABELS[op]:<15}" + "  ".join(
                f"x{c['clients']} {fmt_value(c['ratio'])} {'PASS' if c['pass'] else 'MISS'}"
                for c in mine))
    return lines


def describe_section(section: str, report: dict[str, Any]) -> str:
    info = report["sections"][section].get("info", {})
    rounds = report["args"]["rounds"]
    med = f"medians of {rounds} round(s)"
    if section == "limits":
        return f"this machine, {fmt_size(info.get('size', 0))}, {med}"
    if section == "blobs":
        return (f"one {fmt_size(info.get('size', 0))} blob, chunks of "
                f"{fmt_size(info.get('chunk_size', 0))}, {med}; MB = 10^6 B")
    if section == "concurrency":
        return (f"{info.get('clients')} clients x {fmt_size(info.get('blob_size', 0))} "
                f"(chunks {fmt_size(info.get('chunk_size', 0))}), aggregate, {med}")
    if section == "manifests":
        client = info.get("client", "python")
        by = ("GETs by wrk, HEAD and PUT by the Python client" if client == "wrk"
              else "the Python client")
        return (f"{info.get('duration_s')} s per level after {info.get('warmup_s')} s warm-up,"
                f" {by}, {med}")
    if section == "fanout":
        sizes = info.get("layer_sizes", [])
        return (f"{info.get('clients')} clients at once pull {len(sizes)} layers "
                f"({' + '.join(fmt_size(n) for n in sizes)}) and a config, {med}")
    if section == "listing":
        s3 = f" (S3 targets: {info.get('entries_s3')})" if info.get("entries_s3") != info.get(
            "entries") else ""
        return (f"{info.get('entries')} tags and repositories{s3}, page n={info.get('page')},"
                " medians of one run each")
    if section == "docker":
        sizes = report["sizes"]
        layers = sizes["layers"] * sizes["layer_size"]
        driver = f", {info['storage_driver']}" if "storage_driver" in info else ""
        return f"{sizes['layers']} layers, {layers / MB:.0f} MB{driver}, {med}"
    return med


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark suite: our registry (filesystem, S3 on moto) vs. Distribution.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small sizes and one round: a smoke check of every section")
    p.add_argument("--only", type=lambda t: parse_list(t, SECTIONS, "section"),
                   default=list(SECTIONS), help=f"sections, comma-separated: {','.join(SECTIONS)}")
    p.add_argument("--targets", type=lambda t: parse_list(t, TARGET_NAMES, "target"),
                   default=list(DEFAULT_TARGETS), help="targets, comma-separated")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick: 1)")
    p.add_argument("--blob-size", type=parse_size, default=None,
                   help="blob of the blobs section (default 1GiB; --quick: 64MiB)")
    p.add_argument("--output", type=Path, default=None,
                   help="JSON report (default bench/results/run-<UTC timestamp>.json)")
    p.add_argument("--tmp-dir", type=Path, default=None, help="parent of the work directory")
    p.add_argument("--keep-tmp", action="store_true", help="keep the work directory")
    p.add_argument("--python", default=sys.executable, help="python that runs our server")
    p.add_argument("--distribution-bin", default=DISTRIBUTION_BIN, help="Distribution binary")
    p.add_argument("--client", choices=manifests_rps.CLIENTS, default=None,
                   help="load generator of the manifests section's GETs (default: wrk if it is"
                        " on PATH, else python)")
    args = p.parse_args(argv)
    if args.client is None:
        args.client = manifests_rps.default_client()
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    return args


def preflight(args: argparse.Namespace) -> None:
    if shutil.which("curl") is None:
        raise SystemExit("curl not found")
    if DISTRIBUTION in args.targets and shutil.which(args.distribution_bin) is None:
        raise SystemExit(f"{args.distribution_bin} not found (apt-get install -y docker-registry)")
    if "ours-s3" in args.targets and (why := moto_missing()) is not None:
        raise SystemExit(f"ours-s3: {why}")
    if "ours-rgw" in args.targets and (why := rgw_missing()) is not None:
        raise SystemExit(f"ours-rgw: {why}")
    if "manifests" in args.only and args.client == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("--client wrk: wrk not found (apt-get install -y wrk)")
    if "listing" in args.only:
        try:
            import httpx  # noqa: F401
        except ImportError:
            raise SystemExit("the listing section needs httpx (pip install httpx)") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preflight(args)
    sizes = QUICK if args.quick else FULL
    if args.blob_size is not None:
        sizes = Sizes(**{**sizes.__dict__, "blob": args.blob_size})
    targets = [Target(n, python=args.python, distribution_bin=args.distribution_bin)
               for n in args.targets]
    base = Path(tempfile.mkdtemp(prefix="bench-run-", dir=args.tmp_dir)).resolve()
    need = 3 * max(sizes.blob, sizes.limits) + 6 * sizes.blob + 2 * GiB
    if shutil.disk_usage(base).free < need:
        shutil.rmtree(base, ignore_errors=True)
        raise SystemExit(f"not enough free space in {base}: need {fmt_size(need)}")

    started = dt.datetime.now(dt.UTC)
    output = args.output or RESULTS_DIR / f"run-{started:%Y%m%dT%H%M%SZ}.json"
    py = args.python
    report: dict[str, Any] = {
        "benchmark": "run",
        "started": started.isoformat(),
        "complete": False,
        "args": {"quick": args.quick, "only": args.only, "targets": args.targets,
                 "rounds": args.rounds, "client": args.client},
        "sizes": sizes.__dict__,
        "machine": machine_info(
            {}, curl=run_quiet(["curl", "--version"]),
            moto=run_quiet([py, "-c", "import moto; print(moto.__version__)"]),
            docker=run_quiet(["docker", "--version"]),
            wrk=run_quiet(["wrk", "--version"]) if shutil.which("wrk") else None,
            ceph=rgw_version() if "ours-rgw" in args.targets else None,
            tmp_filesystem=tmp_filesystem(base)),
        "targets": {t.name: {"cmd": t.describe(), "version": t.version()} for t in targets},
        "git_commit": git_commit(),
        "git_dirty": bool(run_quiet(["git", "-C", str(Path(__file__).resolve().parent.parent),
                                     "status", "--porcelain", "--", "registry", "storage"])),
        "sections": {},
        "summary": {},
    }
    ctx = Context(args, sizes, targets, base)
    t_run = time.perf_counter()

    def body() -> None:
        for section in args.only:
            log(f"\n=== {section} ===")
            t0 = time.perf_counter()
            entry: dict[str, Any] = {"samples": [], "info": {}, "error": None}
            report["sections"][section] = entry
            # Only the AUTH_SECTIONS' clients log in: the others leave ours-fs-auth out.
            ctx.targets = [t for t in targets if not t.auth or section in AUTH_SECTIONS]
            left_out = [t.name for t in targets if t not in ctx.targets]
            if left_out and section != "limits":
                log(f"[{section}] without {', '.join(left_out)} (only "
                    f"{', '.join(AUTH_SECTIONS)} log in)")
            try:
                if ctx.targets or section == "limits":
                    entry["samples"], entry["info"] = SECTION_FUNCS[section](ctx)
                else:
                    entry["info"] = {"skipped": f"no target: {', '.join(left_out)} need a login"
                                                f" only {', '.join(AUTH_SECTIONS)} make"}
            except Exception as exc:  # one broken section must not lose the others
                entry["error"] = f"{type(exc).__name__}: {exc}"
                log(f"[{section}] ERROR: {entry['error']}")
            entry["seconds"] = time.perf_counter() - t0
            report["summary"][section] = summarize(entry["samples"])
            log(f"[{section}] {entry['seconds']:.0f}s")
        report["complete"] = True

    try:
        rc = run_guarded(body)
    finally:
        if args.keep_tmp:
            log(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    report["finished"] = dt.datetime.now(dt.UTC).isoformat()
    report["seconds"] = time.perf_counter() - t_run
    report["machine"]["loadavg_end"] = os.getloadavg()
    for section, entry in report["sections"].items():
        report["summary"][section] = summarize(entry["samples"])
    report["checks"] = evaluate(report["summary"], sizes.levels)
    m = report["machine"]
    print(f"\nbench/run.py on {m['nproc']} CPU(s) {m['cpu_model']}, "
          f"{(m['mem_total_bytes'] or 0) / GiB:.0f} GiB RAM, {m['kernel'].split(' #')[0]}, "
          f"git {str(report['git_commit'])[:10]}{' (dirty)' if report['git_dirty'] else ''}; "
          f"{report['seconds'] / 60:.1f} min\n")
    print(format_tables(report))
    write_report(output, report, indent=1)
    if not args.quick:
        import compare  # imports this module: loaded late

        earlier = compare.full_runs(exclude=output)
        if earlier:
            print(f"\n== compared with the previous full run ({earlier[-1].name})")
            compare.main([str(earlier[-1]), str(output), "--regressions-only"])
    return rc


if __name__ == "__main__":
    sys.exit(main())
