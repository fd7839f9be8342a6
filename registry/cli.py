"""The `registry` command line."""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from registry.commands import audit, config, events, gc, iam, lifecycle, taskdef, upstream
from registry.settings import Settings, SettingsError, load_settings

_SERVE = """run the registry server

Settings come from, in rising priority: defaults, the TOML file named by
--config FILE (without it no file is read), REGISTRY_* environment variables,
then the flags below. Every key can be set from the environment as
REGISTRY_<SECTION>_<KEY>, nested sections joined by _: REGISTRY_SERVER_PORT,
REGISTRY_STORAGE_FILESYSTEM_ROOT, REGISTRY_SERVER_TLS_CERT_FILE. An unknown
REGISTRY_* variable is ignored with a warning (Kubernetes' REGISTRY_SERVICE_*
and REGISTRY_PORT* pass silently); an unknown key in the file, or a value of the
wrong type anywhere, stops start-up naming the key. `registry config check`
prints the effective settings; docs/configuration.md lists every key."""


def version() -> str:
    """The installed distribution's version, else the source tree's pyproject.toml."""
    try:
        return metadata.version("ecr-registry")
    except metadata.PackageNotFoundError:
        pass
    try:
        project = tomllib.loads((Path(__file__).resolve().parent.parent
                                 / "pyproject.toml").read_text())
        return str(project["project"]["version"])
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        return "unknown"


class _Version(argparse.Action):
    """`--version`, looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **options: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"registry {version()}")
        parser.exit()


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="filesystem storage root (default ./data)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="registry", description="ECR-compatible OCI registry")
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the registry server", description=_SERVE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 5000)")
    serve.add_argument("--workers", type=int,
                       help="processes serving the port (default 1; about one per core)")
    serve.add_argument("--allow-anonymous", action="store_true", default=None,
                       help="serve without authentication on a non-loopback address")
    iam.add_parsers(commands, _common)
    lifecycle.add_parsers(commands, _common)
    gc.add_parser(commands, _common)
    events.add_parser(commands, _common)
    upstream.add_parser(commands, _common)
    config.add_parser(commands, _common)
    audit.add_parser(commands, _common)
    taskdef.add_parser(commands, _common)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {
        "storage.filesystem.root": getattr(args, "data_dir", None),
        "server.host": getattr(args, "host", None),
        "server.port": getattr(args, "port", None),
        "server.workers": getattr(args, "workers", None),
        "auth.allow_anonymous": getattr(args, "allow_anonymous", None),
    }
    return load_settings(getattr(args, "config_file", None) or args.config,
                         overrides=overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except SettingsError as exc:
        print(f"registry: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from registry.server import serve

        return serve(settings)
    if getattr(args, "taskdef", False):
        return taskdef.run(settings, args)
    if getattr(args, "audit", False):
        return audit.run(settings, args)
    if getattr(args, "config_check", False):
        return config.run(settings, args)
    if getattr(args, "upstream", False):
        return upstream.run(settings, args)
    if getattr(args, "events", False):
        return events.run(settings, args)
    if getattr(args, "gc", False):
        return gc.run(settings, args)
    if hasattr(args, "store_handler"):
        return lifecycle.run(settings, args)
    if hasattr(args, "handler"):
        return iam.run(settings, args)
    return 2

