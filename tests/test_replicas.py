"""Two `registry serve` replicas on ONE S3 bucket behave as one registry.

A client whose every request goes to the other replica than the one before (POST on A, PATCH
on B, PATCH on A, PUT on B, ...) pushes a multi-layer image in chunks of 6 and 3 MiB, so that
both replicas append to the same S3 multipart uploads and chunks cross part boundaries, then
pulls everything back through the other replica (following the 307s to the bucket).
skopeo pushes through A and pulls through B.

What this checks beyond tests/test_multiprocess.py: upload state (parts, tail, size) lives
only in the bucket, a replica that did not see the previous chunk has no running hash and
must rehash the stored bytes at completion, and parts uploaded by different processes
complete into one object.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.conftest import (
    S3_BACKENDS,
    LiveRegistry,
    new_server_errors,
    s3_endpoint,
    start_registry,
)
from tests.imagebuild import (
    MEDIA_TYPE_MANIFEST,
    blob_path,
    build_image,
    file_digest,
    read_blob,
    resolve,
)
from tests.s3server import S3Endpoint

MiB = 1 << 20
OCTET = {"Content-Type": "application/octet-stream"}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DEFAULT_PART_SIZE = 8 * MiB  # the registry's S3 part size unless configured


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def describe(response: httpx.Response) -> str:
    return (f"{response.request.method} {response.request.url} -> {response.status_code} "
            f"{dict(response.headers)!r} {response.text[:500]!r}")


@dataclass
class Replicas:
    a: LiveRegistry
    b: LiveRegistry
    bucket: str
    endpoint: S3Endpoint
    part_size: int

    def __iter__(self) -> Iterator[LiveRegistry]:
        return iter((self.a, self.b))


@contextlib.contextmanager
def running_replicas(endpoint: S3Endpoint, tmp_path: Path,
                     **settings: str) -> Iterator[Replicas]:
    """Replicas A and B on one new bucket, stopped afterwards; their logs must be clean."""
    bucket = endpoint.create_bucket()
    env = endpoint.registry_env(bucket, **settings)
    a = start_registry(tmp_path / "a" / "data", env=env)
    try:
        b = start_registry(tmp_path / "b" / "data", env=env)
    except BaseException:
        a.stop()
        raise
    part_size = int(settings.get("part_size", DEFAULT_PART_SIZE))
    try:
        yield Replicas(a, b, bucket, endpoint, part_size)
        errors = {replica.url: new_server_errors({}, replica.server_errors()) for replica in (a, b)}
    finally:
        b.stop()
        a.stop()
    for replica in (a, b):
        log = replica.log()
        assert "Traceback" not in log, f"replica {replica.url} logged a traceback:\n{log}"
        assert not errors[replica.url], f"replica {replica.url} answered 5xx: {errors}"


@pytest.fixture(params=sorted(S3_BACKENDS))
def endpoint(request: pytest.FixtureRequest) -> S3Endpoint:
    """Each S3 endpoint: moto, and Ceph RGW."""
    return s3_endpoint(request.param, request)


@pytest.fixture(params=["default-parts", "5MiB-parts"])
def replicas(request: pytest.FixtureRequest, endpoint: S3Endpoint,
             tmp_path: Path) -> Iterator[Replicas]:
    """Replicas A and B on one new bucket: with the registry's default part size (16 MiB), or
    with S3's minimum (5 MiB), where nearly every 6 MiB chunk completes a part."""
    settings = {"part_size": str(5 * MiB)} if request.param == "5MiB-parts" else {}
    with running_replicas(endpoint, tmp_path, **settings) as started:
        yield started


@dataclass
class Alternating:
    """A client that sends each request to the other replica than the previous one."""

    replicas: list[LiveRegistry]
    clients: list[httpx.Client] = field(default_factory=list)
    turn: int = 0
    log: list[str] = field(default_factory=list)  # "A POST /v2/..." per request

    def __post_init__(self) -> None:
        self.clients = [httpx.Client(base_url=r.url, timeout=120) for r in self.replicas]

    def close(self) -> None:
        for c in self.clients:
            c.close()

    def request(self, method: str, path: str, **kwargs: object) -> tuple[int, httpx.Response]:
        """Send to the next replica; returns its index (0 = A, 1 = B) and the response."""
        index = self.turn % 2
        self.turn += 1
        response = self.clients[index].request(method, path, **kwargs)  # type: ignore[arg-type]
        self.log.append(f"{'AB'[index]} {method} {urlsplit(path).path}")
        return index, response


def location_path(response: httpx.Response) -> str:
    """Location as path?query: it identifies the session on any replica."""
    location = str(response.headers.get("location", ""))
    assert location, describe(response)
    parts = urlsplit(urljoin(str(response.request.url), location))
    return parts.path + (f"?{parts.query}" if parts.query else "")


def push_chunked(client: Alternating, name: str, data: bytes, chunks: list[int]) -> int:
    """POST, one PATCH per chunk size, then an empty PUT; each on the next replica, each PATCH
    starting where the previous answer's Range ended. Returns the replica that completed it."""
    assert sum(chunks) == len(data)
    _, response = client.request("POST", f"/v2/{name}/blobs/uploads/")
    assert response.status_code == 202, describe(response)
    location = location_path(response)
    offset = 0
    for size in chunks:
        chunk = data[offset:offset + size]
        _, response = client.request("PATCH", location, content=chunk, headers={
            **OCTET, "Content-Range": f"{offset}-{offset + size - 1}"})
        assert response.status_code == 202, describe(response)
        assert response.headers.get("range") == f"0-{offset + size - 1}", describe(response)
        offset = int(response.headers["range"].split("-")[1]) + 1  # resume from the answer
        location = location_path(response)
    digest = sha256(data)
    completed_by, response = client.request("PUT", location, params={"digest": digest},
                                            headers=OCTET)
    assert response.status_code == 201, describe(response)
    assert response.headers.get("docker-content-digest") == digest, describe(response)
    return completed_by


def pull_blob(replica: LiveRegistry, endpoint: S3Endpoint, name: str, digest: str) -> bytes:
    """GET a blob from `replica`: a 307 to a presigned bucket URL, followed."""
    with httpx.Client(base_url=replica.url, timeout=120) as c:
        head = c.head(f"/v2/{name}/blobs/{digest}")
        assert head.status_code == 200, describe(head)
        own = c.get(f"/v2/{name}/blobs/{digest}")
    assert own.status_code == 307, describe(own)
    assert own.headers.get("docker-content-digest") == digest, describe(own)
    location = own.headers["location"]
    assert location.startswith(endpoint.url + "/"), describe(own)
    data = httpx.get(location, timeout=120).content
    assert len(data) == int(head.headers["content-length"])
    assert sha256(data) == digest, f"{replica.url}: wrong bytes for {digest}"
    return data


def multipart_uploads(replicas: Replicas) -> list[str]:
    s3 = replicas.endpoint.client()
    uploads = s3.list_multipart_uploads(Bucket=replicas.bucket).get("Uploads", [])
    return [str(u["Key"]) for u in uploads]


def test_push_alternating_replicas_pull_through_the_other(replicas: Replicas) -> None:
    name = f"replicas/chunked-{os.urandom(3).hex()}"
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []},
                         "nonce": os.urandom(8).hex()}).encode()
    # (bytes, chunk sizes): 6 and 3 MiB chunks; the first layer passes 16 MiB, so it crosses a
    # part boundary at the default part size as well, inside a chunk.
    blobs: list[tuple[bytes, list[int]]] = [
        (os.urandom(19 * MiB + 77), [6 * MiB, 3 * MiB, 6 * MiB, 3 * MiB, MiB + 77]),
        (os.urandom(6 * MiB + 3), [3 * MiB, 3 * MiB, 3]),
        (os.urandom(1000), [1000]),
        (config, [len(config)]),
    ]
    assert len(blobs[0][0]) > replicas.part_size
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(data), "size": len(data)}
                   for data, _ in blobs[:3]],
    }, indent=1).encode()
    client = Alternating([replicas.a, replicas.b])
    try:
        completed_by = {sha256(data): push_chunked(client, name, data, chunks)
                        for data, chunks in blobs}
        pushed_by, response = client.request("PUT", f"/v2/{name}/manifests/v1",
                                             content=manifest,
                                             headers={"Content-Type": OCI_MANIFEST})
        assert response.status_code == 201, describe(response)
        assert response.headers.get("docker-content-digest") == sha256(manifest)
    finally:
        client.close()
    # POST on A, PATCH on B, PATCH on A, ...: every request went to the other replica.
    assert [entry.split(" ")[:2] for entry in client.log[:4]] == \
        [["A", "POST"], ["B", "PATCH"], ["A", "PATCH"], ["B", "PATCH"]], client.log
    assert all(client.log[i][0] != client.log[i + 1][0] for i in range(len(client.log) - 1))

    other = [replicas.b, replicas.a]
    puller = other[pushed_by]
    with httpx.Client(base_url=puller.url, timeout=60) as c:
        for reference in ("v1", sha256(manifest)):
            got = c.get(f"/v2/{name}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
            assert got.status_code == 200, describe(got)
            assert got.content == manifest
            assert got.headers.get("docker-content-digest") == sha256(manifest)
            assert got.headers["content-type"].split(";")[0] == OCI_MANIFEST
        assert c.get(f"/v2/{name}/tags/list").json() == {"name": name, "tags": ["v1"]}
    for data, _ in blobs:
        digest = sha256(data)
        assert pull_blob(other[completed_by[digest]], replicas.endpoint, name, digest) == data
    assert multipart_uploads(replicas) == [], "an upload left a multipart upload behind"


def test_upload_status_and_resume_across_replicas(replicas: Replicas) -> None:
    """A session's progress, as either replica reports it, is what the bucket holds; a client
    that lost track asks either replica and resumes from there."""
    name = f"replicas/resume-{os.urandom(3).hex()}"
    data = os.urandom(7 * MiB + 11)
    a = httpx.Client(base_url=replicas.a.url, timeout=60)
    b = httpx.Client(base_url=replicas.b.url, timeout=60)
    try:
        response = a.post(f"/v2/{name}/blobs/uploads/")
        assert response.status_code == 202, describe(response)
        location = location_path(response)
        response = b.patch(location, content=data[:6 * MiB], headers=OCTET)
        assert response.status_code == 202, describe(response)
        for c in (a, b):
            status = c.get(location)
            assert status.status_code == 204, describe(status)
            assert status.headers.get("range") == f"0-{6 * MiB - 1}"
        # A stale offset is refused by either replica, and the session is unharmed.
        stale = a.patch(location, content=data[:MiB],
                        headers={**OCTET, "Content-Range": f"0-{MiB - 1}"})
        assert stale.status_code == 416, describe(stale)
        offset = int(b.get(location).headers["range"].split("-")[1]) + 1
        response = a.put(location, params={"digest": sha256(data)}, content=data[offset:],
                         headers=OCTET)
        assert response.status_code == 201, describe(response)
        for c in (a, b):
            assert c.get(location).status_code == 404
    finally:
        a.close()
        b.close()
    for replica in replicas:
        assert pull_blob(replica, replicas.endpoint, name, sha256(data)) == data


# --------------------------------------------------------------------------- skopeo

SKOPEO = shutil.which("skopeo")


@pytest.fixture
def skopeo_env(tmp_path: Path) -> dict[str, str]:
    if SKOPEO is None:
        if os.environ.get("CI"):
            pytest.fail("skopeo is not on PATH but CI is set", pytrace=False)
        pytest.skip("skopeo is not on PATH")
    home = tmp_path / "skopeo-home"
    (home / "tmp").mkdir(parents=True)
    (home / "registries.conf").write_text("unqualified-search-registries = []\n")
    return {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(home / "registries.conf"),
            "REGISTRY_AUTH_FILE": str(home / "auth.json"),
            "XDG_RUNTIME_DIR": str(home / "run"), "TMPDIR": str(home / "tmp")}


def skopeo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    assert SKOPEO is not None
    cmd = [SKOPEO, "--insecure-policy", *args]
    result = subprocess.run(cmd, capture_output=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, (f"{' '.join(cmd)} exited {result.returncode}\n"
                                    f"{result.stderr.decode(errors='replace')}")
    return result


def test_skopeo_push_through_a_pull_through_b(endpoint: S3Endpoint, tmp_path: Path,
                                              skopeo_env: dict[str, str]) -> None:
    with running_replicas(endpoint, tmp_path) as replicas:  # the default 16 MiB parts
        # skopeo streams each blob in one PATCH: the 17 MiB layer crosses a part boundary.
        built = build_image(tmp_path / "src", [17 * MiB + 5, 3 * MiB + 1, 1000])
        assert max(layer.size for layer in built.layers) > replicas.part_size
        repo = f"replicas/skopeo-{os.urandom(3).hex()}"
        through_a = f"docker://{replicas.a.host}/{repo}:v1"
        through_b = f"docker://{replicas.b.host}/{repo}:v1"
        skopeo(skopeo_env, "copy", "--preserve-digests", "--retry-times", "0",
               "--dest-tls-verify=false", "--dest-no-creds", f"oci:{built.layout}:latest",
               through_a)

        raw = skopeo(skopeo_env, "inspect", "--raw", "--tls-verify=false", "--no-creds",
                     through_b).stdout
        assert raw == built.manifest
        pulled = tmp_path / "pulled"
        skopeo(skopeo_env, "copy", "--preserve-digests", "--retry-times", "0",
               "--src-tls-verify=false", "--src-no-creds", through_b, f"oci:{pulled}:v1")

        descriptor = resolve(pulled, "v1")
        assert descriptor["digest"] == built.manifest_digest, descriptor
        assert descriptor["mediaType"] == MEDIA_TYPE_MANIFEST, descriptor
        assert read_blob(pulled, built.manifest_digest) == built.manifest
        assert read_blob(pulled, built.config_digest) == built.config
        for layer in built.layers:
            path = blob_path(pulled, layer.digest)
            assert path.stat().st_size == layer.size, layer
            assert file_digest(path) == layer.digest, layer
        # And B serves A's blobs itself, through its redirects.
        for layer in built.layers[1:]:
            pull_blob(replicas.b, endpoint, repo, layer.digest)
        assert multipart_uploads(replicas) == []
