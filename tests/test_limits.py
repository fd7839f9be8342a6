"""Rate limits per identity and API class (ECR's operations, the data plane counted as the
operations it stands for), answered 429 TOOMANYREQUESTS with Retry-After (ThrottlingException
on the ECR API); and the cap on concurrent uploads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config

from tests.conftest import start_registry
from tests.ecr.test_signed import SECRET_KEY
from tests.registry.util import held_body, push_image


def test_manifest_pulls_are_limited_per_identity(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = {**os.environ, "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY}
    policy = tmp_path / "all.json"
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}))
    for user in ("ann", "bob"):
        for args in (["user", "add", user, "--password-stdin"], ["policy", "attach", user,
                                                                  str(policy)]):
            subprocess.run([sys.executable, "-m", "registry", *args, "--data-dir", str(data)],
                           input=f"{user}-pw", text=True, env=env, check=True,
                           capture_output=True)
    live = start_registry(data, env={
        "REGISTRY_AUTH_ENABLED": "true", "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY,
        "REGISTRY_LIMITS_ENABLED": "true", "REGISTRY_LIMITS_BURST_SECONDS": "1",
        "REGISTRY_LIMITS_RATES": json.dumps({"BatchGetImage": 4})})
    try:
        with httpx.Client(base_url=live.url, timeout=30, auth=("ann", "ann-pw")) as ann:
            push_image(ann, "limited/app", "v1")
            answers = [ann.get("/v2/limited/app/manifests/v1") for _ in range(8)]
            codes = [a.status_code for a in answers]
            assert codes[:4] == [200] * 4 and 429 in codes[4:], codes
            refused = next(a for a in answers if a.status_code == 429)
            assert refused.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
            assert int(refused.headers["retry-after"]) >= 1
            # Another identity has its own budget; other classes are not affected.
            with httpx.Client(base_url=live.url, timeout=30, auth=("bob", "bob-pw")) as bob:
                assert bob.get("/v2/limited/app/manifests/v1").status_code == 200
            assert ann.get("/v2/limited/app/tags/list").status_code == 200
            time.sleep(1.1)  # the bucket refills at the class's rate
            assert ann.get("/v2/limited/app/manifests/v1").status_code == 200
    finally:
        live.stop()


def test_ecr_operations_are_throttled(tmp_path: Path) -> None:
    live = start_registry(tmp_path / "data", env={
        "REGISTRY_LIMITS_ENABLED": "true", "REGISTRY_LIMITS_BURST_SECONDS": "1",
        "REGISTRY_LIMITS_RATES": json.dumps({"DescribeRepositories": 2})})
    try:
        ecr = boto3.client("ecr", endpoint_url=live.url, region_name="us-east-1",
                           aws_access_key_id="a", aws_secret_access_key="b",
                           config=Config(retries={"total_max_attempts": 1}))
        ecr.describe_repositories()
        ecr.describe_repositories()
        with pytest.raises(ecr.exceptions.ClientError) as caught:
            ecr.describe_repositories()
        assert caught.value.response["Error"]["Code"] == "ThrottlingException"
        ecr.create_repository(repositoryName="not/throttled")  # another class
    finally:
        live.stop()


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[str]:
    live = start_registry(tmp_path / "data", env={"REGISTRY_LIMITS_MAX_CONCURRENT_UPLOADS": "1"})
    yield live.url
    live.stop()


def test_concurrent_uploads_are_capped(capped: str) -> None:
    with httpx.Client(base_url=capped, timeout=30) as http:
        first = http.post("/v2/capped/app/blobs/uploads/").headers["location"]
        second = http.post("/v2/capped/app/blobs/uploads/").headers["location"]
    release = threading.Event()
    results: list[int] = []
    worker = threading.Thread(target=lambda: results.append(httpx.patch(
        capped + first, content=held_body(release, 10), timeout=30).status_code))
    worker.start()
    time.sleep(0.5)  # the first PATCH is in flight
    try:
        refused = httpx.patch(capped + second, content=b"z" * 10, timeout=30)
        assert refused.status_code == 429
        assert refused.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert refused.headers["retry-after"] == "1"
    finally:
        release.set()
        worker.join(timeout=30)
    assert results == [202]
    assert httpx.patch(capped + second, content=b"z" * 10, timeout=30).status_code == 202
