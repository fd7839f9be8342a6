"""Registries that replicate to each other: live `registry serve` processes on free loopback
ports. `plain` is a destination without auth; `secure` is a destination with auth on, whose
user `replicator` may do anything; the source reaches both through recording proxies
(`to_plain`, `to_secure`), so tests can count what arrived; `source`
replicates `rep/` to plain, `sec/` to secure, `fan/` to both, `doomed/` to secure with a
wrong password (two attempts, then FAILED), and `strict/` to a destination that does not create
repositories on push (one attempt)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.client import BaseClient
from botocore.config import Config

from auth.secrets import generate_secret_key
from tests.conftest import LiveRegistry, start_registry
from tests.faultproxy import FaultProxy

SECRET_KEY = generate_secret_key()
REPLICATOR_PASSWORD = "replicator: s3cret"
PLAIN = {"region": "us-west-2", "registryId": "111111111111"}
SECURE = {"region": "eu-west-1", "registryId": "222222222222"}
DOOMED = {"region": "eu-west-1", "registryId": "333333333333"}
STRICT = {"region": "ap-northeast-1", "registryId": "555555555555"}
RULES = [
    {"destinations": [PLAIN], "repositoryFilters": [{"filter": "rep/",
                                                     "filterType": "PREFIX_MATCH"}]},
    {"destinations": [SECURE], "repositoryFilters": [{"filter": "sec/",
                                                      "filterType": "PREFIX_MATCH"}]},
    {"destinations": [PLAIN, SECURE], "repositoryFilters": [{"filter": "fan/",
                                                             "filterType": "PREFIX_MATCH"}]},
    {"destinations": [DOOMED], "repositoryFilters": [{"filter": "doomed/",
                                                      "filterType": "PREFIX_MATCH"}]},
    {"destinations": [STRICT], "repositoryFilters": [{"filter": "strict/",
                                                      "filterType": "PREFIX_MATCH"}]},
]
QUICK = {"backoff": 0.2, "max_backoff": 1.0, "max_attempts": 1000, "timeout": 10}
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json"])


def destination(name: str, url: str, where: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": url, "region": where["region"],
            "registry_id": where["registryId"], **QUICK, **extra}


def source_env(destinations: list[dict[str, Any]]) -> dict[str, str]:
    return {"REGISTRY_REPLICATION_DESTINATIONS": json.dumps(destinations),
            "REGISTRY_GC_INTERVAL": "0", "REGISTRY_LIFECYCLE_INTERVAL": "0"}


def ecr_client(live: LiveRegistry) -> BaseClient:
    return boto3.client("ecr", endpoint_url=live.url, region_name="us-east-1",
                        aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="secret",
                        config=Config(retries={"total_max_attempts": 1}))


def wait_for(condition: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.1)


def registry_cli(data_dir: Path, *args: str, stdin: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env["REGISTRY_AUTH_SECRET_KEY"] = SECRET_KEY
    done = subprocess.run([sys.executable, "-m", "registry", *args, "--data-dir", str(data_dir)],
                          input=stdin or "", capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="package")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    live = start_registry(tmp_path_factory.mktemp("plain") / "data",
                          env={"REGISTRY_GC_INTERVAL": "0", "REGISTRY_LIFECYCLE_INTERVAL": "0"})
    yield live
    live.stop()


@pytest.fixture(scope="package")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    data = tmp_path_factory.mktemp("secure") / "data"
    data.mkdir(parents=True)
    policy = data.parent / "replicator.json"
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}))
    registry_cli(data, "user", "add", "replicator", "--password-stdin",
                 stdin=REPLICATOR_PASSWORD + "\n")
    registry_cli(data, "policy", "attach", "replicator", str(policy))
    live = start_registry(data, env={
        "REGISTRY_AUTH_ENABLED": "true", "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY,
        "REGISTRY_AUTH_LOGIN_FAILURES": "100000",
        "REGISTRY_GC_INTERVAL": "0", "REGISTRY_LIFECYCLE_INTERVAL": "0"})
    yield live
    live.stop()


@pytest.fixture(scope="package")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    live = start_registry(tmp_path_factory.mktemp("strict") / "data",
                          env={"REGISTRY_REPOSITORIES_CREATE_ON_PUSH": "false",
                               "REGISTRY_GC_INTERVAL": "0", "REGISTRY_LIFECYCLE_INTERVAL": "0"})
    yield live
    live.stop()


@pytest.fixture(scope="package")
def to_plain(plain: LiveRegistry) -> Iterator[FaultProxy]:
    """Every request the source sends to `plain`, recorded on its way."""
    with FaultProxy(plain.url) as proxy:
        yield proxy


@pytest.fixture(scope="package")
def to_secure(secure: LiveRegistry) -> Iterator[FaultProxy]:
    """Every request the source sends to `secure` (its token requests too: the realm it
    announces is the host the request came to), recorded on its way."""
    with FaultProxy(secure.url) as proxy:
        yield proxy


@pytest.fixture(scope="package")
def source(tmp_path_factory: pytest.TempPathFactory, to_plain: FaultProxy,
           to_secure: FaultProxy, strict: LiveRegistry) -> Iterator[LiveRegistry]:
    env = source_env([
        destination("plain", to_plain.url, PLAIN),
        destination("secure", to_secure.url, SECURE, username="replicator",
                    password=REPLICATOR_PASSWORD),
        destination("doomed", to_secure.url, DOOMED, username="replicator",
                    password="not the password", max_attempts=2, backoff=1.5,
                    max_backoff=1.5),
        destination("strict", strict.url, STRICT, max_attempts=1),
    ])
    live = start_registry(tmp_path_factory.mktemp("source") / "data", env=env)
    ecr_client(live).put_replication_configuration(replicationConfiguration={"rules": RULES})
    yield live
    live.stop()


@pytest.fixture
def ecr(source: LiveRegistry) -> BaseClient:
    return ecr_client(source)


@pytest.fixture
def http(source: LiveRegistry) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=source.url, timeout=30) as client:
        yield client


@pytest.fixture
def suffix() -> str:
    return os.urandom(3).hex()


def statuses(ecr: BaseClient, repository: str, digest: str) -> dict[str, tuple[str, str | None]]:
    """Each destination's (status, failureCode), keyed by its registry id."""
    found = ecr.describe_image_replication_status(repositoryName=repository,
                                                  imageId={"imageDigest": digest})
    return {s["registryId"]: (s["status"], s.get("failureCode"))
            for s in found["replicationStatuses"]}


def manifest_of(client: httpx.Client, repository: str,
                reference: str) -> httpx.Response | None:
    response = client.get(f"/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT})
    return response if response.status_code == 200 else None
