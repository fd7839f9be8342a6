"""Round-trips through skopeo: OCI layout -> registry -> OCI layout, byte for byte.

Images are built on the fly (tests/imagebuild.py); nothing is downloaded. Layers are already
gzip-compressed, so skopeo has no reason to re-compress them, and `--preserve-digests` makes it
fail rather than rewrite a manifest or index.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import S3_BACKENDS, LiveRegistry
from tests.imagebuild import (
    MEDIA_TYPE_INDEX,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_MANIFEST,
    BuiltImage,
    blob_path,
    build_image,
    build_index,
    file_digest,
    read_blob,
    resolve,
)

SKOPEO = shutil.which("skopeo")
if SKOPEO is None:
    if os.environ.get("CI"):
        pytest.fail("skopeo is not on PATH but CI is set: the client round-trips must run in CI",
                    pytrace=False)
    pytest.skip("skopeo is not on PATH", allow_module_level=True)

MiB = 1 << 20
TIMEOUT = 300
SLOW_TIMEOUT = 900


# --------------------------------------------------------------------------- running skopeo


@dataclass(frozen=True)
class Skopeo:
    """skopeo with its own registries.conf and temp dir, and no policy or credentials."""

    executable: str
    env: dict[str, str]
    tmpdir: Path
    registry: LiveRegistry

    def run(self, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[bytes]:
        cmd = [self.executable, "--insecure-policy", "--tmpdir", str(self.tmpdir), *args]
        try:
            result = subprocess.run(cmd, capture_output=True, env=self.env, timeout=timeout,
                                    check=False)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"skopeo timed out after {timeout}s: {' '.join(cmd)}\n"
                f"stderr:\n{_text(exc.stderr)}\n{self._log_tail()}"
            ) from exc
        if result.returncode != 0:
            raise AssertionError(
                f"skopeo exited {result.returncode}: {' '.join(cmd)}\n"
                f"stdout:\n{_text(result.stdout)}\nstderr:\n{_text(result.stderr)}\n"
                f"{self._log_tail()}"
            )
        return result

    def json(self, *args: str) -> Any:
        result = self.run(*args)
        try:
            return json.loads(result.stdout)
        except ValueError as exc:
            raise AssertionError(f"skopeo {args[0]} printed no JSON: {result.stdout[:2000]!r}\n"
                                 f"stderr:\n{_text(result.stderr)}") from exc

    def copy(self, src: str, dest: str, *extra: str, timeout: float = TIMEOUT) -> str:
        """`skopeo copy` with plain HTTP and anonymous access on the registry side(s)."""
        args = ["copy", "--preserve-digests", "--retry-times", "0"]
        if src.startswith("docker://"):
            args += ["--src-tls-verify=false", "--src-no-creds"]
        if dest.startswith("docker://"):
            args += ["--dest-tls-verify=false", "--dest-no-creds"]
        result = self.run(*args, *extra, src, dest, timeout=timeout)
        return _text(result.stderr) + _text(result.stdout)

    def _log_tail(self) -> str:
        return "registry log (tail):\n" + self.registry.log()[-4000:]


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data


@pytest.fixture(scope="session")
def skopeo(tmp_path_factory: pytest.TempPathFactory,
           registry_server: LiveRegistry) -> Skopeo:
    assert SKOPEO is not None
    home = tmp_path_factory.mktemp("skopeo-home")
    registries_conf = home / "registries.conf"
    registries_conf.write_text("unqualified-search-registries = []\n")
    tmpdir = home / "tmp"
    tmpdir.mkdir()
    env = {
        **os.environ,
        "CONTAINERS_REGISTRIES_CONF": str(registries_conf),
        "REGISTRY_AUTH_FILE": str(home / "auth.json"),
        "XDG_RUNTIME_DIR": str(home / "run"),
        "TMPDIR": str(tmpdir),
    }
    return Skopeo(executable=SKOPEO, env=env, tmpdir=tmpdir, registry=registry_server)


@pytest.fixture(autouse=True)
def server_log_clean(registry_server: LiveRegistry) -> Iterator[None]:
    """Fail a test during which the shared server logged a traceback."""
    before = len(registry_server.log())
    yield
    new = registry_server.log()[before:]
    if "Traceback" in new:
        pytest.fail("server logged a traceback:\n" + new[-4000:], pytrace=False)


def docker_ref(registry: LiveRegistry, repo: str, tag_or_digest: str) -> str:
    sep = "@" if tag_or_digest.startswith("sha256:") else ":"
    return f"docker://{registry.host}/{repo}{sep}{tag_or_digest}"


def get_manifest(client: httpx.Client, repo: str, reference: str,
                 accept: str = MEDIA_TYPE_MANIFEST) -> httpx.Response:
    response = client.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": accept})
    assert response.status_code == 200, (
        f"GET /v2/{repo}/manifests/{reference} -> {response.status_code}: {response.text[:500]}"
    )
    return response


def media_type(response: httpx.Response) -> str:
    content_type = str(response.headers.get("content-type", ""))
    return content_type.split(";")[0].strip()


def assert_pulled_image(layout: Path, ref: str, built: BuiltImage) -> None:
    """`layout` names `built`'s manifest `ref`, with the same manifest, config and layer blobs."""
    descriptor = resolve(layout, ref)
    assert descriptor["digest"] == built.manifest_digest, descriptor
    assert descriptor["mediaType"] == MEDIA_TYPE_MANIFEST, descriptor
    assert_pulled_blobs(layout, built)


def assert_pulled_blobs(layout: Path, built: BuiltImage) -> None:
    assert read_blob(layout, built.manifest_digest) == built.manifest
    pulled = json.loads(read_blob(layout, built.manifest_digest))
    assert [layer["digest"] for layer in pulled["layers"]] == built.layer_digests
    assert read_blob(layout, built.config_digest) == built.config
    for layer in built.layers:
        path = blob_path(layout, layer.digest)
        assert path.stat().st_size == layer.size, layer
        # Recomputed, not trusted from the file name: the bytes are the ones that were pushed.
        assert file_digest(path) == layer.digest, layer


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
def test_copy_roundtrip_large_image(skopeo: Skopeo, registry_server: LiveRegistry,
                                    client: httpx.Client, repo: str, tmp_path: Path) -> None:
    built = build_image(tmp_path / "src", [50 * MiB + 12345, 3 * MiB + 1, 4096, 0])
    assert len(built.layers) >= 3
    assert max(layer.size for layer in built.layers) >= 50 * MiB  # random: gzip cannot shrink it
    assert all(layer.media_type == MEDIA_TYPE_LAYER_GZIP for layer in built.layers)

    dest = docker_ref(registry_server, repo, "v1")
    skopeo.copy(f"oci:{built.layout}:latest", dest, timeout=SLOW_TIMEOUT)

    # The registry holds exactly what was built.
    response = get_manifest(client, repo, "v1")
    assert response.content == built.manifest
    assert media_type(response) == MEDIA_TYPE_MANIFEST
    assert response.headers.get("docker-content-digest") == built.manifest_digest
    assert get_manifest(client, repo, built.manifest_digest).content == built.manifest
    for layer in built.layers:
        head = client.head(f"/v2/{repo}/blobs/{layer.digest}")
        assert head.status_code == 200, (layer, head.status_code)
        assert int(head.headers["content-length"]) == layer.size, layer
    # A whole-blob GET: served by the registry (filesystem) or a 307 to the bucket (S3).
    own = client.get(f"/v2/{repo}/blobs/{built.config_digest}", follow_redirects=False)
    assert own.headers.get("docker-content-digest") == built.config_digest, own.headers
    if registry_server.backend in S3_BACKENDS:
        assert own.status_code == 307 and own.headers.get("location"), own.headers
        config = httpx.get(own.headers["location"], timeout=60)
    else:
        config = own
    assert config.status_code == 200 and config.content == built.config

    # Pulled back: same manifest bytes, same (not re-compressed) layer blobs.
    pulled = tmp_path / "pulled"
    skopeo.copy(dest, f"oci:{pulled}:v1", timeout=SLOW_TIMEOUT)
    assert_pulled_image(pulled, "v1", built)


def test_copy_all_two_platform_index(skopeo: Skopeo, registry_server: LiveRegistry,
                                     client: httpx.Client, repo: str, tmp_path: Path) -> None:
    built = build_index(tmp_path / "src", [256 * 1024 + 3, 64 * 1024])
    assert sorted(built.images) == ["linux/amd64", "linux/arm64"]

    dest = docker_ref(registry_server, repo, "multi")
    skopeo.copy(f"oci:{built.layout}:{built.ref}", dest, "--all")

    response = get_manifest(client, repo, "multi",
                            accept=f"{MEDIA_TYPE_INDEX}, {MEDIA_TYPE_MANIFEST}")
    assert media_type(response) == MEDIA_TYPE_INDEX
    assert response.content == built.index
    assert response.headers.get("docker-content-digest") == built.index_digest
    for image in built.images.values():
        child = get_manifest(client, repo, image.manifest_digest)
        assert child.content == image.manifest, image.platform
        assert media_type(child) == MEDIA_TYPE_MANIFEST

    raw = skopeo.run("inspect", "--raw", "--tls-verify=false", "--no-creds", dest).stdout
    assert raw == built.index

    pulled = tmp_path / "pulled"
    skopeo.copy(dest, f"oci:{pulled}:multi", "--all")
    descriptor = resolve(pulled, "multi")
    assert descriptor["digest"] == built.index_digest, descriptor
    assert descriptor["mediaType"] == MEDIA_TYPE_INDEX, descriptor
    assert read_blob(pulled, built.index_digest) == built.index
    for image in built.images.values():
        assert_pulled_blobs(pulled, image)


# --------------------------------------------------------------------------- inspect, list-tags


@dataclass(frozen=True)
class Pushed:
    image: BuiltImage
    repo: str
    tags: tuple[str, ...]


@pytest.fixture(scope="module")
def pushed(skopeo: Skopeo, registry_server: LiveRegistry,
           tmp_path_factory: pytest.TempPathFactory) -> Pushed:
    """A small three-layer image pushed as v1, v2 and latest to a repository of its own."""
    image = build_image(tmp_path_factory.mktemp("inspect") / "src", [2048, 100_000, 7])
    repo = f"test/skopeo-inspect-{os.urandom(3).hex()}"
    tags = ("v1", "v2", "latest")
    for tag in tags:
        skopeo.copy(f"oci:{image.layout}:latest", docker_ref(registry_server, repo, tag))
    return Pushed(image=image, repo=repo, tags=tags)


def test_inspect_digest_and_layers(skopeo: Skopeo, registry_server: LiveRegistry,
                                   pushed: Pushed) -> None:
    for reference in ("v1", pushed.image.manifest_digest):
        info = skopeo.json("inspect", "--tls-verify=false", "--no-creds",
                           docker_ref(registry_server, pushed.repo, reference))
        assert info["Digest"] == pushed.image.manifest_digest, info
        assert info["Layers"] == pushed.image.layer_digests, info
        assert info["Architecture"] == "amd64", info
        assert info["Os"] == "linux", info
        assert sorted(info.get("RepoTags") or []) == sorted(pushed.tags), info


def test_inspect_raw_is_manifest_bytes(skopeo: Skopeo, registry_server: LiveRegistry,
                                       pushed: Pushed) -> None:
    ref = docker_ref(registry_server, pushed.repo, "v1")
    raw = skopeo.run("inspect", "--raw", "--tls-verify=false", "--no-creds", ref).stdout
    assert raw == pushed.image.manifest
    config = skopeo.run("inspect", "--config", "--raw", "--tls-verify=false", "--no-creds",
                        ref).stdout
    assert config == pushed.image.config


def test_list_tags(skopeo: Skopeo, registry_server: LiveRegistry, pushed: Pushed) -> None:
    listing = skopeo.json("list-tags", "--tls-verify=false", "--no-creds",
                          f"docker://{registry_server.host}/{pushed.repo}")
    assert listing["Repository"] == f"{registry_server.host}/{pushed.repo}", listing
    assert sorted(listing["Tags"]) == sorted(pushed.tags), listing
    assert len(listing["Tags"]) == len(pushed.tags), listing
