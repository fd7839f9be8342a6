"""`registry lifecycle put|get|delete|preview|run|protect|unprotect|in-use`: ECR lifecycle
policies from the command line, on the same storage the servers read.

`preview` prints exactly what `run` would expire now (and the in-use images it spares); `run`
expires them. Output is JSON lines, one per image, and a summary line on stderr; the other
changes print one line naming what they changed."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from registry.commands.common import CommandError, run_on_store
from registry.settings import Settings
from storage.content.digest import Digest
from storage.content.names import check_name
from storage.errors import RegistryError
from storage.lifecycle import Evaluation, LifecyclePolicyInvalid, LifecyclePolicyNotFound
from storage.store import Store

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
StoreHandler = Callable[[Store, argparse.Namespace], Awaitable[None]]


def run(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: Store) -> None:
        handler: StoreHandler = args.store_handler
        await handler(store, args)

    return run_on_store(settings, work,
                        (LifecyclePolicyInvalid, LifecyclePolicyNotFound, ValueError))


async def _repository(store: Store, args: argparse.Namespace) -> str:
    name = check_name(args.repository)
    if await store.repositories.get(name) is None:
        raise CommandError(f"repository {name} does not exist")
    return name


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None


async def put(store: Store, args: argparse.Namespace) -> None:
    name = await _repository(store, args)
    policy = await store.lifecycle.put_policy(name, _read(args.file))
    print(f"set the lifecycle policy of repository {name}: {len(policy.rules)} rule(s)")


async def get(store: Store, args: argparse.Namespace) -> None:
    name = await _repository(store, args)
    text = await store.lifecycle.policy(name)
    if text is None:
        raise CommandError(f"repository {name} has no lifecycle policy")
    print(text)


async def delete(store: Store, args: argparse.Namespace) -> None:
    name = await _repository(store, args)
    if await store.lifecycle.policy(name) is None:
        raise CommandError(f"repository {name} has no lifecycle policy")
    await store.lifecycle.delete_policy(name)
    print(f"deleted the lifecycle policy of repository {name}")


def _print(name: str, result: Evaluation, verb: str) -> None:
    for decision in result.decisions:
        if decision.expire or decision.protected:
            print(json.dumps({"imageDigest": decision.image.digest,
                              "imageTags": decision.image.tags,
                              "rulePriority": decision.rule,
                              "action": "keep (in use)" if decision.protected else verb}))
    print(f"repository {name}: {len(result.expiring)} image(s) {verb}, "
          f"{len(result.protected)} kept in use", file=sys.stderr)


async def preview(store: Store, args: argparse.Namespace) -> None:
    name = await _repository(store, args)
    text = _read(args.file) if args.file else None
    result = await store.lifecycle.evaluate(name, text)
    _print(name, result, "would expire")


async def run_policy(store: Store, args: argparse.Namespace) -> None:
    name = await _repository(store, args)
    _print(name, await store.lifecycle.run(name), "expired")


def _digest(value: str) -> Digest:
    try:
        return Digest.parse(value)
    except RegistryError as exc:
        raise CommandError(str(exc), 2) from None


async def protect(store: Store, args: argparse.Namespace) -> None:
    name = await _repository(store, args)
    digest = _digest(args.digest)
    await store.lifecycle.protect(name, digest, args.holder, args.reason or "")
    print(f"marked {digest} in repository {name} in use (holder {args.holder})")


async def unprotect(store: Store, args: argparse.Namespace) -> None:
    name = await _repository(store, args)
    digest = _digest(args.digest)
    await store.lifecycle.unprotect(name, digest, args.holder)
    marks = "every in-use mark" if args.holder is None else f"holder {args.holder}'s in-use mark"
    print(f"removed {marks} on {digest} in repository {name}")


async def in_use(store: Store, args: argparse.Namespace) -> None:
    name = await _repository(store, args)
    for digest in sorted(await store.lifecycle.in_use(name)):
        print(digest)


def add_parsers(commands: Subparsers, common: Callable[[argparse.ArgumentParser], None]) -> None:
    group = commands.add_parser("lifecycle", help="manage and run lifecycle policies",
                                description="manage and run ECR lifecycle policies")
    sub = group.add_subparsers(dest="lifecycle_command", required=True, metavar="COMMAND")

    def command(name: str, handler: StoreHandler, help: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help, description=help)
        common(parser)
        parser.add_argument("repository", metavar="REPO")
        parser.set_defaults(store_handler=handler)
        return parser

    command("put", put, "set a repository's lifecycle policy").add_argument(
        "file", metavar="FILE", help="policy JSON ('-': stdin)")
    command("get", get, "print a repository's lifecycle policy")
    command("delete", delete, "delete a repository's lifecycle policy")
    command("preview", preview, "print what a run would expire now").add_argument(
        "file", metavar="FILE", nargs="?", help="preview this policy instead of the stored one")
    command("run", run_policy, "expire what the policy selects now")
    for name, handler, help in (("protect", protect, "mark an image in use: never expired"),
                                ("unprotect", unprotect, "remove an image's in-use mark")):
        parser = command(name, handler, help)
        parser.add_argument("digest", metavar="DIGEST")
        if name == "protect":
            parser.add_argument("--reason", help="why it is in use")
            parser.add_argument("--holder", default="cli",
                                help="who holds the mark (default: cli); each holder's mark "
                                     "is removed on its own")
        else:
            parser.set_defaults(reason=None)
            parser.add_argument("--holder", help="remove only this holder's mark (default: "
                                                 "every holder's)")
    command("in-use", in_use, "list the images marked in use")
