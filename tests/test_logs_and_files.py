"""What the registry leaves on disk and in its logs: files only its own user can read, and no
signature, credential or token in any log line."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.client import BaseClient
from botocore.config import Config

from auth.secrets import generate_secret_key
from registry.logs import RedactSecrets, redact
from tests.conftest import LiveRegistry, start_registry

SECRET_KEY = generate_secret_key()
ADMIN = {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}
ENV = {"REGISTRY_AUTH_SECRET_KEY": SECRET_KEY}


def cli(data_dir: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "registry", *args, "--data-dir", str(data_dir)],
                          input=stdin, capture_output=True, text=True,
                          env={**os.environ, **ENV}, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveRegistry, BaseClient]]:
    """A registry whose data directory its own commands created, with auth on (signing keys,
    a user, an access key, an upstream secret) and uvicorn's access log on."""
    data = tmp_path_factory.mktemp("logs-and-files") / "data"  # not there yet
    policy = data.parent / "admin.json"
    policy.write_text(json.dumps(ADMIN))
    cli(data, "user", "add", "root", "--password-stdin", stdin="pw-root")
    key = json.loads(cli(data, "user", "key", "create", "root"))
    cli(data, "policy", "attach", "root", str(policy))
    cli(data, "upstream-secret", "put", "hub", "--username", "u", "--password-stdin",
        stdin="upstream-token")
    live = start_registry(data, env={**ENV, "REGISTRY_AUTH_ENABLED": "true",
                                     "REGISTRY_SERVER_ACCESS_LOG": "true",
                                     "REGISTRY_SERVER_REQUEST_LOG": "true"})
    ecr = boto3.client("ecr", endpoint_url=live.url, region_name="us-east-1",
                       aws_access_key_id=key["AccessKeyId"],
                       aws_secret_access_key=key["SecretAccessKey"],
                       config=Config(retries={"total_max_attempts": 1}))
    yield live, ecr
    ecr.close()
    live.stop()


def push_layer(ecr: BaseClient, name: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    upload = ecr.initiate_layer_upload(repositoryName=name)["uploadId"]
    ecr.upload_layer_part(repositoryName=name, uploadId=upload, partFirstByte=0,
                          partLastByte=len(data) - 1, layerPartBlob=data)
    ecr.complete_layer_upload(repositoryName=name, uploadId=upload, layerDigests=[digest])
    return digest


def test_every_file_and_folder_is_private(setup: tuple[LiveRegistry, BaseClient]) -> None:
    live, ecr = setup
    name = f"files/r-{os.urandom(3).hex()}"
    ecr.create_repository(repositoryName=name)
    push_layer(ecr, name, os.urandom(4096))
    assert stat.S_IMODE(live.data_dir.stat().st_mode) == 0o700  # the commands created it
    secrets = [*live.data_dir.glob("iam/users/*"), *live.data_dir.glob("iam/access-keys/*"),
               *live.data_dir.glob("iam/signing-keys/*"),
               *live.data_dir.glob("secrets/ecr-pullthroughcache/*")]
    assert {p.parts[-2] for p in secrets} == {"users", "access-keys", "signing-keys",
                                              "ecr-pullthroughcache"}
    assert {stat.S_IMODE(p.stat().st_mode) for p in secrets} == {0o600}
    exposed = []
    for folder, _, files in os.walk(live.data_dir):
        for entry in [folder, *(os.path.join(folder, f) for f in files)]:
            mode = stat.S_IMODE(os.lstat(entry).st_mode)
            if mode & 0o077:
                exposed.append(f"{oct(mode)} {os.path.relpath(entry, live.data_dir)}")
    assert exposed == []


def test_access_log_never_shows_a_signed_urls_signature(
        setup: tuple[LiveRegistry, BaseClient]) -> None:
    live, ecr = setup
    name = f"logs/r-{os.urandom(3).hex()}"
    ecr.create_repository(repositoryName=name)
    data = os.urandom(1024)
    digest = push_layer(ecr, name, data)
    url = ecr.get_download_url_for_layer(repositoryName=name, layerDigest=digest)["downloadUrl"]
    signature = httpx.URL(url).params["signature"]
    assert httpx.get(url, timeout=30).content == data  # a 20-minute bearer link
    authorization = ecr.get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(authorization["authorizationToken"]).decode() \
        .partition(":")
    token = httpx.get(live.url + "/token", auth=(user, password), timeout=30,
                      params={"service": "registry", "scope": f"repository:{name}:pull"})
    bearer = token.json()["token"]
    httpx.get(live.url + f"/v2/{name}/tags/list", params={"access_token": bearer}, timeout=30)
    log = live.log()
    assert f"/v2/{name}/blobs/{digest}?expires=" in log  # the access log is on
    assert "signature=REDACTED" in log
    for secret in (signature, bearer, password):
        assert secret not in log


@pytest.mark.parametrize(("line", "secret"), [
    ('127.0.0.1:1 - "GET /v2/a/blobs/sha256:ab?expires=1&signature=0f1e2d3c HTTP/1.1" 200',
     "0f1e2d3c"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIAX%2F1&X-Amz-Signature=beef01"
     "&X-Amz-Security-Token=FQoGZX", "AKIAX"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Signature=beef01", "beef01"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Security-Token=FQoGZXIvYXdz", "FQoGZXIvYXdz"),
    ("Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7/20260101/us-east-1/ecr/aws4_"
     "request, SignedHeaders=host, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb",
     "5d672d79c15b"),
    ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
    ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    ('{"token": "opaque-1234", "expires_in": 300}', "opaque-1234"),
    ("GET /token?service=r&refresh_token=rt-5678 HTTP/1.1", "rt-5678"),
    ("upstream said 401 for eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2ln", "eyJzdWIiOiJib2IifQ"),
    ("fetching https://bob:hunter2@upstream.example/v2/", "hunter2"),
    ("password=hunter2 accepted", "hunter2"),
])
def test_redact_removes_signatures_credentials_and_tokens(line: str, secret: str) -> None:
    assert secret not in redact(line)


def test_redact_keeps_ordinary_lines() -> None:
    line = ("request_id=ab client=127.0.0.1 method=GET path=/token route=token status=200 "
            "operation=GetAuthorizationToken")
    assert redact(line) == line


def test_redacting_filter_covers_arguments_and_tracebacks() -> None:
    try:
        raise ValueError("bad url https://h/k?X-Amz-Signature=cafe42")
    except ValueError:
        record = logging.LogRecord("uvicorn.access", logging.ERROR, __file__, 1,
                                   '%s "%s"', ("127.0.0.1", "GET /?signature=cafe42"),
                                   sys.exc_info())
    assert RedactSecrets().filter(record)
    formatted = logging.Formatter().format(record)
    assert "cafe42" not in formatted
    assert "signature=REDACTED" in formatted and "X-Amz-Signature=REDACTED" in formatted
