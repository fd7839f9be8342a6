"""`registry config check [FILE]`: validate settings (file, environment, flags) and print the
effective configuration as JSON, secrets masked."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from typing import Any, TypeAlias

from registry.settings import Settings

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
MASK = "********"


def effective(settings: Any) -> Any:
    """The settings as plain data; fields kept out of repr (secrets) are masked when set."""
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        shown: dict[str, Any] = {}
        for item in dataclasses.fields(settings):
            value = getattr(settings, item.name)
            if not item.repr and value:
                shown[item.name] = MASK if not isinstance(value, dict) else {
                    k: MASK for k in value}
            else:
                shown[item.name] = effective(value)
        return shown
    if isinstance(settings, tuple | list):
        return [effective(v) for v in settings]
    return settings


def run(settings: Settings, args: argparse.Namespace) -> int:
    print(json.dumps(effective(settings), indent=2, sort_keys=True))
    return 0


def add_parser(commands: Subparsers, common: Callable[[argparse.ArgumentParser], None]) -> None:
    group = commands.add_parser("config", help="check the configuration",
                                description="check the configuration")
    sub = group.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    check = sub.add_parser("check", help="validate settings and print the effective ones "
                                         "(secrets masked); exit 2 naming a bad key")
    common(check)
    check.add_argument("config_file", nargs="?", metavar="FILE", help="TOML settings file")
    check.set_defaults(config_check=True)
