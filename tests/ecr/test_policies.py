"""Repository and registry policies through the ECR API, with auth on: the documents round-trip
byte for byte, and they decide what the data plane serves.

Users: `admin` (ecr:* on everything, with an access key), `reader` (no identity policy) and
`puller` (an identity policy allowing the pull actions everywhere)."""

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
from tests.ecr.test_signed import ADMIN, SECRET_KEY, cli
from tests.registry.util import ACCEPT_ALL, Image, push_image

ACCOUNT = "000000000000"
PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]


def arn_of(user: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:user/{user}"


def repository_arn(name: str) -> str:
    return f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{name}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveRegistry, BaseClient]]:
    data = tmp_path_factory.mktemp("ecr-policies") / "data"
    data.mkdir(parents=True)
    documents = {"admin": ADMIN, "puller": {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": PULL, "Resource": "*"}]}}
    for user in ("admin", "reader", "puller"):
        cli(data, "user", "add", user, "--password-stdin", stdin="pw-" + user)
        if user in documents:
            path = data.parent / f"{user}.json"
            path.write_text(json.dumps(documents[user]))
            cli(data, "policy", "attach", user, str(path))
    keys = json.loads(cli(data, "user", "key", "create", "admin"))
    live = start_registry(data, env={"REGISTRY_AUTH_ENABLED": "true",
                                     "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY,
                                     "REGISTRY_STORAGE_FILESYSTEM_FSYNC": "false"})
    admin = boto3.client("ecr", endpoint_url=live.url, region_name="us-east-1",
                         aws_access_key_id=keys["AccessKeyId"],
                         aws_secret_access_key=keys["SecretAccessKey"],
                         config=Config(retries={"total_max_attempts": 1}))
    yield live, admin
    live.stop()


@pytest.fixture
def live(server: tuple[LiveRegistry, BaseClient]) -> LiveRegistry:
    return server[0]


@pytest.fixture
def ecr(server: tuple[LiveRegistry, BaseClient]) -> BaseClient:
    return server[1]


def http(live: LiveRegistry, user: str) -> httpx.Client:
    return httpx.Client(base_url=live.url, auth=(user, "pw-" + user), timeout=30)


def unique(prefix: str = "pol") -> str:
    return f"{prefix}/r-{os.urandom(4).hex()}"


def repository_with_image(live: LiveRegistry, ecr: BaseClient) -> tuple[str, Image]:
    name = unique()
    ecr.create_repository(repositoryName=name)
    with http(live, "admin") as admin:
        return name, push_image(admin, name, "v1")


def pull(live: LiveRegistry, user: str, name: str) -> httpx.Response:
    with http(live, user) as client:
        return client.get(f"/v2/{name}/manifests/v1", headers=ACCEPT_ALL)


def grant(principal: str, actions: list[str], effect: str = "Allow",
          resource: str | None = None) -> str:
    statement: dict[str, Any] = {"Sid": "Granted", "Effect": effect,
                                 "Principal": {"AWS": principal}, "Action": actions}
    if resource is not None:
        statement["Resource"] = resource
    # Odd spacing on purpose: the text must come back exactly as given.
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]}, indent=3)


def code(caught: pytest.ExceptionInfo[Exception]) -> str:
    error: dict[str, str] = caught.value.response["Error"]  # type: ignore[attr-defined]
    return error["Code"]


# --------------------------------------------------------------------------- round trips


def test_repository_policy_round_trips_exactly(ecr: BaseClient) -> None:
    name = unique()
    ecr.create_repository(repositoryName=name)
    with pytest.raises(ecr.exceptions.RepositoryPolicyNotFoundException):
        ecr.get_repository_policy(repositoryName=name)
    text = grant(arn_of("reader"), PULL)
    set_ = ecr.set_repository_policy(repositoryName=name, policyText=text)
    assert (set_["registryId"], set_["repositoryName"], set_["policyText"]) == (ACCOUNT, name,
                                                                                text)
    got = ecr.get_repository_policy(repositoryName=name)
    assert (got["registryId"], got["repositoryName"], got["policyText"]) == (ACCOUNT, name, text)
    replaced = grant(arn_of("puller"), ["ecr:BatchGetImage"])
    ecr.set_repository_policy(repositoryName=name, policyText=replaced)
    assert ecr.get_repository_policy(repositoryName=name)["policyText"] == replaced
    deleted = ecr.delete_repository_policy(repositoryName=name)
    assert deleted["policyText"] == replaced
    with pytest.raises(ecr.exceptions.RepositoryPolicyNotFoundException):
        ecr.get_repository_policy(repositoryName=name)
    with pytest.raises(ecr.exceptions.RepositoryPolicyNotFoundException):
        ecr.delete_repository_policy(repositoryName=name)


def test_repository_policy_needs_the_repository(ecr: BaseClient) -> None:
    name = unique("missing")
    text = grant(arn_of("reader"), PULL)
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.set_repository_policy(repositoryName=name, policyText=text)
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.get_repository_policy(repositoryName=name)
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.delete_repository_policy(repositoryName=name)


def test_deleting_a_repository_drops_its_policy(ecr: BaseClient) -> None:
    name = unique()
    ecr.create_repository(repositoryName=name)
    ecr.set_repository_policy(repositoryName=name, policyText=grant(arn_of("reader"), PULL))
    ecr.delete_repository(repositoryName=name)
    ecr.create_repository(repositoryName=name)
    with pytest.raises(ecr.exceptions.RepositoryPolicyNotFoundException):
        ecr.get_repository_policy(repositoryName=name)


@pytest.mark.parametrize(("document", "message"), [
    ("{not json", "not valid JSON"),
    (json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecr:BatchGetImage"}]}), "needs a Principal"),
    (json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Maybe", "Principal": "*", "Action": "ecr:BatchGetImage"}]}),
     "Effect must be Allow or Deny"),
    ("", "not valid JSON"),
])
def test_invalid_documents_are_refused_with_the_parsers_message(
        ecr: BaseClient, document: str, message: str) -> None:
    name = unique()
    ecr.create_repository(repositoryName=name)
    with pytest.raises(ecr.exceptions.InvalidParameterException) as caught:
        ecr.set_repository_policy(repositoryName=name, policyText=document)
    assert message in str(caught.value)
    with pytest.raises(ecr.exceptions.RepositoryPolicyNotFoundException):
        ecr.get_repository_policy(repositoryName=name)
    with pytest.raises(ecr.exceptions.InvalidParameterException) as caught:
        ecr.put_registry_policy(policyText=document)
    assert message in str(caught.value)


def test_registry_policy_round_trips_exactly(ecr: BaseClient) -> None:
    with pytest.raises(ecr.exceptions.RegistryPolicyNotFoundException):
        ecr.get_registry_policy()
    # Names a user that does not exist: it changes nobody's access.
    text = grant(arn_of("nobody-at-all"), ["ecr:ReplicateImage"], resource="*")
    try:
        put = ecr.put_registry_policy(policyText=text)
        assert (put["registryId"], put["policyText"]) == (ACCOUNT, text)
        got = ecr.get_registry_policy()
        assert (got["registryId"], got["policyText"]) == (ACCOUNT, text)
    finally:
        deleted = ecr.delete_registry_policy()
    assert deleted["policyText"] == text
    with pytest.raises(ecr.exceptions.RegistryPolicyNotFoundException):
        ecr.get_registry_policy()
    with pytest.raises(ecr.exceptions.RegistryPolicyNotFoundException):
        ecr.delete_registry_policy()


# --------------------------------------------------------------------------- the data plane


def test_repository_policy_grants_and_revokes_pull(live: LiveRegistry, ecr: BaseClient) -> None:
    name, image = repository_with_image(live, ecr)
    scope = {"service": "registry", "scope": f"repository:{name}:pull"}
    denied = pull(live, "reader", name)
    assert denied.status_code == 403
    assert denied.json()["errors"][0]["code"] == "DENIED"
    with http(live, "reader") as reader:
        assert reader.get("/token", params=scope).json()["scope"] == f"repository:{name}:"

    ecr.set_repository_policy(repositoryName=name, policyText=grant(arn_of("reader"), PULL))
    allowed = pull(live, "reader", name)
    assert allowed.status_code == 200
    assert allowed.content == image.manifest
    with http(live, "reader") as reader:
        issued = reader.get("/token", params=scope).json()
    assert issued["scope"] == f"repository:{name}:pull"
    bearer = {"Authorization": f"Bearer {issued['token']}", **ACCEPT_ALL}
    assert httpx.get(f"{live.url}/v2/{name}/manifests/v1", headers=bearer).status_code == 200

    ecr.delete_repository_policy(repositoryName=name)
    assert pull(live, "reader", name).status_code == 403
    with http(live, "reader") as reader:
        assert reader.get("/token", params=scope).json()["scope"] == f"repository:{name}:"
    # A token carries the access decided when it was issued, until it expires (auth.token_ttl,
    # 300 s by default): the revocation reaches tokens already handed out only then.
    assert httpx.get(f"{live.url}/v2/{name}/manifests/v1", headers=bearer).status_code == 200


def test_repository_policy_is_scoped_to_its_repository(live: LiveRegistry,
                                                       ecr: BaseClient) -> None:
    name, _ = repository_with_image(live, ecr)
    other, _ = repository_with_image(live, ecr)
    ecr.set_repository_policy(repositoryName=name, policyText=grant(arn_of("reader"), PULL))
    assert pull(live, "reader", name).status_code == 200
    assert pull(live, "reader", other).status_code == 403


def test_registry_policy_deny_beats_an_identity_allow(live: LiveRegistry,
                                                      ecr: BaseClient) -> None:
    name, _ = repository_with_image(live, ecr)
    other, _ = repository_with_image(live, ecr)
    assert pull(live, "puller", name).status_code == 200
    deny = grant(arn_of("puller"), ["ecr:BatchGetImage"], effect="Deny",
                 resource=repository_arn(name))
    try:
        ecr.put_registry_policy(policyText=deny)
        assert pull(live, "puller", name).status_code == 403
        assert pull(live, "puller", other).status_code == 200  # the Deny names one repository
        # It beats a repository policy's Allow too.
        ecr.set_repository_policy(repositoryName=name, policyText=grant(arn_of("puller"), PULL))
        assert pull(live, "puller", name).status_code == 403
    finally:
        ecr.delete_registry_policy()
    assert pull(live, "puller", name).status_code == 200


def test_registry_policy_allow_grants_pull(live: LiveRegistry, ecr: BaseClient) -> None:
    name, _ = repository_with_image(live, ecr)
    assert pull(live, "reader", name).status_code == 403
    try:
        ecr.put_registry_policy(policyText=grant(arn_of("reader"), PULL,
                                                 resource=repository_arn(name)))
        assert pull(live, "reader", name).status_code == 200
    finally:
        ecr.delete_registry_policy()
    assert pull(live, "reader", name).status_code == 403


# --------------------------------------------------------------------------- lock-out guard


def test_a_policy_that_locks_the_caller_out_needs_force(ecr: BaseClient) -> None:
    name = unique()
    ecr.create_repository(repositoryName=name)
    lock = grant("*", ["ecr:SetRepositoryPolicy"], effect="Deny")
    with pytest.raises(ecr.exceptions.InvalidParameterException) as caught:
        ecr.set_repository_policy(repositoryName=name, policyText=lock)
    assert "force" in str(caught.value)
    with pytest.raises(ecr.exceptions.RepositoryPolicyNotFoundException):
        ecr.get_repository_policy(repositoryName=name)

    ecr.set_repository_policy(repositoryName=name, policyText=lock, force=True)
    assert ecr.get_repository_policy(repositoryName=name)["policyText"] == lock
    with pytest.raises(ecr.exceptions.ClientError) as denied:
        ecr.set_repository_policy(repositoryName=name, policyText=grant("*", PULL), force=True)
    assert code(denied) == "AccessDeniedException"
    # Deleting the policy is another action: the way back in.
    ecr.delete_repository_policy(repositoryName=name)
    ecr.set_repository_policy(repositoryName=name, policyText=grant("*", PULL))
