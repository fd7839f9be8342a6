"""`registry policy ...`: identity policies of users and groups, repository policies and the
registry policy. Documents are checked before anything is stored; a refusal names the file and
the problem, a change prints one line naming what it changed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from auth.iam_records import check_repository
from auth.identities import Directory, MalformedPolicy
from auth.policy import Policy
from registry.commands.common import CommandError, print_lines


async def attach(directory: Directory, args: argparse.Namespace) -> None:
    text = _read(args.file)
    name = args.policy_name or (None if args.file == "-" else Path(args.file).stem)
    if not name:
        raise CommandError("name the policy with --name", 2)
    kind = await _kind(directory, args)
    try:
        if kind == "user":
            await directory.attach_user_policy(args.target, text, name)
        else:
            await directory.attach_group_policy(args.target, text, name)
    except MalformedPolicy as exc:
        raise CommandError(f"{args.file}: {exc}") from None
    print(f"attached policy {name} to {kind} {args.target}")


async def detach(directory: Directory, args: argparse.Namespace) -> None:
    kind = await _kind(directory, args)
    if kind == "user":
        await directory.detach_user_policy(args.target, args.policy_name)
    else:
        await directory.detach_group_policy(args.target, args.policy_name)
    print(f"detached policy {args.policy_name} from {kind} {args.target}")


async def list_attached(directory: Directory, args: argparse.Namespace) -> None:
    if await _kind(directory, args) == "user":
        print_lines(sorted(await directory.user_policies(args.target)))
    else:
        print_lines(sorted(await directory.group_policies(args.target)))


async def set_repository(directory: Directory, args: argparse.Namespace) -> None:
    text = _read(args.file)
    try:
        await directory.set_repository_policy(args.repository, text)
    except MalformedPolicy as exc:
        raise CommandError(f"{args.file}: {exc}") from None
    print(f"set the policy of repository {args.repository}")


async def get_repository(directory: Directory, args: argparse.Namespace) -> None:
    policy = await directory.repository_policy(check_repository(args.repository))
    if policy is None:
        raise CommandError(f"repository {args.repository!r} has no policy")
    _write(policy)


async def delete_repository(directory: Directory, args: argparse.Namespace) -> None:
    await directory.delete_repository_policy(args.repository)
    print(f"deleted the policy of repository {args.repository}")


async def set_registry(directory: Directory, args: argparse.Namespace) -> None:
    text = _read(args.file)
    try:
        await directory.set_registry_policy(text)
    except MalformedPolicy as exc:
        raise CommandError(f"{args.file}: {exc}") from None
    print("set the registry policy")


async def get_registry(directory: Directory, args: argparse.Namespace) -> None:
    policy = await directory.registry_policy()
    if policy is None:
        raise CommandError("the registry has no policy")
    _write(policy)


async def delete_registry(directory: Directory, args: argparse.Namespace) -> None:
    if await directory.registry_policy() is None:
        raise CommandError("the registry has no policy")
    await directory.set_registry_policy(None)
    print("deleted the registry policy")


async def _kind(directory: Directory, args: argparse.Namespace) -> str:
    """Whether the target names a user or a group; a name that is both needs saying which."""
    if args.kind:
        return str(args.kind)
    is_user = await directory.get_user(args.target) is not None
    is_group = await directory.get_group(args.target) is not None
    if is_user and is_group:
        raise CommandError(f"{args.target!r} is both a user and a group: add --user or --group")
    if not is_user and not is_group:
        raise CommandError(f"no user or group named {args.target!r}")
    return "user" if is_user else "group"


def _read(path: str) -> str:
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")  # editors on Windows like to start files with a BOM
    except UnicodeDecodeError:
        raise CommandError(f"{path}: the policy is not UTF-8 text") from None


def _write(policy: Policy) -> None:
    sys.stdout.write(policy.text if policy.text.endswith("\n") else policy.text + "\n")
