"""Day-one operations: health and readiness, Prometheus metrics, request ids and request logs,
read-only maintenance mode, draining on SIGTERM, and `registry config check`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import httpx
import pytest

from tests.conftest import LiveRegistry, free_port, metric, start_registry
from tests.ecr.test_signed import SECRET_KEY
from tests.registry.util import held_body, push_image, random_blob, sha256


def test_health_metrics_and_request_ids(tmp_path: Path) -> None:
    live = start_registry(tmp_path / "data", env={
        "REGISTRY_SERVER_REQUEST_LOG": "true", "REGISTRY_SERVER_LOG_FORMAT": "json"})
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            assert http.get("/healthz").json() == {"status": "ok"}
            ready = http.get("/readyz")
            assert ready.status_code == 200 and ready.json() == {"status": "ready"}
            image = push_image(http, "ops/app", "v1")
            pulled = http.get(f"/v2/ops/app/blobs/{sha256(image.layers[0])}",
                              headers={"X-Request-Id": "trace-42.a_b"})
            assert pulled.status_code == 200
            assert pulled.headers["x-request-id"] == "trace-42.a_b"
            generated = http.get("/v2/", headers={"X-Request-Id": "no spaces or; quotes\""})
            assert generated.headers["x-request-id"] != "no spaces or; quotes\""
            assert len(generated.headers["x-request-id"]) == 32
            missing = http.get("/v2/ops/app/manifests/nope?secret=query-value")
            assert missing.status_code == 404

            text = http.get("/metrics").text
        assert metric(text, "registry_http_requests_total", method="GET", route="blob",
                      status="200") == 1
        assert metric(text, "registry_http_requests_total", method="PUT", route="manifest",
                      status="201") == 1
        assert metric(text, "registry_http_request_duration_seconds_count", method="PUT",
                      route="manifest") == 1
        assert (metric(text, "registry_storage_operation_duration_seconds_count",
                       driver="filesystem") or 0) > 0
        assert (metric(text, "registry_http_sent_bytes_total", route="blob") or 0) \
            >= len(image.layers[0])
        # Every line of the log is one JSON object (the start-up line too), and each request
        # one line with its fields as members: the id, never the query string.
        every = [json.loads(line) for line in live.log().splitlines()]
        assert all({"time", "level", "logger", "message"} <= set(line) for line in every)
        assert any(line["message"].startswith("registry listening on") for line in every)
        lines = [line for line in every if line["logger"] == "registry.requests"]
        by_id = {record["request_id"]: record for record in lines}
        record = by_id["trace-42.a_b"]
        assert record["route"] == "blob" and record["repository"] == "ops/app"
        assert record["status"] == 200 and record["bytes_out"] == len(image.layers[0])
        assert "query-value" not in live.log()
    finally:
        live.stop()


def start_with_user(tmp_path: Path, user: str, password: str,
                    env: dict[str, str] | None = None) -> LiveRegistry:
    """A registry with auth on and one user, made with `registry user add`."""
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run([sys.executable, "-m", "registry", "user", "add", user, "--password-stdin",
                    "--data-dir", str(data)], input=password, text=True,
                   env={**os.environ, "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY},
                   check=True, capture_output=True)
    return start_registry(data, env={"REGISTRY_AUTH_ENABLED": "true",
                                     "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY, **(env or {})})


def test_request_logs_name_the_identity_and_never_the_password(tmp_path: Path) -> None:
    live = start_with_user(tmp_path, "alice", "alice-pw-123",
                           {"REGISTRY_SERVER_REQUEST_LOG": "true"})
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            assert http.get("/healthz").status_code == 200  # no credentials needed
            assert http.get("/readyz").status_code == 200
            assert http.get("/v2/", auth=("alice", "alice-pw-123")).status_code == 200
            token = http.get("/token", auth=("alice", "alice-pw-123"),
                             params={"service": "registry"}).json()["token"]
            assert http.get("/v2/", headers={"Authorization": f"Bearer {token}"}
                            ).status_code == 200
            metrics = http.get("/metrics").text
        assert (metric(metrics, "registry_auth_denials_total", reason="Unauthenticated")
                or 0) >= 1
        log = live.log()
        assert "identity=alice" in log
        assert "alice-pw-123" not in log and token not in log
    finally:
        live.stop()


def test_read_only_mode_refuses_writes_and_serves_reads(tmp_path: Path) -> None:
    live = start_registry(tmp_path / "data")
    with httpx.Client(base_url=live.url, timeout=30) as http:
        image = push_image(http, "ro/app", "v1")
    live.stop()
    live = start_registry(tmp_path / "data", env={"REGISTRY_SERVER_READ_ONLY": "true"})
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            refused = http.post("/v2/ro/app/blobs/uploads/")
            assert refused.status_code == 405
            error = refused.json()["errors"][0]
            assert error["code"] == "UNSUPPORTED" and "read-only" in error["message"]
            assert http.delete(f"/v2/ro/app/manifests/{image.digest}").status_code == 405
            assert http.get("/v2/ro/app/manifests/v1",
                            headers={"Accept": image.media_type}).content == image.manifest
            blob = random_blob(10)
            # Refused as a write before the (unknown) upload session is even looked up.
            assert http.put(f"/v2/ro/app/blobs/uploads/x?digest={sha256(blob)}",
                            content=blob).status_code == 405
        ecr = boto3.client("ecr", endpoint_url=live.url, region_name="us-east-1",
                           aws_access_key_id="a", aws_secret_access_key="b")
        assert [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]] == \
            ["ro/app"]
        with pytest.raises(ecr.exceptions.ClientError) as caught:
            ecr.create_repository(repositoryName="ro/other")
        assert "read-only" in caught.value.response["Error"]["Message"]
    finally:
        live.stop()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_turns_readiness_false_then_drains(tmp_path: Path, workers: str) -> None:
    live = start_registry(tmp_path / "data", env={"REGISTRY_SERVER_DRAIN_DELAY": "2",
                                                  "REGISTRY_SERVER_WORKERS": workers})
    try:
        live.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 1.5
        saw_unready = False
        while time.monotonic() < deadline:
            ready = httpx.get(live.url + "/readyz", timeout=2)
            if ready.status_code == 503:
                assert "draining" in ready.json()["problems"]
                saw_unready = True
                break
            time.sleep(0.05)
        assert saw_unready
        # Every worker drains (each request a new connection, spread over them).
        for _ in range(12):
            assert httpx.get(live.url + "/readyz", timeout=2).status_code == 503
        # Still serving while the load balancer takes it out.
        assert httpx.get(live.url + "/v2/", timeout=2).status_code == 200
        assert live.process.wait(timeout=15) in (0, -signal.SIGTERM), live.log()[-2000:]
        assert "draining" in live.log()
    finally:
        live.stop()


def test_config_check_validates_and_masks_secrets(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[server]\nport = 5050\n[auth]\nsecret_key = "c2VjcmV0LXZhbHVl"\n'
                    '[storage.s3]\nsecret_access_key = "s3-secret"\naccess_key_id = "AKIA"\n')
    done = subprocess.run([sys.executable, "-m", "registry", "config", "check", str(good)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["server"]["port"] == 5050
    assert shown["auth"]["secret_key"] == "********"
    assert shown["storage"]["s3"]["secret_access_key"] == "********"
    assert "s3-secret" not in done.stdout and "c2VjcmV0LXZhbHVl" not in done.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nport = \"many\"\n")
    refused = subprocess.run([sys.executable, "-m", "registry", "config", "check", str(bad)],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and "server.port" in refused.stderr


def test_the_audit_trail_records_changes_and_deletes(tmp_path: Path) -> None:
    live = start_registry(tmp_path / "data")
    try:
        ecr = boto3.client("ecr", endpoint_url=live.url, region_name="us-east-1",
                           aws_access_key_id="a", aws_secret_access_key="b")
        ecr.create_repository(repositoryName="audited/app")
        ecr.put_image_tag_mutability(repositoryName="audited/app", imageTagMutability="IMMUTABLE")
        ecr.describe_repositories()  # reads are not audited
        with httpx.Client(base_url=live.url, timeout=30) as http:
            image = push_image(http, "audited/app", "v1")
            assert http.delete(f"/v2/audited/app/manifests/{image.digest}").status_code == 202
    finally:
        live.stop()
    done = subprocess.run([sys.executable, "-m", "registry", "audit", "--data-dir",
                           str(tmp_path / "data")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["action"], e["target"]) for e in entries] == [
        ("ecr:CreateRepository", "audited/app"),
        ("ecr:PutImageTagMutability", "audited/app"),
        ("DeleteManifest", f"audited/app@{image.digest}"),
    ]
    assert all(e["address"] == "127.0.0.1" and e["when"] for e in entries)
    assert entries[1]["detail"] == {"imageTagMutability": "IMMUTABLE"}
    later = subprocess.run([sys.executable, "-m", "registry", "audit", "--since", "2999-01-01",
                            "--data-dir", str(tmp_path / "data")], capture_output=True,
                           text=True, timeout=30)
    assert later.returncode == 0 and later.stdout == ""


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_metrics_on_their_own_port_with_queue_depths(tmp_path: Path, workers: str) -> None:
    """`[server] metrics_port`: the registry's port stops answering /metrics; the metrics port
    reports what the registry did, including events waiting for an endpoint that is down and
    an upload receiving data at the moment of the scrape. With two workers the supervisor
    answers there, with the sum over both."""
    metrics_port = free_port()
    down = free_port()  # nothing listens here: every delivery fails and the queue grows
    live = start_registry(tmp_path / "data", env={
        "REGISTRY_SERVER_WORKERS": workers,
        "REGISTRY_SERVER_METRICS_PORT": str(metrics_port),
        "REGISTRY_SERVER_METRICS_REFRESH": "0.2",
        "REGISTRY_GC_INTERVAL": "0", "REGISTRY_LIFECYCLE_INTERVAL": "0",
        "REGISTRY_EVENTS_ENDPOINTS": json.dumps([{
            "name": "hooks", "url": f"http://127.0.0.1:{down}/hook", "max_attempts": 1000,
            "backoff": 30, "timeout": 1}])})
    scrape_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            assert http.get("/metrics").status_code == 404
            push_image(http, "ops/one", "v1")
            push_image(http, "ops/two", "v1")
            # An upload that is still sending: the gauge counts it while it lasts.
            location = http.post("/v2/ops/one/blobs/uploads/").headers["location"]
            gate = threading.Event()
            patch = threading.Thread(target=lambda: http.patch(
                location, content=held_body(gate),
                headers={"Content-Type": "application/octet-stream"}))
            patch.start()
            try:
                wait_for(lambda: metric(httpx.get(scrape_url).text,
                                        "registry_blob_uploads_in_progress") == 1.0, 30)
            finally:
                gate.set()
                patch.join(30)

            def depth() -> float | None:
                return metric(httpx.get(scrape_url).text, "registry_queue_depth",
                              queue="hooks", state="pending")

            wait_for(lambda: depth() == 2.0, 30)  # two pushes, one event each
            # The first delivery attempt failed (nothing listens) and was counted.
            wait_for(lambda: (metric(httpx.get(scrape_url).text,
                                     "registry_events_delivered_total", endpoint="hooks",
                                     result="failed") or 0) >= 1, 30)
        text = httpx.get(scrape_url).text
        assert metric(text, "registry_blob_uploads_in_progress") == 0.0
        assert metric(text, "registry_queue_depth", queue="hooks", state="dead") == 0.0
        assert metric(text, "registry_http_requests_total", method="PUT", route="manifest",
                      status="201") == 2
    finally:
        live.stop()


def test_tokens_issued_are_counted(tmp_path: Path) -> None:
    live = start_with_user(tmp_path, "bob", "bob-pw-456")
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            for _ in range(3):
                assert http.get("/token", auth=("bob", "bob-pw-456"),
                                params={"service": "registry"}).status_code == 200
            assert http.get("/token", auth=("bob", "bob-pw-456"), params={
                "service": "registry", "offline_token": "true"}).status_code == 200
            assert http.get("/token", auth=("bob", "wrong")).status_code == 401
            text = http.get("/metrics").text
        assert metric(text, "registry_tokens_issued_total", kind="access") == 4.0
        assert metric(text, "registry_tokens_issued_total", kind="refresh") == 1.0
    finally:
        live.stop()
