"""What the subcommands share: the error that ends a command, and output helpers."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Iterable

from auth.identities import Directory

Handler = Callable[[Directory, argparse.Namespace], Awaitable[None]]


class CommandError(Exception):
    """A user mistake: printed as `registry: <message>`, then exit with `status`."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        print(line)
