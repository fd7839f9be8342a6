"""Lifecycle policies on a live registry, on both backends: the ECR preview, the CLI preview and
the CLI run agree image for image, and the run removes exactly those images.

The repository is built by the test (pushes over /v2/); push and pull times are then moved into
the past through the registry's own storage layer, since lifecycle rules count in days."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.client import BaseClient
from botocore.config import Config

from registry.app import build_driver
from storage import paths, records
from storage.content.digest import Digest
from storage.store import Store
from tests.conftest import LiveRegistry
from tests.lifecycle.test_evaluate import policy, rule
from tests.registry.util import build_image, push_image, push_image_blobs, put_manifest

DAY = 86400.0
# name: (tags, days since push, days since pull or None, in use)
IMAGES: dict[str, tuple[list[str], float, float | None, bool]] = {
    "prod1": (["prod-1"], 40, 1, False),
    "prod2": (["prod-2", "latest"], 30, None, False),
    "prod3": (["prod-3"], 20, 25, False),
    "dev1": (["dev-1"], 3, None, False),
    "dev2": (["dev-2"], 2, None, True),
    "old-untagged": ([], 10, None, False),
    "new-untagged": ([], 0.5, None, False),
}

CASES = [
    ("untagged-older-than-7-days", policy(rule(1, "untagged", "sinceImagePushed", 7)),
     {"old-untagged"}),
    ("keep-two-newest-prod",
     policy(rule(1, "tagged", "imageCountMoreThan", 2, tagPrefixList=["prod"])), {"prod1"}),
    ("not-pulled-for-15-days",
     policy(rule(1, "tagged", "sinceImagePulled", 15, tagPatternList=["*"])),
     {"prod2", "prod3"}),
    ("protect-prod-then-keep-two",
     policy(rule(1, "tagged", "imageCountMoreThan", 100, tagPrefixList=["prod"]),
            rule(2, "any", "imageCountMoreThan", 2)),
     {"dev1", "old-untagged"}),  # dev2 would expire too, but it is in use
]


@pytest.fixture
def ecr(registry_server: LiveRegistry) -> BaseClient:
    return boto3.client("ecr", endpoint_url=registry_server.url, region_name="us-east-1",
                        aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="secret",
                        config=Config(retries={"total_max_attempts": 1}))


@pytest.fixture
def http(registry_server: LiveRegistry) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry_server.url, timeout=60, follow_redirects=True) as c:
        yield c


def cli(live: LiveRegistry, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **live.env}
    return subprocess.run([sys.executable, "-m", "registry", "lifecycle", *args,
                           "--data-dir", str(live.data_dir)],
                          capture_output=True, text=True, env=env, timeout=120)


def age(live: LiveRegistry, name: str, digests: dict[str, str]) -> None:
    """Move each image's push (and pull) time into the past, as IMAGES says."""

    async def rewrite() -> None:
        store = Store(build_driver(live.settings()))
        try:
            now = time.time()
            for label, digest_text in digests.items():
                _, pushed, pulled, _ = IMAGES[label]
                digest = Digest.parse(digest_text)
                record = await store.manifests.revision_record(name, digest)
                assert record is not None
                record["pushedAt"] = now - pushed * DAY
                await store.driver.put(paths.revision(name, digest), records.dump(record))
                if pulled is not None:
                    await store.driver.put(paths.pull_record(name, digest),
                                           records.dump({"pulledAt": now - pulled * DAY}))
        finally:
            await store.close()

    asyncio.run(rewrite())


def build_repository(ecr: BaseClient, http: httpx.Client, live: LiveRegistry,
                     name: str) -> dict[str, str]:
    ecr.create_repository(repositoryName=name)
    digests: dict[str, str] = {}
    for label, (tags, _, _, in_use) in IMAGES.items():
        if tags:
            image = push_image(http, name, tags[0])
            for tag in tags[1:]:
                assert put_manifest(http, name, tag, image.manifest,
                                    image.media_type).status_code == 201
        else:
            image = build_image()
            push_image_blobs(http, name, image)
            assert put_manifest(http, name, image.digest, image.manifest,
                                image.media_type).status_code == 201
        digests[label] = image.digest
        if in_use:
            done = cli(live, "protect", name, image.digest, "--reason", "task running")
            assert done.returncode == 0, done.stderr
    age(live, name, digests)
    return digests


def lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


@pytest.mark.parametrize(("text", "expected"), [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_preview_then_run_expire_exactly_the_expected_images(
        ecr: BaseClient, http: httpx.Client, registry_server: LiveRegistry, repo: str,
        text: str, expected: set[str]) -> None:
    digests = build_repository(ecr, http, registry_server, repo)
    label_of = {d: label for label, d in digests.items()}
    ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=text)
    assert json.loads(ecr.get_lifecycle_policy(repositoryName=repo)["lifecyclePolicyText"]) == \
        json.loads(text)

    started = ecr.start_lifecycle_policy_preview(repositoryName=repo)
    assert started["status"] in ("IN_PROGRESS", "COMPLETE")
    preview = ecr.get_lifecycle_policy_preview(repositoryName=repo)
    assert preview["status"] == "COMPLETE"
    previewed = {label_of[r["imageDigest"]] for r in preview["previewResults"]}
    assert previewed == expected
    assert preview["summary"]["expiringImageTotalCount"] == len(expected)
    for result in preview["previewResults"]:
        assert result["action"]["type"] == "EXPIRE"
        assert sorted(result.get("imageTags", [])) == sorted(IMAGES[label_of[
            result["imageDigest"]]][0])

    shown = cli(registry_server, "preview", repo)
    assert shown.returncode == 0, shown.stderr
    would = {label_of[x["imageDigest"]] for x in lines(shown.stdout)
             if x["action"] == "would expire"}
    kept = {label_of[x["imageDigest"]] for x in lines(shown.stdout)
            if x["action"] == "keep (in use)"}
    assert would == expected

    ran = cli(registry_server, "run", repo)
    assert ran.returncode == 0, ran.stderr
    assert {label_of[x["imageDigest"]] for x in lines(ran.stdout)
            if x["action"] == "expired"} == expected
    assert {label_of[x["imageDigest"]] for x in lines(ran.stdout)
            if x["action"] == "keep (in use)"} == kept
    remaining = {label_of[d["imageDigest"]]
                 for d in ecr.describe_images(repositoryName=repo)["imageDetails"]}
    assert remaining == set(IMAGES) - expected
    for label in expected:
        assert http.get(f"/v2/{repo}/manifests/{digests[label]}").status_code == 404
    assert "lastEvaluatedAt" in ecr.get_lifecycle_policy(repositoryName=repo)


def test_lifecycle_policy_errors(ecr: BaseClient, repo: str) -> None:
    ecr.create_repository(repositoryName=repo)
    with pytest.raises(ecr.exceptions.LifecyclePolicyNotFoundException):
        ecr.get_lifecycle_policy(repositoryName=repo)
    with pytest.raises(ecr.exceptions.LifecyclePolicyNotFoundException):
        ecr.start_lifecycle_policy_preview(repositoryName=repo)
    with pytest.raises(ecr.exceptions.LifecyclePolicyPreviewNotFoundException):
        ecr.get_lifecycle_policy_preview(repositoryName=repo)
    bad = policy(rule(1, "any", "imageCountMoreThan", 1), rule(2, "untagged",
                                                               "imageCountMoreThan", 1))
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=bad)
    with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
        ecr.put_lifecycle_policy(repositoryName="no/such-repo",
                                 lifecyclePolicyText=policy(rule(1, "untagged",
                                                                 "imageCountMoreThan", 1)))
    good = policy(rule(1, "untagged", "imageCountMoreThan", 1))
    ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=good)
    deleted = ecr.delete_lifecycle_policy(repositoryName=repo)
    assert deleted["lifecyclePolicyText"] == good
    with pytest.raises(ecr.exceptions.LifecyclePolicyNotFoundException):
        ecr.delete_lifecycle_policy(repositoryName=repo)
