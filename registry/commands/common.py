"""What the subcommands share: the error that ends a command, and output helpers."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from auth.identities import Directory
from registry.settings import Settings
from storage.errors import DriverError, RegistryError

if TYPE_CHECKING:
    from storage.store import Store

Handler = Callable[[Directory, argparse.Namespace], Awaitable[None]]


class CommandError(Exception):
    """A user mistake: printed as `registry: <message>`, then exit with `status`."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        print(line)


def run_on_store(settings: Settings, work: Callable[[Store], Awaitable[int | None]],
                 user_errors: tuple[type[Exception], ...] = ()) -> int:
    """Run `work` on the registry's storage (built as the server builds it, closed after) and
    turn failures into the commands' exit statuses: CommandError and `user_errors` print
    `registry: <message>`, storage failures `registry: storage: <message>` (exit 1)."""
    from registry.app import build_store

    async def body() -> int | None:
        store = build_store(settings)
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        status = asyncio.run(body())
    except CommandError as exc:
        print(f"registry: {exc}", file=sys.stderr)
        return exc.status
    except user_errors as exc:
        print(f"registry: {exc}", file=sys.stderr)
        return 1
    except (RegistryError, DriverError, OSError) as exc:
        print(f"registry: storage: {exc}", file=sys.stderr)
        return 1
    return status or 0
