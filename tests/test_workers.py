"""`server.workers = N`: N processes on one port behave as one registry.

The supervisor forks the workers and keeps N of them running; connections are spread over
them by the kernel; metrics are summed over all of them whichever answers; a worker that
cannot start stops the server instead of being retried forever. Draining on SIGTERM and the
metrics port are tested under both one and two workers in `test_operations.py`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import LiveRegistry, free_port, metric, start_registry
from tests.registry.util import held_body, push_image
from tests.test_conformance import REPO_ROOT, SUMMARY

TWO = {"REGISTRY_SERVER_WORKERS": "2"}


def children(pid: int) -> set[int]:
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def wait_for_workers(pid: int, count: int, timeout: float = 20) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = children(pid)
        if len(found) == count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"expected {count} workers, found {children(pid)}")


def base_requests(live: LiveRegistry) -> float | None:
    """`GET /v2/` answered 200, as the registry counted them (all workers, summed)."""
    return metric(live.metrics(), "registry_http_requests_total", method="GET", route="base",
                  status="200")


def test_workers_share_the_port_and_report_one_sum(tmp_path: Path) -> None:
    live = start_registry(tmp_path / "data", extra_args=["--workers", "2"])
    try:
        assert len(wait_for_workers(live.process.pid, 2)) == 2
        before = base_requests(live)
        assert before is not None and before >= 1  # start_registry's wait for /v2/
        # Each request on a connection of its own: the kernel spreads them over the workers,
        # whose request ids differ in their per-process prefix.
        prefixes = set()
        for _ in range(40):
            reply = httpx.get(live.url + "/v2/", timeout=10)
            assert reply.status_code == 200
            prefixes.add(reply.headers["x-request-id"][:16])
        assert len(prefixes) == 2, prefixes
        # Whichever worker answers /metrics reports what all of them did.
        for _ in range(4):
            assert base_requests(live) == before + 40
        # A blob uploaded through one connection is served through every other.
        data = os.urandom(100_000)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        started = httpx.post(live.url + "/v2/w/blob/blobs/uploads/", timeout=10)
        location = started.headers["location"]
        if location.startswith("/"):
            location = live.url + location
        sep = "&" if "?" in location else "?"
        put = httpx.put(f"{location}{sep}digest={digest}", content=data, timeout=10,
                        headers={"Content-Type": "application/octet-stream"})
        assert put.status_code == 201, put.text
        for _ in range(6):
            assert httpx.get(f"{live.url}/v2/w/blob/blobs/{digest}", timeout=10).content == data
    finally:
        live.stop()
    assert live.process.returncode == 0, live.log()[-2000:]
    assert live.log().count("registry stopped") == 2, live.log()[-2000:]


def test_a_killed_worker_is_replaced(tmp_path: Path) -> None:
    """Also: the operator's PROMETHEUS_MULTIPROC_DIR is used and kept, cleared of an earlier
    run's files first, and the killed worker's counts stay in the sum."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"not a metrics file")  # an earlier run's
    live = start_registry(tmp_path / "data",
                          env={**TWO, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    try:
        first = wait_for_workers(live.process.pid, 2)
        time.sleep(2.5)  # older than the start-up grace: a crash, not a failure to start
        for _ in range(20):
            assert httpx.get(live.url + "/v2/", timeout=10).status_code == 200
        before = base_requests(live)
        assert before is not None and before >= 20
        assert any(metrics_dir.glob("counter_*.db"))
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:
            now = children(live.process.pid)
            if len(now) == 2 and victim not in now:
                break
            assert time.monotonic() < deadline, (now, live.log()[-2000:])
            time.sleep(0.05)
        assert (now & first) == first - {victim}
        for _ in range(20):
            assert httpx.get(live.url + "/v2/", timeout=10).status_code == 200
        after = base_requests(live)
        assert after == before + 20  # nothing the dead worker counted is lost
        assert f"worker {victim} was killed by SIGKILL; starting another" in live.log()
    finally:
        live.stop()
    assert live.process.returncode == 0, live.log()[-2000:]
    assert metrics_dir.is_dir()


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    """Storage unreachable at start-up (auth loads its signing keys from it): the server exits
    with uvicorn's status for an app that could not start, instead of forking forever, and
    says why in one line: the first worker starts alone, the others only once it serves."""
    env = {**os.environ, **TWO,
           "REGISTRY_STORAGE_DRIVER": "s3", "REGISTRY_STORAGE_S3_BUCKET": "nowhere",
           "REGISTRY_STORAGE_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
           "REGISTRY_STORAGE_S3_MAX_ATTEMPTS": "1",
           "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "REGISTRY_AUTH_ENABLED": "true",
           "REGISTRY_AUTH_SECRET_KEY": base64.b64encode(os.urandom(32)).decode()}
    proc = subprocess.run([sys.executable, "-m", "registry", "serve", "--port",
                           str(free_port())], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 3, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "cannot start: storage backend unreachable" in lines[0]


def test_a_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    live = start_registry(tmp_path / "data", env=TWO)
    try:
        proc = subprocess.run([sys.executable, "-m", "registry", "serve", "--port",
                               str(live.port), "--data-dir", str(tmp_path / "other")],
                              env={**os.environ, **TWO}, capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == 1
        assert f"cannot listen on 127.0.0.1 port {live.port}" in proc.stderr, proc.stderr
        assert "listening on" not in proc.stderr
        assert "Traceback" not in proc.stderr
        assert httpx.get(live.url + "/v2/", timeout=10).status_code == 200
    finally:
        live.stop()


def test_conformance_runner_passes_against_two_workers(tmp_path: Path) -> None:
    live = start_registry(tmp_path / "data", env=TWO)
    try:
        proc = subprocess.run([sys.executable, "-m", "conformance", live.url], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=600, check=False)
        lines = proc.stdout.strip().splitlines()
        assert proc.returncode == 0, proc.stdout + proc.stderr
        summary = SUMMARY.match(lines[-1]) if lines else None
        assert summary is not None and int(summary.group(1)) > 0, proc.stdout
    finally:
        live.stop()


def test_rate_limits_and_the_upload_cap_hold_across_workers(tmp_path: Path) -> None:
    """The workers share their token buckets and upload counts: a caller spread over both gets
    the rate and the cap set, not twice them; a killed worker's uploads stop counting."""
    live = start_registry(tmp_path / "data", env={
        **TWO, "REGISTRY_LIMITS_ENABLED": "true", "REGISTRY_LIMITS_BURST_SECONDS": "1",
        "REGISTRY_LIMITS_RATES": json.dumps({"BatchGetImage": 4}),
        "REGISTRY_LIMITS_MAX_CONCURRENT_UPLOADS": "1"})
    try:
        workers = wait_for_workers(live.process.pid, 2)
        with httpx.Client(base_url=live.url, timeout=30) as http:
            push_image(http, "shared/limits", "v1")
        # Each GET on a connection of its own, so over both workers (one address, one caller).
        codes = [httpx.get(f"{live.url}/v2/shared/limits/manifests/v1", timeout=10).status_code
                 for _ in range(8)]
        assert codes[:4] == [200] * 4 and codes.count(429) >= 3, codes

        def start() -> str:
            location = httpx.post(f"{live.url}/v2/shared/limits/blobs/uploads/",
                                  timeout=10).headers["location"]
            return location if location.startswith("http") else live.url + location

        held, other = start(), start()
        release = threading.Event()
        results: list[int | str] = []

        def hold() -> None:
            try:
                results.append(httpx.patch(held, content=held_body(release),
                                           timeout=30).status_code)
            except httpx.HTTPError as exc:
                results.append(type(exc).__name__)

        patch = threading.Thread(target=hold)
        patch.start()
        try:
            time.sleep(0.5)  # the held PATCH is in flight on one of the workers
            refused = [httpx.patch(other, content=b"z", timeout=10).status_code
                       for _ in range(6)]
            assert refused == [429] * 6, refused
            time.sleep(2.5 - 0.5)  # both workers past the start-up grace
            for pid in workers:  # the one holding the upload among them
                os.kill(pid, signal.SIGKILL)
            wait_for_workers(live.process.pid, 2)
            deadline = time.monotonic() + 20
            status = 0
            while status != 202:  # the new workers may not listen yet: refused until then
                assert status in (0, 429) and time.monotonic() < deadline, status
                time.sleep(0.2)
                try:
                    status = httpx.patch(other, content=b"z", timeout=10).status_code
                except httpx.ConnectError:
                    status = 0
        finally:
            release.set()
            patch.join(30)
        assert results and results != [202], results  # its worker died under it
    finally:
        live.stop()
