#!/usr/bin/env python3
"""Listing benchmark: tags list and catalog pagination, our registry vs. CNCF Distribution 2.8.

Listing must cost in proportion to the page, not to the registry.  For each registry and
each size N (default 1,000 and 10,000) this script starts a fresh server on a free loopback
port with an empty data dir and

1. pushes one config blob, one layer blob and one manifest to ``bench/tags``, then tags
   that manifest N times (``PUT /v2/bench/tags/manifests/<tag>``, same body; tag names of
   several shapes, inserted in random order, so the server has to sort them);
2. creates N repositories ``bench/repo-NNNNNN`` (random order), each by a cross-repo mount
   of the layer from ``bench/tags`` (falling back to a monolithic upload if the server
   answers 202 instead of 201);
3. waits ``--settle`` seconds (our filesystem driver caches a directory listing only once
   the directory has been unchanged for 2 s), fetches the full tag list and catalog by
   following ``Link`` headers (checking order, completeness and the headers), and then
4. times four requests, each ``--warmup`` times untimed and ``--repeat`` times timed,
   sequentially on one keep-alive ``httpx.Client``: the first and the last page (n=100)
   of the tag list and of the catalog.

The table shows median and p90 latency, and the ratio largest-N / smallest-N of the
medians, which must be <= 2.0 (PASS).  Setup is not timed as a benchmark but reported.

Usage (see bench/README.md):

    python bench/listing.py                              # both registries, N = 1000, 10000
    python bench/listing.py --only ours --sizes 1000     # quick look

Needs httpx (``pip install httpx``); otherwise standard library only (Linux). Servers,
machine info and the JSON report come from bench/common.py.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    REGISTRY_NAMES,
    REPO_ROOT,
    RESULTS_DIR,
    RegistrySpec,
    Server,
    add_server_args,
    git_commit,
    log,
    machine_info,
    read_text,
    registry_specs,
    run_guarded,
    write_report,
)

try:
    import httpx
except ImportError:  # pragma: no cover - environment problem, not a code path
    raise SystemExit("bench/listing.py needs httpx: pip install httpx") from None

TAG_REPO = "bench/tags"
REPO_PREFIX = "bench/repo-"
PAGE = 100  # the n of every timed request

OPS = ("tags-first", "tags-last", "catalog-first", "catalog-last")
OP_LABELS = {
    "tags-first": "tags list, first page",
    "tags-last": "tags list, last page",
    "catalog-first": "catalog, first page",
    "catalog-last": "catalog, last page",
}

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"

# Under `log:` in Distribution's config.yml (the rest is common.DISTRIBUTION_CONFIG).
# Our server does not log requests by default (server.access_log = false); Distribution
# logs two lines per request at level info, so both are turned off here to keep log
# writing out of the latency figures.
DISTRIBUTION_LOG = """\
  level: warn
  accesslog:
    disabled: true
"""


# --------------------------------------------------------------------------------------
# Test data
# --------------------------------------------------------------------------------------


def make_tags(n: int, rng: random.Random) -> list[str]:
    """n distinct valid tags in random order. Most are `t-000042`; one in ten each is
    `T-000042` (upper case sorts first), `42` (unpadded: "10" < "9"), `v0.42.0` and
    `_b-42` (underscore sorts between upper and lower case), so byte order matters."""
    tags = []
    for i in range(1, n + 1):
        kind = i % 10
        if kind == 1:
            tags.append(f"T-{i:06d}")
        elif kind == 3:
            tags.append(str(i))
        elif kind == 5:
            tags.append(f"v{i // 100}.{i % 100}.0")
        elif kind == 7:
            tags.append(f"_b-{i}")
        else:
            tags.append(f"t-{i:06d}")
    assert len(set(tags)) == n
    rng.shuffle(tags)
    return tags


def make_repos(n: int, rng: random.Random) -> list[str]:
    repos = [f"{REPO_PREFIX}{i:06d}" for i in range(1, n + 1)]
    rng.shuffle(repos)
    return repos


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    config: bytes
    layer: bytes
    manifest: bytes = b""

    def __post_init__(self) -> None:
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": OCI_CONFIG,
                    "digest": sha256(self.config),
                    "size": len(self.config),
                },
                "layers": [
                    {"mediaType": OCI_LAYER, "digest": sha256(self.layer), "size": len(self.layer)}
                ],
            },
            separators=(",", ":"),
        ).encode()


def make_image(rng: random.Random) -> Image:
    layer = rng.randbytes(1024)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
        },
        separators=(",", ":"),
    ).encode()
    return Image(config, layer)


# --------------------------------------------------------------------------------------
# Setup (concurrent, not benchmarked)
# --------------------------------------------------------------------------------------


def _expect(resp: httpx.Response, codes: Iterable[int], what: str) -> None:
    if resp.status_code not in codes:
        raise RuntimeError(f"{what} -> {resp.status_code}: {resp.text[:500]}")


async def upload_blob(client: httpx.AsyncClient, repo: str, data: bytes) -> None:
    """POST /blobs/uploads/, then PUT <Location>?digest= with the whole body."""
    resp = await client.post(f"/v2/{repo}/blobs/uploads/")
    _expect(resp, (202,), f"POST /v2/{repo}/blobs/uploads/")
    await finish_upload(client, repo, resp, data)


async def finish_upload(
    client: httpx.AsyncClient, repo: str, started: httpx.Response, data: bytes
) -> None:
    location = started.headers.get("Location")
    if not location:
        raise RuntimeError(f"POST /v2/{repo}/blobs/uploads/ -> 202 without Location")
    url = httpx.URL(str(client.base_url)).join(location)
    url = url.copy_merge_params({"digest": sha256(data)})
    resp = await client.put(url, content=data, headers={"Content-Type": "application/octet-stream"})
    _expect(resp, (201,), f"PUT upload of {sha256(data)} to {repo}")


async def run_pool(
    items: list[str], worker: Callable[[str], Awaitable[None]], concurrency: int, label: str
) -> None:
    """Run worker(item) for every item with `concurrency` workers; stop at the first error."""
    it = iter(items)
    done = 0
    total = len(items)
    next_report = time.monotonic() + 10

    async def loop() -> None:
        nonlocal done, next_report
        for item in it:
            await worker(item)
            done += 1
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + 10
                log(f"    {label}: {done}/{total}")

    tasks = [asyncio.create_task(loop()) for _ in range(concurrency)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def setup_registry(
    server: Server, image: Image, tags: list[str], repos: list[str], concurrency: int
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    info: dict[str, Any] = {}
    async with httpx.AsyncClient(
        base_url=server.base_url, limits=limits, timeout=120, trust_env=False
    ) as client:
        t0 = time.perf_counter()
        await upload_blob(client, TAG_REPO, image.config)
        await upload_blob(client, TAG_REPO, image.layer)
        resp = await client.put(
            f"/v2/{TAG_REPO}/manifests/{sha256(image.manifest)}",
            content=image.manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        _expect(resp, (201,), f"PUT manifest by digest to {TAG_REPO}")

        async def tag(name: str) -> None:
            r = await client.put(
                f"/v2/{TAG_REPO}/manifests/{name}",
                content=image.manifest,
                headers={"Content-Type": OCI_MANIFEST},
            )
            _expect(r, (201,), f"PUT /v2/{TAG_REPO}/manifests/{name}")

        await run_pool(tags, tag, concurrency, "tags")
        t1 = time.perf_counter()
        info["tags_seconds"] = t1 - t0
        info["tags_per_second"] = len(tags) / (t1 - t0)

        layer_digest = sha256(image.layer)
        mounted = fallback = 0

        async def create_repo(repo: str) -> None:
            nonlocal mounted, fallback
            r = await client.post(
                f"/v2/{repo}/blobs/uploads/", params={"mount": layer_digest, "from": TAG_REPO}
            )
            if r.status_code == 201:
                mounted += 1
                return
            _expect(r, (202,), f"POST /v2/{repo}/blobs/uploads/?mount=")
            # Mount refused: the server opened an upload session instead; finish it
            # with a monolithic PUT of the layer.
            await finish_upload(client, repo, r, image.layer)
            fallback += 1

        await run_pool(repos, create_repo, concurrency, "repositories")
        t2 = time.perf_counter()
        info["repos_seconds"] = t2 - t1
        info["repos_per_second"] = len(repos) / (t2 - t1)
        info["repos_mounted"] = mounted
        info["repos_uploaded_fallback"] = fallback
    return info


# --------------------------------------------------------------------------------------
# Listing checks and timing
# --------------------------------------------------------------------------------------

_LINK_RE = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')


def next_link(resp: httpx.Response) -> str | None:
    link = resp.headers.get("Link")
    if link is None:
        return None
    m = _LINK_RE.search(link)
    return m.group(1) if m else None


def list_url(op: str, last: str | None) -> str:
    path = f"/v2/{TAG_REPO}/tags/list" if op.startswith("tags") else "/v2/_catalog"
    query = {"n": str(PAGE)}
    if last is not None:
        query["last"] = last
    return f"{path}?{urllib.parse.urlencode(query)}"


def entries_of(op: str, resp: httpx.Response) -> list[str]:
    body = resp.json()
    key = "tags" if op.startswith("tags") else "repositories"
    value = body.get(key)
    return list(value) if isinstance(value, list) else []


def walk_listing(
    client: httpx.Client, kind: str, expected: list[str], problems: list[str]
) -> dict[str, Any]:
    """Fetch the whole tag list or catalog with n=100, following Link headers.

    Returns the full listing as served and notes every deviation from the spec
    (order, duplicates, missing names, oversized pages, Link on the last page, ...)."""
    op = f"{kind}-first"
    url: str | None = list_url(op, None)
    listing: list[str] = []
    pages = 0
    oversized = 0
    link_on_last = False
    while url is not None:
        resp = client.get(url)
        pages += 1
        if resp.status_code != 200:
            problems.append(f"{kind}: GET {url} -> {resp.status_code}: {resp.text[:200]}")
            break
        page = entries_of(op, resp)
        if len(page) > PAGE:
            oversized += 1
        link = next_link(resp)
        if not page:
            if link is not None or pages > 1:
                link_on_last = True  # the previous page promised more, this one is empty
            break
        listing.extend(page)
        if link is None:
            break
        url = link
        if pages > len(expected) + 10:
            problems.append(f"{kind}: pagination does not end after {pages} pages")
            break
    if oversized:
        problems.append(f"{kind}: {oversized} page(s) had more than n={PAGE} entries (n ignored?)")
    if link_on_last:
        problems.append(f"{kind}: Link rel=next on the last page (next page was empty)")
    if listing != sorted(listing):
        bad = next(i for i in range(1, len(listing)) if listing[i - 1] >= listing[i])
        problems.append(
            f"{kind}: listing not in byte order at position {bad}: "
            f"{listing[bad - 1]!r} then {listing[bad]!r}"
        )
    if len(set(listing)) != len(listing):
        problems.append(f"{kind}: {len(listing) - len(set(listing))} duplicate entries")
    missing = set(expected) - set(listing)
    extra = set(listing) - set(expected)
    if missing:
        problems.append(
            f"{kind}: {len(missing)} expected entries missing, e.g. {sorted(missing)[:3]}"
        )
    if extra:
        problems.append(f"{kind}: {len(extra)} unexpected entries: {sorted(extra)[:5]}")
    return {"entries": len(listing), "pages": pages, "listing": listing, "paginated": not oversized}


def percentile(values: list[float], q: float) -> float:
    """q-th percentile, linear interpolation between closest ranks (numpy's default)."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def time_op(
    client: httpx.Client,
    op: str,
    last: str | None,
    expected_page: list[str] | None,
    full: list[str],
    warmup: int,
    repeat: int,
    problems: list[str],
) -> dict[str, Any]:
    """Time GET list_url(op, last). expected_page None: the server ignores n, so every
    response must hold the whole listing `full` (in any order; the walk checked order)."""
    url = list_url(op, last)
    full_set = set(full)
    errors = 0
    wrong = 0
    link_seen = 0
    latencies: list[float] = []
    first_ms = None
    entries = None
    body_bytes = None
    gc.collect()
    gc.disable()
    try:
        for i in range(warmup + repeat):
            t0 = time.perf_counter()
            resp = client.get(url)
            elapsed = (time.perf_counter() - t0) * 1000
            if first_ms is None:
                first_ms = elapsed
            if resp.status_code != 200:
                errors += 1
                if errors == 1:
                    problems.append(f"{op}: GET {url} -> {resp.status_code}: {resp.text[:200]}")
                continue
            if i >= warmup:
                latencies.append(elapsed)
            page = entries_of(op, resp)
            entries = len(page)
            body_bytes = len(resp.content)
            if (
                page != expected_page
                if expected_page is not None
                else len(page) != len(full) or set(page) != full_set
            ):
                wrong += 1
            if next_link(resp) is not None:
                link_seen += 1
    finally:
        gc.enable()
    if wrong:
        problems.append(f"{op}: {wrong} response(s) differed from the expected page")
    if op.endswith("-first") and expected_page is not None and link_seen < warmup + repeat - errors:
        problems.append(f"{op}: first page without Link rel=next")
    if op.endswith("-last") and link_seen:
        problems.append(f"{op}: Link rel=next on the last page")
    if not latencies:
        raise RuntimeError(f"{op}: every request failed ({url})")
    return {
        "url": url,
        "median_ms": statistics.median(latencies),
        "p90_ms": percentile(latencies, 0.9),
        "min_ms": min(latencies),
        "max_ms": max(latencies),
        "mean_ms": statistics.fmean(latencies),
        "first_request_ms": first_ms,
        "requests": len(latencies),
        "errors": errors,
        "wrong_pages": wrong,
        "entries": entries,
        "body_bytes": body_bytes,
        "latencies_ms": [round(x, 4) for x in latencies],
    }


def measure_listings(
    server: Server, tags: list[str], repos: list[str], args: argparse.Namespace, problems: list[str]
) -> dict[str, Any]:
    with httpx.Client(base_url=server.base_url, timeout=120, trust_env=False) as client:
        walks = {
            "tags": walk_listing(client, "tags", tags, problems),
            "catalog": walk_listing(client, "catalog", [TAG_REPO, *repos], problems),
        }
        results: dict[str, Any] = {
            "full_listing": {
                k: {"entries": v["entries"], "pages": v["pages"], "paginated": v["paginated"]}
                for k, v in walks.items()
            }
        }
        for op in OPS:
            kind = op.split("-")[0]
            listing = walks[kind]["listing"]
            if not walks[kind]["paginated"]:
                # n is ignored: time what a client gets, the whole list (marker as below).
                last = listing[-PAGE - 1] if op.endswith("-last") else None
                expected = None
            elif op.endswith("-first"):
                last, expected = None, listing[:PAGE]
            else:
                # The marker is the entry just before the last PAGE entries, as served.
                last = listing[-PAGE - 1] if len(listing) > PAGE else None
                expected = listing[-PAGE:]
            results[op] = time_op(
                client, op, last, expected, listing, args.warmup, args.repeat, problems
            )
            results[op]["last"] = last
            r = results[op]
            log(
                f"    {OP_LABELS[op]:<22} median {r['median_ms']:8.2f} ms"
                f"  p90 {r['p90_ms']:8.2f} ms  ({r['entries']} entries, "
                f"{r['body_bytes']} B; first request {r['first_request_ms']:.1f} ms)"
            )
    return results


def server_log_problems(server: Server) -> list[str]:
    text = read_text(str(server.log_path)) or ""
    hits = [
        line
        for line in text.splitlines()
        if re.search(r"Traceback|\bERROR\b|level=error|panic", line)
    ]
    if not hits:
        return []
    return [f"server log: {len(hits)} error line(s), first: {hits[0][:300]}"]


# --------------------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------------------


@dataclass
class Run:
    registry: str
    size: int
    setup: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def run_one(spec: RegistrySpec, size: int, base: Path, args: argparse.Namespace) -> Run:
    rng = random.Random(f"{args.seed}-{size}")
    image = make_image(rng)
    tags = make_tags(size, rng)
    repos = make_repos(size, rng)
    run = Run(spec.name, size)
    workdir = base / f"{spec.name}-{size}"
    log(f"[{spec.name} N={size}] starting server")
    server = spec.launch(workdir)
    try:
        log(f"  setup: {size} tags + {size} repositories, concurrency {args.concurrency}")
        run.setup = asyncio.run(setup_registry(server, image, tags, repos, args.concurrency))
        s = run.setup
        log(
            f"  setup: tags {s['tags_seconds']:.1f}s ({s['tags_per_second']:.0f}/s), "
            f"repositories {s['repos_seconds']:.1f}s ({s['repos_per_second']:.0f}/s; "
            f"{s['repos_mounted']} mounted, {s['repos_uploaded_fallback']} uploaded)"
        )
        log(f"  waiting {args.settle:g}s for directory listings to settle")
        time.sleep(args.settle)
        run.results = measure_listings(server, tags, repos, args, run.problems)
    finally:
        server.stop()
        run.problems.extend(server_log_problems(server))
        if args.keep_tmp:
            log(f"  kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    for p in run.problems:
        log(f"  PROBLEM: {p}")
    return run


def summarize(runs: list[Run], max_ratio: float) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in REGISTRY_NAMES:
        mine = sorted((r for r in runs if r.registry == name and r.results), key=lambda r: r.size)
        if not mine:
            continue
        per: dict[str, Any] = {}
        for op in OPS:
            rows = {
                str(r.size): {
                    k: r.results[op][k] for k in ("median_ms", "p90_ms", "entries", "errors")
                }
                for r in mine
                if op in r.results
            }
            entry: dict[str, Any] = {"by_size": rows}
            if len(mine) >= 2 and op in mine[0].results and op in mine[-1].results:
                small, big = mine[0], mine[-1]
                ratio = big.results[op]["median_ms"] / small.results[op]["median_ms"]
                entry["ratio"] = {
                    "of": f"{big.size}/{small.size}",
                    "median": ratio,
                    "p90": big.results[op]["p90_ms"] / small.results[op]["p90_ms"],
                    "pass": ratio <= max_ratio,
                }
            per[op] = entry
        summary[name] = per
    return summary


def fmt_size(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def format_table(
    name: str, describe: str, runs: list[Run], summary: dict[str, Any], max_ratio: float
) -> str:
    mine = sorted((r for r in runs if r.registry == name and r.results), key=lambda r: r.size)
    sizes = [r.size for r in mine]
    ratio_head = f"{fmt_size(sizes[-1])}/{fmt_size(sizes[0])}" if len(sizes) >= 2 else "ratio"
    head = ("operation", "size", "entries", "median ms", "p90 ms", ratio_head, "")
    rows: list[tuple[str, ...]] = []
    for op in OPS:
        for r in mine:
            res = r.results[op]
            ratio = summary[name][op].get("ratio") if r is mine[-1] else None
            rows.append(
                (
                    OP_LABELS[op],
                    str(r.size),
                    str(res["entries"]),
                    f"{res['median_ms']:.2f}",
                    f"{res['p90_ms']:.2f}",
                    f"{ratio['median']:.2f}" if ratio else "",
                    ("PASS" if ratio["pass"] else "FAIL") if ratio else "",
                )
            )
    widths = [max(len(row[i]) for row in (head, *rows)) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(w) if i in (0, 6) else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [
        f"{name}: {describe}",
        f"  n={PAGE}; PASS if median({ratio_head}) <= {max_ratio:g}",
        line(head),
    ]
    prev = None
    for row in rows:
        if prev is not None and row[0] != prev:
            out.append("")
        prev = row[0]
        out.append(line(row))
    setups = [
        f"  setup N={r.size}: tags {r.setup['tags_seconds']:.1f}s, repositories "
        f"{r.setup['repos_seconds']:.1f}s ({r.setup['repos_mounted']} mounted, "
        f"{r.setup['repos_uploaded_fallback']} uploaded)"
        for r in mine
        if r.setup
    ]
    notes = []
    if any(r.results[op]["entries"] > PAGE for r in mine for op in OPS):
        notes.append(
            f"  entries > {PAGE}: the server ignored n={PAGE} and returned the "
            "whole list every time"
        )
    problems = [
        f"  problem (N={r.size}): {p}" for r in runs if r.registry == name for p in r.problems
    ]
    return "\n".join([*out, *notes, *setups, *problems])


def git_dirty() -> bool | None:
    out = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "registry", "storage"],
        capture_output=True,
        text=True,
        check=False,
    )
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(x.replace("_", "")) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --sizes {text!r} (example: 1000,10000)") from None
    if not sizes or sizes[0] <= PAGE:
        raise argparse.ArgumentTypeError(f"sizes must be > {PAGE}")
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Tags list and catalog pagination latency vs. registry size: "
        "our registry vs. CNCF Distribution 2.8.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--sizes",
        type=parse_sizes,
        default="1000,10000",
        help="comma-separated N: tags in bench/tags and number of repositories",
    )
    p.add_argument("--only", choices=REGISTRY_NAMES, help="benchmark a single registry")
    p.add_argument("--repeat", type=int, default=200, help="timed requests per operation")
    p.add_argument("--warmup", type=int, default=10, help="untimed requests per operation")
    p.add_argument("--concurrency", type=int, default=16, help="parallel requests in setup")
    p.add_argument(
        "--settle", type=float, default=3.0, help="seconds to wait after setup before listing"
    )
    p.add_argument(
        "--max-ratio",
        type=float,
        default=2.0,
        help="PASS if median(largest N) / median(smallest N) <= this",
    )
    p.add_argument("--seed", default="listing", help="seed for tag names and insertion order")
    add_server_args(p, "listing", "parent of the data dirs", "keep data dirs and server logs")
    args = p.parse_args(argv)
    if args.repeat < 1 or args.warmup < 0 or args.concurrency < 1 or args.settle < 0:
        p.error("--repeat and --concurrency must be >= 1, --warmup and --settle >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    specs = registry_specs(args, "listing.py", DISTRIBUTION_LOG)

    base = Path(tempfile.mkdtemp(prefix="listing-bench-", dir=args.tmp_dir)).resolve()
    started = dt.datetime.now(dt.UTC)
    output = args.output or RESULTS_DIR / f"listing-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    report: dict[str, Any] = {
        "benchmark": "listing",
        "started": started.isoformat(),
        "complete": False,
        "args": {
            "sizes": args.sizes,
            "only": args.only,
            "page": PAGE,
            "repeat": args.repeat,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "settle_s": args.settle,
            "max_ratio": args.max_ratio,
            "seed": args.seed,
            "ours_cmd": args.ours_cmd,
            "distribution_bin": args.distribution_bin,
        },
        "machine": machine_info({"httpx": httpx.__version__}),
        "registries": {s.name: {"cmd": s.describe, "version": s.version} for s in specs},
        "git_commit": git_commit(),
        "git_dirty_registry_or_storage": git_dirty(),
    }
    runs: list[Run] = []

    def run() -> None:
        for spec in specs:
            for size in args.sizes:
                runs.append(run_one(spec, size, base, args))
        report["complete"] = True

    try:
        rc = run_guarded(run)  # stops the servers; Ctrl-C, SIGTERM and SIGHUP end up here
    finally:
        if not args.keep_tmp:
            shutil.rmtree(base, ignore_errors=True)

    summary = summarize(runs, args.max_ratio)
    report.update(
        finished=dt.datetime.now(dt.UTC).isoformat(),
        runs=[
            {
                "registry": r.registry,
                "size": r.size,
                "setup": r.setup,
                "results": r.results,
                "problems": r.problems,
            }
            for r in runs
        ],
        summary=summary,
    )
    report["machine"]["loadavg_end"] = os.getloadavg()
    # Server code is run from the work tree: note if it changed under a long run.
    report["git_commit_end"] = git_commit()
    report["git_dirty_registry_or_storage_end"] = git_dirty()
    tables = [
        format_table(s.name, s.describe, runs, summary, args.max_ratio)
        for s in specs
        if s.name in summary
    ]
    if tables:
        print("\n\n".join(tables))
    if runs:
        write_report(output, report, indent=1)
    failed = [
        f"{name} {op}"
        for name, per in summary.items()
        for op, e in per.items()
        if "ratio" in e and not e["ratio"]["pass"]
    ]
    if rc == 0 and failed:
        log(f"ratio above {args.max_ratio:g}: {', '.join(failed)}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
