"""A bucket that refuses writes is the operator's to fix, on S3 as on a disk: a quota reached
or a policy denying writes answers 503 with Retry-After naming what is wrong, never 500;
stored blobs still pull; /readyz is not ready until writes work again (it probes by itself).
On Ceph RGW for real: RGW answers 403 QuotaExceeded past a user's quota and 403 AccessDenied
where a bucket policy denies the write."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import os
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from storage.errors import StorageNotWritable, StorageUnavailable
from tests.conftest import LiveRegistry, start_registry
from tests.s3server import RgwServer

MiB = 1024 * 1024


def push(http: httpx.Client, name: str, data: bytes) -> tuple[httpx.Response, str]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return http.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=data), digest


def assert_unavailable(answer: httpx.Response, *words: str) -> str:
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["retry-after"]) > 0
    error = answer.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE"
    for word in words:
        assert word in error["message"], error["message"]
    return str(error["message"])


def assert_pulls(http: httpx.Client, name: str, digests: list[str]) -> None:
    for digest in digests:
        blob = http.get(f"/v2/{name}/blobs/{digest}", follow_redirects=True)
        assert blob.status_code == 200, blob.text
        assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == digest


def assert_no_server_errors(live: LiveRegistry) -> None:
    assert not any(status == "500" for (_, _, status) in live.server_errors())
    assert "Traceback" not in live.log()


def test_a_quota_reached_answers_503_and_recovers(rgw: RgwServer, tmp_path: Path) -> None:
    uid, user = rgw.new_user()  # a quota of its own: the shared user's tests go on
    bucket = user.create_bucket()
    rgw.admin("quota", "set", "--quota-scope=user", f"--uid={uid}", f"--max-size={8 * MiB}")
    rgw.admin("quota", "enable", "--quota-scope=user", f"--uid={uid}")
    live = start_registry(tmp_path / "data", env=user.registry_env(bucket))
    try:
        http = httpx.Client(base_url=live.url, timeout=60)
        statuses: collections.Counter[int] = collections.Counter()
        stored = []
        for _ in range(12):  # 12 MiB into 8
            answer, digest = push(http, "quota/app", os.urandom(MiB))
            statuses[answer.status_code] += 1
            if answer.status_code == 201:
                stored.append(digest)
            else:
                message = assert_unavailable(answer, "full", "QuotaExceeded", bucket,
                                             user.access_key_id)
                assert user.secret_access_key not in message
        assert statuses[201] and statuses[503], statuses
        # A few KiB may still fit (RGW counts in 4 KiB blocks), and /readyz's small probe
        # with them: another writer on the account takes the rest.
        other, s3 = user.create_bucket(), user.client()
        with pytest.raises(ClientError) as refused:
            for n in range(2048):
                s3.put_object(Bucket=other, Key=f"filler/{n}", Body=os.urandom(4096))
        assert refused.value.response["Error"]["Code"] == "QuotaExceeded"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        ready = http.get("/readyz")
        assert ready.status_code == 503 and "QuotaExceeded" in ready.text, ready.text
        assert_unavailable(push(http, "quota/app", b"small")[0], "full")
        assert_pulls(http, "quota/app", stored)
        rgw.admin("quota", "set", "--quota-scope=user", f"--uid={uid}", f"--max-size={64 * MiB}")
        assert http.get("/readyz").status_code == 200
        answer, digest = push(http, "quota/app", os.urandom(MiB))
        assert answer.status_code == 201, answer.text
        assert_pulls(http, "quota/app", [*stored, digest])
        assert_no_server_errors(live)
    finally:
        live.stop()


def test_a_policy_denying_writes_answers_503_and_serves_reads(rgw: RgwServer,
                                                              tmp_path: Path) -> None:
    bucket = rgw.create_bucket()
    live = start_registry(tmp_path / "data", env=rgw.registry_env(bucket, prefix="shared/reg"))
    try:
        http = httpx.Client(base_url=live.url, timeout=60)
        answer, kept = push(http, "denied/app", os.urandom(64 * 1024))
        assert answer.status_code == 201, answer.text
        deny = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Deny", "Principal": "*",
            "Action": ["s3:PutObject", "s3:DeleteObject"],
            "Resource": [f"arn:aws:s3:::{bucket}/shared/*"]}]}
        rgw.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(deny))
        answer, _ = push(http, "denied/app", os.urandom(64 * 1024))
        message = assert_unavailable(answer, "AccessDenied", bucket, "shared/reg/",
                                     rgw.access_key_id, "s3:PutObject")
        assert rgw.secret_access_key not in message
        ecr = boto3.client("ecr", endpoint_url=live.url, region_name="us-east-1",
                           aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="secret",
                           config=Config(retries={"total_max_attempts": 1}))
        with pytest.raises(ClientError) as refused:
            ecr.create_repository(repositoryName="denied/other")
        assert refused.value.response["Error"]["Code"] == "ServerException"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert_pulls(http, "denied/app", [kept])
        ready = http.get("/readyz")
        assert ready.status_code == 503 and "AccessDenied" in ready.text, ready.text
        rgw.client().delete_bucket_policy(Bucket=bucket)
        assert http.get("/readyz").status_code == 200
        answer, digest = push(http, "denied/app", os.urandom(64 * 1024))
        assert answer.status_code == 201, answer.text
        assert_pulls(http, "denied/app", [kept, digest])
        assert_no_server_errors(live)
    finally:
        live.stop()


def test_the_driver_tells_refused_writes_from_refused_reads(rgw: RgwServer) -> None:
    """AccessDenied on a write is the bucket refusing writes (and /readyz probes until it
    takes one); on a read it stays a plain backend error, and writes are not suspected."""
    from storage.drivers.s3 import S3Driver

    bucket, s3 = rgw.create_bucket(), rgw.client()

    def deny(*actions: str) -> None:
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Deny", "Principal": "*", "Action": list(actions),
                "Resource": [f"arn:aws:s3:::{bucket}/*"]}]}))

    async def check() -> None:
        driver = S3Driver(bucket, prefix="p", endpoint_url=rgw.url, region=rgw.region,
                          addressing_style="path", access_key_id=rgw.access_key_id,
                          secret_access_key=rgw.secret_access_key)
        try:
            await driver.put("kept", b"kept")
            deny("s3:GetObject")
            with pytest.raises(StorageUnavailable) as read:
                await driver.get("kept")
            assert type(read.value) is StorageUnavailable, read.value
            assert driver.write_failure is None
            deny("s3:PutObject", "s3:DeleteObject")
            with pytest.raises(StorageNotWritable, match="AccessDenied on PutObject"):
                await driver.put("new", b"new")
            with pytest.raises(StorageNotWritable, match="AccessDenied on DeleteObjects"):
                await driver.delete("kept")
            assert driver.write_failure is not None and "p/" in driver.write_failure
            assert await driver.get("kept") == b"kept"
            failure = await driver.probe_write("registry/write-probe-test")
            assert failure is not None and rgw.access_key_id in failure
            s3.delete_bucket_policy(Bucket=bucket)
            assert await driver.probe_write("registry/write-probe-test") is None
            assert driver.write_failure is None
            assert not await driver.exists("registry/write-probe-test")
        finally:
            await driver.close()

    asyncio.run(check())
