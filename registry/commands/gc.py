"""`registry gc [--dry-run] [--grace SECONDS]`: one garbage collection, online, on the storage
the servers use; prints what it removed (or would remove) as one JSON object."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from registry.settings import Settings
from storage.errors import DriverError, RegistryError

if TYPE_CHECKING:
    from storage.gc import GcReport

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        report = asyncio.run(_collect(settings, args))
    except (RegistryError, DriverError, OSError) as exc:
        print(f"registry: storage: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in dataclasses.asdict(report).items()
                      if k != "deleted_manifests"} |
                     {"deleted_manifests": report.deleted_manifests[:1000]}, indent=1))
    print(report.summary(), file=sys.stderr)
    return 0


async def _collect(settings: Settings, args: argparse.Namespace) -> GcReport:
    from registry.app import build_store
    from registry.schedule import gc_options
    from storage.gc import GarbageCollector

    store = build_store(settings)
    try:
        options = gc_options(settings, grace=args.grace, dry_run=args.dry_run,
                             upload_max_age=args.upload_max_age)
        return await GarbageCollector(store, options).run()
    finally:
        await store.close()


def add_parser(commands: Subparsers, common: Callable[[argparse.ArgumentParser], None]) -> None:
    help = "collect garbage while the registry keeps serving"
    parser = commands.add_parser("gc", help=help, description=help)
    common(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="report what would be removed; remove nothing")
    parser.add_argument("--grace", type=float, metavar="SECONDS",
                        help="keep anything written this recently (default: gc.grace)")
    parser.add_argument("--upload-max-age", type=float, metavar="SECONDS",
                        help="purge upload sessions older than this (default: "
                             "gc.upload_max_age)")
    parser.set_defaults(gc=True)
