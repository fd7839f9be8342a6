"""Round-trips through the real Docker engine: `docker push`, `docker pull`, `docker manifest`.

A private containerd + dockerd is started for the session (tests/clients/dockerd.py); the
registry is reached over plain HTTP at 127.0.0.1:PORT. Nothing is downloaded: images are made
locally (`docker import` of a tar, `docker load` of a docker archive, or OCI layouts written
by tests/imagebuild.py and pushed with skopeo).

Every test works on random content in its own repository and removes its local images
afterwards, so a pull always has to fetch its layers from the registry.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveRegistry
from tests.imagebuild import BuiltImage, BuiltIndex, build_image, build_index

from .conftest import SkopeoCopy
from .dockerd import DockerDaemon, Result, write_docker_archive, write_rootfs_tar

pytestmark = pytest.mark.slow

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT_ALL = f"{OCI_INDEX}, {OCI_MANIFEST}, {DOCKER_MANIFEST_LIST}, {DOCKER_MANIFEST}"

PUSH_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64}) size: (\d+)")
PULL_DIGEST = re.compile(r"^Digest: (sha256:[0-9a-f]{64})$", re.MULTILINE)


# --------------------------------------------------------------------------- helpers


def short_id(digest: str) -> str:
    """The 12-hex-digit id docker shows in push/pull progress lines."""
    return digest.split(":", 1)[1][:12]


def push(docker: DockerDaemon, ref: str) -> tuple[str, Result]:
    """`docker push`; returns the manifest digest it reports."""
    result = docker.run("push", ref)
    match = PUSH_DIGEST.search(result.output)
    assert match, f"no 'digest: sha256:... size: N' line in push output\n{result.describe()}"
    return match.group(1), result


def pull(docker: DockerDaemon, ref: str, *args: str) -> tuple[str, Result]:
    """`docker pull`; returns the digest line it reports (the manifest or index pulled)."""
    result = docker.run("pull", *args, ref)
    match = PULL_DIGEST.search(result.output)
    assert match, f"no 'Digest: sha256:...' line in pull output\n{result.describe()}"
    return match.group(1), result


def registry_manifest(registry: LiveRegistry, repo: str, reference: str) -> httpx.Response:
    response = httpx.get(f"{registry.url}/v2/{repo}/manifests/{reference}",
                         headers={"Accept": ACCEPT_ALL}, timeout=60)
    assert response.status_code == 200, (
        f"GET manifest {repo}:{reference} -> {response.status_code}: {response.text}")
    return response


def assert_gone(docker: DockerDaemon, image_id: str) -> None:
    result = docker.run("image", "inspect", image_id, check=False)
    assert result.returncode != 0, f"image {image_id} is still present\n{result.describe()}"


def assert_layers_downloaded(result: Result, diff_count: int) -> None:
    """A pull that had to fetch every layer says "Pull complete" once per layer."""
    complete = result.output.count(": Pull complete")
    assert complete == diff_count, (
        f"expected {diff_count} layers pulled, saw {complete} 'Pull complete' lines\n"
        f"{result.describe()}")


def make_local_image(docker: DockerDaemon, tmp_path: Path, how: str, name: str,
                     layer_sizes: tuple[int, ...] = (3000, 5000, 7000)) -> tuple[str, int]:
    """Create image `name` locally; returns (image id, layer count)."""
    if how == "import":
        rootfs = write_rootfs_tar(tmp_path / "rootfs.tar", files=4)
        docker.run("import", "--change", "CMD [\"/bin/true\"]", str(rootfs), name)
        image = docker.inspect_image(name)
        return image["Id"], len(image["RootFS"]["Layers"])
    archive = write_docker_archive(tmp_path / "image.tar", name, layer_sizes)
    loaded = docker.run("load", "-i", str(archive.path))
    assert name in loaded.output, loaded.describe()
    image = docker.inspect_image(name)
    assert image["Id"] == archive.image_id, image
    assert image["RootFS"]["Layers"] == list(archive.diff_ids), image
    return archive.image_id, len(archive.diff_ids)


def manifest_inspect(docker: DockerDaemon, ref: str, *args: str) -> Any:
    result = docker.run("manifest", "inspect", "--insecure", *args, ref, check=False)
    if (result.returncode != 0 and docker.cli_version < (23,)
            and "unsupported manifest media type" in result.output):
        pytest.skip(f"docker CLI {'.'.join(map(str, docker.cli_version))} cannot parse OCI "
                    "manifests in `docker manifest inspect` (docker/cli#3990, fixed in 23.0): "
                    f"{result.output.strip()}")
    assert result.returncode == 0, f"docker manifest inspect failed\n{result.describe()}\n" \
                                   f"{docker.diagnostics()}"
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"not JSON\n{result.describe()}") from exc


def push_index(skopeo_copy: SkopeoCopy, tmp_path: Path, registry: LiveRegistry, repo: str,
               fmt: str) -> tuple[BuiltIndex, str]:
    """Push a linux/amd64 + linux/arm64 index; returns it and the digest the registry serves.

    fmt "oci" pushes the OCI index byte for byte; "v2s2" lets skopeo convert it to a Docker
    manifest list of schema 2 manifests (the form `docker buildx` and older tools produce).
    """
    layout = tmp_path / "index-layout"
    index = build_index(layout, [2048, 4096], ref="multi")
    extra = ["--all", "--retry-times", "0"]
    extra += ["--preserve-digests"] if fmt == "oci" else ["--format", "v2s2"]
    skopeo_copy(f"oci:{layout}:multi", f"docker://{registry.host}/{repo}:multi", *extra)
    response = registry_manifest(registry, repo, "multi")
    digest = response.headers.get("docker-content-digest", "")
    assert digest == "sha256:" + hashlib.sha256(response.content).hexdigest(), response.headers
    expected_type = OCI_INDEX if fmt == "oci" else DOCKER_MANIFEST_LIST
    assert response.headers["content-type"].split(";")[0] == expected_type, response.headers
    if fmt == "oci":
        assert digest == index.index_digest
    return index, digest


# ------------------------------------------------------------------ 1. pull what skopeo pushed


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "uncompressed"])
def test_pull_image_pushed_by_skopeo(docker: DockerDaemon, registry_server: LiveRegistry,
                                     skopeo_copy: SkopeoCopy, docker_refs: list[str],
                                     repo: str, tmp_path: Path, compress: bool) -> None:
    """An OCI image pushed by another tool pulls into Docker with its layers and digests."""
    layout = tmp_path / "layout"
    image: BuiltImage = build_image(layout, [2048, 4096, 1024], ref="v1", compress=compress)
    skopeo_copy(f"oci:{layout}:v1", f"docker://{registry_server.host}/{repo}:v1",
                "--preserve-digests", "--retry-times", "0")
    ref = f"{registry_server.host}/{repo}:v1"
    docker_refs.append(ref)

    digest, result = pull(docker, ref)

    assert digest == image.manifest_digest, result.describe()
    assert_layers_downloaded(result, len(image.layers))
    inspected = docker.inspect_image(ref)
    assert inspected["Id"] == image.config_digest, inspected
    assert inspected["RootFS"]["Layers"] == image.diff_ids, (
        f"expected {len(image.layers)} layers {image.diff_ids}, docker has "
        f"{inspected['RootFS']['Layers']}")
    assert f"{registry_server.host}/{repo}@{image.manifest_digest}" in inspected["RepoDigests"]
    assert (inspected["Os"], inspected["Architecture"]) == ("linux", "amd64"), inspected
    assert inspected["Size"] == 2048 + 4096 + 1024, inspected


# --------------------------------------------------------------------------- 2. push, rmi, pull


@pytest.mark.parametrize("how", ["import", "load"])
def test_push_rmi_pull_by_tag_and_digest(docker: DockerDaemon, registry_server: LiveRegistry,
                                         docker_refs: list[str], repo: str, tmp_path: Path,
                                         how: str) -> None:
    """The classic round trip: tag, push, delete locally, pull back by tag and by digest."""
    local = f"local/{repo.split('/')[-1]}:src"
    remote = f"{registry_server.host}/{repo}:v1"
    docker_refs += [local, remote]
    image_id, layer_count = make_local_image(docker, tmp_path, how, local)
    docker.run("tag", local, remote)

    digest, pushed = push(docker, remote)

    assert pushed.output.count(": Pushed") == layer_count, pushed.describe()
    repo_digest = docker.run("inspect", "--format", "{{index .RepoDigests 0}}",
                             remote).stdout.strip()
    assert repo_digest == f"{registry_server.host}/{repo}@{digest}", pushed.describe()
    served = registry_manifest(registry_server, repo, "v1")
    assert served.headers["docker-content-digest"] == digest, served.headers
    assert "sha256:" + hashlib.sha256(served.content).hexdigest() == digest
    by_digest = f"{registry_server.host}/{repo}@{digest}"
    docker_refs.append(by_digest)

    docker.run("rmi", remote, local)
    assert_gone(docker, image_id)

    pulled_digest, pulled = pull(docker, remote)
    assert pulled_digest == digest, pulled.describe()
    assert_layers_downloaded(pulled, layer_count)
    assert docker.inspect_image(remote)["Id"] == image_id, pulled.describe()

    docker.run("rmi", remote)
    assert_gone(docker, image_id)

    pulled_digest, pulled = pull(docker, by_digest)
    assert pulled_digest == digest, pulled.describe()
    assert_layers_downloaded(pulled, layer_count)
    inspected = docker.inspect_image(by_digest)
    assert inspected["Id"] == image_id, inspected
    assert by_digest in inspected["RepoDigests"], inspected
    assert inspected["RepoTags"] == [], inspected


# --------------------------------------------------------------------------- 3. multi-platform


@pytest.mark.parametrize("fmt", ["oci", "v2s2"])
def test_multi_platform_pull(docker: DockerDaemon, registry_server: LiveRegistry,
                             skopeo_copy: SkopeoCopy, docker_refs: list[str], repo: str,
                             tmp_path: Path, fmt: str) -> None:
    """`docker pull --platform` picks the right image out of a two-platform index."""
    index, index_digest = push_index(skopeo_copy, tmp_path, registry_server, repo, fmt)
    ref = f"{registry_server.host}/{repo}:multi"
    docker_refs.append(ref)

    for arch in ("arm64", "amd64"):
        image = index.images[f"linux/{arch}"]
        docker_refs.append(image.config_digest)
        digest, result = pull(docker, ref, "--platform", f"linux/{arch}")
        assert digest == index_digest, result.describe()
        assert_layers_downloaded(result, len(image.layers))
        inspected = docker.inspect_image(ref)
        assert (inspected["Os"], inspected["Architecture"]) == ("linux", arch), (
            f"pulled --platform linux/{arch}, docker reports "
            f"{inspected['Os']}/{inspected['Architecture']}\n{result.describe()}")
        assert inspected["Id"] == image.config_digest, inspected
        assert inspected["RootFS"]["Layers"] == image.diff_ids, inspected

    # Without --platform, docker picks the daemon's own platform.
    server_arch = docker.run("version", "--format", "{{.Server.Arch}}").stdout.strip()
    if f"linux/{server_arch}" in index.images:
        docker.run("rmi", "-f", *[img.config_digest for img in index.images.values()])
        digest, result = pull(docker, ref)
        assert digest == index_digest, result.describe()
        assert docker.inspect_image(ref)["Architecture"] == server_arch, result.describe()


# --------------------------------------------------------------------------- 4. manifest inspect


def test_manifest_inspect_pushed_image(docker: DockerDaemon, registry_server: LiveRegistry,
                                       docker_refs: list[str], repo: str,
                                       tmp_path: Path) -> None:
    """`docker manifest inspect` shows the schema 2 manifest `docker push` uploaded."""
    remote = f"{registry_server.host}/{repo}:v1"
    docker_refs.append(remote)
    image_id, layer_count = make_local_image(docker, tmp_path, "load", remote,
                                             layer_sizes=(1000, 2000))
    digest, _ = push(docker, remote)

    manifest = manifest_inspect(docker, remote)
    assert manifest["mediaType"] == DOCKER_MANIFEST, manifest
    assert manifest["config"]["digest"] == image_id, manifest
    assert len(manifest["layers"]) == layer_count, manifest

    verbose = manifest_inspect(docker, remote, "--verbose")
    assert verbose["Descriptor"]["digest"] == digest, verbose
    assert verbose["Descriptor"]["mediaType"] == DOCKER_MANIFEST, verbose


def test_manifest_inspect_oci_image(docker: DockerDaemon, registry_server: LiveRegistry,
                                    skopeo_copy: SkopeoCopy, repo: str, tmp_path: Path) -> None:
    """`docker manifest inspect` of an OCI image manifest pushed by skopeo."""
    layout = tmp_path / "layout"
    image = build_image(layout, [1500, 2500], ref="v1")
    ref = f"{registry_server.host}/{repo}:v1"
    skopeo_copy(f"oci:{layout}:v1", f"docker://{ref}", "--preserve-digests", "--retry-times", "0")

    manifest = manifest_inspect(docker, ref)
    assert manifest["mediaType"] == OCI_MANIFEST, manifest
    assert manifest["config"]["digest"] == image.config_digest, manifest
    assert [layer["digest"] for layer in manifest["layers"]] == image.layer_digests, manifest

    verbose = manifest_inspect(docker, ref, "--verbose")
    assert verbose["Descriptor"]["digest"] == image.manifest_digest, verbose


@pytest.mark.parametrize("fmt", ["oci", "v2s2"])
def test_manifest_inspect_index(docker: DockerDaemon, registry_server: LiveRegistry,
                                skopeo_copy: SkopeoCopy, repo: str, tmp_path: Path,
                                fmt: str) -> None:
    """`docker manifest inspect` of a two-platform index lists both platforms."""
    index, _ = push_index(skopeo_copy, tmp_path, registry_server, repo, fmt)
    ref = f"{registry_server.host}/{repo}:multi"

    listing = manifest_inspect(docker, ref)
    assert listing["mediaType"] == (OCI_INDEX if fmt == "oci" else DOCKER_MANIFEST_LIST), listing
    platforms = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"]
                 for m in listing["manifests"]}
    assert set(platforms) == {"linux/amd64", "linux/arm64"}, listing
    served = json.loads(registry_manifest(registry_server, repo, "multi").content)
    assert [m["digest"] for m in listing["manifests"]] == \
        [m["digest"] for m in served["manifests"]], (listing, served)
    if fmt == "oci":
        for platform, digest in platforms.items():
            assert digest == index.images[platform].manifest_digest, (platform, listing)

    # --verbose resolves every child manifest through the registry as well.
    verbose = manifest_inspect(docker, ref, "--verbose")
    assert isinstance(verbose, list) and len(verbose) == 2, verbose
    for entry in verbose:
        platform = entry["Descriptor"]["platform"]
        key = f"{platform['os']}/{platform['architecture']}"
        assert entry["Descriptor"]["digest"] == platforms[key], entry
        child = entry.get("OCIManifest") or entry.get("SchemaV2Manifest")
        assert child, entry
        assert child["config"]["digest"] == index.images[key].config_digest, entry


# --------------------------------------------------------------------------- 5. re-push


def test_push_existing_tag_reports_layers_exist(docker: DockerDaemon,
                                                registry_server: LiveRegistry,
                                                docker_refs: list[str], repo: str,
                                                tmp_path: Path) -> None:
    """Pushing a tag again uploads nothing: every layer "already exists"; the pull still works."""
    remote = f"{registry_server.host}/{repo}:v1"
    docker_refs.append(remote)
    image_id, layer_count = make_local_image(docker, tmp_path, "load", remote)
    diff_ids = docker.inspect_image(remote)["RootFS"]["Layers"]

    first_digest, first = push(docker, remote)
    assert first.output.count(": Pushed") == layer_count, first.describe()

    second_digest, second = push(docker, remote)
    assert second_digest == first_digest, second.describe()
    for diff_id in diff_ids:
        assert f"{short_id(diff_id)}: Layer already exists" in second.output, (
            f"layer {diff_id} was not reported as existing\n{second.describe()}")
    assert ": Pushed" not in second.output, second.describe()

    docker.run("rmi", remote)
    assert_gone(docker, image_id)
    digest, pulled = pull(docker, remote)
    assert digest == first_digest, pulled.describe()
    assert_layers_downloaded(pulled, layer_count)
    assert docker.inspect_image(remote)["Id"] == image_id


def test_push_to_second_repository_mounts_layers(docker: DockerDaemon,
                                                 registry_server: LiveRegistry,
                                                 docker_refs: list[str], repo: str,
                                                 tmp_path: Path) -> None:
    """Pushing the same image to another repository mounts its layers instead of uploading."""
    first = f"{registry_server.host}/{repo}:v1"
    second_repo = f"{repo}-copy"
    second = f"{registry_server.host}/{second_repo}:v1"
    docker_refs += [first, second]
    image_id, layer_count = make_local_image(docker, tmp_path, "load", first)
    diff_ids = docker.inspect_image(first)["RootFS"]["Layers"]
    first_digest, _ = push(docker, first)

    docker.run("tag", first, second)
    second_digest, pushed = push(docker, second)

    assert second_digest == first_digest, pushed.describe()
    for diff_id in diff_ids:
        assert f"{short_id(diff_id)}: Mounted from {repo}" in pushed.output, (
            f"layer {diff_id} was not mounted from {repo}\n{pushed.describe()}")

    docker.run("rmi", first, second)
    assert_gone(docker, image_id)
    digest, pulled = pull(docker, second)
    assert digest == first_digest, pulled.describe()
    assert_layers_downloaded(pulled, layer_count)
    assert docker.inspect_image(second)["Id"] == image_id


def test_push_moving_an_immutable_tag_is_refused(docker: DockerDaemon,
                                                 registry_server: LiveRegistry,
                                                 docker_refs: list[str], repo: str,
                                                 tmp_path: Path) -> None:
    """With ECR's IMMUTABLE setting, `docker push` of another image to an existing tag fails
    with TAG_INVALID and ECR's message; the tag keeps its image."""
    import boto3

    ecr = boto3.client("ecr", endpoint_url=registry_server.url, region_name="us-east-1",
                       aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="secret")
    ecr.create_repository(repositoryName=repo, imageTagMutability="IMMUTABLE")
    remote = f"{registry_server.host}/{repo}:v1"
    docker_refs.append(remote)
    for sub in ("first", "second"):
        (tmp_path / sub).mkdir()
    make_local_image(docker, tmp_path / "first", "load", remote, (2000, 3000))
    first_digest, _ = push(docker, remote)

    make_local_image(docker, tmp_path / "second", "load", remote, (4000,))
    refused = docker.run("push", remote, check=False)
    assert refused.returncode != 0, refused.describe()
    assert "tag invalid" in refused.output, refused.describe()
    assert (f"The image tag 'v1' already exists in the '{repo}' repository and cannot be "
            "overwritten because the repository is immutable.") in refused.output, \
        refused.describe()
    served = registry_manifest(registry_server, repo, "v1")
    assert served.headers["docker-content-digest"] == first_digest
