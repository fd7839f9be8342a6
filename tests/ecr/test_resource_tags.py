"""Resource tags on repositories (TagResource, UntagResource, ListTagsForResource), by boto3
against a live server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import boto3
import pytest
from botocore.client import BaseClient
from botocore.config import Config

from tests.conftest import LiveRegistry, start_registry

ACCOUNT = "000000000000"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    live = start_registry(tmp_path_factory.mktemp("ecr-tags") / "data")
    yield live
    live.stop()


@pytest.fixture
def ecr(server: LiveRegistry) -> BaseClient:
    return boto3.client("ecr", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="secret",
                        config=Config(retries={"total_max_attempts": 1}))


def arn(name: str, region: str = "us-east-1", account: str = ACCOUNT) -> str:
    return f"arn:aws:ecr:{region}:{account}:repository/{name}"


@pytest.fixture
def name(ecr: BaseClient) -> str:
    repository = f"tags/r-{os.urandom(4).hex()}"
    ecr.create_repository(repositoryName=repository, imageTagMutability="IMMUTABLE",
                          tags=[{"Key": "team", "Value": "a"}])
    return repository


def tags(ecr: BaseClient, name: str) -> list[dict[str, str]]:
    found: list[dict[str, str]] = ecr.list_tags_for_resource(resourceArn=arn(name))["tags"]
    return found


def test_tags_given_at_creation_are_listed(ecr: BaseClient, name: str) -> None:
    assert tags(ecr, name) == [{"Key": "team", "Value": "a"}]


def test_tag_adds_and_replaces_values_then_untag_removes(ecr: BaseClient, name: str) -> None:
    ecr.tag_resource(resourceArn=arn(name), tags=[{"Key": "env", "Value": "prod"},
                                                  {"Key": "team", "Value": "b"}])
    assert tags(ecr, name) == [{"Key": "team", "Value": "b"}, {"Key": "env", "Value": "prod"}]
    ecr.untag_resource(resourceArn=arn(name), tagKeys=["team", "not-there"])
    assert tags(ecr, name) == [{"Key": "env", "Value": "prod"}]
    ecr.untag_resource(resourceArn=arn(name), tagKeys=["env"])
    assert tags(ecr, name) == []


def test_tagging_keeps_the_other_settings(ecr: BaseClient, name: str) -> None:
    before = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    ecr.tag_resource(resourceArn=arn(name), tags=[{"Key": "k", "Value": "v"}])
    ecr.untag_resource(resourceArn=arn(name), tagKeys=["team"])
    after = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
    assert after == before
    assert after["imageTagMutability"] == "IMMUTABLE"


def test_more_than_fifty_tags_in_total_is_too_many(ecr: BaseClient, name: str) -> None:
    ecr.tag_resource(resourceArn=arn(name),
                     tags=[{"Key": f"k{i}", "Value": str(i)} for i in range(48)])
    assert len(tags(ecr, name)) == 49
    with pytest.raises(ecr.exceptions.TooManyTagsException):
        ecr.tag_resource(resourceArn=arn(name), tags=[{"Key": "x", "Value": "1"},
                                                      {"Key": "y", "Value": "2"}])
    assert len(tags(ecr, name)) == 49  # nothing of the refused request was kept
    # Replacing values does not add tags, and one more fits.
    ecr.tag_resource(resourceArn=arn(name), tags=[{"Key": "k0", "Value": "new"},
                                                  {"Key": "x", "Value": "1"}])
    listed = {t["Key"]: t["Value"] for t in tags(ecr, name)}
    assert len(listed) == 50
    assert listed["k0"] == "new"


@pytest.mark.parametrize("bad", [
    [{"Key": "aws:reserved", "Value": "v"}],
    [{"Key": "k" * 129, "Value": "v"}],
    [{"Key": "k", "Value": "v" * 257}],
])
def test_invalid_tags_are_refused(ecr: BaseClient, name: str, bad: list[dict[str, str]]) -> None:
    with pytest.raises(ecr.exceptions.InvalidTagParameterException):
        ecr.tag_resource(resourceArn=arn(name), tags=bad)
    assert tags(ecr, name) == [{"Key": "team", "Value": "a"}]


@pytest.mark.parametrize("resource", [
    "not-an-arn",
    arn("tags/x", region="eu-west-1"),
    arn("tags/x", account="111111111111"),
    "arn:aws:ecr:us-east-1:000000000000:repo/tags/x",
    arn("Tags/Upper"),
])
def test_an_arn_that_is_not_one_of_our_repositories_is_invalid(ecr: BaseClient,
                                                              resource: str) -> None:
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.list_tags_for_resource(resourceArn=resource)
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.tag_resource(resourceArn=resource, tags=[{"Key": "k", "Value": "v"}])
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.untag_resource(resourceArn=resource, tagKeys=["k"])


def test_unknown_repository_is_not_found(ecr: BaseClient) -> None:
    missing = arn(f"tags/missing-{os.urandom(4).hex()}")
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.list_tags_for_resource(resourceArn=missing)
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.tag_resource(resourceArn=missing, tags=[{"Key": "k", "Value": "v"}])
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.untag_resource(resourceArn=missing, tagKeys=["k"])


def test_a_recreated_repository_starts_without_the_old_tags(ecr: BaseClient, name: str) -> None:
    ecr.tag_resource(resourceArn=arn(name), tags=[{"Key": "old", "Value": "1"}])
    ecr.delete_repository(repositoryName=name)
    ecr.create_repository(repositoryName=name)
    assert tags(ecr, name) == []
