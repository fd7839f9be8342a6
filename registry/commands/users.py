"""`registry user ...` and `registry group ...`: users, their access keys, groups, members.
Each change prints one line naming what it changed."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime

from auth.identities import Directory
from registry.commands.common import CommandError, print_lines


async def user_add(directory: Directory, args: argparse.Namespace) -> None:
    await directory.add_user(args.name, _password(args))
    print(f"added user {args.name}")


async def user_passwd(directory: Directory, args: argparse.Namespace) -> None:
    await directory.set_password(args.name, _password(args))
    print(f"set the password of user {args.name}")


async def user_remove(directory: Directory, args: argparse.Namespace) -> None:
    await directory.remove_user(args.name)
    print(f"removed user {args.name} and its access keys")


async def user_revoke_tokens(directory: Directory, args: argparse.Namespace) -> None:
    await directory.revoke_tokens(args.name)
    print(f"revoked the refresh and authorization tokens of user {args.name}")


async def user_disable(directory: Directory, args: argparse.Namespace) -> None:
    await directory.set_user_enabled(args.name, False)
    print(f"disabled user {args.name}")


async def user_enable(directory: Directory, args: argparse.Namespace) -> None:
    await directory.set_user_enabled(args.name, True)
    print(f"enabled user {args.name}")


async def user_list(directory: Directory, args: argparse.Namespace) -> None:
    print_lines(await directory.list_users())


async def key_create(directory: Directory, args: argparse.Namespace) -> None:
    key = await directory.create_access_key(args.name)
    # stdout is the JSON scripts parse; the line saying what happened goes beside it.
    print(json.dumps({"UserName": args.name, "AccessKeyId": key.key_id, "Status": "Active",
                      "SecretAccessKey": key.secret}, indent=4))
    print(f"created access key {key.key_id} for user {args.name}", file=sys.stderr)


async def key_delete(directory: Directory, args: argparse.Namespace) -> None:
    await _check_owner(directory, args)
    await directory.delete_access_key(args.key_id)
    print(f"deleted access key {args.key_id}{_of(args)}")


async def key_list(directory: Directory, args: argparse.Namespace) -> None:
    print_lines(f"{key.key_id}\t{key.status}\t{_iso(key.created_at)}"
           for key in await directory.list_access_keys(args.name))


async def key_update(directory: Directory, args: argparse.Namespace) -> None:
    await _check_owner(directory, args)
    active = args.status == "Active"
    await directory.set_access_key_status(args.key_id, active)
    print(f"{'activated' if active else 'deactivated'} access key {args.key_id}{_of(args)}")


async def _check_owner(directory: Directory, args: argparse.Namespace) -> None:
    """A key named with its user must be that user's: anyone else's is left alone."""
    if args.name is None:
        return
    if args.key_id not in {key.key_id for key in await directory.list_access_keys(args.name)}:
        raise CommandError(f"user {args.name!r} has no access key {args.key_id[:40]!r}")


def _of(args: argparse.Namespace) -> str:
    return "" if args.name is None else f" of user {args.name}"


async def group_add(directory: Directory, args: argparse.Namespace) -> None:
    await directory.add_group(args.name)
    print(f"added group {args.name}")


async def group_remove(directory: Directory, args: argparse.Namespace) -> None:
    await directory.remove_group(args.name)
    print(f"removed group {args.name}")


async def group_list(directory: Directory, args: argparse.Namespace) -> None:
    print_lines(await directory.list_groups())


async def member_add(directory: Directory, args: argparse.Namespace) -> None:
    await directory.add_member(args.group, args.user)
    print(f"added user {args.user} to group {args.group}")


async def member_remove(directory: Directory, args: argparse.Namespace) -> None:
    await directory.remove_member(args.group, args.user)
    print(f"removed user {args.user} from group {args.group}")


async def member_list(directory: Directory, args: argparse.Namespace) -> None:
    if await directory.get_group(args.group) is None:
        raise CommandError(f"no group named {args.group!r}")
    print_lines(await directory.group_members(args.group))


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.read()
        # One trailing newline is the line's end, not part of the password.
        if password.endswith("\n"):
            password = password[:-1].removesuffix("\r")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat the password: ") != password:
            raise CommandError("the passwords do not match")
    else:
        raise CommandError("no terminal to ask for the password on: use --password-stdin", 2)
    if not password:
        raise CommandError("the password must not be empty")
    return password


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
