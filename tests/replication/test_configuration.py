"""PutReplicationConfiguration and DescribeRegistry as botocore's ECR model has them, checked
against the destinations the settings configure; DescribeImageReplicationStatus's errors; the
[[replication.destinations]] settings."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from botocore.client import BaseClient

from registry.settings import SettingsError, load_settings
from tests.registry.util import push_image

from .conftest import PLAIN, RULES, SECURE

PREFIX = [{"filter": "rep/", "filterType": "PREFIX_MATCH"}]


def error_of(ecr: BaseClient, call: str, **params: Any) -> tuple[str, str]:
    with pytest.raises(ecr.exceptions.ClientError) as caught:
        getattr(ecr, call)(**params)
    error = caught.value.response["Error"]
    return error["Code"], error["Message"]


def test_describe_registry_returns_the_stored_configuration(ecr: BaseClient) -> None:
    found = ecr.describe_registry()
    assert found["registryId"] == "000000000000"
    assert found["replicationConfiguration"] == {"rules": RULES}


def test_put_answers_the_configuration_and_empty_rules_turn_replication_off(
        ecr: BaseClient, http: httpx.Client, suffix: str) -> None:
    one = {"rules": [{"destinations": [PLAIN]}]}  # no filters: every repository
    try:
        answer = ecr.put_replication_configuration(replicationConfiguration=one)
        assert answer["replicationConfiguration"] == {"rules": [{"destinations": [PLAIN]}]}
        assert ecr.describe_registry()["replicationConfiguration"] == \
            {"rules": [{"destinations": [PLAIN]}]}
        image = push_image(http, f"any/app-{suffix}", "v1")
        status = ecr.describe_image_replication_status(
            repositoryName=f"any/app-{suffix}", imageId={"imageDigest": image.digest})
        assert [s["registryId"] for s in status["replicationStatuses"]] == \
            [PLAIN["registryId"]]
        ecr.put_replication_configuration(replicationConfiguration={"rules": []})
        assert ecr.describe_registry()["replicationConfiguration"] == {"rules": []}
        later = push_image(http, f"rep/off-{suffix}", "v1")
        assert ecr.describe_image_replication_status(
            repositoryName=f"rep/off-{suffix}",
            imageId={"imageDigest": later.digest})["replicationStatuses"] == []
    finally:
        ecr.put_replication_configuration(replicationConfiguration={"rules": RULES})


@pytest.mark.parametrize(("rules", "says"), [
    ([{"destinations": [{"region": "ap-south-1", "registryId": "444444444444"}]}],
     "no replication destination (ap-south-1, 444444444444) is configured"),
    ([{"destinations": [{"region": "us-east-1", "registryId": "000000000000"}]}],
     "cannot replicate to itself"),
    ([{"destinations": [PLAIN]}] * 11, "rules must list 0 to 10"),
    ([{"destinations": [PLAIN] * 26}], "destinations must list 1 to 25"),
    ([{"destinations": [PLAIN], "repositoryFilters": PREFIX * 101}],
     "repositoryFilters must list 0 to 100"),
    ([{"destinations": [PLAIN], "repositoryFilters": [{"filter": "Rep/",
                                                        "filterType": "PREFIX_MATCH"}]}],
     "filter must be 2 to 256 characters"),
    ([{"destinations": [PLAIN], "repositoryFilters": [{"filter": "rep/",
                                                        "filterType": "WILDCARD"}]}],
     "filterType PREFIX_MATCH"),
    ([{"destinations": [{"region": "eu-west-1", "registryId": "12345"}]}],
     "registryId must be 12 digits"),
], ids=["unknown", "itself", "rules", "destinations", "filters", "filter", "type", "id"])
def test_invalid_configurations_are_refused(ecr: BaseClient, rules: list[Any],
                                            says: str) -> None:
    code, message = error_of(ecr, "put_replication_configuration",
                             replicationConfiguration={"rules": rules})
    assert code == "InvalidParameterException"
    assert says in message
    assert ecr.describe_registry()["replicationConfiguration"] == {"rules": RULES}


def test_status_errors(ecr: BaseClient, http: httpx.Client, suffix: str) -> None:
    name = f"rep/errors-{suffix}"
    code, _ = error_of(ecr, "describe_image_replication_status", repositoryName=name,
                       imageId={"imageTag": "v1"})
    assert code == "RepositoryNotFoundException"
    push_image(http, name, "v1")
    code, message = error_of(ecr, "describe_image_replication_status", repositoryName=name,
                             imageId={"imageTag": "v2"})
    assert code == "ImageNotFoundException" and name in message
    code, _ = error_of(ecr, "describe_image_replication_status", repositoryName=name,
                       imageId={"imageDigest": "sha256:" + "0" * 64})
    assert code == "ImageNotFoundException"
    code, _ = error_of(ecr, "describe_image_replication_status", repositoryName=name,
                       imageId={"imageDigest": "sha256:nope"})
    assert code == "InvalidParameterException"


def destinations_env(*items: dict[str, Any]) -> dict[str, str]:
    return {"REGISTRY_REPLICATION_DESTINATIONS": json.dumps(list(items))}


GOOD = {"name": "b", "region": "us-west-2", "registry_id": "111111111111",
        "url": "https://b.example", "username": "u", "password": "hunter2"}


def test_settings_from_the_environment_keep_the_password_out_of_repr() -> None:
    settings = load_settings(environ=destinations_env(GOOD))
    (found,) = settings.replication.destinations
    assert (found.name, found.region, found.registry_id, found.password) == \
        ("b", "us-west-2", "111111111111", "hunter2")
    assert "hunter2" not in repr(settings)


def test_settings_from_toml(tmp_path: Any) -> None:
    config = tmp_path / "registry.toml"
    config.write_text('[[replication.destinations]]\nname = "b"\nregion = "us-west-2"\n'
                      'registry_id = "111111111111"\nurl = "http://b:5000"\nbackoff = 0.5\n')
    (found,) = load_settings(config, environ={}).replication.destinations
    assert (found.url, found.backoff, found.username) == ("http://b:5000", 0.5, None)


@pytest.mark.parametrize(("items", "says"), [
    ([{**GOOD, "registry_id": "11"}], "registry_id' must be 12 digits"),
    ([{**GOOD, "region": "US-WEST"}], "region' must be 2 to 25"),
    ([{**GOOD, "url": "b.example"}], "url' must be an http(s) URL"),
    ([{**GOOD, "password": None}], "go together"),
    ([GOOD, {**GOOD, "registry_id": "222222222222"}], "names must be unique"),
    ([GOOD, {**GOOD, "name": "c"}], "(region, registry_id) may be named once"),
    ([{**GOOD, "max_attempts": 0}], "max_attempts"),
], ids=["id", "region", "url", "password", "names", "place", "attempts"])
def test_bad_settings_name_the_key(items: list[dict[str, Any]], says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ=destinations_env(*items))
    assert says in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_a_rule_for_two_destinations_reports_both(ecr: BaseClient, http: httpx.Client,
                                                  suffix: str) -> None:
    image = push_image(http, f"fan/both-{suffix}", "v1")
    found = ecr.describe_image_replication_status(repositoryName=f"fan/both-{suffix}",
                                                  imageId={"imageDigest": image.digest})
    assert [(s["region"], s["registryId"]) for s in found["replicationStatuses"]] == \
        [(PLAIN["region"], PLAIN["registryId"]), (SECURE["region"], SECURE["registryId"])]
    assert {s["status"] for s in found["replicationStatuses"]} <= {"IN_PROGRESS", "COMPLETE"}
