"""`registry serve`: the start-up line, and a graceful exit on SIGTERM."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.conftest import start_registry


def test_startup_line_names_url_and_data_directory(tmp_path: Path) -> None:
    live = start_registry(tmp_path / "data")
    try:
        lines = [line for line in live.log().splitlines() if "listening on" in line]
        assert len(lines) == 1, live.log()
        assert f"http://127.0.0.1:{live.port}" in lines[0]
        assert str((tmp_path / "data").resolve()) in lines[0]
    finally:
        live.stop()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_lets_an_inflight_request_finish_then_shuts_down(tmp_path: Path,
                                                                  workers: str) -> None:
    live = start_registry(tmp_path / "data", env={"REGISTRY_SERVER_WORKERS": workers})
    # A request in flight when SIGTERM arrives is answered before the process exits.
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as conn:
        conn.sendall(b"POST /v2/sig/term/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 0\r\n\r\n")
        live.process.send_signal(signal.SIGTERM)
        reply = conn.recv(4096)
    assert reply.startswith(b"HTTP/1.1 202"), reply[:200]
    # uvicorn re-raises the signal after its graceful shutdown, so the status says SIGTERM.
    assert live.process.wait(timeout=30) in (0, -signal.SIGTERM), live.log()
    # Every process ran its shutdown to the end (jobs stopped, storage closed).
    assert live.log().count("registry stopped") == int(workers), live.log()
    assert "Traceback" not in live.log()
