"""Clients that vanish mid-body, and clients that race on the same blob."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import pytest

from .conftest import registry_client
from .util import (
    ACCEPT_ALL,
    OCTET,
    RegistryClient,
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


def assert_still_serving(client: RegistryClient, repo: str, data: bytes) -> None:
    """The registry answers, and a clean upload of the same bytes works afterwards."""
    assert client.get("/v2/").status_code == 200
    digest = push_blob(client, repo, data)
    assert_blob(client, repo, digest, data)


def assert_absent(client: RegistryClient, repo: str, *digests: str) -> None:
    # Give a server that reacts asynchronously to the disconnect a moment, checking all along.
    for _ in range(5):
        for digest in digests:
            assert_head_error(client.head(f"/v2/{repo}/blobs/{digest}"))
        time.sleep(0.1)


@pytest.fixture(scope="module")
def ten_mib() -> bytes:
    return random_blob(10 * MiB)


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_disconnect_during_patch(client: RegistryClient, registry_server: LiveRegistry,
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
def test_disconnect_during_put(client: RegistryClient, registry_server: LiveRegistry,
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
def test_disconnect_during_monolithic_post(client: RegistryClient, registry_server: LiveRegistry,
                                           repo: str, ten_mib: bytes, reset: bool) -> None:
    digest = sha256(ten_mib)
    target = f"/v2/{repo}/blobs/uploads/?digest={digest}"
    send_truncated(registry_server, "POST", target, declared=len(ten_mib),
                   sent=ten_mib[:2 * MiB], reset=reset)
    assert_absent(client, repo, digest, sha256(ten_mib[:2 * MiB]))
    assert_still_serving(client, repo, ten_mib)


def test_disconnect_then_resume_session(client: RegistryClient, registry_server: LiveRegistry,
                                        repo: str) -> None:
    """After a broken PATCH the session reports a consistent offset and can be finished."""
    data = random_blob(3 * MiB)
    location = start_upload(client, repo)
    response = patch_chunk(client, location, data[:MiB], 0)
    assert response.status_code == 202
    location = location_of(response)
    send_truncated(registry_server, "PATCH", location_path(client.base_url, location),
                   declared=2 * MiB, sent=data[MiB:MiB + MiB // 2], reset=True)
    # Resume as a client does: ask where the upload stands and send the rest from there. The
    # server may still be recording the broken request (it answers 409 while it holds the
    # upload, or, on S3, reports the size before that request until it has been recorded);
    # then the PATCH is refused with 416 and the client asks again.
    deadline = time.monotonic() + 10
    offsets: list[int] = []
    while True:
        status = client.get(location)
        if status.status_code == 404:
            return  # the server dropped the session: allowed
        if status.status_code == 204:
            offset = int(status.headers["range"].split("-")[1]) + 1
            offsets.append(offset)
            assert MiB <= offset <= MiB + MiB // 2, offsets
            response = patch_chunk(client, location, data[offset:], offset)
            if response.status_code == 202:
                break
            assert_error(response, 416, "BLOB_UPLOAD_INVALID")
        else:
            assert_error(status, 409)
        assert time.monotonic() < deadline, f"upload never settled; offsets seen {offsets}"
        time.sleep(0.1)
    assert offsets == sorted(offsets), f"the reported offset went backwards: {offsets}"
    assert response.headers.get("range") == f"0-{len(data) - 1}"
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


def test_concurrent_monolithic_push_same_blob(client: RegistryClient, repo: str) -> None:
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


def test_concurrent_chunked_push_same_blob(client: RegistryClient, repo: str) -> None:
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


def test_concurrent_push_same_blob_to_different_repositories(client: RegistryClient,
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


def test_overlapping_patches_on_one_upload(client: RegistryClient, registry_server: LiveRegistry,
                                          repo: str, request: pytest.FixtureRequest) -> None:
    """A client retries a PATCH that seems stuck (as after a timeout, perhaps through another
    replica): request B from offset N is still sending its body when request A from the same
    offset is sent and answered; then B's body ends. One of them is refused (409 or 416),
    and the upload goes on with exactly the other's bytes and completes."""
    head = random_blob(1000)
    location = start_upload(client, repo)
    response = patch_chunk(client, location, head, 0)
    assert response.status_code == 202, response.text
    location = location_of(response)
    a_bytes, b_bytes = random_blob(20_000), random_blob(20_000)

    sock = socket.create_connection(("127.0.0.1", registry_server.port), timeout=30)
    try:
        sock.sendall((
            f"PATCH {location_path(client.base_url, location)} HTTP/1.1\r\n"
            f"Host: {registry_server.host}\r\n"
            "Content-Type: application/octet-stream\r\n"
            f"Content-Range: 1000-{1000 + len(b_bytes) - 1}\r\n"
            f"Content-Length: {len(b_bytes)}\r\n"
            "Connection: close\r\n\r\n").encode() + b_bytes[:10_000])
        time.sleep(1.0)  # B is being received: the server is inside its append
        a_status = patch_chunk(client, location, a_bytes, 1000).status_code
        sock.sendall(b_bytes[10_000:])
        answer = b""
        while b"\r\n" not in answer:
            piece = sock.recv(4096)
            assert piece, f"no answer to PATCH B: {answer!r}"
            answer += piece
        b_status = int(answer.split(b" ", 2)[1])
    finally:
        sock.close()

    statuses = {"a": a_status, "b": b_status}
    assert sorted(statuses.values())[0] == 202 and sorted(statuses.values())[1] in (409, 416), \
        statuses
    winner = a_bytes if a_status == 202 else b_bytes
    data = head + winner
    status = client.get(location)
    assert status.status_code == 204, status.text
    assert status.headers.get("range") == f"0-{len(data) - 1}"
    response = finish_upload(client, location, sha256(data))
    assert response.status_code == 201, response.text
    assert_blob(client, repo, sha256(data), data)


# --------------------------------------------------------------------------- restart


def test_data_survives_restart(fresh_registry: LiveRegistry,
                               request: pytest.FixtureRequest) -> None:
    name = "restart/test"
    with registry_client(fresh_registry, request) as c:
        image = push_image(c, name, "v1")
        location = start_upload(c, name)
        partial = random_blob(1000)
        assert patch_chunk(c, location, partial, 0).status_code == 202
    fresh_registry.stop()
    fresh_registry.start_again()  # same port, same storage
    with registry_client(fresh_registry, request) as c:
        response = c.get(f"/v2/{name}/manifests/v1", headers=ACCEPT_ALL)
        assert response.status_code == 200
        assert response.content == image.manifest
        for blob in (image.config, *image.layers):
            assert_blob(c, name, sha256(blob), blob)
        assert c.get(f"/v2/{name}/tags/list").json() == {"name": name, "tags": ["v1"]}
        # Upload sessions live in storage too: the new process continues this one.
        status = c.get(location)
        assert status.status_code == 204, status.text
        assert status.headers.get("range") == "0-999"
        rest = random_blob(2000)
        response = patch_chunk(c, location, rest, 1000)
        assert response.status_code == 202, response.text
        whole = partial + rest
        response = finish_upload(c, location_of(response), sha256(whole))
        assert response.status_code == 201, response.text
        assert_blob(c, name, sha256(whole), whole)
    assert "Traceback" not in fresh_registry.log()
