"""A registry per storage backend for the task definition tests (lifecycle and GC schedules off,
so that only the tests' own runs expire anything)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import BACKENDS, LiveRegistry, backend_env, start_registry


@pytest.fixture(scope="module", params=BACKENDS)
def live(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    env = {**backend_env(request.param, request), "REGISTRY_GC_INTERVAL": "0",
           "REGISTRY_LIFECYCLE_INTERVAL": "0"}
    server = start_registry(tmp_path_factory.mktemp(f"taskdef-{request.param}") / "data",
                            env=env)
    server.backend = request.param
    yield server
    server.stop()


@pytest.fixture
def http(live: LiveRegistry) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=60, follow_redirects=True) as client:
        yield client
