"""A source on the S3 backend (a fresh bucket on the local moto_server): its queue, its status
records and its streamed blob reads work there as on the filesystem."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LiveRegistry, backend_env, start_registry
from tests.registry.util import push_image, sha256

from .conftest import (
    PLAIN,
    RULES,
    destination,
    ecr_client,
    manifest_of,
    source_env,
    statuses,
    wait_for,
)

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3_source(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
              plain: LiveRegistry) -> Iterator[LiveRegistry]:
    env = {**backend_env("s3", request), **source_env([destination("plain", plain.url, PLAIN)])}
    live = start_registry(tmp_path_factory.mktemp("s3-source") / "data", env=env)
    live.backend = "s3"
    ecr_client(live).put_replication_configuration(
        replicationConfiguration={"rules": [RULES[0]]})
    yield live
    live.stop()


def test_s3_source_replicates_megabyte_layers(s3_source: LiveRegistry,
                                              plain: LiveRegistry) -> None:
    name = f"rep/s3-{s3_source.port}"
    with httpx.Client(base_url=s3_source.url, timeout=60) as a:
        image = push_image(a, name, "v1", layer_size=3 * MiB)
    with httpx.Client(base_url=plain.url, timeout=60) as b:
        found = wait_for(lambda: manifest_of(b, name, "v1"), what="the image from S3")
        assert found.content == image.manifest
        for blob in (image.config, *image.layers):
            digest = sha256(blob)
            got = b.get(f"/v2/{name}/blobs/{digest}")
            assert got.status_code == 200 and got.content == blob
    ecr = ecr_client(s3_source)
    assert wait_for(lambda: statuses(ecr, name, image.digest) ==
                    {PLAIN["registryId"]: ("COMPLETE", None)}, what="COMPLETE")
    assert ecr.describe_registry()["replicationConfiguration"] == {"rules": [RULES[0]]}
