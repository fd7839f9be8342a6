"""Lifecycle policies run on their own, on a schedule, with one replica doing the work; and the
lease that picks that replica."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import boto3
import httpx

from storage.drivers.filesystem import FilesystemDriver
from storage.leases import Leases
from tests.conftest import start_registry
from tests.lifecycle.test_evaluate import policy, rule
from tests.registry.util import build_image, push_image_blobs, put_manifest


def test_a_lease_has_one_holder_until_it_lapses(tmp_path: Path) -> None:
    async def scenario() -> None:
        driver = FilesystemDriver(tmp_path)
        first, second = Leases(driver), Leases(driver)
        try:
            assert await first.acquire("job", 60, now=1000)
            assert not await second.acquire("job", 60, now=1030)
            assert await first.acquire("job", 60, now=1030)  # the holder renews
            assert not await second.acquire("job", 60, now=1080)
            assert await second.acquire("job", 60, now=1091)  # lapsed: taken over
            assert not await first.acquire("job", 60, now=1100)
            await first.release("job")  # not the holder: nothing happens
            assert not await first.acquire("job", 60, now=1100)
            await second.release("job")
            assert await first.acquire("job", 60, now=1100)
        finally:
            await driver.close()

    asyncio.run(scenario())


def test_policies_run_on_the_schedule(tmp_path: Path) -> None:
    live = start_registry(tmp_path / "data", env={"REGISTRY_LIFECYCLE_INTERVAL": "1"})
    try:
        ecr = boto3.client("ecr", endpoint_url=live.url, region_name="us-east-1",
                           aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="secret")
        name = "scheduled/app"
        ecr.create_repository(repositoryName=name)
        with httpx.Client(base_url=live.url, timeout=30) as http:
            for _ in range(3):
                image = build_image()
                push_image_blobs(http, name, image)
                assert put_manifest(http, name, image.digest, image.manifest,
                                    image.media_type).status_code == 201
                time.sleep(0.01)
        ecr.put_lifecycle_policy(repositoryName=name, lifecyclePolicyText=policy(
            rule(1, "untagged", "imageCountMoreThan", 1)))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if len(ecr.list_images(repositoryName=name)["imageIds"]) == 1:
                break
            time.sleep(0.2)
        kept = ecr.list_images(repositoryName=name)["imageIds"]
        assert kept == [{"imageDigest": image.digest}], live.log()[-2000:]
        assert "lastEvaluatedAt" in ecr.get_lifecycle_policy(repositoryName=name)
    finally:
        live.stop()
