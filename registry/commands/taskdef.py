"""`registry taskdef resolve|release`: pin an ECS task definition's images to digests, and keep
the pinned images from lifecycle expiry while the family uses them.

`resolve TASKDEF.json` reads a task definition (the RegisterTaskDefinition input, or
`{"taskDefinition": {...}}` as `aws ecs describe-task-definition` prints it). For every container
image that lives in this registry it checks that the repository, the tag or digest, and a
manifest for the task's platform exist. If anything is wrong it reports every problem and
changes nothing; otherwise it marks the images in use for the family (storage/taskdefs.py) and
writes the definition back with each of our images as `host/name@digest`: the digest the tag
points at, an index's own digest for a multi-platform image (the runtime still picks the
platform, as ECS does). Images from other registries are left as they are.

`release FAMILY` removes the family's in-use marks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import urlsplit

from registry.commands.common import CommandError
from registry.settings import Settings, SettingsError, load_settings
from storage.blobs import ByteRange
from storage.content.digest import Digest
from storage.content.manifest import Descriptor, parse_manifest
from storage.content.names import check_name, check_tag
from storage.errors import (
    DigestInvalid,
    DriverError,
    KeyNotFound,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    RegistryError,
    TagInvalid,
)
from storage.store import Store
from storage.taskdefs import FAMILY, Held, TaskDefStore, check_family

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

ARCHITECTURES = {"X86_64": "amd64", "ARM64": "arm64"}  # ECS cpuArchitecture -> OCI
MAX_CONFIG = 1024 * 1024  # image configs are a few KiB


class Problem(Exception):
    """One thing wrong with one container's image: reported, and nothing is written."""


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}"


@dataclass(frozen=True, slots=True)
class Reference:
    """`host/name[:tag][@digest]` of an image in this registry (no tag and no digest: latest)."""

    host: str
    repository: str
    tag: str | None
    digest: Digest | None

    def pinned(self, digest: Digest) -> str:
        return f"{self.host}/{self.repository}@{digest}"


@dataclass(slots=True)
class Container:
    name: str
    image: str
    definition: dict[str, Any]  # written back with the pinned image
    reference: Reference | None = None  # None: another registry's image
    problem: str | None = None

    def report(self) -> str:
        image = f"image {self.image}: " if self.image else ""
        return f"container {self.name}: {image}{self.problem}"


def registry_hosts(settings: Settings, explicit: str | None) -> frozenset[str]:
    """The hosts (`name[:port]`, lower case) under which images are this registry's."""
    if explicit:
        host = (urlsplit(explicit).netloc if "://" in explicit else explicit).rstrip("/").lower()
        if not host or "/" in host:
            raise CommandError(f"invalid registry host {explicit[:80]!r}", 2)
        return frozenset({host})
    port = settings.server.port
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
    if settings.server.public_url:
        url = urlsplit(settings.server.public_url)
        name = url.hostname or ""
        name = f"[{name}]" if ":" in name else name
        default = {"http": 80, "https": 443}.get(url.scheme)
        hosts.add(f"{name}:{url.port or default}")
        if url.port in (None, default):
            hosts.add(name)
    return frozenset(hosts)


def parse_reference(image: str, hosts: frozenset[str]) -> Reference | None:
    """The reference when `image` names this registry (None otherwise); Problem when it
    names this registry but is malformed."""
    host, slash, rest = image.partition("/")
    if not slash or host.lower() not in hosts:
        return None
    name, _, digest_text = rest.partition("@")
    name, colon, tag = name.partition(":")
    try:
        return Reference(host, check_name(name), check_tag(tag) if colon else None,
                         Digest.parse(digest_text) if digest_text else None)
    except (NameInvalid, TagInvalid, DigestInvalid) as exc:
        raise Problem(f"malformed image reference: {exc.message}") from None


def task_body(document: Any) -> dict[str, Any]:
    """The task definition itself, in either input shape."""
    if not isinstance(document, dict):
        raise CommandError("the task definition must be a JSON object")
    body = document.get("taskDefinition", document)
    if not isinstance(body, dict):
        raise CommandError("taskDefinition must be a JSON object")
    return body


def task_platform(body: dict[str, Any], problems: list[str]) -> Platform | None:
    """The platform the task runs on; None (and a problem) when this cannot check it."""
    runtime = body.get("runtimePlatform") or {}
    if not isinstance(runtime, dict):
        problems.append("runtimePlatform must be an object")
        return None
    arch = runtime.get("cpuArchitecture") or "X86_64"
    family = runtime.get("operatingSystemFamily") or "LINUX"
    platform: Platform | None = Platform("linux", ARCHITECTURES.get(arch, ""))
    if arch not in ARCHITECTURES:
        problems.append(f"unsupported cpuArchitecture {str(arch)[:40]!r} (X86_64 or ARM64)")
        platform = None
    if family != "LINUX":
        problems.append(f"unsupported operatingSystemFamily {str(family)[:60]!r}: only LINUX "
                        "task definitions can be resolved here")
        platform = None
    return platform


def containers(body: dict[str, Any], problems: list[str]) -> list[Container]:
    found = body.get("containerDefinitions")
    if not isinstance(found, list) or not found:
        problems.append("containerDefinitions must be a non-empty list")
        return []
    result = []
    for number, definition in enumerate(found, 1):
        if not isinstance(definition, dict):
            problems.append(f"containerDefinitions[{number - 1}] must be an object")
            continue
        name = definition.get("name")
        name = name if isinstance(name, str) and name else f"#{number}"
        image = definition.get("image")
        if not isinstance(image, str) or not image:
            result.append(Container(name, "", definition, problem="no image"))
            continue
        result.append(Container(name, image, definition))
    return result


async def pin(store: Store, ref: Reference, platform: Platform | None) -> Digest:
    """The digest `ref` stands for, once the manifest is known to exist (for `platform`)."""
    name = ref.repository
    if await store.repositories.get(name) is None:
        raise Problem(f"repository {name} does not exist")
    digest = ref.digest
    if digest is None:
        tag = ref.tag or "latest"
        digest = await store.manifests.tag_digest(name, tag)
        if digest is None:
            raise Problem(f"tag {tag} not found in repository {name}")
    if await store.manifests.revision_record(name, digest) is None:
        raise Problem(f"manifest {digest} not found in repository {name}")
    if platform is not None:
        await check_platform(store, name, digest, platform)
    return digest


async def check_platform(store: Store, name: str, digest: Digest, wanted: Platform) -> None:
    try:
        stored = await store.manifests.get(name, str(digest))
        manifest = parse_manifest(stored.raw, stored.media_type, digest.algorithm)
    except ManifestUnknown:
        raise Problem(f"manifest {digest} not found in repository {name}") from None
    except ManifestInvalid as exc:
        raise Problem(f"manifest {digest} cannot be read: {exc.message}") from None
    if manifest.is_index:
        offered = {platform_of(d.platform) for d in manifest.manifests}
        if wanted not in offered:
            listed = ", ".join(sorted(str(p) for p in offered if p)) or "none"
            raise Problem(f"no manifest for {wanted} in the index (platforms: {listed})")
        return
    if manifest.config is None:
        raise Problem(f"manifest {digest} has no image config")
    found = platform_of(await read_config(store, manifest.config))
    if found != wanted:
        raise Problem(f"the image is for {found or 'an unknown platform'}, the task runs on "
                      f"{wanted}")


def platform_of(value: Any) -> Platform | None:
    """The platform of an index entry or an image config (the variant does not matter here:
    ECS's ARM64 is arm64 whatever the variant)."""
    if not isinstance(value, dict):
        return None
    os_name, arch = value.get("os"), value.get("architecture")
    if not isinstance(os_name, str) or not isinstance(arch, str):
        return None
    return Platform(os_name, arch)


async def read_config(store: Store, config: Descriptor) -> Any:
    if config.size > MAX_CONFIG:
        raise Problem(f"image config {config.digest} is larger than {MAX_CONFIG} bytes")
    data = bytearray()
    try:
        async for chunk in store.blobs.read(config.digest, ByteRange(0, MAX_CONFIG + 1)):
            data += chunk
    except KeyNotFound:
        raise Problem(f"image config {config.digest} is missing from storage") from None
    if len(data) > MAX_CONFIG:
        raise Problem(f"image config {config.digest} is larger than {MAX_CONFIG} bytes")
    try:
        return json.loads(data)
    except ValueError:
        raise Problem(f"image config {config.digest} is not JSON") from None


async def resolve(settings: Settings, document: Any, hosts: frozenset[str]) -> None:
    """Pin the images of `document` in place and mark them in use; CommandError (after
    printing every problem) when any image cannot be pinned."""
    body = task_body(document)
    problems: list[str] = []
    family = body.get("family")
    if not isinstance(family, str) or not FAMILY.fullmatch(family):
        problems.append(f"family must be 1-255 letters, digits, _ or -, not {family!r:.80}")
    platform = task_platform(body, problems)
    problems = [f"task definition: {p}" for p in problems]
    found = containers(body, problems)
    ours = []
    for container in found:
        if container.problem:
            continue
        try:
            container.reference = parse_reference(container.image, hosts)
        except Problem as exc:
            container.problem = str(exc)
            continue
        if container.reference is None:
            print(f"skipped container {container.name}: {container.image} is not in this "
                  "registry", file=sys.stderr)
        else:
            ours.append(container)
    from registry.app import build_store

    store = build_store(settings)
    try:
        outcomes = await asyncio.gather(*(_attempt(store, c, platform) for c in ours))
        for container, outcome in zip(ours, outcomes, strict=True):
            if isinstance(outcome, Problem):
                container.problem = str(outcome)
        problems += [c.report() for c in found if c.problem]
        if problems:
            for problem in problems:
                print(f"registry: {problem}", file=sys.stderr)
            raise CommandError(f"{len(problems)} problem(s); nothing written or marked")
        assert isinstance(family, str)
        pinned = [(c, c.reference, d) for c, d in zip(ours, outcomes, strict=True)
                  if c.reference is not None and isinstance(d, Digest)]
        taskdefs = TaskDefStore(store.driver, store.lifecycle)
        await taskdefs.hold(family, [Held(ref.repository, digest) for _, ref, digest in pinned])
    finally:
        await store.close()
    for container, ref, digest in pinned:
        container.definition["image"] = ref.pinned(digest)
        print(f"pinned container {container.name}: {container.image} -> "
              f"{container.definition['image']}", file=sys.stderr)
    print(f"task definition {family}: {len(pinned)} image(s) pinned and marked in use, "
          f"{len(found) - len(ours)} skipped", file=sys.stderr)


async def _attempt(store: Store, container: Container,
                   platform: Platform | None) -> Digest | Problem:
    assert container.reference is not None
    try:
        return await pin(store, container.reference, platform)
    except Problem as exc:
        return exc


async def release(settings: Settings, family: str) -> None:
    from registry.app import build_store

    store = build_store(settings)
    try:
        held = await TaskDefStore(store.driver, store.lifecycle).release(family)
    finally:
        await store.close()
    if held is None:
        raise CommandError(f"unknown task definition family {family}: it holds no images")
    print(f"task definition {family}: released {len(held)} image(s)", file=sys.stderr)


def _load(path: str) -> Any:
    try:
        if path == "-":
            return json.load(sys.stdin)
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CommandError(f"{path} is not valid JSON: {exc}") from None


def _write(path: str | None, document: Any) -> None:
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if path is None or path == "-":
        sys.stdout.write(text)
        return
    directory = os.path.dirname(os.path.abspath(path))
    try:
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=directory, delete=False,
                                         prefix=".taskdef-") as handle:
            handle.write(text)
        os.replace(handle.name, path)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror}") from None


def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        if args.taskdef_command == "resolve":
            document = _load(args.file)
            asyncio.run(resolve(settings, document, registry_hosts(settings, args.registry)))
            _write(args.output, document)
        else:
            try:
                family = check_family(args.family)
            except ValueError as exc:
                raise CommandError(str(exc), 2) from None
            asyncio.run(release(settings, family))
    except CommandError as exc:
        print(f"registry: {exc}", file=sys.stderr)
        return exc.status
    except (RegistryError, DriverError, OSError) as exc:
        print(f"registry: storage: {exc}", file=sys.stderr)
        return 1
    return 0


def add_parser(commands: Subparsers, common: Callable[[argparse.ArgumentParser], None]) -> None:
    help = "pin an ECS task definition's images to digests and keep them in use"
    group = commands.add_parser("taskdef", help=help, description=help)
    sub = group.add_subparsers(dest="taskdef_command", required=True, metavar="COMMAND")
    resolve_help = "pin this registry's images of a task definition to their digests"
    parser = sub.add_parser("resolve", help=resolve_help, description=resolve_help)
    common(parser)
    parser.add_argument("file", metavar="TASKDEF", help="task definition JSON ('-': stdin)")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write the pinned task definition here (default: stdout)")
    parser.add_argument("--registry", metavar="HOST",
                        help="this registry's host in image references (default: the host of "
                             "server.public_url, and 127.0.0.1/localhost with server.port)")
    release_help = "remove the in-use marks a task definition family holds"
    parser = sub.add_parser("release", help=release_help, description=release_help)
    common(parser)
    parser.add_argument("family", metavar="FAMILY")
    group.set_defaults(taskdef=True)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML settings file")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="filesystem storage root (default ./data)")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m registry.commands.taskdef ...`: the same as `registry taskdef ...`."""
    parser = argparse.ArgumentParser(prog="registry")
    add_parser(parser.add_subparsers(dest="command", required=True), _common)
    args = parser.parse_args(["taskdef", *(sys.argv[1:] if argv is None else argv)])
    try:
        settings = load_settings(args.config,
                                 overrides={"storage.filesystem.root": args.data_dir})
    except SettingsError as exc:
        print(f"registry: {exc}", file=sys.stderr)
        return 2
    return run(settings, args)


if __name__ == "__main__":
    raise SystemExit(main())
