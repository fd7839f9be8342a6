"""The pull-through cache, with a second registry of ours as the upstream: first pulls fetch
through and store, later pulls stay local, moved tags are noticed after the tag TTL, and a
stopped upstream does not stop cached pulls."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.client import BaseClient

from tests.conftest import LiveRegistry, start_registry
from tests.ecr.test_signed import SECRET_KEY
from tests.faultproxy import FaultProxy
from tests.gc.util import pull_fully
from tests.registry.util import OCI_INDEX, build_index, push_image, put_manifest, sha256


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    live = start_registry(tmp_path_factory.mktemp("upstream") / "data")
    yield live
    live.stop()


@pytest.fixture(scope="module")
def seen(upstream: LiveRegistry) -> Iterator[FaultProxy]:
    """A proxy in front of the upstream that the cache's rule points at: it records every
    request that reaches the upstream (tests push to the upstream directly, past it)."""
    with FaultProxy(upstream.url) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    live = start_registry(tmp_path_factory.mktemp("cache") / "data",
                          env={"REGISTRY_PULL_THROUGH_TAG_TTL": "2",
                               "REGISTRY_REPOSITORIES_CREATE_ON_PUSH": "false",
                               "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY})
    yield live
    live.stop()


def ecr(live: LiveRegistry) -> BaseClient:
    return boto3.client("ecr", endpoint_url=live.url, region_name="us-east-1",
                        aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="secret")


@pytest.fixture(scope="module")
def rule(cache: LiveRegistry, seen: FaultProxy) -> str:
    ecr(cache).create_pull_through_cache_rule(ecrRepositoryPrefix="hub",
                                              upstreamRegistryUrl=seen.url)
    return "hub"


def test_first_pull_fetches_through_and_the_second_stays_local(
        cache: LiveRegistry, upstream: LiveRegistry, seen: FaultProxy, rule: str,
        tmp_path: Path) -> None:
    with httpx.Client(base_url=upstream.url, timeout=30) as http:
        image = push_image(http, "library/app", "v1", layer_size=300_000)
    skopeo = shutil.which("skopeo")
    assert skopeo is not None
    layout = tmp_path / "pulled"
    done = subprocess.run([skopeo, "--insecure-policy", "copy", "--src-tls-verify=false",
                           "--preserve-digests",
                           f"docker://{cache.host}/{rule}/library/app:v1", f"oci:{layout}:v1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + cache.log()[-3000:]
    index = json.loads((layout / "index.json").read_text())
    pulled = index["manifests"][0]["digest"]
    assert pulled == image.digest
    manifest = (layout / "blobs" / "sha256" / pulled.split(":")[1]).read_bytes()
    assert manifest == image.manifest  # byte-identical
    for blob in (image.config, *image.layers):
        assert (layout / "blobs" / "sha256" / sha256(blob).split(":")[1]).read_bytes() == blob

    # The upstream gave each blob once.
    assert [seen.count(method="GET", path=f"/v2/library/app/blobs/{sha256(blob)}")
            for blob in (image.config, *image.layers)] == [1, 1, 1]
    before = len(seen.requests)
    with httpx.Client(base_url=cache.url, timeout=30) as http:
        assert pull_fully(http, f"{rule}/library/app", image.digest) == image.digest
    # Pulling by digest again asks the upstream nothing.
    assert seen.requests[before:] == []
    # The repository was created on the first pull.
    names = [r["repositoryName"] for r in ecr(cache).describe_repositories()["repositories"]]
    assert f"{rule}/library/app" in names


def test_a_moved_tag_is_noticed_after_the_ttl(cache: LiveRegistry, upstream: LiveRegistry,
                                              rule: str) -> None:
    with httpx.Client(base_url=upstream.url, timeout=30) as up, \
            httpx.Client(base_url=cache.url, timeout=30) as down:
        first = push_image(up, "library/moving", "latest")
        assert pull_fully(down, f"{rule}/library/moving", "latest") == first.digest
        second = push_image(up, "library/moving", "latest")
        # Within the TTL the cached tag is served as it was.
        assert pull_fully(down, f"{rule}/library/moving", "latest") == first.digest
        time.sleep(2.5)
        assert pull_fully(down, f"{rule}/library/moving", "latest") == second.digest


def test_an_index_fetches_the_children_it_is_asked_for(cache: LiveRegistry,
                                                        upstream: LiveRegistry,
                                                        rule: str) -> None:
    with httpx.Client(base_url=upstream.url, timeout=30) as up, \
            httpx.Client(base_url=cache.url, timeout=30) as down:
        children = [push_image(up, "library/multi", f"c{i}") for i in range(2)]
        index = build_index(OCI_INDEX, children)
        assert put_manifest(up, "library/multi", "v1", index, OCI_INDEX).status_code == 201
        assert pull_fully(down, f"{rule}/library/multi", "v1") == sha256(index)


def test_cached_images_pull_with_the_upstream_stopped(tmp_path: Path) -> None:
    upstream = start_registry(tmp_path / "up")
    cache = start_registry(tmp_path / "cache", env={"REGISTRY_PULL_THROUGH_TAG_TTL": "0"})
    try:
        ecr(cache).create_pull_through_cache_rule(ecrRepositoryPrefix="mirror",
                                                  upstreamRegistryUrl=upstream.url)
        with httpx.Client(base_url=upstream.url, timeout=30) as up:
            image = push_image(up, "team/app", "v1")
        with httpx.Client(base_url=cache.url, timeout=30) as down:
            assert pull_fully(down, "mirror/team/app", "v1") == image.digest
            upstream.stop()
            # The TTL is 0, so the tag is re-checked on every pull: the check fails, and the
            # cached copy is served.
            assert pull_fully(down, "mirror/team/app", "v1") == image.digest
            missing = down.get("/v2/mirror/team/app/manifests/never-cached")
            assert missing.status_code == 404
            assert missing.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    finally:
        cache.stop()
        upstream.stop()


def test_an_upstream_with_token_auth_and_stored_credentials(tmp_path: Path) -> None:
    data = tmp_path / "up" / "data"
    data.mkdir(parents=True)
    env = {**os.environ, "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY}

    def cli(*args: str, stdin: str | None = None, at: Path = data) -> str:
        done = subprocess.run([sys.executable, "-m", "registry", *args, "--data-dir", str(at)],
                              input=stdin, capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("user", "add", "mirror", "--password-stdin", stdin="mirror-pw")
    policy = tmp_path / "pull.json"
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                                      "ecr:BatchCheckLayerAvailability"], "Resource": "*"}]}))
    cli("policy", "attach", "mirror", str(policy))
    cli("user", "add", "pusher", "--password-stdin", stdin="pusher-pw")
    admin = tmp_path / "admin.json"
    admin.write_text(json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}))
    cli("policy", "attach", "pusher", str(admin))
    upstream = start_registry(data, env={"REGISTRY_AUTH_ENABLED": "true",
                                         "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY})
    cache_data = tmp_path / "cache" / "data"
    cache_data.mkdir(parents=True)
    arn = cli("upstream-secret", "put", "upstream-1", "--username", "mirror",
              "--password-stdin", stdin="mirror-pw\n", at=cache_data).strip()
    cache = start_registry(cache_data, env={"REGISTRY_AUTH_SECRET_KEY": SECRET_KEY})
    try:
        with httpx.Client(base_url=upstream.url, timeout=30, auth=("pusher", "pusher-pw")) as up:
            image = push_image(up, "private/app", "v1")
        client = ecr(cache)
        with pytest.raises(client.exceptions.SecretNotFoundException):
            client.create_pull_through_cache_rule(
                ecrRepositoryPrefix="priv", upstreamRegistryUrl=upstream.url,
                credentialArn=arn.replace("upstream-1", "missing-one"))
        created = client.create_pull_through_cache_rule(
            ecrRepositoryPrefix="priv", upstreamRegistryUrl=upstream.url, credentialArn=arn)
        assert created["credentialArn"] == arn
        assert "mirror-pw" not in json.dumps(created, default=str)
        assert client.validate_pull_through_cache_rule(ecrRepositoryPrefix="priv")["isValid"]
        with httpx.Client(base_url=cache.url, timeout=30) as down:
            assert pull_fully(down, "priv/private/app", "v1") == image.digest
        rules = client.describe_pull_through_cache_rules()["pullThroughCacheRules"]
        assert [r["ecrRepositoryPrefix"] for r in rules] == ["priv"]
        with pytest.raises(client.exceptions.PullThroughCacheRuleAlreadyExistsException):
            client.create_pull_through_cache_rule(ecrRepositoryPrefix="priv",
                                                  upstreamRegistryUrl=upstream.url)
        client.delete_pull_through_cache_rule(ecrRepositoryPrefix="priv")
        with pytest.raises(client.exceptions.PullThroughCacheRuleNotFoundException):
            client.delete_pull_through_cache_rule(ecrRepositoryPrefix="priv")
        assert "mirror-pw" not in cache.log()
    finally:
        cache.stop()
        upstream.stop()


def test_concurrent_first_pulls_fetch_a_blob_once(cache: LiveRegistry, upstream: LiveRegistry,
                                                  seen: FaultProxy, rule: str) -> None:
    import concurrent.futures

    with httpx.Client(base_url=upstream.url, timeout=30) as up:
        image = push_image(up, "library/big", "v1", layer_size=6 * 1024 * 1024)
    layer = sha256(image.layers[0])
    with httpx.Client(base_url=cache.url, timeout=60) as down:
        assert down.get(f"/v2/{rule}/library/big/manifests/v1").status_code == 200

        def pull() -> bytes:
            with httpx.Client(base_url=cache.url, timeout=60) as client:
                got = client.get(f"/v2/{rule}/library/big/blobs/{layer}")
                assert got.status_code == 200
                return got.content

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            bodies = list(pool.map(lambda _: pull(), range(4)))
    assert all(body == image.layers[0] for body in bodies)
    assert seen.count(method="GET", path=f"/v2/library/big/blobs/{layer}") == 1
