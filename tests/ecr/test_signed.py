"""With auth on, the control plane checks SigV4 against access keys and IAM policies."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.client import BaseClient
from botocore.config import Config

from auth.secrets import generate_secret_key
from tests.conftest import LiveRegistry, start_registry

SECRET_KEY = generate_secret_key()
Keys = dict[str, dict[str, str]]
ADMIN = {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}


def cli(data_dir: Path, *args: str, stdin: str | None = None) -> str:
    env = {**os.environ, "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY}
    done = subprocess.run([sys.executable, "-m", "registry", *args, "--data-dir", str(data_dir)],
                          input=stdin, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveRegistry, Keys]]:
    data = tmp_path_factory.mktemp("ecr-signed") / "data"
    data.mkdir(parents=True)
    policy = data.parent / "admin.json"
    policy.write_text(json.dumps(ADMIN))
    found: Keys = {}
    for user in ("root", "nobody"):
        cli(data, "user", "add", user, "--password-stdin", stdin="pw-" + user)
        found[user] = json.loads(cli(data, "user", "key", "create", user))
    cli(data, "policy", "attach", "root", str(policy))
    live = start_registry(data, env={"REGISTRY_AUTH_ENABLED": "true",
                                     "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY})
    yield live, found
    live.stop()


def client(url: str, key_id: str, secret: str) -> BaseClient:
    return boto3.client("ecr", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=key_id, aws_secret_access_key=secret,
                        config=Config(retries={"total_max_attempts": 1}))


def test_signed_request_with_an_allowed_key_works(keys: tuple[LiveRegistry, Keys]) -> None:
    live, found = keys
    root = client(live.url, found["root"]["AccessKeyId"], found["root"]["SecretAccessKey"])
    name = f"signed/r-{os.urandom(3).hex()}"
    assert root.create_repository(repositoryName=name)["repository"]["repositoryName"] == name


def test_wrong_secret_is_invalid_signature(keys: tuple[LiveRegistry, Keys]) -> None:
    live, found = keys
    bad = client(live.url, found["root"]["AccessKeyId"], "not-the-secret")
    with pytest.raises(bad.exceptions.ClientError) as caught:
        bad.describe_repositories()
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_unknown_key_is_unrecognized(keys: tuple[LiveRegistry, Keys]) -> None:
    live, _ = keys
    stranger = client(live.url, "AKIAUNKNOWNUNKNOWN00", "secret")
    with pytest.raises(stranger.exceptions.ClientError) as caught:
        stranger.describe_repositories()
    assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_key_without_policy_is_denied(keys: tuple[LiveRegistry, Keys]) -> None:
    live, found = keys
    nobody = client(live.url, found["nobody"]["AccessKeyId"], found["nobody"]["SecretAccessKey"])
    with pytest.raises(nobody.exceptions.ClientError) as caught:
        nobody.create_repository(repositoryName="signed/denied")
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"


def test_authorization_token_logs_in_to_the_data_plane(
        keys: tuple[LiveRegistry, Keys]) -> None:
    live, found = keys
    root = client(live.url, found["root"]["AccessKeyId"], found["root"]["SecretAccessKey"])
    data = root.get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    assert user == "AWS"
    assert data["proxyEndpoint"] == live.url
    remaining = data["expiresAt"].timestamp() - time.time()
    assert 11 * 3600 < remaining <= 12 * 3600 + 5
    assert httpx.get(live.url + "/v2/", auth=(user, password)).status_code == 200
    token = httpx.get(live.url + "/token", auth=(user, password),
                      params={"service": "registry", "scope": "repository:any/repo:pull"})
    assert token.status_code == 200
    assert token.json()["scope"] == "repository:any/repo:pull"
    assert httpx.get(live.url + "/v2/", auth=(user, password[:-2] + "xx")).status_code == 401
    # As a bearer token it grants nothing.
    bearer = httpx.get(live.url + "/v2/any/repo/tags/list",
                       headers={"Authorization": f"Bearer {password}"})
    assert bearer.status_code == 401


def test_authorization_token_needs_permission(keys: tuple[LiveRegistry, Keys]) -> None:
    live, found = keys
    nobody = client(live.url, found["nobody"]["AccessKeyId"], found["nobody"]["SecretAccessKey"])
    with pytest.raises(nobody.exceptions.ClientError) as caught:
        nobody.get_authorization_token()
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
