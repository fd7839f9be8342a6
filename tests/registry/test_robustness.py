"""Clients that vanish mid-body, and clients that race on the same blob."""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest

from .util import (
    ACCEPT_ALL,
    OCTET,
    assert_blob,
    assert_error,
    assert_head_error,
    finish_upload,
    location_of,
    location_path,
    patch_chunk,
    push_blob,
    push_image,
    random_blob,
    sha256,
    start_upload,
)

if TYPE_CHECKING:
    from tests.conftest import LiveRegistry

MiB = 1024 * 1024


def send_truncated(server: LiveRegistry, method: str, target: str, *, declared: int,
                   sent: bytes, reset: bool) -> None:
    """Send a request declaring `declared` body bytes, send only `sent`, and hang up."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        head = (
            f"{method} {target} HTTP/1.1\r\n"
            f"Host: {server.host}\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Length: {declared}\r\n"
            "\r\n"
        ).encode()
        sock.sendall(head)
        sock.sendall(sent)
        time.sleep(0.2)  # let the server start consuming the body
        if reset:  # RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()


def assert_still_serving(client: httpx.Client, repo: str, data: bytes) -> None:
    """The registry answers, and a clean upload of the same bytes works afterwards."""
    assert client.get("/v2/").status_code == 200
    digest = push_blob(client, repo, data)
    assert_blob(client, repo, digest, data)


def assert_absent(client: httpx.Client, repo: str, *digests: str) -> None:
    # Give a server that reacts asynchronously to the disconnect a moment, checking all along.
    for _ in range(5):
        for digest in digests:
            assert_head_error(client.head(f"/v2/{repo}/blobs/{digest}"))
        time.sleep(0.1)


@pytest.fixture(scope="module")
def ten_mib() -> bytes:
    return random_blob(10 * MiB)


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_disconnect_during_patch(client: httpx.Client, registry_server: LiveRegistry,
                                 repo: str, ten_mib: bytes, reset: bool) -> None:
    location = start_upload(client, repo)
    target = location_path(client.base_url, location)
    send_truncated(registry_server, "PATCH", target, declared=len(ten_mib),
                   sent=ten_mib[:2 * MiB], reset=reset)
    assert_absent(client, repo, sha256(ten_mib), sha256(ten_mib[:2 * MiB]))
    # The session may be gone or hold a prefix, but it must not break the server.
    status = client.get(location)
    assert status.status_code in (204, 404, 409), status.text
    assert_still_serving(client, repo, ten_mib)


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_disconnect_during_put(client: httpx.Client, registry_server: LiveRegistry,
                               repo: str, ten_mib: bytes, reset: bool) -> None:
    digest = sha256(ten_mib)
    location = start_upload(client, repo)
    target = str(httpx.URL(location).copy_merge_params({"digest": digest}).raw_path,
                 "ascii")
    send_truncated(registry_server, "PUT", target, declared=len(ten_mib),
                   sent=ten_mib[:2 * MiB], reset=reset)
    assert_absent(client, repo, digest, sha256(ten_mib[:2 * MiB]))
    assert_still_serving(client, repo, ten_mib)


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_disconnect_during_monolithic_post(client: httpx.Client, registry_server: LiveRegistry,
                                           repo: str, ten_mib: bytes, reset: bool) -> None:
    digest = sha256(ten_mib)
    target = f"/v2/{repo}/blobs/uploads/?digest={digest}"
    send_truncated(registry_server, "POST", target, declared=len(ten_mib),
                   sent=ten_mib[:2 * MiB], reset=reset)
    assert_absent(client, repo, digest, sha256(ten_mib[:2 * MiB]))
    assert_still_serving(client, repo, ten_mib)


def test_disconnect_then_resume_session(client: httpx.Client, registry_server: LiveRegistry,
                                        repo: str) -> None:
    """After a broken PATCH the session reports a consistent offset and can be finished."""
    data = random_blob(3 * MiB)
    location = start_upload(client, repo)
    response = patch_chunk(client, location, data[:MiB], 0)
    assert response.status_code == 202
    location = location_of(response)
    send_truncated(registry_server, "PATCH", location_path(client.base_url, location),
                   declared=2 * MiB, sent=data[MiB:MiB + MiB // 2], reset=True)
    deadline = time.monotonic() + 5
    status = client.get(location)
    while status.status_code == 409 and time.monotonic() < deadline:
        time.sleep(0.1)
        status = client.get(location)
    if status.status_code == 404:
        return  # the server dropped the session: allowed
    assert status.status_code == 204, status.text
    end = int(status.headers["range"].split("-")[1])
    offset = end + 1
    assert MiB <= offset <= MiB + MiB // 2
    response = patch_chunk(client, location, data[offset:], offset)
    assert response.status_code == 202, response.text
    response = finish_upload(client, location_of(response), sha256(data))
    assert response.status_code == 201, response.text
    assert_blob(client, repo, sha256(data), data)


# --------------------------------------------------------------------------- concurrency


def run_concurrently(base_url: str, count: int,
                     work: Callable[[httpx.Client, threading.Barrier], httpx.Response],
                     ) -> list[httpx.Response]:
    barrier = threading.Barrier(count, timeout=30)
    results: list[httpx.Response | BaseException] = [RuntimeError("not run")] * count

    def runner(i: int) -> None:
        try:
            with httpx.Client(base_url=base_url, timeout=60) as c:
                results[i] = work(c, barrier)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    responses: list[httpx.Response] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        responses.append(result)
    return responses


def test_concurrent_monolithic_push_same_blob(client: httpx.Client, repo: str) -> None:
    data = random_blob(2 * MiB)
    digest = sha256(data)

    def work(c: httpx.Client, barrier: threading.Barrier) -> httpx.Response:
        barrier.wait()
        return c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest},
                      content=data, headers=OCTET)

    for response in run_concurrently(str(client.base_url), 2, work):
        assert response.status_code == 201, response.text
        assert response.headers.get("docker-content-digest") == digest
    assert_blob(client, repo, digest, data)


def test_concurrent_chunked_push_same_blob(client: httpx.Client, repo: str) -> None:
    data = random_blob(MiB + 3)
    digest = sha256(data)

    def work(c: httpx.Client, barrier: threading.Barrier) -> httpx.Response:
        location = start_upload(c, repo)
        response = patch_chunk(c, location, data, 0)
        assert response.status_code == 202, response.text
        barrier.wait()
        return finish_upload(c, location_of(response), digest)

    for response in run_concurrently(str(client.base_url), 4, work):
        assert response.status_code == 201, response.text
    assert_blob(client, repo, digest, data)


def test_concurrent_push_same_blob_to_different_repositories(client: httpx.Client,
                                                             repo: str) -> None:
    data = random_blob(MiB)
    digest = sha256(data)
    names = [f"{repo}-{i}" for i in range(3)]
    lock = threading.Lock()
    order = list(names)

    def work(c: httpx.Client, barrier: threading.Barrier) -> httpx.Response:
        with lock:
            name = order.pop()
        barrier.wait()
        return c.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest},
                      content=data, headers=OCTET)

    for response in run_concurrently(str(client.base_url), len(names), work):
        assert response.status_code == 201, response.text
    for name in names:
        assert_blob(client, name, digest, data)


# --------------------------------------------------------------------------- restart


def restart(server: LiveRegistry) -> subprocess.Popen[bytes]:
    """Stop `server` and start the same command line (same port and data) again."""
    args = server.process.args
    server.stop()
    with open(server.log_path, "ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"registry did not restart:\n{server.log()[-3000:]}")
        try:
            if httpx.get(server.url + "/v2/", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    process.kill()
    process.wait()
    pytest.fail("registry did not answer after restart")


def test_data_survives_restart(fresh_registry: LiveRegistry) -> None:
    name = "restart/test"
    with httpx.Client(base_url=fresh_registry.url, timeout=60) as c:
        image = push_image(c, name, "v1")
        location = start_upload(c, name)
        partial = random_blob(1000)
        assert patch_chunk(c, location, partial, 0).status_code == 202
    process = restart(fresh_registry)
    try:
        with httpx.Client(base_url=fresh_registry.url, timeout=60) as c:
            response = c.get(f"/v2/{name}/manifests/v1", headers=ACCEPT_ALL)
            assert response.status_code == 200
            assert response.content == image.manifest
            for blob in (image.config, *image.layers):
                assert_blob(c, name, sha256(blob), blob)
            assert c.get(f"/v2/{name}/tags/list").json() == {"name": name, "tags": ["v1"]}
            status = c.get(location)
            if status.status_code == 204:  # sessions may or may not survive a restart
                assert status.headers.get("range") == "0-999"
            else:
                assert_error(status, 404, "BLOB_UPLOAD_UNKNOWN")
    finally:
        process.terminate()
        process.wait(15)
    assert "Traceback" not in fresh_registry.log()
