"""`registry events list [--dead] [ENDPOINT]` and `registry events replay ENDPOINT [ID ...]`:
what is queued for (or dead-lettered at) each configured endpoint, and sending dead-lettered
events again. Output is JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from registry.commands.common import run_on_store
from registry.settings import Settings

if TYPE_CHECKING:
    from storage.store import Store

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def run(settings: Settings, args: argparse.Namespace) -> int:
    from storage.replication import queue_name

    names = [e.name for e in settings.events.endpoints]
    names += [queue_name(d.name) for d in settings.replication.destinations]
    chosen = [args.endpoint] if args.endpoint else names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        print(f"registry: no event endpoint named {unknown[0]!r} (configured: "
              f"{', '.join(names) or 'none'})", file=sys.stderr)
        return 1

    async def work(store: Store) -> None:
        if args.events_command == "replay":
            count = await store.events.replay(chosen[0], args.ids)
            print(f"{count} event(s) queued again for {chosen[0]}", file=sys.stderr)
            return
        for endpoint in chosen:
            listed = (await store.events.dead(endpoint, 100000) if args.dead
                      else await store.events.pending(endpoint, 100000))
            for _, record in listed:
                print(json.dumps({"endpoint": endpoint, **record}))

    return run_on_store(settings, work)


def add_parser(commands: Subparsers, common: Callable[[argparse.ArgumentParser], None]) -> None:
    group = commands.add_parser("events", help="inspect and replay image events",
                                description="inspect and replay image events")
    sub = group.add_subparsers(dest="events_command", required=True, metavar="COMMAND")
    listing = sub.add_parser("list", help="events waiting for delivery (or dead-lettered)")
    common(listing)
    listing.add_argument("endpoint", nargs="?", metavar="ENDPOINT")
    listing.add_argument("--dead", action="store_true", help="the dead-letter list instead")
    replay = sub.add_parser("replay", help="queue dead-lettered events again")
    common(replay)
    replay.add_argument("endpoint", metavar="ENDPOINT")
    replay.add_argument("ids", nargs="*", metavar="ID", help="only these events (default: all)")
    for parser in (listing, replay):
        parser.set_defaults(events=True)
