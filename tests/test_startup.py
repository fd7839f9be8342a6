"""Start-up says one line: the URL when it serves, or why it cannot, with a non-zero status."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, start_registry


def serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`registry serve` expected to stop by itself."""
    return subprocess.run(
        [sys.executable, "-m", "registry", "serve", "--data-dir", str(tmp_path / "data"), *args],
        env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout,
        check=False)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stdout + proc.stderr).splitlines()
    assert len(lines) == 1, proc.stdout + proc.stderr
    assert "Traceback" not in lines[0]
    return lines[0]


def test_serving_prints_one_line(tmp_path: Path) -> None:
    live = start_registry(tmp_path / "data")
    try:
        time.sleep(0.3)
        lines = live.log().splitlines()
        assert len(lines) == 1, lines
        assert f"registry listening on http://127.0.0.1:{live.port}" in lines[0]
    finally:
        live.stop()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_line(tmp_path: Path, workers: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = serve(tmp_path, "--port", str(port), "--workers", workers)
    assert proc.returncode == 1
    line = one_line(proc)
    assert f"cannot listen on 127.0.0.1 port {port}" in line and "in use" in line


def test_missing_tls_files_are_one_line(tmp_path: Path) -> None:
    proc = serve(tmp_path, "--port", str(free_port()), env={
        "REGISTRY_SERVER_TLS_CERT_FILE": str(tmp_path / "nope.pem"),
        "REGISTRY_SERVER_TLS_KEY_FILE": str(tmp_path / "nope.key")})
    assert proc.returncode == 2
    assert "nope" in one_line(proc)


def test_a_certificate_that_is_not_one_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    (tmp_path / "key.pem").write_text("not a key\n")
    proc = serve(tmp_path, "--port", str(free_port()), env={
        "REGISTRY_SERVER_TLS_CERT_FILE": str(tmp_path / "cert.pem"),
        "REGISTRY_SERVER_TLS_KEY_FILE": str(tmp_path / "key.pem")})
    assert proc.returncode == 2
    assert "cert.pem" in one_line(proc)


def test_a_wrong_secret_key_is_one_line(tmp_path: Path) -> None:
    """Signing keys sealed with one secret key, the server restarted with another."""
    def key() -> str:
        return base64.b64encode(os.urandom(32)).decode()

    first = start_registry(tmp_path / "data", env={"REGISTRY_AUTH_ENABLED": "true",
                                                   "REGISTRY_AUTH_SECRET_KEY": key()})
    first.stop()
    proc = serve(tmp_path, "--port", str(free_port()), env={
        "REGISTRY_AUTH_ENABLED": "true", "REGISTRY_AUTH_SECRET_KEY": key()})
    assert proc.returncode == 3
    assert "cannot start" in one_line(proc) and "secret_key" in proc.stderr


def test_bad_settings_are_one_line(tmp_path: Path) -> None:
    proc = serve(tmp_path, "--port", str(free_port()), env={"REGISTRY_SERVER_WORKERS": "lots"})
    assert proc.returncode == 2
    assert "server.workers" in one_line(proc)


def test_unknown_variables_are_a_warning_and_other_tools_names_are_quiet(tmp_path: Path) -> None:
    """An unknown REGISTRY_* variable is one warning line (the README says so); those
    Kubernetes sets for a Service named `registry`, and the credential helpers' endpoint,
    are someone else's and pass without a word."""
    quiet = {"REGISTRY_SERVICE_HOST": "10.0.0.7", "REGISTRY_SERVICE_PORT": "5000",
             "REGISTRY_SERVICE_PORT_HTTP": "5000", "REGISTRY_PORT": "tcp://10.0.0.7:5000",
             "REGISTRY_PORT_5000_TCP": "tcp://10.0.0.7:5000",
             "REGISTRY_PORT_5000_TCP_ADDR": "10.0.0.7", "REGISTRY_PORT_5000_TCP_PROTO": "tcp",
             "REGISTRY_ENDPOINT_URL": "http://127.0.0.1:5000"}
    done = subprocess.run([sys.executable, "-m", "registry", "config", "check"],
                          env={**os.environ, **quiet, "REGISTRY_SERVER_PROT": "5001"},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "REGISTRY_" in line]
    assert len(warnings) == 1 and "REGISTRY_SERVER_PROT" in warnings[0], done.stderr


def test_a_tls_handshake_on_the_plain_port_is_explained_once(tmp_path: Path) -> None:
    live = start_registry(tmp_path / "data")
    try:
        for _ in range(3):
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"https://127.0.0.1:{live.port}/v2/", verify=False, timeout=5)
        assert httpx.get(live.url + "/v2/").status_code == 200
        time.sleep(0.3)
        log = live.log()
        assert log.count("started a TLS handshake on this plain-HTTP port") == 1
        assert "insecure-registries" in log
        assert "Invalid HTTP request" not in log
    finally:
        live.stop()


def serve_on(data_dir: Path | str, *, prefix: list[str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "registry", "serve", "--data-dir", str(data_dir),
         "--port", str(free_port())],
        capture_output=True, text=True, timeout=60, check=False)


def test_a_data_dir_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("a file, not a directory\n")
    for where in ("/proc/nope", tmp_path / "afile" / "sub", tmp_path / "afile"):
        proc = serve_on(where)
        assert proc.returncode == 2, proc.stderr
        line = one_line(proc)
        assert str(where) in line and "data directory" in line


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount and to change user")
def test_a_read_only_data_dir_is_one_line(tmp_path: Path) -> None:
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(mount)], check=True)
    try:
        proc = serve_on(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    assert proc.returncode == 2
    line = one_line(proc)
    assert str(mount) in line and "read-only" in line and f"uid {os.getuid()}" in line


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change user")
def test_a_data_dir_owned_by_another_user_is_one_line() -> None:
    """The usual bind-mount mistake: a root-owned directory, the server as uid 10001."""
    outer = Path(tempfile.mkdtemp(prefix="registry-owner-"))
    try:
        outer.chmod(0o755)  # the server's user can reach the directory, not write in it
        data = outer / "data"
        data.mkdir(mode=0o755)
        as_10001 = ["setpriv", "--reuid", "10001", "--regid", "10001", "--clear-groups"]
        proc = serve_on(data, prefix=as_10001)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        line = one_line(proc)
        assert str(data) in line and "uid 10001" in line and "permission denied" in line
        assert "chown 10001" in line
        assert list(data.iterdir()) == []
    finally:
        shutil.rmtree(outer, ignore_errors=True)
