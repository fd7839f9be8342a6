"""Errors nobody expected: each front-end still answers in its own shape, and the answer never
leaves the client holding a connection the server has dropped without saying so.

The unexpected error is real: a record replaced by a symbolic link to itself makes the
filesystem answer ELOOP, which no table maps."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from storage import paths
from tests.conftest import LiveRegistry, start_registry
from tests.registry.util import push_image

TARGET = "AmazonEC2ContainerRegistry_V20150921."


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    server = start_registry(tmp_path_factory.mktemp("error-answers") / "data")
    yield server
    server.stop()


def loop_at(live: LiveRegistry, key: str) -> None:
    """Replace the object at `key` with a symbolic link to itself."""
    path = live.data_dir / key
    path.unlink()
    os.symlink(path.name, path)


def exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one HTTP/1.1 request on `sock` and read its answer (Content-Length bodies only)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before an answer; got {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":")
                                                         for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed mid-body")
        body += chunk
    return int(lines[0].split()[1]), headers, body


def request(live: LiveRegistry, method: str, path: str, body: bytes = b"",
            headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {live.host}",
             f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def assert_connection_usable(live: LiveRegistry, sock: socket.socket,
                             headers: dict[str, str]) -> None:
    """Either the answer said `Connection: close`, or the connection serves the next request."""
    if "close" in headers.get("connection", "").lower():
        return
    try:
        status, _, _ = exchange(sock, request(live, "GET", "/v2/"))
    except (ConnectionError, OSError) as exc:
        pytest.fail(f"the server dropped the connection without Connection: close ({exc})")
    assert status == 200


def test_unexpected_oci_error_says_connection_close(live: LiveRegistry) -> None:
    repo = f"errors/oci-{os.urandom(3).hex()}"
    with httpx.Client(base_url=live.url, timeout=30) as client:
        push_image(client, repo, "v1")
    loop_at(live, paths.tag(repo, "v1"))
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        status, headers, body = exchange(
            sock, request(live, "GET", f"/v2/{repo}/manifests/v1"))
        assert status == 500
        assert json.loads(body)["errors"][0]["code"] == "UNKNOWN"
        assert_connection_usable(live, sock, headers)
    assert "unhandled error on GET" in live.log()


def test_unexpected_ecr_error_answers_in_aws_shape(live: LiveRegistry) -> None:
    name = f"errors/ecr-{os.urandom(3).hex()}"
    ecr_headers = {"X-Amz-Target": TARGET + "DescribeRepositories",
                   "Content-Type": "application/x-amz-json-1.1"}
    body = json.dumps({"repositoryNames": [name]}).encode()
    with httpx.Client(base_url=live.url, timeout=30) as client:
        created = client.post("/", content=json.dumps({"repositoryName": name}),
                              headers={**ecr_headers, "X-Amz-Target": TARGET + "CreateRepository"})
        assert created.status_code == 200, created.text
    loop_at(live, paths.catalog_marker(name))
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        status, headers, answer = exchange(sock, request(live, "POST", "/", body, ecr_headers))
        assert status == 500
        error = json.loads(answer)
        assert error["__type"] == "ServerException", error
        assert isinstance(error["message"], str) and "errors" not in error
        assert headers["x-amzn-errortype"] == "ServerException"
        assert headers["content-type"] == "application/x-amz-json-1.1"
        assert_connection_usable(live, sock, headers)
    Path(live.data_dir / paths.catalog_marker(name)).unlink()  # leave the module's server sane
