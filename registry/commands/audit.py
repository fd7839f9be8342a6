"""`registry audit [--since WHEN] [--limit N]`: the audit trail, oldest first, one JSON object
per line (who, what, target, when, from where)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from registry.commands.common import run_on_store
from registry.settings import Settings

if TYPE_CHECKING:
    from storage.store import Store

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _since(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise SystemExit(f"registry: --since must be an ISO date or time, got {value!r}") \
            from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def run(settings: Settings, args: argparse.Namespace) -> int:
    since = _since(args.since)

    async def show(store: Store) -> None:
        shown = 0
        async for entry in store.audit.entries(since):
            if args.limit is not None and shown >= args.limit:
                return
            entry["when"] = dt.datetime.fromtimestamp(entry["time"], dt.UTC).isoformat()
            print(json.dumps(entry, sort_keys=True))
            shown += 1

    return run_on_store(settings, show)


def add_parser(commands: Subparsers, common: Callable[[argparse.ArgumentParser], None]) -> None:
    help = "print the audit trail (control-plane changes and deletes)"
    parser = commands.add_parser("audit", help=help, description=help)
    common(parser)
    parser.add_argument("--since", metavar="WHEN", help="ISO date or time (UTC if no zone)")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N entries")
    parser.set_defaults(audit=True)
