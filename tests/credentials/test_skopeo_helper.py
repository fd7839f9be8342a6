"""skopeo with an auth file naming the helper (`credHelpers`): a builder pushes and a node
pulls, neither ever typing a password; the helper gets its AWS credentials from the
environment skopeo passes on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.credentials.conftest import Node
from tests.imagebuild import build_image, read_blob, resolve

SKOPEO = shutil.which("skopeo")
if SKOPEO is None:
    if os.environ.get("CI"):
        pytest.fail("skopeo is not on PATH but CI is set", pytrace=False)
    pytest.skip("skopeo is not on PATH", allow_module_level=True)


def skopeo_env(node: Node, user: str, home: Path) -> dict[str, str]:
    """A private skopeo: its own HOME, XDG dirs, registries.conf and helper cache."""
    for sub in ("tmp", "docker-config", "run", "config", "cache"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    registries = home / "registries.conf"
    registries.write_text("unqualified-search-registries = []\n")
    return node.env(user, HOME=str(home), XDG_CACHE_HOME=str(home / "cache"),
                    XDG_RUNTIME_DIR=str(home / "run"), XDG_CONFIG_HOME=str(home / "config"),
                    DOCKER_CONFIG=str(home / "docker-config"), TMPDIR=str(home / "tmp"),
                    CONTAINERS_REGISTRIES_CONF=str(registries),
                    REGISTRY_AUTH_FILE=str(home / "unused-auth.json"))


def copy(env: dict[str, str], authfile: Path, src: str,
         dest: str) -> subprocess.CompletedProcess[str]:
    assert SKOPEO is not None
    return subprocess.run([SKOPEO, "--insecure-policy", "copy", "--retry-times", "0",
                           "--authfile", str(authfile), "--src-tls-verify=false",
                           "--dest-tls-verify=false", src, dest],
                          capture_output=True, text=True, env=env, timeout=120)


def test_push_and_pull_through_the_helper(node: Node, tmp_path: Path) -> None:
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"credHelpers": {node.live.host: "registry"}}))
    builder = skopeo_env(node, "builder", tmp_path / "builder")
    puller = skopeo_env(node, "node", tmp_path / "node")
    image = build_image(tmp_path / "layout", [3000, 50_000], ref="v1")
    ref = f"docker://{node.live.host}/helped/app-{uuid.uuid4().hex[:8]}:v1"

    pushed = copy(builder, authfile, f"oci:{image.layout}:v1", ref)
    assert pushed.returncode == 0, pushed.stderr + node.live.log()[-3000:]
    pulled = copy(puller, authfile, ref, f"oci:{tmp_path / 'pulled'}:v1")
    assert pulled.returncode == 0, pulled.stderr + node.live.log()[-3000:]
    assert resolve(tmp_path / "pulled", "v1")["digest"] == image.manifest_digest
    assert read_blob(tmp_path / "pulled", image.manifest_digest) == image.manifest
    for layer in image.layer_digests:
        assert read_blob(tmp_path / "pulled", layer) == read_blob(image.layout, layer)

    # skopeo ran the helper: each side's password sits in its own cache.
    for side in ("builder", "node"):
        cached = list((tmp_path / side / "cache" / "registry-credentials").glob("*.json"))
        assert len(cached) == 1, side


def test_without_the_helper_the_push_is_refused(node: Node, tmp_path: Path) -> None:
    authfile = tmp_path / "auth.json"
    authfile.write_text("{}")
    env = skopeo_env(node, "builder", tmp_path / "builder")
    image = build_image(tmp_path / "layout", [1000], ref="v1")
    ref = f"docker://{node.live.host}/helped/refused-{uuid.uuid4().hex[:8]}:v1"
    refused = copy(env, authfile, f"oci:{image.layout}:v1", ref)
    assert refused.returncode != 0
    assert "unauthorized" in refused.stderr.lower() or "401" in refused.stderr, refused.stderr
