"""Repository settings: tag immutability (with exclusion filters) set by the ECR API and held by
the data plane, the scanning setting, and DescribeRegistry."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.client import BaseClient
from botocore.config import Config

from tests.conftest import LiveRegistry, start_registry
from tests.registry.util import (
    ACCEPT_ALL,
    Image,
    assert_error,
    build_image,
    push_image,
    push_image_blobs,
    put_manifest,
)

ACCOUNT = "000000000000"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    live = start_registry(tmp_path_factory.mktemp("ecr-mutability") / "data",
                          env={"REGISTRY_STORAGE_FILESYSTEM_FSYNC": "false"})
    yield live
    live.stop()


@pytest.fixture
def ecr(server: LiveRegistry) -> BaseClient:
    return boto3.client("ecr", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="secret",
                        config=Config(retries={"total_max_attempts": 1}))


@pytest.fixture
def http(server: LiveRegistry) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def create(ecr: BaseClient, mode: str, *filters: str) -> str:
    name = f"mut/r-{os.urandom(4).hex()}"
    extra: dict[str, Any] = {}
    if filters:
        extra["imageTagMutabilityExclusionFilters"] = [
            {"filterType": "WILDCARD", "filter": f} for f in filters]
    ecr.create_repository(repositoryName=name, imageTagMutability=mode, **extra)
    return name


def other_image(http: httpx.Client, name: str) -> Image:
    image = build_image()
    push_image_blobs(http, name, image)
    return image


def move(http: httpx.Client, name: str, tag: str, image: Image) -> httpx.Response:
    return put_manifest(http, name, tag, image.manifest, image.media_type)


def served(http: httpx.Client, name: str, tag: str) -> bytes:
    response = http.get(f"/v2/{name}/manifests/{tag}", headers=ACCEPT_ALL)
    assert response.status_code == 200, response.text
    return response.content


def assert_refused(response: httpx.Response, name: str, tag: str) -> None:
    error = assert_error(response, 400, "TAG_INVALID")
    assert error["message"] == (
        f"The image tag '{tag}' already exists in the '{name}' repository and cannot be "
        "overwritten because the repository is immutable.")


# --------------------------------------------------------------------------- the data plane


def test_immutable_tag_cannot_move_but_takes_the_same_manifest(ecr: BaseClient,
                                                               http: httpx.Client) -> None:
    name = create(ecr, "IMMUTABLE")
    first = push_image(http, name, "v1")
    second = other_image(http, name)
    assert_refused(move(http, name, "v1", second), name, "v1")
    assert move(http, name, "v1", first).status_code == 201  # re-pushing the same is fine
    assert served(http, name, "v1") == first.manifest
    # The refused manifest can still go under a new tag.
    assert move(http, name, "v2", second).status_code == 201
    assert served(http, name, "v2") == second.manifest


def test_immutable_with_exclusion_lets_matching_tags_move(ecr: BaseClient,
                                                          http: httpx.Client) -> None:
    name = create(ecr, "IMMUTABLE_WITH_EXCLUSION", "latest*")
    first = push_image(http, name, "v1")
    second = other_image(http, name)
    for tag in ("latest", "latest-dev"):
        assert move(http, name, tag, first).status_code == 201
        assert move(http, name, tag, second).status_code == 201
        assert served(http, name, tag) == second.manifest
    assert_refused(move(http, name, "v1", second), name, "v1")
    # The filter matches whole tags: "mylatest" does not start with "latest".
    assert move(http, name, "mylatest", first).status_code == 201
    assert_refused(move(http, name, "mylatest", second), name, "mylatest")
    assert served(http, name, "v1") == first.manifest


def test_mutable_with_exclusion_freezes_only_matching_tags(ecr: BaseClient,
                                                           http: httpx.Client) -> None:
    name = create(ecr, "MUTABLE_WITH_EXCLUSION", "release-*")
    first = push_image(http, name, "release-1")
    second = other_image(http, name)
    assert_refused(move(http, name, "release-1", second), name, "release-1")
    assert served(http, name, "release-1") == first.manifest
    assert move(http, name, "v1", first).status_code == 201
    assert move(http, name, "v1", second).status_code == 201
    assert served(http, name, "v1") == second.manifest
    assert move(http, name, "release", first).status_code == 201  # "release-*" needs the dash
    assert move(http, name, "release", second).status_code == 201


def test_switching_the_setting_applies_to_existing_tags(ecr: BaseClient,
                                                        http: httpx.Client) -> None:
    name = create(ecr, "IMMUTABLE")
    first = push_image(http, name, "v1")
    second = other_image(http, name)
    assert_refused(move(http, name, "v1", second), name, "v1")

    changed = ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability="MUTABLE")
    assert {k: v for k, v in changed.items() if k != "ResponseMetadata"} == {
        "registryId": ACCOUNT, "repositoryName": name, "imageTagMutability": "MUTABLE"}
    assert move(http, name, "v1", second).status_code == 201
    assert served(http, name, "v1") == second.manifest

    ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability="IMMUTABLE")
    assert_refused(move(http, name, "v1", first), name, "v1")
    assert served(http, name, "v1") == second.manifest


# --------------------------------------------------------------------------- the control plane


def test_put_image_tag_mutability_echoes_and_stores_filters(ecr: BaseClient) -> None:
    name = create(ecr, "MUTABLE")
    filters = [{"filterType": "WILDCARD", "filter": "dev-*"},
               {"filterType": "WILDCARD", "filter": "latest"}]
    changed = ecr.put_image_tag_mutability(repositoryName=name,
                                           imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
                                           imageTagMutabilityExclusionFilters=filters)
    assert changed["registryId"] == ACCOUNT
    assert changed["repositoryName"] == name
    assert changed["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert changed["imageTagMutabilityExclusionFilters"] == filters
    described = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    assert described["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert described["imageTagMutabilityExclusionFilters"] == filters
    # Back to a plain setting: the filters go with it.
    ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability="IMMUTABLE")
    described = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    assert described["imageTagMutability"] == "IMMUTABLE"
    assert not described.get("imageTagMutabilityExclusionFilters")


@pytest.mark.parametrize("request_", [
    {"imageTagMutability": "SOMETIMES"},
    {"imageTagMutability": "MUTABLE_WITH_EXCLUSION"},  # needs filters
    {"imageTagMutability": "MUTABLE",
     "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "x"}]},
    {"imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
     "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "a b"}]},
])
def test_invalid_mutability_is_refused_and_changes_nothing(ecr: BaseClient,
                                                           request_: dict[str, Any]) -> None:
    name = create(ecr, "IMMUTABLE")
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.put_image_tag_mutability(repositoryName=name, **request_)
    described = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    assert described["imageTagMutability"] == "IMMUTABLE"


def test_settings_of_an_unknown_repository_are_not_found(ecr: BaseClient) -> None:
    name = f"mut/missing-{os.urandom(4).hex()}"
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.put_image_tag_mutability(repositoryName=name, imageTagMutability="IMMUTABLE")
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.put_image_scanning_configuration(repositoryName=name,
                                             imageScanningConfiguration={"scanOnPush": True})


def test_scanning_configuration_round_trips(ecr: BaseClient) -> None:
    name = create(ecr, "IMMUTABLE")
    changed = ecr.put_image_scanning_configuration(
        repositoryName=name, imageScanningConfiguration={"scanOnPush": True})
    assert changed["registryId"] == ACCOUNT
    assert changed["repositoryName"] == name
    assert changed["imageScanningConfiguration"] == {"scanOnPush": True}
    described = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    assert described["imageScanningConfiguration"] == {"scanOnPush": True}
    assert described["imageTagMutability"] == "IMMUTABLE"  # the other settings are kept
    ecr.put_image_scanning_configuration(repositoryName=name,
                                         imageScanningConfiguration={"scanOnPush": False})
    described = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    assert described["imageScanningConfiguration"] == {"scanOnPush": False}


def test_describe_registry_has_no_replication(ecr: BaseClient) -> None:
    described = ecr.describe_registry()
    assert described["registryId"] == ACCOUNT
    assert described["replicationConfiguration"] == {"rules": []}
