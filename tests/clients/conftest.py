"""Fixtures for real-client tests: a private Docker engine and skopeo.

The Docker engine is optional on a developer machine (the docker tests skip, loudly, when it
cannot start) but mandatory when `CI` is set or `REQUIRE_DOCKER=1`: then a missing or broken
engine fails the tests with dockerd's and containerd's logs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveRegistry

from .dockerd import DockerDaemon, DockerUnavailable, Result, start_docker

REQUIRE_DOCKER_ENV = "REQUIRE_DOCKER"
SKOPEO_TIMEOUT = 300.0


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def docker_required() -> bool:
    """True when the docker tests must run rather than skip."""
    return _ci() or os.environ.get(REQUIRE_DOCKER_ENV, "").strip() == "1"


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerDaemon]:
    """A private containerd + dockerd for the whole session, trusting plain HTTP on loopback.

    It does not depend on `registry_server`, so the one engine serves the registries of every
    storage backend: `127.0.0.0/8` covers every registry a test starts on loopback, whatever
    its port (and on S3 the presigned blob URLs it is redirected to are plain HTTP on loopback
    too, which is not a registry and needs no trust).
    """
    daemon: DockerDaemon | None = None
    unavailable: DockerUnavailable | None = None
    try:
        daemon = start_docker(insecure_registries=["127.0.0.0/8"])
    except DockerUnavailable as exc:
        unavailable = exc
    if daemon is None:
        assert unavailable is not None
        if docker_required():
            pytest.fail(f"cannot start a Docker engine for the docker push/pull tests "
                        f"(mandatory because CI is set or {REQUIRE_DOCKER_ENV}=1): "
                        f"{unavailable.summary}\n{unavailable.logs}", pytrace=False)
        pytest.skip(f"DOCKER TESTS SKIPPED - no Docker engine: {unavailable.summary} "
                    f"(set {REQUIRE_DOCKER_ENV}=1 to fail instead, with dockerd's log)")
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def docker(docker_engine: DockerDaemon, registry_server: LiveRegistry) -> DockerDaemon:
    """The session's Docker engine, with the current registry's log in its diagnostics."""
    docker_engine.extra_logs["registry log"] = registry_server.log_path
    return docker_engine


@pytest.fixture
def docker_refs(docker: DockerDaemon) -> Iterator[list[str]]:
    """Image references a test creates in the engine; all are removed afterwards.

    Tests use random content, so removing their images also removes their layers and keeps
    later pulls honest (nothing is satisfied from a leftover local layer).
    """
    refs: list[str] = []
    yield refs
    if refs:
        docker.run("rmi", "-f", *refs, check=False)


SkopeoCopy = Callable[..., Result]


@pytest.fixture(scope="session")
def skopeo_copy(registry_server: LiveRegistry) -> SkopeoCopy:
    """`skopeo copy SRC DEST [EXTRA...]` with TLS verification off for the destination."""
    executable = shutil.which("skopeo")
    if executable is None:
        if docker_required():
            pytest.fail("skopeo is not on PATH (needed to push images for docker to pull)",
                        pytrace=False)
        pytest.skip("skopeo is not on PATH")

    def copy(src: str, dest: str, *extra: str, timeout: float = SKOPEO_TIMEOUT) -> Result:
        cmd = [executable, "--insecure-policy", "copy", "--dest-tls-verify=false",
               *extra, src, dest]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"skopeo timed out after {timeout}s: {' '.join(cmd)}\n"
                                 f"{exc.stderr!r}") from exc
        result = Result(cmd, proc.returncode, proc.stdout, proc.stderr)
        if result.returncode != 0:
            raise AssertionError(f"skopeo failed\n{result.describe()}\n--- registry log\n"
                                 f"{_tail(registry_server.log_path)}")
        return result

    return copy


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
