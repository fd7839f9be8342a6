"""SigV4 on a live server with auth on: requests signed by botocore's own signer, sent by hand
with httpx, then tampered with. Each refusal is a 4xx with AWS's JSON error body and the
`x-amzn-ErrorType` header, never a 500, and a tampered request changes nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import botocore.auth
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from registry.ecr import MAX_BODY
from tests.conftest import LiveRegistry, start_registry
from tests.ecr.test_signed import ADMIN, SECRET_KEY, cli

TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."
CONTENT_TYPE = "application/x-amz-json-1.1"
REGION = "us-east-1"


@dataclass(frozen=True)
class Server:
    live: LiveRegistry
    key_id: str
    secret: str = field(repr=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("sigv4-live") / "data"
    data.mkdir(parents=True)
    policy = data.parent / "admin.json"
    policy.write_text(json.dumps(ADMIN))
    cli(data, "user", "add", "signer", "--password-stdin", stdin="pw-signer")
    cli(data, "policy", "attach", "signer", str(policy))
    key = json.loads(cli(data, "user", "key", "create", "signer"))
    live = start_registry(data, env={"REGISTRY_AUTH_ENABLED": "true",
                                     "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY})
    yield Server(live, key["AccessKeyId"], key["SecretAccessKey"])
    live.stop()


@pytest.fixture(autouse=True)
def no_server_errors(server: Server) -> Iterator[None]:
    before = len(server.live.log())
    yield
    new = server.live.log()[before:]
    assert "Traceback" not in new, new[-4000:]


class _Signer(SigV4Auth):  # type: ignore[misc]  # botocore ships no type hints
    """botocore's SigV4 signer, optionally leaving headers out of SignedHeaders (the signature
    is still valid over the rest) and optionally signing at a fixed moment."""

    def __init__(self, credentials: Credentials, left_out: Iterable[str],
                 at: dt.datetime | None) -> None:
        super().__init__(credentials, "ecr", REGION)
        self._left_out = frozenset(left_out)
        self._at = at

    def headers_to_sign(self, request: AWSRequest) -> Any:
        headers = super().headers_to_sign(request)
        for name in self._left_out:
            del headers[name]
        return headers

    def add_auth(self, request: AWSRequest) -> None:
        if self._at is None:
            super().add_auth(request)
            return
        moment = self._at.astimezone(dt.UTC).replace(tzinfo=None)
        with mock.patch.object(botocore.auth, "get_current_datetime",
                               lambda remove_tzinfo=True: moment):
            super().add_auth(request)


def sign(server: Server, body: bytes = b"{}", *, operation: str = "DescribeRepositories",
         key_id: str | None = None, secret: str | None = None, left_out: Iterable[str] = (),
         at: dt.datetime | None = None) -> dict[str, str]:
    """The headers of a signed `POST /` for `operation` with `body`."""
    request = AWSRequest(method="POST", url=server.live.url + "/", data=body, headers={
        "X-Amz-Target": TARGET_PREFIX + operation, "Content-Type": CONTENT_TYPE})
    credentials = Credentials(key_id or server.key_id, secret or server.secret)
    _Signer(credentials, left_out, at).add_auth(request)
    return {name: str(value) for name, value in request.headers.items()}


def send(server: Server, headers: Mapping[str, str | bytes],
         body: bytes = b"{}") -> httpx.Response:
    raw = [(key.encode(), value if isinstance(value, bytes) else value.encode())
           for key, value in headers.items()]
    return httpx.post(server.live.url + "/", content=body, headers=raw, timeout=30)


def refused(response: httpx.Response, status: int, type_: str) -> str:
    """Check an AWS JSON error answer; its message."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(CONTENT_TYPE), response.headers
    error = response.json()
    assert error["__type"] == type_, error
    assert response.headers["x-amzn-ErrorType"] == type_, response.headers
    message = error["message"]
    assert isinstance(message, str) and message, error
    return message


def signed_by(headers: dict[str, str]) -> list[str]:
    """The SignedHeaders list of a signed request's Authorization header."""
    authorization = headers["Authorization"]
    return authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")


def repository_names(server: Server) -> list[str]:
    answer = send(server, sign(server))
    assert answer.status_code == 200, answer.text
    return [r["repositoryName"] for r in answer.json()["repositories"]]


def create(server: Server) -> str:
    name = f"sigv4/r-{os.urandom(3).hex()}"
    body = json.dumps({"repositoryName": name}).encode()
    answer = send(server, sign(server, body, operation="CreateRepository"), body)
    assert answer.status_code == 200, answer.text
    return name


def test_a_correctly_signed_request_succeeds(server: Server) -> None:
    name = create(server)
    body = json.dumps({"repositoryNames": [name]}).encode()
    headers = sign(server, body)
    assert {"host", "x-amz-date", "x-amz-target"} <= set(signed_by(headers))
    answer = send(server, headers, body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith(CONTENT_TYPE)
    assert [r["repositoryName"] for r in answer.json()["repositories"]] == [name]


def test_a_wrong_secret_is_an_invalid_signature(server: Server) -> None:
    headers = sign(server, secret="not-the-secret-access-key")
    message = refused(send(server, headers), 403, "InvalidSignatureException")
    assert "signature" in message.lower()


def test_a_body_changed_after_signing_is_refused(server: Server) -> None:
    name = create(server)
    signed_body = json.dumps({"repositoryName": "sigv4/does-not-matter"}).encode()
    headers = sign(server, signed_body, operation="DeleteRepository")
    changed = json.dumps({"repositoryName": name}).encode()
    refused(send(server, headers, changed), 403, "InvalidSignatureException")
    assert name in repository_names(server)


def test_an_unsigned_payload_is_refused(server: Server) -> None:
    """Only S3 lets a signature leave the body out; for ECR the body is what the caller asked
    for, so a signature over `UNSIGNED-PAYLOAD` must not let anyone swap it."""
    name = create(server)
    request = AWSRequest(method="POST", url=server.live.url + "/", data=b"{}", headers={
        "X-Amz-Target": TARGET_PREFIX + "DeleteRepository", "Content-Type": CONTENT_TYPE})
    request.context["payload_signing_enabled"] = False  # botocore signs UNSIGNED-PAYLOAD
    SigV4Auth(Credentials(server.key_id, server.secret), "ecr", REGION).add_auth(request)
    headers = {key: str(value) for key, value in request.headers.items()}
    assert headers["X-Amz-Content-SHA256"] == "UNSIGNED-PAYLOAD"
    answer = send(server, headers, json.dumps({"repositoryName": name}).encode())
    assert name in repository_names(server), f"deleted with an unsigned body: {answer.text}"
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.headers["x-amzn-ErrorType"] == answer.json()["__type"]


def test_a_request_signed_twenty_minutes_ago_is_refused(server: Server) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)
    headers = sign(server, at=past)
    assert headers["X-Amz-Date"] == past.strftime("%Y%m%dT%H%M%SZ")
    # AWS answers InvalidSignatureException "Signature expired: ..." here; so does the server.
    message = refused(send(server, headers), 403, "InvalidSignatureException")
    assert "expired" in message.lower()


def test_a_request_signed_four_minutes_ago_is_accepted(server: Server) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=4)
    answer = send(server, sign(server, at=past))
    assert answer.status_code == 200, answer.text


def test_a_request_signed_twenty_minutes_ahead_is_refused(server: Server) -> None:
    future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=20)
    message = refused(send(server, sign(server, at=future)), 403, "InvalidSignatureException")
    assert "expired" in message.lower() or "not yet valid" in message.lower()


@pytest.mark.parametrize("left_out", ["host", "x-amz-date"])
def test_signed_headers_must_include_host_and_date(server: Server, left_out: str) -> None:
    headers = sign(server, left_out=[left_out])
    assert left_out not in signed_by(headers)
    # The signature is valid over what it covers: the refusal is for what it leaves out.
    message = refused(send(server, headers), 403, "InvalidSignatureException")
    assert left_out in message.lower()


def test_a_signed_target_cannot_be_changed(server: Server) -> None:
    name = create(server)
    body = json.dumps({"repositoryName": name}).encode()  # also a valid DeleteRepository body
    headers = sign(server, body)
    assert "x-amz-target" in signed_by(headers)
    assert send(server, headers, body).status_code == 200
    replay = {**headers, "X-Amz-Target": TARGET_PREFIX + "DeleteRepository"}
    refused(send(server, replay, body), 403, "InvalidSignatureException")
    assert name in repository_names(server)


def test_the_target_must_be_signed(server: Server) -> None:
    """A signature that does not cover X-Amz-Target does not say which operation was meant:
    replayed with another target, it must not run that operation."""
    name = create(server)
    body = json.dumps({"repositoryName": name}).encode()
    headers = sign(server, body, left_out=["x-amz-target"])
    assert "x-amz-target" not in signed_by(headers)
    replay = {**headers, "X-Amz-Target": TARGET_PREFIX + "DeleteRepository"}
    answer = send(server, replay, body)
    assert name in repository_names(server), f"deleted by a replay: {answer.text}"
    message = refused(answer, 403, "InvalidSignatureException")
    assert "x-amz-target" in message.lower()


def test_an_unknown_access_key_is_unrecognized(server: Server) -> None:
    headers = sign(server, key_id="AKIAUNKNOWNUNKNOWN00", secret="whatever")
    refused(send(server, headers), 400, "UnrecognizedClientException")


def test_no_authorization_header_is_a_missing_token(server: Server) -> None:
    headers = {"X-Amz-Target": TARGET_PREFIX + "DescribeRepositories",
               "Content-Type": CONTENT_TYPE}
    refused(send(server, headers), 403, "MissingAuthenticationTokenException")


@pytest.mark.parametrize("authorization", [
    "AWS4-HMAC-SHA256",
    "AWS4-HMAC-SHA256 Credential=AKIA/20240101/us-east-1/ecr/aws4_request",
    "AWS4-HMAC-SHA256 Credential=AKIA, SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
    "Basic dXNlcjpwYXNz",
    "Bearer token",
    # Not ASCII: a key id nobody has, in a header that passes the pattern.
    ("AWS4-HMAC-SHA256 Credential=\u00e9/{date}/us-east-1/ecr/aws4_request, "
     "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64).encode("latin-1"),
])
def test_a_malformed_authorization_header_is_a_client_error(server: Server,
                                                            authorization: str | bytes) -> None:
    signed = sign(server)
    if isinstance(authorization, bytes):
        authorization = authorization.replace(b"{date}", signed["X-Amz-Date"][:8].encode())
    headers: dict[str, str | bytes] = {**signed, "Authorization": authorization}
    answer = send(server, headers)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
    error = answer.json()
    assert error["__type"] in ("IncompleteSignatureException", "InvalidSignatureException",
                               "MissingAuthenticationTokenException",
                               "UnrecognizedClientException"), error
    assert answer.headers["x-amzn-ErrorType"] == error["__type"]


@pytest.mark.parametrize("amz_date", ["yesterday", "", "20240101T000000"])
def test_a_malformed_date_is_a_client_error(server: Server, amz_date: str) -> None:
    headers = {**sign(server), "X-Amz-Date": amz_date}
    answer = send(server, headers)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
    assert answer.json()["__type"] in ("IncompleteSignatureException",
                                       "InvalidSignatureException"), answer.text


def test_a_credential_scoped_to_another_service_is_refused(server: Server) -> None:
    request = AWSRequest(method="POST", url=server.live.url + "/", data=b"{}", headers={
        "X-Amz-Target": TARGET_PREFIX + "DescribeRepositories", "Content-Type": CONTENT_TYPE})
    SigV4Auth(Credentials(server.key_id, server.secret), "s3", REGION).add_auth(request)
    headers = {name: str(value) for name, value in request.headers.items()}
    refused(send(server, headers), 403, "InvalidSignatureException")


def test_a_body_over_the_limit_is_a_client_error(server: Server) -> None:
    body = b"{" + b" " * MAX_BODY + b"}"
    answer = send(server, sign(server, body), body)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
    assert answer.headers["x-amzn-ErrorType"] == answer.json()["__type"]


def test_a_signature_scoped_to_another_region_is_refused(server: Server) -> None:
    request = AWSRequest(method="POST", url=server.live.url + "/", data=b"{}", headers={
        "X-Amz-Target": TARGET_PREFIX + "DescribeRepositories", "Content-Type": CONTENT_TYPE})
    SigV4Auth(Credentials(server.key_id, server.secret), "ecr", "eu-west-1").add_auth(request)
    headers = {key: str(value) for key, value in request.headers.items()}
    message = refused(send(server, headers), 403, "InvalidSignatureException")
    assert "region" in message
