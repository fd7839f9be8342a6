"""Creating a repository by pushing to it needs `ecr:CreateRepository`, as in ECR, on both
planes; pushing to a repository that exists needs only the push actions."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.client import BaseClient
from botocore.config import Config

from tests.conftest import LiveRegistry, start_registry
from tests.ecr.test_signed import SECRET_KEY, cli
from tests.registry.util import build_image, push_image_blobs, put_manifest

PUSH = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability",
        "ecr:PutImage", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
        "ecr:CompleteLayerUpload"]
Users = dict[str, dict[str, str]]


def policy(actions: list[str]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": actions, "Resource": "*"}]})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveRegistry, Users]]:
    data = tmp_path_factory.mktemp("create-on-push") / "data"
    data.mkdir(parents=True)
    users: Users = {}
    for user, actions in (("pusher", PUSH), ("creator", [*PUSH, "ecr:CreateRepository",
                                                             "ecr:DescribeRepositories"])):
        cli(data, "user", "add", user, "--password-stdin", stdin="pw-" + user)
        document = data.parent / f"{user}.json"
        document.write_text(policy(actions))
        cli(data, "policy", "attach", user, str(document))
        users[user] = json.loads(cli(data, "user", "key", "create", user))
    live = start_registry(data, env={"REGISTRY_AUTH_ENABLED": "true",
                                     "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY,
                                     "REGISTRY_REPOSITORIES_CREATE_ON_PUSH": "true"})
    yield live, users
    live.stop()


def ecr(live: LiveRegistry, keys: dict[str, str]) -> BaseClient:
    return boto3.client("ecr", endpoint_url=live.url, region_name="us-east-1",
                        aws_access_key_id=keys["AccessKeyId"],
                        aws_secret_access_key=keys["SecretAccessKey"],
                        config=Config(retries={"total_max_attempts": 1}))


def http(live: LiveRegistry, user: str) -> httpx.Client:
    return httpx.Client(base_url=live.url, auth=(user, "pw-" + user), timeout=30)


def test_data_plane_push_creates_only_with_create_repository(
        server: tuple[LiveRegistry, Users]) -> None:
    live, _ = server
    name = f"team/app-{os.urandom(3).hex()}"
    with http(live, "pusher") as pusher:
        refused = pusher.post(f"/v2/{name}/blobs/uploads/")
        assert refused.status_code == 403
        assert refused.json()["errors"][0]["code"] == "DENIED"
        assert "ecr:CreateRepository" in refused.json()["errors"][0]["message"]
    with http(live, "creator") as creator:
        image = build_image()
        push_image_blobs(creator, name, image)
        assert put_manifest(creator, name, "v1", image.manifest,
                            image.media_type).status_code == 201
    # Once it exists, pushing needs no more than the push actions.
    with http(live, "pusher") as pusher:
        other = build_image()
        push_image_blobs(pusher, name, other)
        assert put_manifest(pusher, name, "v2", other.manifest,
                            other.media_type).status_code == 201


def test_put_image_creates_only_with_create_repository(
        server: tuple[LiveRegistry, Users]) -> None:
    live, users = server
    name = f"team/api-{os.urandom(3).hex()}"
    with http(live, "creator") as creator:
        image = build_image()
        push_image_blobs(creator, "team/blobs-" + name[-6:], image)
    manifest = image.manifest.decode()
    pusher = ecr(live, users["pusher"])
    with pytest.raises(pusher.exceptions.ClientError) as caught:
        pusher.put_image(repositoryName=name, imageManifest=manifest, imageTag="v1")
    assert caught.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "ecr:CreateRepository" in caught.value.response["Error"]["Message"]
    request_id = caught.value.response["ResponseMetadata"]["HTTPHeaders"]["x-request-id"]
    deadline = time.monotonic() + 5
    while f"request_id={request_id}" not in live.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(line for line in live.log().splitlines() if request_id in line)
    assert "refused:" in line and "code=AccessDeniedException" in line
    assert "operation=PutImage" in line and "identity=pusher" in line
    creator_api = ecr(live, users["creator"])
    # Created, then refused for the blobs it lacks: creation happened before the manifest check.
    with pytest.raises(creator_api.exceptions.LayersNotFoundException):
        creator_api.put_image(repositoryName=name, imageManifest=manifest, imageTag="v1")
    described = creator_api.describe_repositories(repositoryNames=[name])["repositories"]
    assert described[0]["repositoryName"] == name


def test_a_push_to_a_missing_repository_says_how_to_create_it(tmp_path: Path) -> None:
    """Without create-on-push: NAME_UNKNOWN with the create-repository command for this very
    registry (its --endpoint-url) and the setting that lets pushes create, and a log line."""
    live = start_registry(tmp_path / "data",
                          env={"REGISTRY_REPOSITORIES_CREATE_ON_PUSH": "false"})
    try:
        refused = httpx.post(f"{live.url}/v2/team/missing/blobs/uploads/")
        assert refused.status_code == 404
        error = refused.json()["errors"][0]
        assert error["code"] == "NAME_UNKNOWN"
        assert (f"aws ecr create-repository --repository-name team/missing "
                f"--endpoint-url {live.url})") in error["message"]
        assert "create_on_push" in error["message"]
        request_id = refused.headers["x-request-id"]
        deadline = time.monotonic() + 5
        while f"request_id={request_id}" not in live.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        line = next(line for line in live.log().splitlines() if request_id in line)
        assert "refused:" in line and "code=NAME_UNKNOWN" in line
        assert "repository=team/missing" in line
    finally:
        live.stop()


def test_the_endpoint_named_is_the_public_url_behind_a_proxy(tmp_path: Path) -> None:
    live = start_registry(tmp_path / "data", env={
        "REGISTRY_REPOSITORIES_CREATE_ON_PUSH": "false",
        "REGISTRY_SERVER_PUBLIC_URL": "https://registry.example.com"})
    try:
        refused = httpx.post(f"{live.url}/v2/team/missing/blobs/uploads/")
        assert "--endpoint-url https://registry.example.com)" in \
            refused.json()["errors"][0]["message"]
    finally:
        live.stop()
