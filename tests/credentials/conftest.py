"""One auth-on registry for the node-credential tests, and a node's environment.

Two users: `node` with the pull-only policy docs/node-credentials.md recommends for nodes, and
`builder` allowed everything (pushes, create-on-push). Each has an access key; the tools get
it only through the environment (or a shared credentials file), as on a real node, with the
machine's own AWS, XDG, docker and containers settings kept out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from auth.secrets import generate_secret_key
from tests.conftest import LiveRegistry, start_registry

PROVIDER = "registry-credential-provider"
HELPER = "docker-credential-registry"
SECRET_KEY = generate_secret_key()  # the registry's (auth.secret_key), not an AWS one
NODE_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
    {"Effect": "Allow", "Resource": "*", "Action": [
        "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]},
]}
BUILDER_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}


@dataclass(frozen=True)
class Key:
    key_id: str
    secret: str


@dataclass
class Node:
    live: LiveRegistry
    home: Path
    keys: dict[str, Key]

    def env(self, user: str = "node", **extra: str) -> dict[str, str]:
        """A node's environment: `user`'s AWS keys, the registry's endpoint (plain http)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "REGISTRY_", "XDG_", "DOCKER_", "CONTAINERS_"))}
        env.update({
            "HOME": str(self.home), "XDG_CACHE_HOME": str(self.home / "cache"),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "XDG_RUNTIME_DIR": str(self.home / "run"),
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(self.home / "aws-empty"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.home / "aws-empty"),
            "REGISTRY_ENDPOINT_URL": self.live.url,
            "PATH": f"{Path(script(HELPER)).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        })
        if user:
            env["AWS_ACCESS_KEY_ID"] = self.keys[user].key_id
            env["AWS_SECRET_ACCESS_KEY"] = self.keys[user].secret
        env.update(extra)
        return env

    @property
    def secrets(self) -> list[str]:
        return [key.secret for key in self.keys.values()]


def script(name: str) -> str:
    """The installed console script. pyenv's shims re-exec through pyenv; the interpreter's own
    bin directory holds the real script."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    assert found, f"{name} is not installed (pip install -e .)"
    return found


def run(command: list[str], stdin: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, input=stdin, capture_output=True, text=True, env=env,
                          timeout=60)


def assert_clean_failure(done: subprocess.CompletedProcess[str], node: Node) -> None:
    """Non-zero, one line on stderr, no traceback, no secret anywhere."""
    assert done.returncode != 0, done.stdout
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for secret in node.secrets:
        assert secret not in done.stderr and secret not in done.stdout


@pytest.fixture(scope="package")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    root = tmp_path_factory.mktemp("credentials")
    data = root / "data"
    data.mkdir()
    cli_env = {**os.environ, "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY}

    def cli(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run([sys.executable, "-m", "registry", *args, "--data-dir", str(data)],
                              input=stdin, capture_output=True, text=True, env=cli_env,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    keys: dict[str, Key] = {}
    for user, policy in (("node", NODE_POLICY), ("builder", BUILDER_POLICY)):
        cli("user", "add", user, "--password-stdin", stdin=f"{user}-password")
        policy_file = root / f"{user}.json"
        policy_file.write_text(json.dumps(policy))
        cli("policy", "attach", user, str(policy_file))
        created = json.loads(cli("user", "key", "create", user))
        keys[user] = Key(created["AccessKeyId"], created["SecretAccessKey"])
    live = start_registry(data, env={"REGISTRY_AUTH_ENABLED": "true",
                                     "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY})
    home = root / "home"
    home.mkdir()
    (home / "aws-empty").write_text("")
    try:
        yield Node(live, home, keys)
    finally:
        live.stop()
