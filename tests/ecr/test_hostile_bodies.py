"""With auth on, a signed request whose body no parser should take (nested 1,000 deep, an
integer of 5,000 digits) is refused in AWS's shape once its signature checks, and changes
nothing. (Unsigned, on every backend: tests/registry/test_hostile_input.py.)"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.conftest import LiveRegistry, start_registry
from tests.ecr.test_signed import ADMIN, SECRET_KEY, cli

TARGET = "AmazonEC2ContainerRegistry_V20150921."


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveRegistry,
                                                                        Credentials]]:
    data = tmp_path_factory.mktemp("ecr-hostile") / "data"
    data.mkdir(parents=True)
    policy = data.parent / "admin.json"
    policy.write_text(json.dumps(ADMIN))
    cli(data, "user", "add", "root", "--password-stdin", stdin="pw-root")
    key = json.loads(cli(data, "user", "key", "create", "root"))
    cli(data, "policy", "attach", "root", str(policy))
    live = start_registry(data, env={"REGISTRY_AUTH_ENABLED": "true",
                                     "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY})
    yield live, Credentials(key["AccessKeyId"], key["SecretAccessKey"])
    live.stop()


def signed_call(live: LiveRegistry, credentials: Credentials, operation: str,
                body: str) -> httpx.Response:
    """A SigV4-signed ECR request with exactly this body."""
    prepared = AWSRequest(method="POST", url=live.url + "/", data=body.encode(),
                          headers={"X-Amz-Target": TARGET + operation,
                                   "Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(credentials, "ecr", "us-east-1").add_auth(prepared)
    return httpx.post(live.url + "/", content=body.encode(), headers=dict(prepared.headers),
                      timeout=30)


@pytest.mark.parametrize("tail", [
    pytest.param(', "x": ' + "[" * 1000 + "]" * 1000, id="nested-1000"),
    pytest.param(', "x": ' + "9" * 5000, id="int-5000-digits"),
])
def test_signed_body_beyond_bounds_is_a_serialization_error(
        signed: tuple[LiveRegistry, Credentials], tail: str) -> None:
    live, credentials = signed
    name = f"hostile/r-{os.urandom(3).hex()}"
    body = json.dumps({"repositoryName": name})[:-1] + tail + "}"
    response = signed_call(live, credentials, "CreateRepository", body)
    assert response.status_code == 400, response.text
    assert response.json()["__type"] == "SerializationException"
    assert response.headers["x-amzn-errortype"] == "SerializationException"
    described = signed_call(live, credentials, "DescribeRepositories",
                            json.dumps({"repositoryNames": [name]}))
    assert described.json()["__type"] == "RepositoryNotFoundException", described.text
    assert "Traceback" not in live.log()
