"""Input built to break the parser or the storage layout gets the spec's 4xx, never a 500, and
leaves storage as it was: JSON nested 1,000 deep, integers of 5,000 digits, sizes no blob can
have, repository names whose components no file name can hold. On every backend, over the OCI
API and the ECR API."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.client import BaseClient
from botocore.config import Config

from registry.app import build_driver
from storage.store import Store
from tests.conftest import LiveRegistry

from .util import (
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_MANIFEST,
    assert_error,
    descriptor,
    push_blob,
    push_image,
    put_manifest,
    sha256,
)

TARGET = "AmazonEC2ContainerRegistry_V20150921."
AMZ_JSON = "application/x-amz-json-1.1"
FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
TIB = 1024**4


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def namespace() -> str:
    """A short top-level namespace of the test's own (8 characters: room for long components
    within the 255 a whole name may have)."""
    return "h" + os.urandom(4).hex()[:7]


def stored_under(live: LiveRegistry, name: str) -> list[str]:
    """Every key storage holds for repository `name` and the names below it (and, on the
    filesystem, any folder left for its namespace)."""

    async def listing() -> list[str]:
        store = Store(build_driver(live.settings()))
        try:
            found = []
            for top in ("catalog", "repositories"):
                # Keys from `top/name` on: the name's own come first (never stat a folder whose
                # name a filesystem cannot hold).
                keys = await store.driver.list(f"{top}/", start_after=f"{top}/{name}", limit=5)
                found += [k for k in keys if k.startswith(f"{top}/{name}")]
            return found
        finally:
            await store.close()

    keys = asyncio.run(listing())
    first, _, rest = name.partition("/")
    if live.backend == "filesystem" and rest:
        keys += [f"{top}/{first}/" for top in ("catalog", "repositories")
                 if (live.data_dir / top / first).exists()]
    return keys


@pytest.fixture
def ecr(registry_server: LiveRegistry) -> Iterator[BaseClient]:
    client = boto3.client("ecr", endpoint_url=registry_server.url, region_name="us-east-1",
                          aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="secret",
                          config=Config(retries={"total_max_attempts": 1}))
    yield client
    client.close()


def ecr_call(client: httpx.Client, operation: str, body: str | bytes) -> httpx.Response:
    """An ECR API request with exactly this body (boto3 would refuse to send most of these)."""
    return client.post("/", content=body, headers={"X-Amz-Target": TARGET + operation,
                                                   "Content-Type": AMZ_JSON})


def assert_aws_error(response: httpx.Response, *types: str) -> dict[str, Any]:
    context = f"{response.status_code}: {response.text[:300]!r}"
    assert 400 <= response.status_code < 500, context
    body = response.json()
    assert isinstance(body.get("message"), str), context
    assert body.get("__type") in types, context
    assert response.headers["x-amzn-errortype"] == body["__type"], context
    found: dict[str, Any] = body
    return found


def manifest_with(config_size: Any = None, *, layers: list[dict[str, Any]] | None = None,
                  extra: str = "") -> bytes:
    """An image manifest as text, so members can hold what json.dumps would never write."""
    config = json.dumps(descriptor(OCI_CONFIG, b"{}"))
    if config_size is not None:
        config = config.replace('"size": 2', f'"size": {config_size}')
    return (f'{{"schemaVersion": 2, "mediaType": "{OCI_MANIFEST}", "config": {config}, '
            f'"layers": {json.dumps(layers or [])}{extra}}}').encode()


# -- JSON that Python's parser cannot take ---------------------------------------------------


@pytest.mark.parametrize("body", [
    pytest.param(manifest_with(extra=f', "x": {nested(1000)}'), id="nested-1000"),
    pytest.param(manifest_with(extra=', "x": ' + '[{"a": ' * 2000 + "1" + "}]" * 2000),
                 id="nested-4000"),
    pytest.param(manifest_with("9" * 5000), id="int-5000-digits"),
    pytest.param(manifest_with(10**30), id="size-10e30"),
    pytest.param(manifest_with("NaN"), id="nan"),
])
def test_manifest_beyond_bounds_is_manifest_invalid_and_stores_nothing(
        client: httpx.Client, registry_server: LiveRegistry, body: bytes) -> None:
    ns = namespace()
    # The repository does not exist: create-on-push would make it, if the push were accepted.
    response = put_manifest(client, f"{ns}/r", "v1", body, OCI_MANIFEST)
    assert_error(response, 400, "MANIFEST_INVALID")
    assert stored_under(registry_server, ns) == []
    assert_error(client.get(f"/v2/{ns}/r/tags/list"), 404, "NAME_UNKNOWN")


def test_manifest_nested_to_the_bound_is_accepted(client: httpx.Client, repo: str) -> None:
    config = json.dumps({"nonce": os.urandom(8).hex()}).encode()
    push_blob(client, repo, config)
    doc = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "config": descriptor(OCI_CONFIG, config), "layers": []})
    body = doc[:-1] + ', "x": {"y": ' + nested(62) + "}}"  # 64 levels with the outer object
    response = put_manifest(client, repo, "v1", body.encode(), OCI_MANIFEST)
    assert response.status_code == 201, response.text
    assert client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST}).content \
        == body.encode()


def test_size_of_the_largest_blob_is_accepted_and_reported(client: httpx.Client, repo: str,
                                                           ecr: BaseClient) -> None:
    """A foreign layer (not stored here) of 5 TiB, the bound: ECR's imageSizeInBytes says so."""
    config = json.dumps({"nonce": os.urandom(8).hex()}).encode()
    push_blob(client, repo, config)
    layer = {"mediaType": FOREIGN_LAYER, "digest": sha256(b"far"), "size": 5 * TIB,
             "urls": ["https://example.com/layer"]}
    doc = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
           "config": descriptor("application/vnd.docker.container.image.v1+json", config),
           "layers": [layer]}
    response = put_manifest(client, repo, "v1", json.dumps(doc).encode(), DOCKER_MANIFEST)
    assert response.status_code == 201, response.text
    layer["size"] += 1
    too_large = put_manifest(client, repo, "v2", json.dumps(doc).encode(), DOCKER_MANIFEST)
    assert_error(too_large, 400, "MANIFEST_INVALID")
    details = ecr.describe_images(repositoryName=repo)["imageDetails"]
    assert [d["imageSizeInBytes"] for d in details] == [5 * TIB]


def test_ecr_body_nested_deep_is_a_serialization_error(client: httpx.Client) -> None:
    ns = namespace()
    body = json.dumps({"repositoryName": f"{ns}/r"})[:-1] + f', "x": {nested(1000)}}}'
    assert_aws_error(ecr_call(client, "CreateRepository", body), "SerializationException")
    huge = f'{{"repositoryName": "{ns}/r", "maxResults": 1{"0" * 5000}}}'
    assert_aws_error(ecr_call(client, "DescribeImages", huge), "SerializationException")
    assert ecr_call(client, "DescribeRepositories",
                    json.dumps({"repositoryNames": [f"{ns}/r"]})).status_code == 400


def test_put_replication_configuration_nested_deep_is_refused(client: httpx.Client) -> None:
    body = '{"replicationConfiguration": {"rules": ' + nested(1000) + "}}"
    assert_aws_error(ecr_call(client, "PutReplicationConfiguration", body),
                     "SerializationException")
    described = ecr_call(client, "DescribeRegistry", "{}")
    assert described.status_code == 200, described.text


def test_put_image_manifest_beyond_bounds_is_invalid_and_stores_nothing(
        ecr: BaseClient, registry_server: LiveRegistry) -> None:
    ns = namespace()
    for text in (manifest_with(extra=f', "x": {nested(1000)}'), manifest_with("9" * 5000),
                 manifest_with(10**30)):
        with pytest.raises(ecr.exceptions.InvalidParameterException):
            ecr.put_image(repositoryName=f"{ns}/r", imageManifest=text.decode(), imageTag="v1")
    assert stored_under(registry_server, ns) == []


def _policy(depth: int) -> str:
    statement = {"Effect": "Allow", "Principal": "*", "Action": "ecr:*"}
    text = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    return text.replace('"Action"', f'"Condition": {nested(depth)}, "Action"')


def test_policies_nested_deep_are_invalid(ecr: BaseClient, repo: str) -> None:
    """A 3 KB policy nested 1,500 deep, as a repository and as the registry policy."""
    ecr.create_repository(repositoryName=repo)
    policy = _policy(1500)
    assert len(policy) < 3200
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.set_repository_policy(repositoryName=repo, policyText=policy)
    with pytest.raises(ecr.exceptions.RepositoryPolicyNotFoundException):
        ecr.get_repository_policy(repositoryName=repo)
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.put_registry_policy(policyText=policy)
    prefix = namespace()
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.create_repository_creation_template(prefix=prefix, appliedFor=["CREATE_ON_PUSH"],
                                                repositoryPolicy=policy)
    found = ecr.describe_repository_creation_templates(prefixes=[prefix])
    assert found["repositoryCreationTemplates"] == []


def test_lifecycle_policy_nested_deep_is_invalid(ecr: BaseClient, repo: str) -> None:
    ecr.create_repository(repositoryName=repo)
    rule = {"rulePriority": 1, "selection": {"tagStatus": "any", "countType":
                                             "imageCountMoreThan", "countNumber": 1},
            "action": {"type": "expire"}}
    text = json.dumps({"rules": [rule]}).replace('"action"', f'"x": {nested(1500)}, "action"')
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=text)
    with pytest.raises(ecr.exceptions.LifecyclePolicyNotFoundException):
        ecr.get_lifecycle_policy(repositoryName=repo)
    prefix = namespace()
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.create_repository_creation_template(prefix=prefix, appliedFor=["CREATE_ON_PUSH"],
                                                lifecyclePolicy=text)
    found = ecr.describe_repository_creation_templates(prefixes=[prefix])
    assert found["repositoryCreationTemplates"] == []


# -- names whose components no file name can hold --------------------------------------------


def too_long_names(ns: str) -> list[str]:
    """Names the grammar took before, with a component of 245 to 255 characters (whose
    catalog marker, `<component>+repository`, no file name can hold)."""
    return [f"{ns}/{'x' * 245}", f"{ns}/{'x' * 246}", f"{ns}{'x' * 237}",
            f"{ns}{'x' * 247}", f"{ns}{'x' * 240}/a"]


def test_name_component_beyond_the_bound_is_name_invalid_everywhere(
        client: httpx.Client, registry_server: LiveRegistry) -> None:
    ns = namespace()
    digest = sha256(b"blob")
    for name in too_long_names(ns):
        assert len(name) <= 255
        for response in (
            client.get(f"/v2/{name}/tags/list"),
            client.post(f"/v2/{name}/blobs/uploads/"),
            client.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest},
                        content=b"blob"),
            put_manifest(client, name, "v1", manifest_with(), OCI_MANIFEST),
            client.get(f"/v2/{name}/manifests/v1"),
            client.get(f"/v2/{name}/referrers/{digest}"),
            client.head(f"/v2/{name}/blobs/{digest}"),
        ):
            assert response.status_code == 400, f"{response.request.url}: {response.text[:200]}"
            if response.request.method != "HEAD":
                assert_error(response, 400, "NAME_INVALID")
        # Asked again, the same answer (a failed marker write once broke the name for good).
        assert_error(client.get(f"/v2/{name}/tags/list"), 400, "NAME_INVALID")
        assert stored_under(registry_server, name) == []


ECR_OPERATIONS_NAMING_A_REPOSITORY = {
    "CreateRepository": {},
    "DescribeRepositories": None,  # repositoryNames
    "DeleteRepository": {},
    "ListImages": {},
    "DescribeImages": {},
    "BatchGetImage": {"imageIds": [{"imageTag": "v1"}]},
    "PutImage": {"imageManifest": "{}", "imageTag": "v1"},
    "InitiateLayerUpload": {},
    "BatchCheckLayerAvailability": {"layerDigests": [sha256(b"x")]},
    "GetDownloadUrlForLayer": {"layerDigest": sha256(b"x")},
    "SetRepositoryPolicy": {"policyText": _policy(1)},
    "GetLifecyclePolicy": {},
    "PutImageTagMutability": {"imageTagMutability": "IMMUTABLE"},
    "ListTagsForResource": None,  # resourceArn
}


@pytest.mark.parametrize("operation", sorted(ECR_OPERATIONS_NAMING_A_REPOSITORY))
def test_ecr_name_component_beyond_the_bound_is_invalid_parameter(
        client: httpx.Client, registry_server: LiveRegistry, operation: str) -> None:
    for name in too_long_names(namespace()):
        params = ECR_OPERATIONS_NAMING_A_REPOSITORY[operation]
        if operation == "DescribeRepositories":
            params = {"repositoryNames": [name]}
        elif operation == "ListTagsForResource":
            params = {"resourceArn": f"arn:aws:ecr:us-east-1:000000000000:repository/{name}"}
        else:
            params = {"repositoryName": name, **(params or {})}
        response = ecr_call(client, operation, json.dumps(params))
        error = assert_aws_error(response, "InvalidParameterException")
        assert "244" in error["message"], error
        assert stored_under(registry_server, name) == []


def test_template_prefix_component_beyond_the_bound_is_invalid(ecr: BaseClient) -> None:
    prefix = f"{namespace()}/{'x' * 245}"
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.create_repository_creation_template(prefix=prefix, appliedFor=["CREATE_ON_PUSH"])
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.describe_repository_creation_templates(prefixes=[prefix])
    with pytest.raises(ecr.exceptions.TemplateNotFoundException):
        ecr.delete_repository_creation_template(prefix=prefix[:-1])


def test_name_components_at_the_bound_work_and_list_in_order(
        client: httpx.Client, ecr: BaseClient) -> None:
    """Components of 244 characters: every kind of key holds them, on every backend, and the
    catalog still lists names in lexical order around them, page by page."""
    ns = namespace()
    long = "x" * 244
    names = [f"{ns}/{long}", f"{ns}/{long[:-2]}-a", f"{ns}/{long[:-2]}/b", f"{ns}/{long[:-1]}",
             f"{ns}/{long[:-2]}.c/d"]
    top = f"{ns}{'z' * 236}/c"  # a 244-character first component
    for name in [*names, top]:
        assert len(name) <= 255
        image = push_image(client, name, "v1")
        assert client.get(f"/v2/{name}/tags/list").json()["tags"] == ["v1"]
        assert client.head(f"/v2/{name}/blobs/{sha256(image.config)}").status_code == 200
    paged: list[str] = []
    last = ns
    while True:
        page = client.get("/v2/_catalog", params={"last": last, "n": 2}).json()["repositories"]
        page = [n for n in page if n.startswith(f"{ns}/")]
        if not page:
            break
        paged += page
        last = page[-1]
    assert paged == sorted(names)
    described = ecr.describe_repositories(repositoryNames=[names[0], top])["repositories"]
    assert sorted(r["repositoryName"] for r in described) == sorted([names[0], top])
    ecr.delete_repository(repositoryName=names[0], force=True)
    assert_error(client.get(f"/v2/{names[0]}/tags/list"), 404, "NAME_UNKNOWN")
