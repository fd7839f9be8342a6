"""Repository creation templates: the ECR operations, and ECR's create-before-push rule that a
CREATE_ON_PUSH template relaxes (the server runs with `repositories.create_on_push` off, as
ECR does). Templates are registry-wide, so each test uses prefixes of its own."""

from __future__ import annotations

import json
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
    assert_error,
    build_image,
    push_image,
    push_image_blobs,
    put_manifest,
)

ACCOUNT = "000000000000"
PUSH = ["CREATE_ON_PUSH"]
POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Sid": "Pull", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/ci"},
     "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]}]}, indent=1)
LIFECYCLE = json.dumps({"rules": [{"rulePriority": 1, "selection": {
    "tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 5},
    "action": {"type": "expire"}}]})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    live = start_registry(tmp_path_factory.mktemp("ecr-templates") / "data",
                          env={"REGISTRY_REPOSITORIES_CREATE_ON_PUSH": "false",
                               "REGISTRY_STORAGE_FILESYSTEM_FSYNC": "false"})
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


def unique(prefix: str = "t") -> str:
    return f"{prefix}{os.urandom(4).hex()}"


def template(response: dict[str, Any]) -> dict[str, Any]:
    assert response["registryId"] == ACCOUNT
    found: dict[str, Any] = response["repositoryCreationTemplate"]
    return found


def assert_push_refused(http: httpx.Client, name: str) -> None:
    error = assert_error(http.post(f"/v2/{name}/blobs/uploads/"), 404, "NAME_UNKNOWN")
    assert "does not exist" in error["message"]
    assert "create-repository" in error["message"]


def describe(ecr: BaseClient, name: str) -> dict[str, Any]:
    found: dict[str, Any] = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    return found


def tags(ecr: BaseClient, name: str) -> list[dict[str, str]]:
    arn = f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{name}"
    found: list[dict[str, str]] = ecr.list_tags_for_resource(resourceArn=arn)["tags"]
    return found


# --------------------------------------------------------------------------- create on push


def test_push_to_a_missing_repository_is_refused_with_how_to_create_it(
        ecr: BaseClient, http: httpx.Client) -> None:
    name = f"{unique('nobody')}/app"
    assert_push_refused(http, name)
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        describe(ecr, name)


def test_create_on_push_template_creates_with_its_settings(ecr: BaseClient,
                                                          http: httpx.Client) -> None:
    team, other = unique("team"), unique("other")
    resource_tags = [{"Key": "team", "Value": team}, {"Key": "cost", "Value": "42"}]
    ecr.create_repository_creation_template(
        prefix=team, appliedFor=PUSH, imageTagMutability="IMMUTABLE",
        resourceTags=resource_tags, repositoryPolicy=POLICY, lifecyclePolicy=LIFECYCLE)
    name = f"{team}/app"
    first = push_image(http, name, "v1")
    assert ecr.get_lifecycle_policy(repositoryName=name)["lifecyclePolicyText"] == LIFECYCLE

    described = describe(ecr, name)
    assert described["imageTagMutability"] == "IMMUTABLE"
    assert tags(ecr, name) == resource_tags
    assert ecr.get_repository_policy(repositoryName=name)["policyText"] == POLICY
    # The template's immutability holds on the data plane at once.
    second = build_image()
    push_image_blobs(http, name, second)
    refused = put_manifest(http, name, "v1", second.manifest, second.media_type)
    assert_error(refused, 400, "TAG_INVALID")
    assert http.get(f"/v2/{name}/manifests/v1",
                    headers={"Accept": first.media_type}).content == first.manifest

    assert_push_refused(http, f"{other}/app")
    # The prefix is a namespace: "team" itself and "teamX/..." are not under it.
    assert_push_refused(http, team)
    assert_push_refused(http, f"{team}x/app")


def test_the_longest_prefix_wins(ecr: BaseClient, http: httpx.Client) -> None:
    outer = unique("p")
    inner = f"{outer}/inner"
    ecr.create_repository_creation_template(prefix=outer, appliedFor=PUSH,
                                            resourceTags=[{"Key": "from", "Value": "outer"}])
    ecr.create_repository_creation_template(prefix=inner, appliedFor=PUSH,
                                            imageTagMutability="IMMUTABLE",
                                            resourceTags=[{"Key": "from", "Value": "inner"}])
    for name in (f"{inner}/app", f"{inner}/deep/app"):
        push_image(http, name, "v1")
        assert describe(ecr, name)["imageTagMutability"] == "IMMUTABLE"
        assert tags(ecr, name) == [{"Key": "from", "Value": "inner"}]
    for name in (f"{outer}/app", inner):  # `inner` itself is a repository under `outer`
        push_image(http, name, "v1")
        assert describe(ecr, name)["imageTagMutability"] == "MUTABLE"
        assert tags(ecr, name) == [{"Key": "from", "Value": "outer"}]


def test_a_template_not_applied_for_create_on_push_creates_nothing(
        ecr: BaseClient, http: httpx.Client) -> None:
    prefix = unique("r")
    ecr.create_repository_creation_template(prefix=prefix,
                                            appliedFor=["REPLICATION", "PULL_THROUGH_CACHE"])
    assert_push_refused(http, f"{prefix}/app")
    ecr.update_repository_creation_template(prefix=prefix,
                                            appliedFor=["REPLICATION", "CREATE_ON_PUSH"])
    push_image(http, f"{prefix}/app", "v1")
    assert describe(ecr, f"{prefix}/app")["repositoryName"] == f"{prefix}/app"


def test_a_root_template_applies_to_every_name(ecr: BaseClient, http: httpx.Client) -> None:
    loose = unique("loose")
    assert_push_refused(http, loose)
    ecr.create_repository_creation_template(prefix="ROOT", appliedFor=PUSH,
                                            imageTagMutability="IMMUTABLE")
    try:
        for name in (loose, f"{unique('any')}/deep/app"):
            push_image(http, name, "v1")
            assert describe(ecr, name)["imageTagMutability"] == "IMMUTABLE"
        listed = ecr.describe_repository_creation_templates(prefixes=["ROOT"])
        assert [t["prefix"] for t in listed["repositoryCreationTemplates"]] == ["ROOT"]
    finally:
        ecr.delete_repository_creation_template(prefix="ROOT")
    assert_push_refused(http, unique("after"))


def test_deleting_a_template_stops_create_on_push(ecr: BaseClient, http: httpx.Client) -> None:
    prefix = unique("d")
    ecr.create_repository_creation_template(prefix=prefix, appliedFor=PUSH)
    push_image(http, f"{prefix}/one", "v1")
    ecr.delete_repository_creation_template(prefix=prefix)
    assert_push_refused(http, f"{prefix}/two")
    push_image(http, f"{prefix}/one", "v2")  # repositories it created stay


# --------------------------------------------------------------------------- the operations


def test_create_describe_update_delete_round_trip(ecr: BaseClient) -> None:
    prefix = unique("rt")
    created = template(ecr.create_repository_creation_template(
        prefix=prefix + "/", description="team templates", appliedFor=PUSH,
        encryptionConfiguration={"encryptionType": "AES256"},
        resourceTags=[{"Key": "a", "Value": "1"}],
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "latest"}],
        repositoryPolicy=POLICY, lifecyclePolicy=LIFECYCLE,
        customRoleArn=f"arn:aws:iam::{ACCOUNT}:role/ecr-templates"))
    assert created["prefix"] == prefix  # ECR reads "team/" as "team"
    assert created["description"] == "team templates"
    assert created["appliedFor"] == PUSH
    assert created["encryptionConfiguration"] == {"encryptionType": "AES256"}
    assert created["resourceTags"] == [{"Key": "a", "Value": "1"}]
    assert created["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert created["imageTagMutabilityExclusionFilters"] == [
        {"filterType": "WILDCARD", "filter": "latest"}]
    assert created["repositoryPolicy"] == POLICY
    assert created["lifecyclePolicy"] == LIFECYCLE
    assert created["customRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/ecr-templates"
    assert created["createdAt"] == created["updatedAt"]

    described = ecr.describe_repository_creation_templates(prefixes=[prefix])
    assert described["registryId"] == ACCOUNT
    assert described["repositoryCreationTemplates"] == [created]
    assert "nextToken" not in described

    updated = template(ecr.update_repository_creation_template(
        prefix=prefix, description="changed", imageTagMutability="MUTABLE",
        resourceTags=[{"Key": "b", "Value": "2"}], repositoryPolicy=""))
    assert updated["description"] == "changed"
    assert updated["imageTagMutability"] == "MUTABLE"
    assert "imageTagMutabilityExclusionFilters" not in updated
    assert updated["resourceTags"] == [{"Key": "b", "Value": "2"}]
    assert "repositoryPolicy" not in updated  # an empty policy removes it
    assert updated["lifecyclePolicy"] == LIFECYCLE  # what the update does not name stays
    assert updated["appliedFor"] == PUSH
    assert updated["createdAt"] == created["createdAt"]
    assert updated["updatedAt"] > created["updatedAt"]
    assert ecr.describe_repository_creation_templates(
        prefixes=[prefix])["repositoryCreationTemplates"] == [updated]

    deleted = template(ecr.delete_repository_creation_template(prefix=prefix))
    assert deleted == updated
    assert ecr.describe_repository_creation_templates(
        prefixes=[prefix])["repositoryCreationTemplates"] == []
    with pytest.raises(ecr.exceptions.TemplateNotFoundException):
        ecr.delete_repository_creation_template(prefix=prefix)
    with pytest.raises(ecr.exceptions.TemplateNotFoundException):
        ecr.update_repository_creation_template(prefix=prefix, description="gone")


def test_defaults_of_a_minimal_template(ecr: BaseClient) -> None:
    created = template(ecr.create_repository_creation_template(prefix=unique("min"),
                                                               appliedFor=["REPLICATION"]))
    assert created["imageTagMutability"] == "MUTABLE"
    assert created["encryptionConfiguration"] == {"encryptionType": "AES256"}
    assert created["resourceTags"] == []
    for absent in ("description", "repositoryPolicy", "lifecyclePolicy", "customRoleArn",
                   "imageTagMutabilityExclusionFilters"):
        assert absent not in created


def test_a_prefix_has_one_template(ecr: BaseClient) -> None:
    prefix = unique("dup")
    ecr.create_repository_creation_template(prefix=prefix, appliedFor=PUSH)
    with pytest.raises(ecr.exceptions.TemplateAlreadyExistsException):
        ecr.create_repository_creation_template(prefix=prefix + "/", appliedFor=["REPLICATION"])
    listed = ecr.describe_repository_creation_templates(prefixes=[prefix])
    assert [t["appliedFor"] for t in listed["repositoryCreationTemplates"]] == [PUSH]


def test_describe_pages_in_prefix_order(ecr: BaseClient) -> None:
    group = unique("pg")
    ours = [f"{group}/{leaf}" for leaf in ("a", "b", "c", "d", "e")]
    for prefix in reversed(ours):
        ecr.create_repository_creation_template(prefix=prefix, appliedFor=PUSH)

    # Filtered by prefixes (one unknown), two at a time.
    seen: list[str] = []
    pages = 0
    request: dict[str, Any] = {"prefixes": [*ours, f"{group}/unknown"], "maxResults": 2}
    while True:
        page = ecr.describe_repository_creation_templates(**request)
        assert len(page["repositoryCreationTemplates"]) <= 2
        seen += [t["prefix"] for t in page["repositoryCreationTemplates"]]
        pages += 1
        if "nextToken" not in page:
            break
        request["nextToken"] = page["nextToken"]
    assert seen == ours
    assert pages == 3

    # Unfiltered: every template in the registry, ours among them in order, each once.
    everything: list[str] = []
    request = {"maxResults": 3}
    while True:
        page = ecr.describe_repository_creation_templates(**request)
        everything += [t["prefix"] for t in page["repositoryCreationTemplates"]]
        if "nextToken" not in page:
            break
        request["nextToken"] = page["nextToken"]
    assert everything == sorted(everything)
    assert [p for p in everything if p.startswith(group + "/")] == ours
    assert len(everything) == len(set(everything))
    unpaged = ecr.describe_repository_creation_templates()["repositoryCreationTemplates"]
    assert [t["prefix"] for t in unpaged] == everything


@pytest.mark.parametrize("request_", [
    {"prefix": "Upper", "appliedFor": PUSH},
    {"prefix": "/lead", "appliedFor": PUSH},
    {"prefix": "a//b", "appliedFor": PUSH},
    {"prefix": "root", "appliedFor": PUSH, "imageTagMutability": "SOMETIMES"},
    {"prefix": "ok", "appliedFor": []},
    {"prefix": "ok", "appliedFor": ["EVERYTHING"]},
    {"prefix": "ok", "appliedFor": PUSH, "repositoryPolicy": "{not json"},
    {"prefix": "ok", "appliedFor": PUSH, "repositoryPolicy": json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecr:*"}]})},
    {"prefix": "ok", "appliedFor": PUSH, "lifecyclePolicy": "{not json"},
    {"prefix": "ok", "appliedFor": PUSH, "lifecyclePolicy": json.dumps({"policy": []})},
    {"prefix": "ok", "appliedFor": PUSH, "resourceTags": [{"Key": "aws:x", "Value": "v"}]},
    {"prefix": "ok", "appliedFor": PUSH, "encryptionConfiguration": {"encryptionType": "ROT13"}},
    {"prefix": "ok", "appliedFor": PUSH, "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION"},
    {"prefix": "ok", "appliedFor": PUSH, "customRoleArn": "not-a-role"},
    {"prefix": "ok", "appliedFor": PUSH, "description": "d" * 257},
])
def test_invalid_templates_are_refused(ecr: BaseClient, request_: dict[str, Any]) -> None:
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.create_repository_creation_template(**request_)
    prefix = request_["prefix"]
    if prefix in ("ok", "root"):
        listed = ecr.describe_repository_creation_templates(prefixes=[prefix])
        assert listed["repositoryCreationTemplates"] == []


def test_an_invalid_update_changes_nothing(ecr: BaseClient) -> None:
    prefix = unique("upd")
    created = template(ecr.create_repository_creation_template(prefix=prefix, appliedFor=PUSH))
    bad_updates: list[dict[str, Any]] = [
        {"appliedFor": []}, {"repositoryPolicy": "{"},
        {"imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "x"}]}]
    for bad in bad_updates:
        with pytest.raises(ecr.exceptions.InvalidParameterException):
            ecr.update_repository_creation_template(prefix=prefix, description="no", **bad)
    listed = ecr.describe_repository_creation_templates(prefixes=[prefix])
    assert listed["repositoryCreationTemplates"] == [created]


def test_describe_checks_its_parameters(ecr: BaseClient) -> None:
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.describe_repository_creation_templates(prefixes=["Bad Prefix"])
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.describe_repository_creation_templates(nextToken="_w==")  # not UTF-8 inside
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.describe_repository_creation_templates(maxResults=1001)
