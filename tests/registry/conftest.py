"""Protocol-test fixtures: a client that refuses 5xx answers and a server-log check per test.

Every test here runs once per storage backend of the session `registry_server`; a test that
starts its own registry (`fresh_registry`) puts it on the same backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    S3_BACKENDS,
    LiveRegistry,
    backend_env,
    new_server_errors,
    s3_endpoint,
    start_registry,
)

from .util import RegistryClient


def _no_server_error(response: httpx.Response) -> None:
    if response.status_code >= 500:
        response.read()
        raise AssertionError(
            f"server error {response.status_code} for {response.request.method} "
            f"{response.request.url}: {response.text[:1000]!r}"
        )


def _summarise(log: str) -> str:
    """Each traceback reduced to the log line before it and its final exception line."""
    lines = log.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith("Traceback"):
            out.append(lines[i - 1] if i else "")
            end = i + 1
            while end < len(lines) and lines[end].startswith((" ", "\t")):
                end += 1
            if end < len(lines):
                out.append(f"  -> {lines[end]}")
    return "\n".join(out[:40])


def blob_redirect_for(backend: str, request: pytest.FixtureRequest) -> str | None:
    """Where a registry on `backend` sends whole-blob GETs: S3 redirects to the S3 endpoint."""
    if backend in S3_BACKENDS:
        return s3_endpoint(backend, request).url + "/"
    return None


def registry_client(live: LiveRegistry, request: pytest.FixtureRequest) -> RegistryClient:
    """A client for `live` (following redirects, refusing 5xx answers)."""
    return RegistryClient(base_url=live.url, timeout=60, follow_redirects=True,
                          event_hooks={"response": [_no_server_error]},
                          blob_redirect=blob_redirect_for(live.backend, request))


@pytest.fixture
def client(registry_server: LiveRegistry,
           request: pytest.FixtureRequest) -> Iterator[RegistryClient]:
    """Like the shared `client`, but any 5xx response fails the test immediately, and it knows
    whether the server redirects blob GETs (see `util.get_blob`)."""
    with registry_client(registry_server, request) as c:
        yield c


@pytest.fixture
def fresh_env(registry_server: LiveRegistry, request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings for a new registry on the session server's backend, with its own storage."""
    return backend_env(registry_server.backend, request)


@pytest.fixture
def fresh_registry(tmp_path: Path, registry_server: LiveRegistry,
                   fresh_env: dict[str, str]) -> Iterator[LiveRegistry]:
    """A live registry with empty storage of its own (a data directory, or a new bucket),
    on the same backend as the session server."""
    live = start_registry(tmp_path / "data", env=fresh_env)
    live.backend = registry_server.backend
    yield live
    live.stop()


@pytest.fixture(autouse=True)
def server_log_clean(registry_server: LiveRegistry) -> Iterator[None]:
    """Fail a test whose requests made the shared server log a traceback or answer a 5xx
    (to any client: skopeo's requests are counted too)."""
    before, errors = len(registry_server.log()), registry_server.server_errors()
    yield
    new = registry_server.log()[before:]
    if "Traceback" in new:
        pytest.fail("server logged a traceback:\n" + _summarise(new), pytrace=False)
    bad = new_server_errors(errors, registry_server.server_errors())
    if bad:
        pytest.fail("server answered 5xx:\n" + "\n".join(bad), pytrace=False)
