"""`registry user ...` and `registry group ...`: users, their access keys, groups, members."""

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


async def user_passwd(directory: Directory, args: argparse.Namespace) -> None:
    await directory.set_password(args.name, _password(args))


async def user_remove(directory: Directory, args: argparse.Namespace) -> None:
    await directory.remove_user(args.name)


async def user_revoke_tokens(directory: Directory, args: argparse.Namespace) -> None:
    await directory.revoke_tokens(args.name)


async def user_disable(directory: Directory, args: argparse.Namespace) -> None:
    await directory.set_user_enabled(args.name, False)


async def user_enable(directory: Directory, args: argparse.Namespace) -> None:
    await directory.set_user_enabled(args.name, True)


async def user_list(directory: Directory, args: argparse.Namespace) -> None:
    print_lines(await directory.list_users())


async def key_create(directory: Directory, args: argparse.Namespace) -> None:
    key = await directory.create_access_key(args.name)
    print(json.dumps({"UserName": args.name, "AccessKeyId": key.key_id, "Status": "Active",
                      "SecretAccessKey": key.secret}, indent=4))


async def key_delete(directory: Directory, args: argparse.Namespace) -> None:
    await directory.delete_access_key(args.key_id)


async def key_list(directory: Directory, args: argparse.Namespace) -> None:
    print_lines(f"{key.key_id}\t{key.status}\t{_iso(key.created_at)}"
           for key in await directory.list_access_keys(args.name))


async def key_update(directory: Directory, args: argparse.Namespace) -> None:
    await directory.set_access_key_status(args.key_id, args.status == "Active")


async def group_add(directory: Directory, args: argparse.Namespace) -> None:
    await directory.add_group(args.name)


async def group_remove(directory: Directory, args: argparse.Namespace) -> None:
    await directory.remove_group(args.name)


async def group_list(directory: Directory, args: argparse.Namespace) -> None:
    print_lines(await directory.list_groups())


async def member_add(directory: Directory, args: argparse.Namespace) -> None:
    await directory.add_member(args.group, args.user)


async def member_remove(directory: Directory, args: argparse.Namespace) -> None:
    await directory.remove_member(args.group, args.user)


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
