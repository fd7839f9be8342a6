"""Shared fixtures: real registry servers on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from registry.settings import Settings, load_settings
from tests.s3server import MotoServer, RgwServer, S3Endpoint, rgw_available, start_moto, start_rgw


def samples(text: str, name: str, **labels: str) -> list[Sample]:
    """The samples called `name` whose labels include `labels`, parsed from Prometheus's text
    format (so neither label order nor number formatting matters)."""
    return [sample for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()]


def metric(text: str, name: str, **labels: str) -> float | None:
    """The sum of those samples, or None when there is none."""
    found = samples(text, name, **labels)
    return sum(sample.value for sample in found) if found else None


def new_server_errors(before: dict[tuple[str, str, str], float],
                      after: dict[tuple[str, str, str], float]) -> list[str]:
    """What `server_errors()` counted between two readings, one line per kind."""
    return [f"{method} {route}: {status} x{after[key] - before.get(key, 0):.0f}"
            for key in sorted(after) if after[key] > before.get(key, 0)
            for route, method, status in [key]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveRegistry:
    """A `registry serve` subprocess bound to 127.0.0.1 (or `address`)."""

    url: str
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    backend: str = "filesystem"
    # The CA its TLS certificate is signed by, when it serves https.
    ca_file: Path | None = None
    address: str = "127.0.0.1"
    client_cert: tuple[Path, Path] | None = None  # (certificate, key) for mutual TLS
    # What it runs with on top of os.environ (secrets among them: kept out of the repr).
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def settings(self) -> Settings:
        """The server's settings, for tests that reach its storage directly."""
        overrides = {"storage.filesystem.root": str(self.data_dir)}
        if "AWS_ACCESS_KEY_ID" in self.env:
            overrides["storage.s3.access_key_id"] = self.env["AWS_ACCESS_KEY_ID"]
            overrides["storage.s3.secret_access_key"] = self.env["AWS_SECRET_ACCESS_KEY"]
        return load_settings(environ={**os.environ, **self.env}, overrides=overrides)

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What an httpx client needs to trust it."""
        if self.ca_file is None:
            return True
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.client_cert is not None:
            context.load_cert_chain(*self.client_cert)
        return context

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=10, verify=self.verify).text

    def server_errors(self) -> dict[tuple[str, str, str], float]:
        """The 5xx answers it has counted, by (route, method, status): its own request counter,
        so an unhandled exception counts too."""
        return {(s.labels["route"], s.labels["method"], s.labels["status"]): s.value
                for s in samples(self.metrics(), "registry_http_requests_total")
                if s.labels["status"].startswith("5")}

    def start_again(self) -> None:
        """Start a stopped (or killed) registry with the same command line and settings:
        the same port, the same storage; its log goes on in the same file."""
        assert self.process.poll() is not None, "stop it first"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.process.args, stdout=log,
                                            stderr=subprocess.STDOUT,
                                            env={**os.environ, **self.env})
        _wait_until_serving(self)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_registry(
    data_dir: Path,
    *,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    config: Path | None = None,
    ca_file: Path | None = None,
    address: str = "127.0.0.1",
    client_cert: tuple[Path, Path] | None = None,
) -> LiveRegistry:
    """Start `registry serve` on a free port and wait until `/v2/` answers (over https,
    trusting `ca_file`, when given: the settings must name a certificate signed by it)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        sys.executable, "-m", "registry", "serve",
        "--host", address, "--port", str(port), "--data-dir", str(data_dir),
    ]
    if config is not None:
        args += ["--config", str(config)]
    args += extra_args or []
    log_path = data_dir.parent / f"registry-{port}.log"
    # Most tests push to fresh repositories; ECR's create-before-push rule is tested on its own.
    full_env = {**os.environ, "REGISTRY_REPOSITORIES_CREATE_ON_PUSH": "true", **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    url = f"{'https' if ca_file else 'http'}://{address}:{port}"
    live = LiveRegistry(url=url, port=port, data_dir=data_dir, process=proc, log_path=log_path,
                        ca_file=ca_file, address=address, client_cert=client_cert,
                        env={k: v for k, v in full_env.items() if os.environ.get(k) != v})
    _wait_until_serving(live)
    return live


def _wait_until_serving(live: LiveRegistry) -> None:
    try:
        wait_until_answering(live.url + "/v2/", live.process, live.log_path, "registry",
                             verify=live.verify)
    except RuntimeError:
        live.stop()
        raise


def wait_until_answering(url: str, process: subprocess.Popen[bytes], log_path: Path,
                         what: str, timeout: float = 30,
                         verify: ssl.SSLContext | bool = True) -> None:
    """Until `GET url` answers 200 (or 401); RuntimeError with the tail of the process's log
    when it exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(url, timeout=1, verify=verify).status_code in (200, 401):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    state = "exited" if process.poll() is not None else f"did not answer in {timeout:.0f} s"
    log = log_path.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"{what} {state}:\n{log}")


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A local S3 endpoint (moto_server) shared by the session; each user makes its bucket."""
    server = start_moto(tmp_path_factory.mktemp("moto"), free_port())
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RgwServer]:
    """A single-node Ceph RADOS Gateway shared by the session (`.ci/rgw`, state in a temporary
    directory, stopped at the end). Without Ceph installed its tests skip, except under CI or
    REQUIRE_RGW=1, where they must run (`.ci/rgw install` installs it)."""
    if not rgw_available():
        message = "Ceph RGW is not installed (bash .ci/rgw install)"
        if os.environ.get("CI") or os.environ.get("REQUIRE_RGW") == "1":
            pytest.fail(f"{message} but CI is set: the RGW suites must run in CI")
        pytest.skip(message)
    server = start_rgw(tmp_path_factory.mktemp("rgw"))
    yield server
    server.stop()


# Storage backends of the shared suites: the filesystem, and S3 on each of its endpoints
# (the fixture that provides the endpoint, by backend name).
S3_BACKENDS = {"s3": "moto", "rgw": "rgw"}
BACKENDS = ["filesystem", *S3_BACKENDS]


def s3_endpoint(backend: str, request: pytest.FixtureRequest) -> S3Endpoint:
    """The S3 endpoint under an S3 backend."""
    endpoint: S3Endpoint = request.getfixturevalue(S3_BACKENDS[backend])
    return endpoint


def backend_env(backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings (as environment) that put a new registry on `backend`, with a fresh bucket."""
    if backend == "filesystem":
        return {}
    endpoint = s3_endpoint(backend, request)
    return endpoint.registry_env(endpoint.create_bucket())


@pytest.fixture(scope="session", params=BACKENDS)
def registry_server(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    """One live registry per storage backend, shared by the session (use unique repo names)."""
    backend: str = request.param
    live = start_registry(tmp_path_factory.mktemp(f"registry-{backend}") / "data",
                          env=backend_env(backend, request))
    live.backend = backend
    yield live
    live.stop()


@pytest.fixture
def fresh_registry(tmp_path: Path) -> Iterator[LiveRegistry]:
    """A live registry with its own empty data directory."""
    live = start_registry(tmp_path / "data")
    yield live
    live.stop()


@pytest.fixture
def client(registry_server: LiveRegistry) -> Iterator[httpx.Client]:
    # Blob GETs may answer 307 to the storage backend (S3 presigned URLs), as clients expect.
    with httpx.Client(base_url=registry_server.url, timeout=60, follow_redirects=True) as c:
        yield c


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name unique to the test."""
    name = request.node.name.lower()
    cleaned = "".join(c if c.isalnum() else "-" for c in name).strip("-")
    while "--" in cleaned:
        cleaned = cleaned.replace("--", "-")
    return f"test/{cleaned[:80].strip('-')}-{os.urandom(3).hex()}"
