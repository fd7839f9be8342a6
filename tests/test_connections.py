"""Slow and numerous clients cannot hold the server: header and body deadlines, connection caps.

Raw sockets against a live server with short deadlines. 127.0.0.2 is loopback too (Linux
routes all of 127/8 to lo), so one test process can be two client addresses.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import resource
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveRegistry, metric, start_registry

HEADER_TIMEOUT = 2
BODY_TIMEOUT = 2
PER_ADDRESS = 200


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRegistry]:
    live = start_registry(tmp_path_factory.mktemp("guarded") / "data", env={
        "REGISTRY_SERVER_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "REGISTRY_SERVER_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "REGISTRY_SERVER_MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS),
    })
    yield live
    live.stop()


@pytest.fixture(autouse=True, scope="module")
def open_files() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192)
    if want < 4500:
        pytest.skip(f"the open-file hard limit ({hard}) is too low for 2,000 client sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def is_closed(sock: socket.socket) -> bool:
    """The server closed (or reset) this connection; reads what it sent first."""
    poll = select.poll()  # select() stops at descriptor 1023
    poll.register(sock, select.POLLIN)
    try:
        while True:
            if not poll.poll(0):
                return False
            if not sock.recv(65536):
                return True
    except OSError as exc:
        return exc.errno in (errno.ECONNRESET, errno.EPIPE)


def wait_closed(socks: list[socket.socket], within: float) -> list[socket.socket]:
    """The sockets still open after `within` seconds (each polled until it closes)."""
    deadline = time.monotonic() + within
    left = list(socks)
    while left and time.monotonic() < deadline:
        left = [s for s in left if not is_closed(s)]
        time.sleep(0.1)
    return left


def healthz_time(port: int, source: str) -> tuple[int, float]:
    started = time.monotonic()
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=5) as client:
        status = client.get(f"http://127.0.0.1:{port}/healthz").status_code
    return status, time.monotonic() - started


def test_slow_headers_and_silent_connections_are_closed(guarded: LiveRegistry) -> None:
    slow = [connect(guarded.port) for _ in range(100)]
    silent = [connect(guarded.port) for _ in range(20)]
    for sock in slow:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    open_ = slow
    while time.monotonic() - started < HEADER_TIMEOUT + 3:  # a header line every 0.5 s
        open_ = [s for s in open_ if not is_closed(s)]
        for sock in open_:
            with contextlib.suppress(OSError):
                sock.sendall(b"X-Slow: 1\r\n")
        time.sleep(0.5)
    assert wait_closed(slow, 1) == []
    assert wait_closed(silent, 1) == []
    for sock in slow + silent:
        sock.close()
    # A client that finishes its headers in time is answered as ever.
    assert healthz_time(guarded.port, "127.0.0.1")[0] == 200


def test_a_stalled_upload_is_ended_and_keeps_its_bytes(guarded: LiveRegistry) -> None:
    repo = "slow/body"
    start = httpx.post(f"{guarded.url}/v2/{repo}/blobs/uploads/")
    assert start.status_code == 202
    location = start.headers["location"]
    data = os.urandom(3 * 1024 * 1024)
    sock = connect(guarded.port)
    head = (f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n")
    sock.sendall(head.encode() + data[:1024 * 1024])  # a third, then nothing
    t0 = time.monotonic()
    assert wait_closed([sock], BODY_TIMEOUT + 4) == []
    elapsed = time.monotonic() - t0
    sock.close()
    assert BODY_TIMEOUT - 0.5 < elapsed < BODY_TIMEOUT + 3
    # The bytes that came are kept: the upload resumes from there and completes.
    status = httpx.get(guarded.url + location)
    assert status.status_code == 204
    received = int(status.headers["range"].split("-")[1]) + 1
    assert 0 < received <= 1024 * 1024
    rest = httpx.patch(guarded.url + location, content=data[received:], headers={
        "Content-Type": "application/octet-stream",
        "Content-Range": f"{received}-{len(data) - 1}"})
    assert rest.status_code == 202, rest.text
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    done = httpx.put(guarded.url + rest.headers["location"], params={"digest": digest})
    assert done.status_code == 201, done.text
    assert hashlib.sha256(httpx.get(f"{guarded.url}/v2/{repo}/blobs/{digest}").content
                          ).hexdigest() == digest[7:]


def test_a_slow_body_that_keeps_coming_is_not_cut(guarded: LiveRegistry) -> None:
    """The body deadline is a stall, not a total: 4 s of trickling, a chunk every 0.5 s."""
    repo = "slow/trickle"
    location = httpx.post(f"{guarded.url}/v2/{repo}/blobs/uploads/").headers["location"]
    chunk = os.urandom(64 * 1024)
    sock = connect(guarded.port)
    sock.sendall(f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
                 f"{8 * len(chunk)}\r\n\r\n".encode())
    for _ in range(8):
        sock.sendall(chunk)
        time.sleep(0.5)
    sock.settimeout(5)
    assert sock.recv(12) == b"HTTP/1.1 202"
    sock.close()


def test_two_thousand_connections_from_one_address_leave_others_served(
        guarded: LiveRegistry) -> None:
    socks: list[socket.socket] = []
    try:
        for _ in range(2000):
            socks.append(connect(guarded.port))
        time.sleep(0.5)
        # Another address: served at once.
        status, took = healthz_time(guarded.port, "127.0.0.2")
        assert status == 200 and took < 1, took
        # The same address, over its cap: told so at once, not left hanging.
        status, took = healthz_time(guarded.port, "127.0.0.1")
        assert status == 503 and took < 1, (status, took)
        closed = len(socks) - len(wait_closed(socks, 1))
        assert closed >= 2000 - PER_ADDRESS
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as other:
            refused = metric(other.get(guarded.url + "/metrics").text,
                             "registry_connections_ended_total", reason="over_cap")
        assert refused is not None and refused >= 2000 - PER_ADDRESS
    finally:
        for sock in socks:
            sock.close()
    # The held ones end by the header deadline: the address is served again.
    time.sleep(HEADER_TIMEOUT + 1.5)
    assert healthz_time(guarded.port, "127.0.0.1")[0] == 200


def test_the_server_raises_its_open_file_limit(guarded: LiveRegistry) -> None:
    limits = Path(f"/proc/{guarded.process.pid}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    assert soft == hard
