"""Command line entry point: select workflows, run their checks, print results, clean up."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import TextIO

import httpx

from . import discovery, management, pull, push_blobs, push_manifests, referrers  # noqa: F401
from .client import RegistryClient
from .data import token
from .framework import CHECKS, WORKFLOWS, Check, Context, Failed, Outcome, Skipped
from .ops import cleanup

NAME_RE = re.compile(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m conformance",
        description="Check a registry against the OCI Distribution Spec.",
    )
    parser.add_argument("base_url", help="registry root, e.g. http://127.0.0.1:5000")
    parser.add_argument("--namespace", help="repository to use (default: conformance/<random>)")
    parser.add_argument("--crossmount-namespace", metavar="NAME",
                        help="repository to mount blobs into (default: <namespace>-crossmount)")
    parser.add_argument("--username", help="user for Basic auth and token requests")
    parser.add_argument("--password", help="password or token for --username")
    parser.add_argument("--workflows", default=",".join(WORKFLOWS),
                        help=f"comma-separated subset of: {','.join(WORKFLOWS)}")
    parser.add_argument("--no-cleanup", action="store_true",
                        help="leave pushed content in place at the end")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="print every request and response of every check")
    args = parser.parse_args(argv)
    chosen = [w.strip() for w in args.workflows.split(",") if w.strip()]
    unknown = [w for w in chosen if w not in WORKFLOWS]
    if unknown or not chosen:
        parser.error(f"--workflows: unknown {unknown}; choose from {','.join(WORKFLOWS)}")
    args.workflows = chosen
    args.namespace = args.namespace or f"conformance/{token()}"
    args.crossmount_namespace = args.crossmount_namespace or f"{args.namespace}-crossmount"
    for name in (args.namespace, args.crossmount_namespace):
        if not NAME_RE.match(name):
            parser.error(f"{name!r} is not a valid repository name")
    if (args.username is None) != (args.password is None):
        parser.error("--username and --password go together")
    return args


def run_check(ctx: Context, chk: Check) -> Outcome:
    ctx.problems = []
    try:
        chk.func(ctx)
    except Skipped as exc:
        return Outcome("SKIP", str(exc))
    except Failed as exc:
        return Outcome("FAIL", "; ".join([str(exc), *ctx.problems]))
    except httpx.HTTPError as exc:
        return Outcome("FAIL", "; ".join([f"HTTP error: {type(exc).__name__}: {exc}",
                                          *ctx.problems]))
    except Exception as exc:
        return Outcome("FAIL", f"unexpected {type(exc).__name__}: {exc}")
    if ctx.problems:
        return Outcome("FAIL", "; ".join(ctx.problems))
    return Outcome("PASS")


def report(out: TextIO, ctx: Context, chk: Check, outcome: Outcome, first: int,
           notes: int, verbose: bool) -> None:
    line = f"{outcome.status}  [{chk.workflow}] {chk.name}"
    if outcome.reason:
        line += f": {outcome.reason}"
    print(line, file=out)
    exchanges = ctx.client.exchanges[first:]
    for note in ctx.client.auth_notes[notes:]:
        print(f"      auth: {note}", file=out)
    if verbose:
        for ex in exchanges:
            print("      " + ex.detail().replace("\n", "\n      "), file=out)
    elif outcome.status == "FAIL" and exchanges:
        print(f"      last request: {exchanges[-1].summary()}", file=out)
    out.flush()


def run(args: argparse.Namespace, out: TextIO) -> int:
    client = RegistryClient(args.base_url, args.username, args.password)
    ctx = Context(client, args.namespace, args.crossmount_namespace)
    checks = [c for w in WORKFLOWS if w in args.workflows for c in CHECKS if c.workflow == w]
    for chk in checks:
        for key in chk.provides:
            ctx.providers[key] = chk.name
    print(f"OCI Distribution Spec conformance: {client.base_url}", file=out)
    print(f"namespace {ctx.namespace}, cross-mount namespace {ctx.crossmount}, "
          f"workflows {','.join(args.workflows)}", file=out)
    counts = {"PASS": 0, "FAIL": 0, "SKIP": 0}
    try:
        for chk in checks:
            first, notes = len(client.exchanges), len(client.auth_notes)
            outcome = run_check(ctx, chk)
            ctx.outcomes[chk.name] = outcome
            counts[outcome.status] += 1
            report(out, ctx, chk, outcome, first, notes, args.verbose)
        if not args.no_cleanup:
            failures = cleanup(ctx)
            if args.verbose or failures:
                total = len(ctx.pushed_manifests) + len(ctx.pushed_blobs)
                print(f"cleanup: {total} deletes, {failures} not accepted (ignored)", file=out)
    finally:
        client.close()
    summary = f"{counts['PASS']} passed, {counts['FAIL']} failed"
    if counts["SKIP"]:
        summary += f", {counts['SKIP']} skipped"
    print(summary, file=out)
    return 1 if counts["FAIL"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv), sys.stdout)
