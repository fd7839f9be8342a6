"""The ECR control plane's repository operations, driven by boto3 against a live server."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.client import BaseClient
from botocore.config import Config

from tests.conftest import LiveRegistry, start_registry


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    live = start_registry(tmp_path_factory.mktemp("ecr") / "data")
    yield live
    live.stop()


@pytest.fixture
def ecr(server: LiveRegistry) -> BaseClient:
    # Auth is off on loopback: the control plane serves unsigned-checked requests.
    return boto3.client("ecr", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="secret",
                        config=Config(retries={"total_max_attempts": 1}))


def unique(prefix: str = "ecr") -> str:
    return f"{prefix}/r-{os.urandom(4).hex()}"


def test_create_then_describe(ecr: BaseClient, server: LiveRegistry) -> None:
    name = unique()
    created = ecr.create_repository(repositoryName=name, imageTagMutability="IMMUTABLE",
                                    tags=[{"Key": "team", "Value": "a"}])["repository"]
    assert created["repositoryName"] == name
    assert created["registryId"] == "000000000000"
    assert created["repositoryArn"] == f"arn:aws:ecr:us-east-1:000000000000:repository/{name}"
    assert created["repositoryUri"] == f"{server.host}/{name}"
    assert created["imageTagMutability"] == "IMMUTABLE"
    described = ecr.describe_repositories(repositoryNames=[name])["repositories"]
    assert [r["repositoryName"] for r in described] == [name]
    assert described[0]["createdAt"] == created["createdAt"]


def test_create_twice_raises_already_exists(ecr: BaseClient) -> None:
    name = unique()
    ecr.create_repository(repositoryName=name)
    with pytest.raises(ecr.exceptions.RepositoryAlreadyExistsException):
        ecr.create_repository(repositoryName=name)


def test_invalid_name_raises_invalid_parameter(ecr: BaseClient) -> None:
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.create_repository(repositoryName="Upper/Case")


def test_describe_unknown_raises_not_found(ecr: BaseClient) -> None:
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.describe_repositories(repositoryNames=[unique()])


def test_describe_paginates_with_next_token(ecr: BaseClient) -> None:
    prefix = f"page-{os.urandom(3).hex()}"
    names = sorted(f"{prefix}/r{i}" for i in range(5))
    for name in names:
        ecr.create_repository(repositoryName=name)
    seen: list[str] = []
    for page in ecr.get_paginator("describe_repositories").paginate(
            PaginationConfig={"PageSize": 2}):
        assert len(page["repositories"]) <= 2
        seen += [r["repositoryName"] for r in page["repositories"]]
    assert [n for n in seen if n.startswith(prefix)] == names
    assert seen == sorted(seen)


def test_delete_refuses_a_repository_with_images_unless_forced(
        ecr: BaseClient, server: LiveRegistry) -> None:
    name = unique()
    ecr.create_repository(repositoryName=name)
    config = b"{}"
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    with httpx.Client(base_url=server.url) as http:
        assert http.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest},
                         content=config).status_code == 201
        manifest = (b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
                    b'"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"'
                    + digest.encode() + b'","size":2},"layers":[]}')
        assert http.put(f"/v2/{name}/manifests/v1", content=manifest, headers={
            "Content-Type": "application/vnd.oci.image.manifest.v1+json"}).status_code == 201
        with pytest.raises(ecr.exceptions.RepositoryNotEmptyException):
            ecr.delete_repository(repositoryName=name)
        deleted = ecr.delete_repository(repositoryName=name, force=True)["repository"]
        assert deleted["repositoryName"] == name
        assert http.get(f"/v2/{name}/manifests/v1").status_code == 404
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.delete_repository(repositoryName=name)


def test_delete_keeps_nested_repositories(ecr: BaseClient) -> None:
    parent = unique()
    ecr.create_repository(repositoryName=parent)
    ecr.create_repository(repositoryName=f"{parent}/child")
    ecr.delete_repository(repositoryName=parent)
    found = ecr.describe_repositories(repositoryNames=[f"{parent}/child"])["repositories"]
    assert found[0]["repositoryName"] == f"{parent}/child"


def test_unknown_operation_is_an_aws_error(server: LiveRegistry) -> None:
    response = httpx.post(server.url + "/", content=b"{}", headers={
        "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.NoSuchThing",
        "Content-Type": "application/x-amz-json-1.1"})
    assert response.status_code == 400
    assert response.json()["__type"] == "UnknownOperationException"


def test_aws_cli_creates_and_describes(server: LiveRegistry, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    name = unique("cli")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    base = [sys.executable, "-m", "awscli", "ecr", "--endpoint-url", server.url,
            "--output", "json"]
    created = subprocess.run([*base, "create-repository", "--repository-name", name],
                             capture_output=True, text=True, env=env, timeout=60)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["repository"]["repositoryName"] == name
    described = subprocess.run([*base, "describe-repositories", "--repository-names", name],
                               capture_output=True, text=True, env=env, timeout=60)
    assert described.returncode == 0, described.stderr
    assert json.loads(described.stdout)["repositories"][0]["repositoryName"] == name
