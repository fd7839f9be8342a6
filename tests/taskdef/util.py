"""Running the taskdef and lifecycle commands against a live registry's storage, and building
images for a given platform."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import LiveRegistry
from tests.registry.util import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Image,
    build_index,
    descriptor,
    odd_json,
    push_image_blobs,
    put_manifest,
    random_blob,
    sha256,
)


def _wired() -> bool:
    """Whether `registry taskdef` exists yet; until then the module's own entry point (the
    same parser) stands in for it."""
    from registry.cli import build_parser

    return any(isinstance(action, argparse._SubParsersAction) and "taskdef" in action.choices
               for action in build_parser()._actions)


TASKDEF = ([sys.executable, "-m", "registry", "taskdef"] if _wired()
           else [sys.executable, "-m", "registry.commands.taskdef"])


def registry_command(live: LiveRegistry, command: list[str], *args: str,
                     env: dict[str, str] | None = None,
                     cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, *args, "--data-dir", str(live.data_dir)],
                          capture_output=True, text=True, timeout=120, cwd=cwd,
                          env={**os.environ, **live.env, **(env or {})})


def taskdef(live: LiveRegistry, *args: str, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return registry_command(live, TASKDEF, *args, env=env, cwd=cwd)


def lifecycle(live: LiveRegistry, *args: str) -> subprocess.CompletedProcess[str]:
    return registry_command(live, [sys.executable, "-m", "registry", "lifecycle"], *args)


def in_use(live: LiveRegistry, repository: str) -> set[str]:
    done = lifecycle(live, "in-use", repository)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document, indent=4))
    return path


def arm64_image() -> Image:
    """An OCI image manifest whose config says linux/arm64 (build_image's says linux/amd64)."""
    config = json.dumps({"architecture": "arm64", "os": "linux", "variant": "v8",
                         "rootfs": {"type": "layers", "diff_ids": []},
                         "nonce": os.urandom(8).hex()}).encode()
    layer = random_blob(600)
    manifest = odd_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                         "config": descriptor(OCI_CONFIG, config),
                         "layers": [descriptor(OCI_LAYER, layer)]})
    return Image(manifest=manifest, media_type=OCI_MANIFEST, config=config, layers=[layer])


def push(http: httpx.Client, repository: str, reference: str, image: Image) -> str:
    push_image_blobs(http, repository, image)
    response = put_manifest(http, repository, reference, image.manifest, image.media_type)
    assert response.status_code == 201, response.text
    return image.digest


def push_index(http: httpx.Client, repository: str, tag: str, children: list[Image]) -> str:
    """An OCI index over `children` (platforms in order: linux/amd64, linux/arm64/v8)."""
    for child in children:
        push(http, repository, child.digest, child)
    index = build_index(OCI_INDEX, children)
    response = put_manifest(http, repository, tag, index, OCI_INDEX)
    assert response.status_code == 201, response.text
    return sha256(index)
