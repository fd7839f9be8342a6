"""`registry upstream-secret put|delete NAME`: credentials for pull-through cache upstreams,
stored sealed with `auth.secret_key` and referenced from a rule as
`arn:aws:secretsmanager:<region>:<account>:secret:ecr-pullthroughcache/<NAME>`."""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from auth.secrets import SecretBox
from registry.commands.common import run_on_store
from registry.settings import Settings

if TYPE_CHECKING:
    from storage.store import Store

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
_NAME = re.compile(r"[a-zA-Z0-9/_+=.@-]{1,512}")


def run(settings: Settings, args: argparse.Namespace) -> int:
    if not _NAME.fullmatch(args.name) or ".." in args.name:
        print(f"registry: invalid secret name {args.name[:80]!r}", file=sys.stderr)
        return 2
    if args.upstream_command == "put" and not settings.auth.secret_key:
        print("registry: upstream secrets are sealed with auth.secret_key: set it "
              "(REGISTRY_AUTH_SECRET_KEY)", file=sys.stderr)
        return 1

    async def work(store: Store) -> int:
        if args.upstream_command == "delete":
            if not await store.pull_through.delete_secret(args.name):
                print(f"registry: no upstream secret named {args.name}", file=sys.stderr)
                return 1
            print(f"deleted upstream secret {args.name}")
            return 0
        password = (sys.stdin.readline().rstrip("\n") if args.password_stdin
                    else getpass.getpass("upstream password or token: "))
        assert settings.auth.secret_key is not None
        sealed = SecretBox(settings.auth.secret_key).seal(
            json.dumps({"username": args.username, "accessToken": password}).encode(),
            "upstream-secret")
        await store.pull_through.put_secret(args.name, sealed)
        # stdout is the ARN scripts pass on to a rule; the line saying what happened goes beside.
        print(f"arn:aws:secretsmanager:{settings.auth.region}:{settings.auth.account_id}:secret:"
              f"ecr-pullthroughcache/{args.name}")
        print(f"stored upstream secret {args.name} (user {args.username})", file=sys.stderr)
        return 0

    return run_on_store(settings, work)


def add_parser(commands: Subparsers, common: Callable[[argparse.ArgumentParser], None]) -> None:
    group = commands.add_parser("upstream-secret", help="credentials for pull-through upstreams",
                                description="credentials for pull-through cache upstreams")
    sub = group.add_subparsers(dest="upstream_command", required=True, metavar="COMMAND")
    put = sub.add_parser("put", help="store (or replace) a secret; prints its ARN")
    common(put)
    put.add_argument("name", metavar="NAME")
    put.add_argument("--username", required=True)
    put.add_argument("--password-stdin", action="store_true",
                     help="read the password or token from stdin (else prompt)")
    delete = sub.add_parser("delete", help="delete a secret")
    common(delete)
    delete.add_argument("name", metavar="NAME")
    for parser in (put, delete):
        parser.set_defaults(upstream=True)
