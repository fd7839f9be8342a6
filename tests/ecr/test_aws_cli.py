"""The aws CLI and skopeo together, as an ECR user works: `aws ecr create-repository`, then
`aws ecr get-login-password | skopeo login --username AWS --password-stdin`, `skopeo copy`, and
the image as `aws ecr describe-images`, `list-images` and `batch-get-image` report it.

The server has auth on and ECR's create-before-push rule (no create-on-push). Neither client
reads the host's configuration: the aws CLI gets its keys from the environment and empty config
files, skopeo its own registries.conf, auth file and directories.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveRegistry, start_registry
from tests.ecr.test_signed import ADMIN, SECRET_KEY, cli
from tests.imagebuild import BuiltImage, build_image

SKOPEO = shutil.which("skopeo")
if SKOPEO is None:
    if os.environ.get("CI"):
        pytest.fail("skopeo is not on PATH but CI is set: the aws CLI round-trip must run in CI",
                    pytrace=False)
    pytest.skip("skopeo is not on PATH", allow_module_level=True)

TIMEOUT = 120
TAG = "v1"


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


@dataclass(frozen=True)
class Clients:
    """The aws CLI and skopeo, each with a private environment, pointed at `live`."""

    live: LiveRegistry
    home: Path
    aws_env: dict[str, str] = field(repr=False)
    skopeo_env: dict[str, str] = field(repr=False)

    def aws(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "awscli", *args, "--endpoint-url", self.live.url,
               "--region", "us-east-1", "--output", "json"]
        result = subprocess.run(cmd, capture_output=True, text=True, env=self.aws_env,
                                timeout=TIMEOUT, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"aws exited {result.returncode}: {' '.join(args)}\n"
                                 f"stderr:\n{result.stderr}\n{self.log_tail()}")
        return result

    def aws_json(self, *args: str) -> Any:
        return json.loads(self.aws(*args).stdout)

    def skopeo_cmd(self, *args: str) -> list[str]:
        assert SKOPEO is not None
        return [SKOPEO, "--insecure-policy", "--tmpdir", str(self.home / "tmp"), *args]

    def skopeo(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = self.skopeo_cmd(*args)
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, env=self.skopeo_env,
                                    timeout=TIMEOUT, check=False)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"skopeo timed out: {' '.join(cmd)}\n{_text(exc.stderr)}\n"
                                 f"{self.log_tail()}") from exc
        if check and result.returncode != 0:
            raise AssertionError(f"skopeo exited {result.returncode}: {' '.join(cmd)}\n"
                                 f"stderr:\n{result.stderr}\n{self.log_tail()}")
        return result

    def login(self, authfile: Path) -> subprocess.CompletedProcess[str]:
        """`aws ecr get-login-password | skopeo login --username AWS --password-stdin HOST`."""
        token = subprocess.Popen(
            [sys.executable, "-m", "awscli", "ecr", "get-login-password", "--endpoint-url",
             self.live.url, "--region", "us-east-1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.aws_env)
        assert token.stdout is not None
        try:
            login = subprocess.run(
                self.skopeo_cmd("login", "--username", "AWS", "--password-stdin",
                                "--tls-verify=false", "--authfile", str(authfile),
                                self.live.host),
                stdin=token.stdout, capture_output=True, text=True, env=self.skopeo_env,
                timeout=TIMEOUT, check=False)
        finally:
            token.stdout.close()
            _, aws_stderr = token.communicate(timeout=TIMEOUT)
        assert token.returncode == 0, _text(aws_stderr)
        assert login.returncode == 0, f"{login.stderr}\n{self.log_tail()}"
        return login

    def copy(self, src: str, dest: str, authfile: Path, *extra: str,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.skopeo("copy", "--retry-times", "0", "--dest-tls-verify=false",
                           "--authfile", str(authfile), *extra, src, dest, check=check)

    def ref(self, name: str, tag: str = TAG) -> str:
        return f"docker://{self.live.host}/{name}:{tag}"

    def log_tail(self) -> str:
        return "registry log (tail):\n" + self.live.log()[-4000:]


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clients]:
    data = tmp_path_factory.mktemp("aws-cli") / "data"
    data.mkdir(parents=True)
    policy = data.parent / "ecr-all.json"
    policy.write_text(json.dumps(ADMIN))
    cli(data, "user", "add", "dev", "--password-stdin", stdin="pw-dev")
    cli(data, "policy", "attach", "dev", str(policy))
    key = json.loads(cli(data, "user", "key", "create", "dev"))
    live = start_registry(data, env={"REGISTRY_AUTH_ENABLED": "true",
                                     "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY,
                                     "REGISTRY_REPOSITORIES_CREATE_ON_PUSH": "false"})

    home = tmp_path_factory.mktemp("aws-cli-home")
    for directory in ("tmp", "docker-config", "run", "config"):
        (home / directory).mkdir()
    (home / "aws-config").write_text("")
    (home / "aws-credentials").write_text("")
    (home / "registries.conf").write_text("unqualified-search-registries = []\n")
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("AWS_", "REGISTRY_", "DOCKER_", "XDG_", "CONTAINERS_"))}
    aws_env = {**base,
               "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
               "AWS_CONFIG_FILE": str(home / "aws-config"),
               "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
               "AWS_EC2_METADATA_DISABLED": "true",
               "AWS_MAX_ATTEMPTS": "1",
               "AWS_PAGER": ""}
    skopeo_env = {**base,
                  "CONTAINERS_REGISTRIES_CONF": str(home / "registries.conf"),
                  "REGISTRY_AUTH_FILE": str(home / "unused-auth.json"),  # every call is explicit
                  "DOCKER_CONFIG": str(home / "docker-config"),
                  "XDG_RUNTIME_DIR": str(home / "run"),
                  "XDG_CONFIG_HOME": str(home / "config"),
                  "HOME": str(home),
                  "TMPDIR": str(home / "tmp")}
    yield Clients(live, home, aws_env, skopeo_env)
    live.stop()


@pytest.fixture(autouse=True)
def no_server_tracebacks(clients: Clients) -> Iterator[None]:
    before = len(clients.live.log())
    yield
    new = clients.live.log()[before:]
    assert "Traceback" not in new, new[-4000:]


@dataclass(frozen=True)
class Pushed:
    name: str
    registry_id: str
    image: BuiltImage
    authfile: Path
    digest: str
    """From `skopeo copy --digestfile`: the manifest's digest as pushed."""
    raw: bytes
    """The manifest as the registry serves it (`skopeo inspect --raw`)."""
    started: float
    finished: float

    @property
    def manifest(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.raw)
        return parsed


@pytest.fixture(scope="module")
def authfile(clients: Clients, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("aws-login") / "auth.json"
    clients.login(path)
    return path


@pytest.fixture(scope="module")
def pushed(clients: Clients, authfile: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Pushed:
    name = f"team/cli-{os.urandom(3).hex()}"
    created = clients.aws_json("ecr", "create-repository", "--repository-name", name)
    assert created["repository"]["repositoryName"] == name
    image = build_image(tmp_path_factory.mktemp("aws-cli-image") / "layout", [3000, 50_000],
                        ref=TAG)
    digestfile = image.layout.parent / "digest"
    started = time.time()
    clients.copy(f"oci:{image.layout}:{TAG}", clients.ref(name), authfile,
                 "--digestfile", str(digestfile))
    finished = time.time()
    raw = clients.skopeo("inspect", "--raw", "--tls-verify=false", "--authfile", str(authfile),
                         clients.ref(name)).stdout.encode()
    return Pushed(name, created["repository"]["registryId"], image, authfile,
                  digestfile.read_text().strip(), raw, started, finished)


def epoch(value: float | int | str) -> float:
    """A timestamp as the aws CLI prints it (epoch seconds, or ISO 8601) in epoch seconds."""
    if isinstance(value, int | float):
        return float(value)
    return dt.datetime.fromisoformat(value).timestamp()


def test_login_stores_the_aws_token_for_the_registry(clients: Clients, authfile: Path) -> None:
    auths = json.loads(authfile.read_text())["auths"]
    assert list(auths) == [clients.live.host], auths
    got = clients.skopeo("login", "--tls-verify=false", "--authfile", str(authfile),
                         "--get-login", clients.live.host)
    assert got.stdout.strip() == "AWS"


def test_the_pushed_manifest_is_what_skopeo_reports(pushed: Pushed) -> None:
    assert pushed.digest == "sha256:" + hashlib.sha256(pushed.raw).hexdigest()
    # The layers went up unchanged: already gzip-compressed, skopeo has no reason to touch them.
    assert [d["digest"] for d in pushed.manifest["layers"]] == pushed.image.layer_digests


def test_describe_images_reports_the_pushed_image(clients: Clients, pushed: Pushed) -> None:
    details = clients.aws_json("ecr", "describe-images",
                               "--repository-name", pushed.name)["imageDetails"]
    assert len(details) == 1, details
    detail = details[0]
    assert detail["repositoryName"] == pushed.name
    assert detail["registryId"] == pushed.registry_id
    assert detail["imageTags"] == [TAG]
    assert detail["imageDigest"] == pushed.digest
    # ECR's size: the compressed layers the manifest lists, not its config.
    assert detail["imageSizeInBytes"] == sum(d["size"] for d in pushed.manifest["layers"])
    assert detail["imageManifestMediaType"] == pushed.manifest["mediaType"]
    pushed_at = epoch(detail["imagePushedAt"])
    assert pushed.started - 2 <= pushed_at <= pushed.finished + 2, (
        pushed_at, pushed.started, pushed.finished)

    by_tag = clients.aws_json("ecr", "describe-images", "--repository-name", pushed.name,
                              "--image-ids", f"imageTag={TAG}")["imageDetails"]
    assert [d["imageDigest"] for d in by_tag] == [pushed.digest]


def test_list_images_lists_the_tag(clients: Clients, pushed: Pushed) -> None:
    listed = clients.aws_json("ecr", "list-images", "--repository-name", pushed.name)
    assert listed["imageIds"] == [{"imageDigest": pushed.digest, "imageTag": TAG}]


def test_batch_get_image_returns_the_manifest_bytes(clients: Clients, pushed: Pushed) -> None:
    got = clients.aws_json("ecr", "batch-get-image", "--repository-name", pushed.name,
                           "--image-ids", f"imageTag={TAG}")
    assert got["failures"] == []
    [image] = got["images"]
    assert image["imageId"] == {"imageDigest": pushed.digest, "imageTag": TAG}
    assert image["imageManifest"].encode() == pushed.raw
    assert image["imageManifestMediaType"] == pushed.manifest["mediaType"]
    assert image["repositoryName"] == pushed.name

    missing = clients.aws_json("ecr", "batch-get-image", "--repository-name", pushed.name,
                               "--image-ids", "imageTag=v404")
    assert missing["images"] == []
    assert [(f["imageId"], f["failureCode"]) for f in missing["failures"]] == [
        ({"imageTag": "v404"}, "ImageNotFound")]


def test_pushing_to_a_repository_not_created_fails_and_says_so(
        clients: Clients, authfile: Path, pushed: Pushed) -> None:
    name = f"team/never-created-{os.urandom(3).hex()}"
    result = clients.copy(f"oci:{pushed.image.layout}:{TAG}", clients.ref(name), authfile,
                          check=False)
    assert result.returncode != 0, result.stdout + result.stderr
    assert name in result.stderr, result.stderr
    assert "create" in result.stderr.lower(), result.stderr
    missing = clients.aws("ecr", "describe-repositories", "--repository-names", name,
                          check=False)
    assert missing.returncode != 0
    assert "RepositoryNotFoundException" in missing.stderr, missing.stderr


def test_without_login_skopeo_copy_is_refused(clients: Clients, pushed: Pushed,
                                              tmp_path: Path) -> None:
    empty = tmp_path / "auth.json"
    empty.write_text('{"auths": {}}\n')
    result = clients.copy(f"oci:{pushed.image.layout}:{TAG}", clients.ref(pushed.name, "anon"),
                          empty, check=False)
    assert result.returncode != 0, result.stdout + result.stderr
    stderr = result.stderr.lower()
    assert any(word in stderr for word in ("unauthorized", "authentication required", "denied")), \
        result.stderr
    listed = clients.aws_json("ecr", "list-images", "--repository-name", pushed.name)
    assert "anon" not in [i.get("imageTag") for i in listed["imageIds"]], listed
