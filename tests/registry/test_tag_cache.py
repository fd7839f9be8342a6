"""`repositories.tag_cache_seconds`: pulls may answer what a tag points at (and that a manifest
exists) from memory, for that long. Through the replica that changed a tag the change shows at
once; through another replica sharing the storage, within the bound; with 0 (the default), at
once everywhere."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveRegistry, backend_env, start_registry
from tests.registry.util import OCI_MANIFEST, push_image, sha256

BOUND = 1.0
REPO = "cache/app"


@pytest.fixture
def replicas(request: pytest.FixtureRequest, registry_server: LiveRegistry,
             tmp_path: Path) -> Iterator[list[LiveRegistry]]:
    """Two servers on one storage (of the suite's backend), with the cache bound
    `request.param`."""
    env = {**backend_env(registry_server.backend, request),
           "REGISTRY_REPOSITORIES_TAG_CACHE_SECONDS": str(request.param)}
    first = start_registry(tmp_path / "data", env=env)
    second = start_registry(tmp_path / "data", env=env)
    yield [first, second]
    for live in (first, second):
        live.stop()
        assert "Traceback" not in live.log()


def served(live: LiveRegistry, reference: str) -> str | None:
    answer = httpx.get(f"{live.url}/v2/{REPO}/manifests/{reference}",
                       headers={"Accept": OCI_MANIFEST})
    return answer.headers["docker-content-digest"] if answer.status_code == 200 else None


def seen_within(live: LiveRegistry, reference: str, expected: str | None) -> float:
    return within(lambda: served(live, reference) == expected)


def within(changed: Callable[[], bool]) -> float:
    """Seconds until `changed()` (failing past the bound and a second more)."""
    started = time.monotonic()
    while not changed():
        assert time.monotonic() - started < BOUND + 1.0, f"still stale after {BOUND + 1.0} s"
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.mark.parametrize("replicas", [BOUND], indirect=True)
def test_a_moved_tag_is_seen_at_once_here_and_within_the_bound_elsewhere(
        replicas: list[LiveRegistry]) -> None:
    mover, other = replicas
    with httpx.Client(base_url=mover.url, timeout=30) as http:
        old = push_image(http, REPO, "v1")
        assert served(other, "v1") == old.digest  # remembered there from now on
        assert served(mover, "v1") == old.digest  # and here
        new = push_image(http, REPO, "v1")
    assert served(mover, "v1") == new.digest  # its own change: at once
    assert served(other, "v1") == old.digest  # the cache is really used...
    assert seen_within(other, "v1", new.digest) <= BOUND + 0.5  # ...and bounded

    # A manifest deleted through one replica stops being served by digest through the other.
    assert served(other, old.digest) == old.digest
    assert served(mover, old.digest) == old.digest
    assert httpx.delete(f"{mover.url}/v2/{REPO}/manifests/{old.digest}").status_code == 202
    assert served(mover, old.digest) is None
    assert seen_within(other, old.digest, None) <= BOUND + 0.5


def blob_there(live: LiveRegistry, digest: str) -> bool:
    return httpx.head(f"{live.url}/v2/{REPO}/blobs/{digest}").status_code == 200


@pytest.mark.parametrize("replicas", [BOUND], indirect=True)
def test_an_unlinked_blob_is_seen_at_once_here_and_within_the_bound_elsewhere(
        replicas: list[LiveRegistry]) -> None:
    mover, other = replicas
    with httpx.Client(base_url=mover.url, timeout=30) as http:
        image = push_image(http, REPO, "blobs")
    layer = sha256(image.layers[0])
    assert blob_there(other, layer) and blob_there(mover, layer)  # remembered in both
    assert httpx.delete(f"{mover.url}/v2/{REPO}/blobs/{layer}").status_code == 202
    assert not blob_there(mover, layer)  # its own change: at once
    assert blob_there(other, layer)  # the cache is really used...
    assert within(lambda: not blob_there(other, layer)) <= BOUND + 0.5  # ...and bounded


@pytest.mark.parametrize("replicas", [0], indirect=True)
def test_without_the_cache_every_replica_sees_a_move_at_once(
        replicas: list[LiveRegistry]) -> None:
    mover, other = replicas
    with httpx.Client(base_url=mover.url, timeout=30) as http:
        push_image(http, REPO, "v1")
        assert served(other, "v1") is not None
        new = push_image(http, REPO, "v1")
    assert served(other, "v1") == new.digest
    httpx.delete(f"{mover.url}/v2/{REPO}/manifests/v1")
    assert served(other, "v1") is None


@pytest.mark.parametrize("replicas", [BOUND], indirect=True)
def test_a_repository_deleted_here_is_gone_at_once(replicas: list[LiveRegistry]) -> None:
    mover, _ = replicas
    with httpx.Client(base_url=mover.url, timeout=30) as http:
        image = push_image(http, REPO, "gone")
    assert served(mover, "gone") == image.digest and blob_there(mover, sha256(image.layers[0]))
    deleted = httpx.post(mover.url + "/", json={"repositoryName": REPO, "force": True}, headers={
        "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.DeleteRepository",
        "Content-Type": "application/x-amz-json-1.1"})
    assert deleted.status_code == 200, deleted.text
    assert served(mover, "gone") is None and served(mover, image.digest) is None
    assert not blob_there(mover, sha256(image.layers[0]))
