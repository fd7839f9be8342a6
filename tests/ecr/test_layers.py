"""ECR layer operations driven by boto3 against live servers, on both storage backends, and
signed download URLs with auth on."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest
from botocore.client import BaseClient
from botocore.config import Config

from auth.secrets import generate_secret_key
from registry.signed_urls import UrlSigner
from tests.conftest import LiveRegistry, start_registry

# Parts stay well under the control plane's request limit once base64'd.
PART = 200 * 1024
LAYER_MEDIA_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def ecr_client(url: str, key_id: str = "AKIAEXAMPLE", secret: str = "secret") -> BaseClient:
    return boto3.client("ecr", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=key_id, aws_secret_access_key=secret,
                        config=Config(retries={"total_max_attempts": 1}))


@pytest.fixture
def ecr(registry_server: LiveRegistry) -> BaseClient:
    return ecr_client(registry_server.url)


def unique(prefix: str = "layers") -> str:
    return f"{prefix}/r-{os.urandom(4).hex()}"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload_parts(ecr: BaseClient, name: str, upload_id: str, data: bytes,
                 start: int = 0, part_size: int = PART) -> None:
    for first in range(start, len(data), part_size):
        part = data[first:first + part_size]
        answer = ecr.upload_layer_part(repositoryName=name, uploadId=upload_id,
                                       partFirstByte=first, partLastByte=first + len(part) - 1,
                                       layerPartBlob=part)
        assert answer["lastByteReceived"] == first + len(part) - 1
        assert answer["uploadId"] == upload_id
        assert answer["repositoryName"] == name


def push_layer(ecr: BaseClient, name: str, data: bytes) -> str:
    upload_id = ecr.initiate_layer_upload(repositoryName=name)["uploadId"]
    upload_parts(ecr, name, upload_id, data)
    done = ecr.complete_layer_upload(repositoryName=name, uploadId=upload_id,
                                     layerDigests=[sha256(data)])
    return str(done["layerDigest"])


def get_blob(registry: LiveRegistry, name: str, digest: str) -> httpx.Response:
    # On S3 the data plane answers 307 to a presigned URL, as clients expect.
    return httpx.get(f"{registry.url}/v2/{name}/blobs/{digest}", follow_redirects=True,
                     timeout=60)


def test_layer_uploaded_in_parts_is_served_by_the_data_plane(
        ecr: BaseClient, registry_server: LiveRegistry) -> None:
    name = unique()
    ecr.create_repository(repositoryName=name)
    data = os.urandom(2 * PART + 12345)
    started = ecr.initiate_layer_upload(repositoryName=name)
    uuid.UUID(started["uploadId"])
    assert started["partSize"] >= PART
    upload_parts(ecr, name, started["uploadId"], data)
    done = ecr.complete_layer_upload(repositoryName=name, uploadId=started["uploadId"],
                                     layerDigests=[sha256(data)])
    assert done == {**done, "layerDigest": sha256(data), "repositoryName": name,
                    "registryId": "000000000000", "uploadId": started["uploadId"]}
    served = get_blob(registry_server, name, sha256(data))
    assert served.status_code == 200
    assert served.content == data


def test_parts_of_the_advertised_part_size_are_accepted(
        ecr: BaseClient, registry_server: LiveRegistry) -> None:
    name = unique()
    ecr.create_repository(repositoryName=name)
    started = ecr.initiate_layer_upload(repositoryName=name)
    size = started["partSize"]
    data = os.urandom(size + 1)
    upload_parts(ecr, name, started["uploadId"], data, part_size=size)
    ecr.complete_layer_upload(repositoryName=name, uploadId=started["uploadId"],
                              layerDigests=[sha256(data)])
    assert get_blob(registry_server, name, sha256(data)).content == data


def test_initiate_creates_the_repository_when_create_on_push_allows(ecr: BaseClient) -> None:
    # The shared servers allow create-on-push (see tests/conftest.py).
    name = unique()
    ecr.initiate_layer_upload(repositoryName=name)
    described = ecr.describe_repositories(repositoryNames=[name])["repositories"]
    assert [r["repositoryName"] for r in described] == [name]


def test_part_out_of_order_is_refused_and_the_upload_resumes(
        ecr: BaseClient, registry_server: LiveRegistry) -> None:
    name = unique()
    ecr.create_repository(repositoryName=name)
    data = os.urandom(2 * PART)
    upload_id = ecr.initiate_layer_upload(repositoryName=name)["uploadId"]
    ecr.upload_layer_part(repositoryName=name, uploadId=upload_id, partFirstByte=0,
                          partLastByte=PART - 1, layerPartBlob=data[:PART])
    for first in (PART + 10, 0):  # a gap, then a part already received
        chunk = data[first:first + 100]
        with pytest.raises(ecr.exceptions.InvalidLayerPartException) as caught:
            ecr.upload_layer_part(repositoryName=name, uploadId=upload_id, partFirstByte=first,
                                  partLastByte=first + len(chunk) - 1, layerPartBlob=chunk)
        assert f"lastValidByteReceived {PART - 1}" in caught.value.response["Error"]["Message"]
        assert caught.value.response["lastValidByteReceived"] == PART - 1
    with pytest.raises(ecr.exceptions.InvalidLayerPartException):
        # The byte range claims more bytes than the part carries.
        ecr.upload_layer_part(repositoryName=name, uploadId=upload_id, partFirstByte=PART,
                              partLastByte=2 * PART, layerPartBlob=data[PART:])
    upload_parts(ecr, name, upload_id, data, start=PART)
    ecr.complete_layer_upload(repositoryName=name, uploadId=upload_id,
                              layerDigests=[sha256(data)])
    assert get_blob(registry_server, name, sha256(data)).content == data


def test_unknown_upload_id_is_upload_not_found(ecr: BaseClient) -> None:
    name, other = unique(), unique()
    ecr.create_repository(repositoryName=name)
    ecr.create_repository(repositoryName=other)
    elsewhere = ecr.initiate_layer_upload(repositoryName=other)["uploadId"]
    for upload_id in (str(uuid.uuid4()), "not-an-upload-id", elsewhere):
        with pytest.raises(ecr.exceptions.UploadNotFoundException):
            ecr.upload_layer_part(repositoryName=name, uploadId=upload_id, partFirstByte=0,
                                  partLastByte=2, layerPartBlob=b"abc")
        with pytest.raises(ecr.exceptions.UploadNotFoundException):
            ecr.complete_layer_upload(repositoryName=name, uploadId=upload_id,
                                      layerDigests=[sha256(b"abc")])


def test_wrong_digest_is_invalid_layer_and_nothing_is_visible(
        ecr: BaseClient, registry_server: LiveRegistry) -> None:
    name = unique()
    ecr.create_repository(repositoryName=name)
    data = os.urandom(PART + 7)
    claimed = sha256(b"something else")
    upload_id = ecr.initiate_layer_upload(repositoryName=name)["uploadId"]
    upload_parts(ecr, name, upload_id, data)
    with pytest.raises(ecr.exceptions.InvalidLayerException):
        ecr.complete_layer_upload(repositoryName=name, uploadId=upload_id,
                                  layerDigests=[claimed])
    for digest in (claimed, sha256(data)):
        assert get_blob(registry_server, name, digest).status_code == 404
    checked = ecr.batch_check_layer_availability(repositoryName=name,
                                                 layerDigests=[claimed, sha256(data)])
    assert [layer["layerAvailability"] for layer in checked["layers"]] == ["UNAVAILABLE"] * 2
    with pytest.raises(ecr.exceptions.UploadNotFoundException):
        ecr.upload_layer_part(repositoryName=name, uploadId=upload_id, partFirstByte=PART + 7,
                              partLastByte=PART + 7, layerPartBlob=b"x")


def test_completing_a_layer_the_repository_has_is_already_exists(ecr: BaseClient) -> None:
    name = unique()
    ecr.create_repository(repositoryName=name)
    data = os.urandom(1000)
    push_layer(ecr, name, data)
    upload_id = ecr.initiate_layer_upload(repositoryName=name)["uploadId"]
    upload_parts(ecr, name, upload_id, data)
    with pytest.raises(ecr.exceptions.LayerAlreadyExistsException):
        ecr.complete_layer_upload(repositoryName=name, uploadId=upload_id,
                                  layerDigests=[sha256(data)])
    # The session is gone; the layer is still there.
    with pytest.raises(ecr.exceptions.UploadNotFoundException):
        ecr.complete_layer_upload(repositoryName=name, uploadId=upload_id,
                                  layerDigests=[sha256(data)])
    checked = ecr.batch_check_layer_availability(repositoryName=name,
                                                 layerDigests=[sha256(data)])
    assert checked["layers"][0]["layerAvailability"] == "AVAILABLE"


def test_a_blob_stored_for_another_repository_is_linked_by_completion(
        ecr: BaseClient, registry_server: LiveRegistry) -> None:
    first, second = unique(), unique()
    data = os.urandom(3000)
    for name in (first, second):
        ecr.create_repository(repositoryName=name)
    push_layer(ecr, first, data)
    assert get_blob(registry_server, second, sha256(data)).status_code == 404
    push_layer(ecr, second, data)
    assert get_blob(registry_server, second, sha256(data)).content == data


def test_empty_upload_is_refused(ecr: BaseClient) -> None:
    name = unique()
    ecr.create_repository(repositoryName=name)
    upload_id = ecr.initiate_layer_upload(repositoryName=name)["uploadId"]
    with pytest.raises(ecr.exceptions.EmptyUploadException):
        ecr.complete_layer_upload(repositoryName=name, uploadId=upload_id,
                                  layerDigests=[sha256(b"")])


def test_complete_needs_exactly_one_digest(ecr: BaseClient) -> None:
    name = unique()
    ecr.create_repository(repositoryName=name)
    upload_id = ecr.initiate_layer_upload(repositoryName=name)["uploadId"]
    upload_parts(ecr, name, upload_id, b"abc")
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.complete_layer_upload(repositoryName=name, uploadId=upload_id,
                                  layerDigests=[sha256(b"abc"), sha256(b"abd")])
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.complete_layer_upload(repositoryName=name, uploadId=upload_id,
                                  layerDigests=["sha256:short"])
    # Neither refusal used up the upload.
    ecr.complete_layer_upload(repositoryName=name, uploadId=upload_id,
                              layerDigests=[sha256(b"abc")])


def test_batch_check_reports_available_unavailable_and_malformed(ecr: BaseClient) -> None:
    name = unique()
    ecr.create_repository(repositoryName=name)
    data = os.urandom(4321)
    present = push_layer(ecr, name, data)
    absent = sha256(b"never pushed")
    malformed = "sha256:not-hex"
    checked = ecr.batch_check_layer_availability(
        repositoryName=name, layerDigests=[present, absent, malformed, ""])
    assert checked["layers"] == [
        {"layerDigest": present, "layerAvailability": "AVAILABLE", "layerSize": len(data),
         "mediaType": LAYER_MEDIA_TYPE},
        {"layerDigest": absent, "layerAvailability": "UNAVAILABLE",
         "mediaType": LAYER_MEDIA_TYPE},
    ]
    failures = {f["layerDigest"]: f["failureCode"] for f in checked["failures"]}
    assert failures == {malformed: "InvalidLayerDigest", "": "MissingLayerDigest"}
    assert all(f["failureReason"] for f in checked["failures"])


def test_download_url_serves_the_layer_without_credentials(
        ecr: BaseClient, registry_server: LiveRegistry) -> None:
    name = unique()
    ecr.create_repository(repositoryName=name)
    data = os.urandom(PART + 99)
    digest = push_layer(ecr, name, data)
    answer = ecr.get_download_url_for_layer(repositoryName=name, layerDigest=digest)
    assert answer["layerDigest"] == digest
    if registry_server.backend == "filesystem":
        assert answer["downloadUrl"] == f"{registry_server.url}/v2/{name}/blobs/{digest}"
    fetched = httpx.get(answer["downloadUrl"], timeout=60)
    assert fetched.status_code == 200
    assert fetched.content == data


def test_download_url_for_an_unknown_layer_is_layers_not_found(ecr: BaseClient) -> None:
    name, other = unique(), unique()
    for repository in (name, other):
        ecr.create_repository(repositoryName=repository)
    elsewhere = push_layer(ecr, other, os.urandom(100))
    for digest in (sha256(b"never pushed"), elsewhere):
        with pytest.raises(ecr.exceptions.LayersNotFoundException):
            ecr.get_download_url_for_layer(repositoryName=name, layerDigest=digest)


def test_unknown_repository_is_repository_not_found(ecr: BaseClient) -> None:
    name = unique()
    digest = sha256(b"abc")
    calls: list[Callable[[], object]] = [
        lambda: ecr.batch_check_layer_availability(repositoryName=name, layerDigests=[digest]),
        lambda: ecr.upload_layer_part(repositoryName=name, uploadId=str(uuid.uuid4()),
                                      partFirstByte=0, partLastByte=2, layerPartBlob=b"abc"),
        lambda: ecr.complete_layer_upload(repositoryName=name, uploadId=str(uuid.uuid4()),
                                          layerDigests=[digest]),
        lambda: ecr.get_download_url_for_layer(repositoryName=name, layerDigest=digest),
    ]
    for call in calls:
        with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
            call()


# With auth on: signed URLs of the registry itself (filesystem storage cannot presign).

SECRET_KEY = generate_secret_key()
ADMIN = {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}


def cli(data_dir: Path, *args: str, stdin: str | None = None) -> str:
    env = {**os.environ, "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY}
    done = subprocess.run([sys.executable, "-m", "registry", *args, "--data-dir", str(data_dir)],
                          input=stdin, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveRegistry,
                                                                         BaseClient]]:
    data = tmp_path_factory.mktemp("ecr-layers-auth") / "data"
    data.mkdir(parents=True)
    policy = data.parent / "admin.json"
    policy.write_text(json.dumps(ADMIN))
    cli(data, "user", "add", "root", "--password-stdin", stdin="pw-root")
    key = json.loads(cli(data, "user", "key", "create", "root"))
    cli(data, "policy", "attach", "root", str(policy))
    live = start_registry(data, env={"REGISTRY_AUTH_ENABLED": "true",
                                     "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY,
                                     "REGISTRY_REPOSITORIES_CREATE_ON_PUSH": "false"})
    yield live, ecr_client(live.url, key["AccessKeyId"], key["SecretAccessKey"])
    live.stop()


def oci_error(response: httpx.Response) -> str:
    assert response.status_code in (401, 403), response.status_code
    return str(response.json()["errors"][0]["code"])


def with_query(url: str, path: str | None = None, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    rest = "&".join(f"{k}={v}" for k, v in query.items())
    return f"{parts.scheme}://{parts.netloc}{path or parts.path}?{rest}"


def test_signed_download_url_works_without_credentials(
        secured: tuple[LiveRegistry, BaseClient]) -> None:
    live, ecr = secured
    name = unique("signed")
    ecr.create_repository(repositoryName=name)
    data = os.urandom(PART + 1)
    digest = push_layer(ecr, name, data)
    url = ecr.get_download_url_for_layer(repositoryName=name, layerDigest=digest)["downloadUrl"]
    assert url.startswith(f"{live.url}/v2/{name}/blobs/{digest}?")
    assert SECRET_KEY not in url
    fetched = httpx.get(url)
    assert fetched.status_code == 200
    assert fetched.content == data
    assert httpx.head(url).headers["content-length"] == str(len(data))
    # The same blob without the signature still needs credentials.
    plain = httpx.get(f"{live.url}/v2/{name}/blobs/{digest}")
    assert plain.status_code == 401
    assert oci_error(plain) == "UNAUTHORIZED"


def test_tampered_or_misapplied_signatures_are_refused(
        secured: tuple[LiveRegistry, BaseClient]) -> None:
    _, ecr = secured
    name, other = unique("signed"), unique("signed")
    for repository in (name, other):
        ecr.create_repository(repositoryName=repository)
    shared = os.urandom(500)
    first = push_layer(ecr, name, shared)
    second = push_layer(ecr, name, os.urandom(600))
    push_layer(ecr, other, shared)  # readable there too, but not through this signature
    url = ecr.get_download_url_for_layer(repositoryName=name, layerDigest=first)["downloadUrl"]
    signature = parse_qs(urlsplit(url).query)["signature"][0]
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    refused = [
        with_query(url, signature=flipped),
        with_query(url, expires=str(expires + 3600)),
        with_query(url, path=f"/v2/{name}/blobs/{second}"),
        with_query(url, path=f"/v2/{other}/blobs/{first}"),
        with_query(url, signature=""),
    ]
    for bad in refused:
        response = httpx.get(bad)
        assert response.status_code == 403, bad
        assert oci_error(response) == "DENIED"
    assert httpx.get(url).status_code == 200


def test_expired_signed_url_is_refused(secured: tuple[LiveRegistry, BaseClient]) -> None:
    live, ecr = secured
    name = unique("signed")
    ecr.create_repository(repositoryName=name)
    data = os.urandom(700)
    digest = push_layer(ecr, name, data)
    path = f"/v2/{name}/blobs/{digest}"
    signer = UrlSigner(SECRET_KEY)
    expired = httpx.get(f"{live.url}{path}?{signer.query('GET', path, ttl=-5)}")
    assert expired.status_code == 403
    assert oci_error(expired) == "DENIED"
    assert "expired" in expired.json()["errors"][0]["message"]
    # The same signer with time left is accepted: only the expiry was wrong above.
    fresh = httpx.get(f"{live.url}{path}?{signer.query('GET', path, ttl=60)}")
    assert fresh.status_code == 200
    assert fresh.content == data


def test_initiate_without_create_on_push_is_repository_not_found(
        secured: tuple[LiveRegistry, BaseClient]) -> None:
    live, ecr = secured
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.initiate_layer_upload(repositoryName=unique("signed"))
    assert SECRET_KEY not in live.log()
