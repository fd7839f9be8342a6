"""Node credentials without hand-made secrets: the kubelet credential provider and the docker
credential helper mint registry passwords through GetAuthorizationToken (SigV4 with the node's
AWS credentials), and skopeo pushes and pulls with what the helper supplies."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveRegistry, free_port, start_registry
from tests.ecr.test_signed import SECRET_KEY
from tests.imagebuild import build_image, read_blob, resolve

PROVIDER = "registry-credential-provider"
HELPER = "docker-credential-registry"
REQUEST_V1 = "credentialprovider.kubelet.k8s.io/v1"


@dataclass
class Node:
    live: LiveRegistry
    env: dict[str, str]  # a node's environment: AWS credentials, the registry endpoint
    secret: str


def script(name: str) -> str:
    """The installed console script (the interpreter's bin dir holds it even under pyenv)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    assert found, f"{name} is not installed (pip install -e .)"
    return found


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    data = tmp_path_factory.mktemp("credentials") / "data"
    data.mkdir(parents=True)
    cli_env = {**os.environ, "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY}

    def cli(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run([sys.executable, "-m", "registry", *args, "--data-dir", str(data)],
                              input=stdin, capture_output=True, text=True, env=cli_env,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("user", "add", "node", "--password-stdin", stdin="node-pw")
    policy = data.parent / "node.json"
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}))
    cli("policy", "attach", "node", str(policy))
    key = json.loads(cli("user", "key", "create", "node"))
    live = start_registry(data, env={"REGISTRY_AUTH_ENABLED": "true",
                                     "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY})
    home = data.parent / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "REGISTRY_", "XDG_", "DOCKER_"))}
    (home / "aws-empty").write_text("")
    env.update({
        "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_CONFIG_HOME": str(home / "config"), "XDG_RUNTIME_DIR": str(home / "run"),
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "aws-empty"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-empty"),
        "REGISTRY_ENDPOINT_URL": live.url,
        "PATH": f"{Path(script(HELPER)).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    yield Node(live, env, key["SecretAccessKey"])
    live.stop()


def run(node: Node, command: list[str], stdin: str,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, input=stdin, capture_output=True, text=True,
                          env=env or node.env, timeout=60)


def assert_clean_failure(done: subprocess.CompletedProcess[str], node: Node) -> None:
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and node.secret not in done.stderr


def test_kubelet_provider_answers_with_working_credentials(node: Node) -> None:
    request = {"apiVersion": REQUEST_V1, "kind": "CredentialProviderRequest",
               "image": f"{node.live.host}/team/app:v1"}
    done = run(node, [script(PROVIDER)], json.dumps(request))
    assert done.returncode == 0, done.stderr
    response = json.loads(done.stdout)
    assert response["kind"] == "CredentialProviderResponse"
    assert response["apiVersion"] == REQUEST_V1
    assert response["cacheKeyType"] == "Registry"
    hours, minutes, seconds = map(int, re.fullmatch(r"(\d+)h(\d+)m(\d+)s",
                                                    response["cacheDuration"]).groups())
    assert 10 * 3600 < hours * 3600 + minutes * 60 + seconds < 12 * 3600
    auth = response["auth"][node.live.host]
    assert auth["username"] == "AWS"
    credentials = (auth["username"], auth["password"])
    assert httpx.get(node.live.url + "/v2/", auth=credentials).status_code == 200
    token = httpx.get(node.live.url + "/token", auth=credentials,
                      params={"service": "registry", "scope": "repository:team/app:pull"})
    assert token.status_code == 200 and token.json()["scope"] == "repository:team/app:pull"


@pytest.mark.parametrize("stdin", [
    "not json",
    json.dumps({"apiVersion": "credentialprovider.kubelet.k8s.io/v9",
                "kind": "CredentialProviderRequest", "image": "h.example:5000/a:b"}),
    json.dumps({"apiVersion": REQUEST_V1, "kind": "CredentialProviderRequest"}),
    json.dumps({"apiVersion": REQUEST_V1, "kind": "CredentialProviderRequest",
                "image": "library/nginx:1"}),
], ids=["garbage", "wrong-version", "no-image", "no-registry-host"])
def test_kubelet_provider_refuses_bad_requests(node: Node, stdin: str) -> None:
    assert_clean_failure(run(node, [script(PROVIDER)], stdin), node)


def test_kubelet_provider_fails_cleanly_when_refused_or_unreachable(node: Node) -> None:
    request = json.dumps({"apiVersion": REQUEST_V1, "kind": "CredentialProviderRequest",
                          "image": f"{node.live.host}/team/app:v1"})
    wrong = {**node.env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    refused = run(node, [script(PROVIDER)], request, wrong)
    assert_clean_failure(refused, node)
    assert "InvalidSignatureException" in refused.stderr
    down = run(node, [script(PROVIDER), "--endpoint-url", f"http://127.0.0.1:{free_port()}"],
               request)
    assert_clean_failure(down, node)
    assert "cannot reach" in down.stderr


def test_docker_helper_protocol_and_cache(node: Node, tmp_path: Path) -> None:
    env = {**node.env, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    server = node.live.host
    assert run(node, [script(HELPER), "version"], "", env).stdout.strip()
    got = run(node, [script(HELPER), "get"], server, env)
    assert got.returncode == 0, got.stderr
    answer = json.loads(got.stdout)
    assert answer["ServerURL"] == server and answer["Username"] == "AWS"
    assert httpx.get(node.live.url + "/v2/",
                     auth=(answer["Username"], answer["Secret"])).status_code == 200
    cached = tmp_path / "cache" / "registry-credentials"
    files = list(cached.glob("*.json"))
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(cached.stat().st_mode) == 0o700
    listed = json.loads(run(node, [script(HELPER), "list"], "", env).stdout)
    assert listed == {server: "AWS"}
    # Served from the cache: the registry is not asked (its endpoint is unreachable here).
    offline = {**env, "REGISTRY_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    again = run(node, [script(HELPER), "get"], f"https://{server}/v1/", offline)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["Secret"] == answer["Secret"]
    assert run(node, [script(HELPER), "store"], json.dumps(
        {"ServerURL": server, "Username": "x", "Secret": "y"}), env).returncode == 0
    assert run(node, [script(HELPER), "erase"], server, env).returncode == 0
    assert list(cached.glob("*.json")) == []
    missing = run(node, [script(HELPER), "get"], server, offline)
    assert missing.returncode == 1
    assert "credentials not found" in missing.stdout
    assert "Traceback" not in missing.stderr and node.secret not in missing.stderr


def test_skopeo_pushes_and_pulls_with_the_helper(node: Node, tmp_path: Path) -> None:
    skopeo = shutil.which("skopeo")
    assert skopeo is not None
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"credHelpers": {node.live.host: "registry"}}))
    registries = tmp_path / "registries.conf"
    registries.write_text("unqualified-search-registries = []\n")
    env = {**node.env, "CONTAINERS_REGISTRIES_CONF": str(registries)}
    image = build_image(tmp_path / "layout", [3000, 50_000])
    ref = f"docker://{node.live.host}/helped/app:v1"

    def copy(src: str, dest: str) -> None:
        done = subprocess.run([skopeo, "--insecure-policy", "copy", "--authfile", str(authfile),
                               "--src-tls-verify=false", "--dest-tls-verify=false", src, dest],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr

    copy(f"oci:{image.layout}:latest", ref)
    copy(ref, f"oci:{tmp_path / 'pulled'}:v1")
    descriptor = resolve(tmp_path / "pulled", "v1")
    assert descriptor["digest"] == image.manifest_digest
    assert read_blob(tmp_path / "pulled", image.manifest_digest) == image.manifest
    # Without the helper the same push is refused.
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    refused = subprocess.run([skopeo, "--insecure-policy", "copy", "--authfile", str(plain),
                              "--dest-tls-verify=false", f"oci:{image.layout}:latest", ref],
                             capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode != 0
