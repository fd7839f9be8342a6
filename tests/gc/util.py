"""Shared by the GC tests: fresh registries on each backend, pushes, full pulls, and looking at
what storage holds."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from registry.app import build_driver
from storage import paths
from storage.store import Store
from tests.conftest import BACKENDS, LiveRegistry, backend_env, start_registry
from tests.registry.util import Image

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json"])


@pytest.fixture(params=BACKENDS)
def gc_registry(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    """A registry of its own (GC works on the whole registry), with schedules off."""
    env = {**backend_env(request.param, request), "REGISTRY_GC_INTERVAL": "0",
           "REGISTRY_LIFECYCLE_INTERVAL": "0"}
    live = start_registry(tmp_path_factory.mktemp(f"gc-{request.param}") / "data", env=env)
    live.backend = request.param
    yield live
    live.stop()


def run_gc(live: LiveRegistry, *args: str, timeout: float = 300) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "registry", "gc", "--data-dir", str(live.data_dir), *args],
        capture_output=True, text=True, env={**os.environ, **live.env}, timeout=timeout)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def stored_blobs(live: LiveRegistry) -> set[str]:
    """Every digest under blobs/ in the registry's storage."""

    async def listing() -> set[str]:
        store = Store(build_driver(live.settings()))
        try:
            keys = await store.driver.list(f"{paths.BLOBS}/")
        finally:
            await store.close()
        return {f"{k.split('/')[1]}:{k.split('/')[3]}" for k in keys if k.count("/") == 3}

    return asyncio.run(listing())


def pull_fully(client: httpx.Client, repo: str, reference: str) -> str:
    """Pull a manifest (and, for an index, its children) and every blob, checking every
    digest; the manifest's digest."""
    response = client.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT})
    assert response.status_code == 200, f"{repo}:{reference} -> {response.status_code}"
    digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
    assert response.headers["docker-content-digest"] == digest
    doc = response.json()
    for child in doc.get("manifests", []):
        assert pull_fully(client, repo, child["digest"]) == child["digest"]
    for blob in ([doc["config"]] if "config" in doc else []) + doc.get("layers", []):
        got = client.get(f"/v2/{repo}/blobs/{blob['digest']}")
        assert got.status_code == 200, f"{repo} blob {blob['digest']} -> {got.status_code}"
        assert "sha256:" + hashlib.sha256(got.content).hexdigest() == blob["digest"]
    return digest


def blobs_of(image: Image) -> set[str]:
    return {"sha256:" + hashlib.sha256(b).hexdigest() for b in (image.config, *image.layers)}
