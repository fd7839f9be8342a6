"""High availability, shown: three replicas on one Ceph RGW bucket behind haproxy.

skopeo and docker push through the balancer (health checks on `/readyz`, a connection of its
own to a replica for every request) while the replica delivering events is SIGKILLed in the
middle of a blob upload and another one is drained (SIGTERM with `drain_delay`) and started
again. Then:

- every push succeeded, at the latest on a retry, and every failed attempt failed the way a
  network fault does (a dropped connection or a 5xx from the balancer), never with a client
  error a retry could not fix;
- every pushed image pulls back byte-identical through each of the three replicas (the killed
  one started again), its manifest by digest and every blob;
- the periodic jobs went on without the killed replica: garbage collection and lifecycle runs
  on the survivors, a push event for every image, each image replicated, as the leases of the
  event and replication queues passed to a survivor.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.config import Config

from tests.conftest import LiveRegistry, free_port, metric, start_registry, wait_until_answering
from tests.events.test_events import Receiver
from tests.imagebuild import BuiltImage, build_image
from tests.s3server import RgwServer

from .dockerd import DockerDaemon, Result, write_docker_archive

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
ATTEMPTS = 4  # per push: the first, and three retries
DESTINATION = {"region": "us-west-2", "registryId": "111111111111"}
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json"])
# What a client says when the registry it talked to went away mid-request (the balancer's 502
# or 503, a reset or closed connection): a retry can succeed. Anything else (401, 404,
# DIGEST_INVALID, BLOB_UPLOAD_INVALID, ...) would be a registry fault, not a replica's death.
RETRYABLE = re.compile(r"\b50[234]\b|Bad Gateway|Service Unavailable|connection reset|"
                       r"broken pipe|EOF|connection refused|closed", re.IGNORECASE)
PUSH_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64}) size: \d+")


# --------------------------------------------------------------------------- the balancer


@dataclass
class Balancer:
    """haproxy in front of the replicas, its configuration and log in `directory`."""

    directory: Path
    backends: list[LiveRegistry]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> Balancer:
        haproxy = shutil.which("haproxy")
        if haproxy is None:
            pytest.fail("haproxy is not on PATH (apt-get install -y haproxy)")
        servers = "\n".join(f"    server r{i} {b.host} check"
                            for i, b in enumerate(self.backends))
        config = self.directory / "haproxy.cfg"
        config.write_text(f"""\
global
    maxconn 512
defaults
    mode http
    timeout connect 2s
    timeout client 300s
    timeout server 300s
    timeout http-request 30s
    # A connection of its own to a replica for every request, so each is balanced anew.
    option http-server-close
    # A replica that refuses the connection (killed, or stopping) is skipped for another.
    retries 3
    option redispatch 1
frontend registry
    bind {self.host}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 200ms fall 1 rise 2
{servers}
""")
        with open(self.directory / "haproxy.log", "wb") as log:
            self.process = subprocess.Popen([haproxy, "-db", "-f", str(config)],
                                            stdout=log, stderr=subprocess.STDOUT)
        wait_until_answering(self.url + "/v2/", self.process, self.directory / "haproxy.log",
                             "haproxy")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


# --------------------------------------------------------------------------- the cluster


@dataclass
class Cluster:
    replicas: list[LiveRegistry]
    balancer: Balancer
    receiver: Receiver
    destination: LiveRegistry

    def replica_metric(self, replica: LiveRegistry, name: str, **labels: str) -> float:
        return metric(replica.metrics(), name, **labels) or 0.0

    def last_success(self, replicas: list[LiveRegistry], job: str) -> float:
        """When any of `replicas` last finished a run of `job` (a UNIX time; 0: never)."""
        return max(self.replica_metric(r, "registry_job_last_success_timestamp_seconds",
                                       job=job) for r in replicas)

    def pushed_events(self) -> set[tuple[str, str]]:
        """(repository, digest) of every PUSH event received."""
        return {(body["detail"]["repository-name"], body["detail"]["image-digest"])
                for body in self.receiver.bodies("/hooks")
                if body["detail"]["action-type"] == "PUSH"}


@pytest.fixture
def cluster(rgw: RgwServer, tmp_path: Path) -> Iterator[Cluster]:
    receiver = Receiver(free_port())
    receiver.start()
    destination = start_registry(tmp_path / "destination" / "data")
    quick = {"backoff": 0.2, "max_backoff": 1.0, "max_attempts": 1000, "timeout": 10}
    env = {
        **rgw.registry_env(rgw.create_bucket()),
        "REGISTRY_GC_INTERVAL": "2", "REGISTRY_LIFECYCLE_INTERVAL": "2",
        "REGISTRY_SERVER_DRAIN_DELAY": "1", "REGISTRY_SERVER_GRACEFUL_TIMEOUT": "60",
        "REGISTRY_EVENTS_ENDPOINTS": json.dumps([
            {"name": "hooks", "url": f"http://127.0.0.1:{receiver.port}/hooks", **quick}]),
        "REGISTRY_REPLICATION_DESTINATIONS": json.dumps([
            {"name": "dr", "url": destination.url, "region": DESTINATION["region"],
             "registry_id": DESTINATION["registryId"], **quick}]),
    }
    replicas: list[LiveRegistry] = []
    balancer: Balancer | None = None
    try:
        for i in range(3):
            replicas.append(start_registry(tmp_path / f"replica-{i}" / "data", env=env))
        balancer = Balancer(tmp_path, replicas).start()
        ecr(balancer.url).put_replication_configuration(replicationConfiguration={"rules": [
            {"destinations": [DESTINATION],
             "repositoryFilters": [{"filter": "ha/", "filterType": "PREFIX_MATCH"}]}]})
        yield Cluster(replicas, balancer, receiver, destination)
    finally:
        if balancer is not None:
            balancer.stop()
        for replica in replicas:
            replica.stop()
        destination.stop()
        receiver.stop()
    for replica in replicas:
        assert "Traceback" not in replica.log(), replica.log()[-4000:]


def ecr(url: str) -> Any:
    import boto3

    return boto3.client("ecr", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="secret",
                        config=Config(retries={"total_max_attempts": 1}))


# --------------------------------------------------------------------------- pushes


Attempt = Callable[[], Result]  # one try: the command's exit status and output


@dataclass
class Push:
    """One image pushed through the balancer, retried until it succeeds or ATTEMPTS run out."""

    client: str  # "skopeo" or "docker"
    repository: str
    run: Attempt
    digest: str | None = None  # the manifest's, once pushed
    failures: list[str] = field(default_factory=list)  # what each failed attempt said

    def __call__(self) -> None:
        for _ in range(ATTEMPTS):
            done = self.run()
            if done.returncode == 0:
                if self.digest is None:  # docker says which digest it pushed
                    match = PUSH_DIGEST.search(done.stdout)
                    assert match, done.stdout
                    self.digest = match.group(1)
                return
            self.failures.append(done.output[-600:])
        self.digest = None


def skopeo_push(layout: BuiltImage, reference: str) -> Attempt:
    skopeo = shutil.which("skopeo")
    assert skopeo is not None

    def run() -> Result:
        cmd = [skopeo, "--insecure-policy", "copy", "--dest-tls-verify=false",
               "--retry-times", "0", "--preserve-digests",
               f"oci:{layout.layout}:{layout.ref}", f"docker://{reference}"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        return Result(cmd, done.returncode, done.stdout, done.stderr)
    return run


def docker_push(docker: DockerDaemon, reference: str) -> Attempt:
    def run() -> Result:
        return docker.run("push", reference, check=False, timeout=300)
    return run


# --------------------------------------------------------------------------- chaos


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def wait_until_uploading(replica: LiveRegistry, timeout: float) -> None:
    """Until `replica` is receiving a blob upload (polled closely: a layer takes ~0.1 s)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=replica.url, timeout=5) as client:
        while time.monotonic() < deadline:
            text = client.get("/metrics").text
            if (metric(text, "registry_blob_uploads_in_progress") or 0) > 0:
                return
            time.sleep(0.005)
    raise AssertionError("no blob upload reached the victim")


def test_pushes_survive_a_killed_and_a_restarted_replica(
        cluster: Cluster, docker_engine: DockerDaemon, tmp_path: Path) -> None:
    lb = cluster.balancer.host
    # Before the chaos: one image, so that some replica holds the event queue's lease.
    warm = build_image(tmp_path / "warm", [100_000], ref="v1")
    first = Push("skopeo", "ha/warm", skopeo_push(warm, f"{lb}/ha/warm:v1"),
                 warm.manifest_digest)
    first()
    assert first.digest is not None and not first.failures, first.failures
    wait_for(lambda: ("ha/warm", warm.manifest_digest) in cluster.pushed_events(), 30,
             "the first push event")
    delivering = [r for r in cluster.replicas if cluster.replica_metric(
        r, "registry_events_delivered_total", endpoint="hooks", result="delivered") > 0]
    assert len(delivering) == 1, "one replica holds the event queue's lease"
    victim = delivering[0]
    drained = next(r for r in cluster.replicas if r is not victim)
    survivors = [r for r in cluster.replicas if r is not victim]

    built: dict[str, BuiltImage] = {}
    pushes: list[Push] = [first]
    for i in range(4):
        image = build_image(tmp_path / f"skopeo-{i}", [20 * MiB + i, 3 * MiB, 1000], ref="v1")
        built[f"ha/skopeo-{i}"] = image
        pushes.append(Push("skopeo", f"ha/skopeo-{i}",
                           skopeo_push(image, f"{lb}/ha/skopeo-{i}:v1"), image.manifest_digest))
    for i in range(2):
        reference = f"{lb}/ha/docker-{i}:v1"
        archive = write_docker_archive(tmp_path / f"docker-{i}.tar", reference,
                                       [16 * MiB + i, 2 * MiB])
        docker_engine.run("load", "-i", str(archive.path))
        pushes.append(Push("docker", f"ha/docker-{i}", docker_push(docker_engine, reference)))
    built["ha/warm"] = warm

    chaos: dict[str, Any] = {}

    def disrupt() -> None:
        wait_until_uploading(victim, 60)
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        chaos["killed_at"] = time.time()
        time.sleep(1.0)
        drained.process.send_signal(signal.SIGTERM)  # drains: /readyz 503, then stops
        chaos["drain_status"] = drained.process.wait(60)
        drained.start_again()

    disruptor = threading.Thread(target=disrupt)
    disruptor.start()
    try:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda push: push(), pushes[1:]))
    finally:
        disruptor.join(120)
        docker_engine.remove_images(*(f"{lb}/{p.repository}:v1" for p in pushes
                                      if p.client == "docker"))
    assert "killed_at" in chaos and chaos.get("drain_status") in (0, -signal.SIGTERM), chaos

    # Every push succeeded, at the latest on a retry; failures were the network kind.
    for push in pushes:
        assert push.digest is not None, f"{push.repository} never pushed: {push.failures}"
        for failure in push.failures:
            assert RETRYABLE.search(failure), f"{push.repository}: not retryable: {failure}"

    # The jobs went on without the killed replica, on the survivors.
    digests = {(push.repository, str(push.digest)) for push in pushes}
    wait_for(lambda: digests <= cluster.pushed_events(), 60, "a push event for every image")
    for job in ("gc", "lifecycle"):
        wait_for(lambda job=job: cluster.last_success(survivors, job) > chaos["killed_at"], 30,
                 f"a {job} run on a survivor after the kill")
    assert sum(cluster.replica_metric(r, "registry_events_delivered_total", endpoint="hooks",
                                      result="delivered") for r in survivors) > 0
    with httpx.Client(base_url=cluster.destination.url, timeout=60) as dr:
        for repository, digest in sorted(digests):
            wait_for(lambda repository=repository, digest=digest: dr.get(
                f"/v2/{repository}/manifests/{digest}", headers={"Accept": ACCEPT}
            ).status_code == 200, 60, f"{repository}@{digest} replicated")

    # Every image pulls back byte-identical through every replica.
    victim.start_again()
    verified = 0
    for replica in cluster.replicas:
        with httpx.Client(base_url=replica.url, timeout=120, follow_redirects=True) as c:
            for push in pushes:
                verified += pull_and_check(c, push.repository, str(push.digest),
                                           built.get(push.repository))
    retried = sum(1 for push in pushes if push.failures)
    print(f"\nHA: {len(pushes)} pushes ({sum(1 for p in pushes if p.client == 'docker')} "
          f"docker), {len(pushes)} succeeded, {retried} needed a retry "
          f"({sum(len(p.failures) for p in pushes)} failed attempts); replicas killed: 1, "
          f"drained and restarted: 1; {verified / MiB:.1f} MiB verified through 3 replicas")
    for push in pushes:
        for failure in push.failures:
            print(f"  {push.client} {push.repository}: {failure.strip().splitlines()[-1]}")


def pull_and_check(client: httpx.Client, repository: str, digest: str,
                   image: BuiltImage | None) -> int:
    """The manifest by digest and every blob it names, each hashing to its digest (and, for
    an image built here, equal to the bytes pushed); the bytes checked."""
    response = client.get(f"/v2/{repository}/manifests/{digest}", headers={"Accept": ACCEPT})
    assert response.status_code == 200, (repository, digest, response.status_code)
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == digest
    if image is not None:
        assert response.content == image.manifest
    doc = response.json()
    checked = len(response.content)
    for blob in [doc["config"], *doc["layers"]]:
        got = client.get(f"/v2/{repository}/blobs/{blob['digest']}")
        assert got.status_code == 200, (repository, blob["digest"], got.status_code)
        assert "sha256:" + hashlib.sha256(got.content).hexdigest() == blob["digest"]
        assert len(got.content) == blob["size"]
        checked += len(got.content)
    return checked
