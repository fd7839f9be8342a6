"""`registry user|group|policy ...`: identities and policies, written straight to the storage
backend that every replica reads, so running servers see changes without a restart.

A change prints one line saying what it did; mistakes print `registry: <message>` and exit 1
(2 for usage). A secret goes only to stdout, once, when its access key is created (the line
saying so goes to stderr)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any, TypeAlias

from auth.identities import Directory, IdentityError
from auth.policy import PolicyInvalid
from auth.secrets import SecretBox, SecretKeyError
from registry.commands import policies, users
from registry.commands.common import CommandError, Handler
from registry.settings import Settings
from storage.errors import DriverError, RegistryError

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        asyncio.run(_run(settings, args))
    except CommandError as exc:
        print(f"registry: {exc}", file=sys.stderr)
        return exc.status
    except (IdentityError, PolicyInvalid, SecretKeyError) as exc:
        print(f"registry: {exc}", file=sys.stderr)
        return 1
    except (RegistryError, DriverError, OSError) as exc:
        print(f"registry: storage: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run(settings: Settings, args: argparse.Namespace) -> None:
    from registry.app import build_store  # the server's wiring, imported only when needed

    secret_key = settings.auth.secret_key
    box = SecretBox(secret_key) if secret_key else None
    store = build_store(settings)
    try:
        handler: Handler = args.handler
        await handler(Directory(store.iam, box), args)
    finally:
        await store.close()


Arg = tuple[tuple[str, ...], dict[str, Any]]


def _arg(*names: str, **options: Any) -> Arg:
    return names, options


_NAME = _arg("name", metavar="NAME")
# Optional only for scripts written when a key was named by its id alone; named, the key must
# be that user's.
_OWNER = _arg("name", metavar="NAME", nargs="?",
              help="the user whose key it is (a key of another user is refused)")
_KEY_ID = _arg("key_id", metavar="KEYID")
_PASSWORD = _arg("--password-stdin", action="store_true",
                 help="read the password from stdin (else prompt on the terminal)")
_MEMBER = (_arg("group", metavar="GROUP"), _arg("user", metavar="USER"))
_TARGET = _arg("target", metavar="USER|GROUP")
_REPO = _arg("repository", metavar="REPO")
_FILE = _arg("file", metavar="FILE", help="policy JSON ('-': stdin)")

_GROUPS = {
    "user": "manage users and their access keys",
    "user key": "manage a user's access keys",
    "group": "manage groups and their members",
    "group member": "manage a group's members",
    "policy": "manage identity, repository and registry policies",
}
_COMMANDS: tuple[tuple[str, Handler, str, tuple[Arg, ...]], ...] = (
    ("user add", users.user_add, "add a user", (_NAME, _PASSWORD)),
    ("user passwd", users.user_passwd,
     "set a user's password (ends the refresh and authorization tokens it holds)",
     (_NAME, _PASSWORD)),
    ("user remove", users.user_remove, "remove a user and its access keys", (_NAME,)),
    ("user revoke-tokens", users.user_revoke_tokens,
     "end every refresh and authorization token the user holds (its credentials stay)",
     (_NAME,)),
    ("user disable", users.user_disable,
     "refuse the user's password, access keys and tokens until enabled", (_NAME,)),
    ("user enable", users.user_enable, "let a disabled user log in again", (_NAME,)),
    ("user list", users.user_list, "list users, one per line", ()),
    ("user key create", users.key_create, "create an access key and print its secret, once",
     (_NAME,)),
    ("user key delete", users.key_delete,
     "delete an access key of the user (ends the user's refresh and authorization tokens)",
     (_OWNER, _KEY_ID)),
    ("user key list", users.key_list, "list a user's access keys", (_NAME,)),
    ("user key update", users.key_update,
     "activate or deactivate an access key of the user (deactivating ends the user's tokens)",
     (_OWNER, _KEY_ID, _arg("--status", choices=("Active", "Inactive"), required=True))),
    ("group add", users.group_add, "add a group", (_NAME,)),
    ("group remove", users.group_remove, "remove a group (its members leave it)", (_NAME,)),
    ("group list", users.group_list, "list groups, one per line", ()),
    ("group member add", users.member_add, "add a user to a group", _MEMBER),
    ("group member remove", users.member_remove, "remove a user from a group", _MEMBER),
    ("group member list", users.member_list, "list a group's members",
     (_arg("group", metavar="GROUP"),)),
    ("policy attach", policies.attach, "attach an identity policy to a user or group",
     (_TARGET, _FILE, _arg("--name", dest="policy_name", metavar="NAME",
                           help="policy name (default: the file name without its suffix)"))),
    ("policy detach", policies.detach, "detach a named policy from a user or group",
     (_TARGET, _arg("policy_name", metavar="NAME"))),
    ("policy list", policies.list_attached, "list the policies of a user or group", (_TARGET,)),
    ("policy set", policies.set_repository, "set a repository's policy", (_REPO, _FILE)),
    ("policy get", policies.get_repository, "print a repository's policy", (_REPO,)),
    ("policy delete", policies.delete_repository, "delete a repository's policy", (_REPO,)),
    ("policy set-registry", policies.set_registry,
     "set the registry policy, which applies to every repository", (_FILE,)),
    ("policy get-registry", policies.get_registry, "print the registry policy", ()),
    ("policy delete-registry", policies.delete_registry, "delete the registry policy", ()),
)


def add_parsers(commands: Subparsers, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Adds `user`, `group` and `policy`; `common` adds the options every subcommand takes."""
    groups: dict[str, Subparsers] = {"": commands}

    def subcommands(path: str) -> Subparsers:
        if path not in groups:
            parent, _, name = path.rpartition(" ")
            parser = subcommands(parent).add_parser(name, help=_GROUPS[path],
                                                    description=_GROUPS[path])
            groups[path] = parser.add_subparsers(dest=path.replace(" ", "_") + "_command",
                                                 required=True, metavar="COMMAND")
        return groups[path]

    for path, handler, help, arguments in _COMMANDS:
        parent, _, name = path.rpartition(" ")
        parser = subcommands(parent).add_parser(name, help=help, description=help)
        common(parser)
        for names, options in arguments:
            parser.add_argument(*names, **options)
        if _TARGET in arguments:
            kind = parser.add_mutually_exclusive_group()
            kind.add_argument("--user", dest="kind", action="store_const", const="user",
                              help="the target is a user (needed when a group has its name too)")
            kind.add_argument("--group", dest="kind", action="store_const", const="group",
                              help="the target is a group")
        parser.set_defaults(handler=handler)
