"""SigV4 verification against requests signed by botocore's own signer."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from auth.sigv4 import SignedRequest, SigV4Error, verify

KEY_ID = "AKIAEXAMPLEEXAMPLE12"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TARGET = "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories"


def signed(body: bytes = b'{"maxResults": 5}', *, secret: str = SECRET, target: str = TARGET,
           region: str = "us-east-1") -> tuple[dict[str, str], bytes]:
    request = AWSRequest(method="POST", url="http://127.0.0.1:5000/", data=body, headers={
        "X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(Credentials(KEY_ID, secret), "ecr", region).add_auth(request)
    request.headers["Host"] = "127.0.0.1:5000"
    headers = {k: str(v) for k, v in request.headers.items()}
    return headers, body


async def _secret_of(key_id: str) -> str | None:
    return SECRET if key_id == KEY_ID else None


def signed_at(headers: dict[str, str]) -> dt.datetime:
    return dt.datetime.strptime(headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)


def check(headers: dict[str, str], body: bytes,
          skew: dt.timedelta = dt.timedelta(0)) -> SignedRequest:
    now = signed_at(headers) + skew
    return asyncio.run(verify("POST", "/", [], headers, body, _secret_of, service="ecr", now=now))


def refused(headers: dict[str, str], body: bytes,
            skew: dt.timedelta = dt.timedelta(0)) -> SigV4Error:
    with pytest.raises(SigV4Error) as caught:
        check(headers, body, skew)
    return caught.value


def test_botocore_signature_verifies() -> None:
    headers, body = signed()
    result = check(headers, body)
    assert result.access_key_id == KEY_ID
    assert result.region == "us-east-1"
    assert "host" in result.signed_headers and "x-amz-date" in result.signed_headers


def test_clock_skew_within_five_minutes_is_accepted() -> None:
    headers, body = signed()
    check(headers, body, skew=dt.timedelta(minutes=4))
    check(headers, body, skew=-dt.timedelta(minutes=4))


def test_wrong_secret_is_refused() -> None:
    headers, body = signed(secret="not-the-secret")
    assert refused(headers, body).type == "InvalidSignatureException"


def test_unknown_access_key_is_unrecognized() -> None:
    headers, body = signed()
    headers["Authorization"] = headers["Authorization"].replace(KEY_ID, "AKIAUNKNOWNUNKNOWN00")
    assert refused(headers, body).type == "UnrecognizedClientException"


def test_tampered_body_is_refused() -> None:
    headers, _ = signed()
    assert refused(headers, json.dumps({"maxResults": 6}).encode()).type \
        == "InvalidSignatureException"


def test_expired_date_is_refused() -> None:
    headers, body = signed()
    error = refused(headers, body, skew=dt.timedelta(minutes=16))
    assert error.type == "InvalidSignatureException" and "expired" in error.message


def test_replay_with_another_target_is_refused() -> None:
    headers, body = signed()
    headers["X-Amz-Target"] = "AmazonEC2ContainerRegistry_V20150921.DeleteRepository"
    assert refused(headers, body).type == "InvalidSignatureException"


def test_header_left_out_of_the_signature_is_refused() -> None:
    headers, body = signed()
    auth = headers["Authorization"]
    # Claim fewer signed headers than were signed: host must be covered.
    headers["Authorization"] = auth.replace("SignedHeaders=content-type;host;",
                                            "SignedHeaders=content-type;")
    assert refused(headers, body).type == "InvalidSignatureException"


def test_missing_authorization() -> None:
    headers, body = signed()
    del headers["Authorization"]
    assert refused(headers, body).type == "MissingAuthenticationTokenException"


def test_other_service_scope_is_refused() -> None:
    headers, body = signed()
    headers["Authorization"] = headers["Authorization"].replace("/ecr/", "/s3/")
    assert refused(headers, body).type == "InvalidSignatureException"


def test_errors_never_contain_the_secret_or_signature() -> None:
    headers, body = signed(secret="wrong")
    error: Any = refused(headers, body)
    signature = headers["Authorization"].rsplit("=", 1)[1]
    assert SECRET not in error.message and signature not in error.message
