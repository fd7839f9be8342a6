"""Real clients lose access when the credential they logged in with goes.

Found (issue 19, part 1): after `aws ecr get-login-password | docker login --username AWS
--password-stdin HOST`, docker keeps the refresh token the registry returned (its
`identitytoken`, then 7 days long), and `registry user key delete KEYID` for the key that minted
the 12-hour password left docker pull and push working; after `registry user passwd`, pulls
kept working. Here docker logs in (with a password from GetAuthorizationToken via boto3, or a
user's own password), pushes and pulls, an operator changes the credential with the CLI on the
server's data directory, and docker's next pull must fail. skopeo, which keeps the
authorization token itself as the password, must lose access as well.

An access token already handed out lives on for its own `auth.token_ttl` (300 s); docker asks
for a new one for every pull, so that is not what these tests see.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.auth.conftest import (
    AuthRegistry,
    add_user,
    identity_policy,
    registry_cli,
    start_auth_registry,
    write_policy,
)
from tests.imagebuild import build_image

from .dockerd import DockerDaemon, write_docker_archive

pytestmark = pytest.mark.slow


@dataclass
class Account:
    """A fresh user who may push and pull `rev/<name>/*`, with an access key."""

    registry: AuthRegistry
    name: str
    password: str = field(repr=False)
    key_id: str
    secret: str = field(repr=False)

    @property
    def repository(self) -> str:
        return f"rev/{self.name}/app"

    def authorization_token(self) -> str:
        """`aws ecr get-login-password`: the password half of GetAuthorizationToken."""
        ecr = boto3.client("ecr", endpoint_url=self.registry.url, region_name="us-east-1",
                           aws_access_key_id=self.key_id, aws_secret_access_key=self.secret,
                           config=Config(retries={"total_max_attempts": 1}))
        encoded = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
        return base64.b64decode(encoded).decode().partition(":")[2]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthRegistry]:
    base = tmp_path_factory.mktemp("revocation")
    live = start_auth_registry(base / "data")
    yield AuthRegistry(live, base / "data", base / "policies")
    live.stop()


@pytest.fixture
def account(registry: AuthRegistry) -> Account:
    name = f"u{os.urandom(3).hex()}"
    add_user(registry.data_dir, name, f"{name}-pw")
    policy = write_policy(registry.policy_dir, name, identity_policy(
        "ecr:*", ["*", f"arn:aws:ecr:*:*:repository/rev/{name}/*"]))
    registry.cli("policy", "attach", name, str(policy))
    key = json.loads(registry.cli("user", "key", "create", name).stdout)
    return Account(registry, name, f"{name}-pw", key["AccessKeyId"], key["SecretAccessKey"])


@pytest.fixture
def docker(docker_engine: DockerDaemon, registry: AuthRegistry) -> Iterator[DockerDaemon]:
    docker_engine.extra_logs["registry log"] = registry.live.log_path
    yield docker_engine
    docker_engine.run("logout", registry.host, check=False)


def docker_login(docker: DockerDaemon, registry: AuthRegistry, user: str,
                 password: str) -> None:
    docker.run("login", "--username", user, "--password-stdin", registry.host,
               input=password.encode())
    config = json.loads(Path(docker.env["DOCKER_CONFIG"], "config.json").read_text())
    # What makes the issue: docker keeps the refresh token, not the password.
    assert config["auths"][registry.host].get("identitytoken"), "no identitytoken kept"


def push_and_pull(docker: DockerDaemon, ref: str, tmp_path: Path) -> None:
    """Push a fresh local image, remove it, pull it back: the login works."""
    archive = write_docker_archive(tmp_path / "image.tar", ref, (2000, 3000))
    docker.run("load", "-i", str(archive.path))
    docker.run("push", ref)
    docker.remove_images(ref)
    docker.run("pull", ref)
    docker.remove_images(ref)


def assert_refused(docker: DockerDaemon, ref: str, tmp_path: Path) -> None:
    pulled = docker.run("pull", ref, check=False)
    assert pulled.returncode != 0, f"pull still works\n{pulled.describe()}"
    assert "unauthorized" in pulled.output.lower() or "denied" in pulled.output.lower(), \
        pulled.describe()
    other = ref.rsplit(":", 1)[0] + ":after"
    archive = write_docker_archive(tmp_path / "after.tar", other, (1000,))
    docker.run("load", "-i", str(archive.path))
    try:
        pushed = docker.run("push", other, check=False)
        assert pushed.returncode != 0, f"push still works\n{pushed.describe()}"
    finally:
        docker.remove_images(other)


# (how docker logs in, what the operator does): the commands run against the data directory.
CASES = {
    "key delete": ("key", lambda a: ["user", "key", "delete", a.key_id]),
    "key deactivate": ("key", lambda a: ["user", "key", "update", a.key_id,
                                         "--status", "Inactive"]),
    "passwd": ("password", lambda a: ["user", "passwd", a.name, "--password-stdin"]),
    "revoke-tokens": ("key", lambda a: ["user", "revoke-tokens", a.name]),
    "disable": ("password", lambda a: ["user", "disable", a.name]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_docker_loses_access_when_its_credential_goes(docker: DockerDaemon,
                                                      account: Account, case: str,
                                                      tmp_path: Path) -> None:
    registry = account.registry
    how, command = CASES[case]
    if how == "key":
        docker_login(docker, registry, "AWS", account.authorization_token())
    else:
        docker_login(docker, registry, account.name, account.password)
    ref = f"{registry.host}/{account.repository}:v1"
    push_and_pull(docker, ref, tmp_path)

    registry_cli(registry.data_dir, *command(account), stdin="a-new-password\n")
    assert_refused(docker, ref, tmp_path)


SKOPEO = shutil.which("skopeo")


@pytest.mark.skipif(SKOPEO is None, reason="skopeo is not on PATH")
def test_skopeo_loses_access_when_the_key_behind_its_login_is_deleted(
        account: Account, tmp_path: Path) -> None:
    """skopeo keeps `AWS:<authorization token>` in its auth file and sends it as Basic
    credentials: the token dies with the key that minted it, before its 12 hours are up."""
    assert SKOPEO is not None
    registry = account.registry
    for directory in ("tmp", "run"):
        (tmp_path / directory).mkdir()
    registries_conf = tmp_path / "registries.conf"
    registries_conf.write_text("unqualified-search-registries = []\n")
    authfile = tmp_path / "auth.json"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REGISTRY_", "DOCKER_", "XDG_", "CONTAINERS_"))}
    env.update({"CONTAINERS_REGISTRIES_CONF": str(registries_conf),
                "XDG_RUNTIME_DIR": str(tmp_path / "run"), "HOME": str(tmp_path)})

    def skopeo(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SKOPEO, "--insecure-policy", "--tmpdir", str(tmp_path / "tmp"),
                               *args], input=stdin, capture_output=True, text=True, env=env,
                              timeout=120, check=False)

    login = skopeo("login", "--tls-verify=false", "--authfile", str(authfile), "--username",
                   "AWS", "--password-stdin", registry.host,
                   stdin=account.authorization_token())
    assert login.returncode == 0, login.stderr
    image = build_image(tmp_path / "layout", (1500,), ref="v1")
    ref = f"docker://{registry.host}/{account.repository}:skopeo"
    copied = skopeo("copy", "--retry-times", "0", "--dest-tls-verify=false", "--authfile",
                    str(authfile), f"oci:{image.layout}:{image.ref}", ref)
    assert copied.returncode == 0, copied.stderr
    inspect = ("inspect", "--retry-times", "0", "--tls-verify=false", "--authfile",
               str(authfile), ref)
    assert skopeo(*inspect).returncode == 0

    registry.cli("user", "key", "delete", account.key_id)
    refused = skopeo(*inspect)
    assert refused.returncode != 0, refused.stdout
    assert "unauthorized" in refused.stderr.lower(), refused.stderr
