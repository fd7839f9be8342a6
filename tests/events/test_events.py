"""Image events reach HTTP endpoints at least once and in order per repository, through
endpoint failures and a registry restart; what keeps failing is dead-lettered and replayable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BACKENDS, LiveRegistry, backend_env, free_port, start_registry
from tests.registry.util import push_image

DISTRIBUTION_TYPE = "application/vnd.docker.distribution.events.v2+json"


class Receiver:
    """An HTTP endpoint that records what it is sent, can fail its first N requests, and can
    go down and come back on the same port."""

    def __init__(self, port: int, fail_first: int = 0) -> None:
        self.port = port
        self.fail_first = fail_first
        self.received: list[tuple[str, str, dict[str, Any]]] = []  # path, content type, body
        self.refused = 0
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    if receiver.refused < receiver.fail_first:
                        receiver.refused += 1
                        self.send_response(500)
                        self.end_headers()
                        return
                    receiver.received.append((self.path, self.headers.get("content-type", ""),
                                              json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def bodies(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for p, _, body in self.received if p == path]


def endpoints(port: int, **extra: Any) -> str:
    common = {"backoff": 0.2, "max_backoff": 1.0, "max_attempts": 1000, "timeout": 2}
    return json.dumps([
        {"name": "bridge", "url": f"http://127.0.0.1:{port}/bridge", **common, **extra},
        {"name": "dist", "url": f"http://127.0.0.1:{port}/dist", "format": "distribution",
         "actions": ["PUSH"], "repositories": ["team/*"], **common,
         "headers": {"Authorization": "Bearer receiver-secret"}},
    ])


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> dict[str, str]:
    return {**backend_env(request.param, request), "REGISTRY_GC_INTERVAL": "0",
            "REGISTRY_LIFECYCLE_INTERVAL": "0"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver(free_port(), fail_first=3)
    found.start()
    yield found
    found.stop()


def wait_for(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def bridge_events(receiver: Receiver) -> list[tuple[str, str, str, str | None]]:
    """(action, repository, digest, tag) of each distinct event, in first-arrival order."""
    seen: dict[str, tuple[str, str, str, str | None]] = {}
    for body in receiver.bodies("/bridge"):
        assert body["source"] == "aws.ecr" and body["detail-type"] == "ECR Image Action"
        assert body["detail"]["result"] == "SUCCESS"
        detail = body["detail"]
        seen.setdefault(body["id"], (detail["action-type"], detail["repository-name"],
                                     detail["image-digest"], detail.get("image-tag")))
    return list(seen.values())


def test_every_event_arrives_in_order_through_failures_and_a_restart(
        tmp_path: Path, backend: dict[str, str], receiver: Receiver) -> None:
    env = {**backend, "REGISTRY_EVENTS_ENDPOINTS": endpoints(receiver.port)}
    live = start_registry(tmp_path / "data", env=env)
    expected: list[tuple[str, str, str, str | None]] = []
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            first = push_image(http, "team/a", "v1")
            expected.append(("PUSH", "team/a", first.digest, "v1"))
            second = push_image(http, "team/a", "v2")
            expected.append(("PUSH", "team/a", second.digest, "v2"))
            moved = push_image(http, "team/a", "v1")  # the tag moves
            expected.append(("PUSH", "team/a", moved.digest, "v1"))
            other = push_image(http, "other/b", "v1")
            expected.append(("PUSH", "other/b", other.digest, "v1"))
            assert http.delete("/v2/team/a/manifests/v2").status_code == 202
            expected.append(("DELETE", "team/a", second.digest, "v2"))
        # The endpoint goes down, and the registry restarts while events are queued.
        receiver.stop()
        time.sleep(0.5)
        live.stop()
        live = start_registry(tmp_path / "data", env=env)
        with httpx.Client(base_url=live.url, timeout=30) as http:
            third = push_image(http, "team/a", "v3")
            expected.append(("PUSH", "team/a", third.digest, "v3"))
            again = push_image(http, "other/b", "v2")
            expected.append(("PUSH", "other/b", again.digest, "v2"))
        receiver.start()
        wait_for(lambda: len(bridge_events(receiver)) >= len(expected))
        got = bridge_events(receiver)
        assert sorted(got, key=str) == sorted(expected, key=str)
        for repository in ("team/a", "other/b"):
            assert [e for e in got if e[1] == repository] == \
                [e for e in expected if e[1] == repository]
        assert receiver.refused == 3

        # Distribution's envelope, filtered to team/* pushes, with the configured header.
        wanted = [e for e in expected if e[0] == "PUSH" and e[1].startswith("team/")]
        wait_for(lambda: len({b["events"][0]["id"] for b in receiver.bodies("/dist")})
                 >= len(wanted))
        with receiver.lock:
            types = {t for p, t, _ in receiver.received if p == "/dist"}
        assert types == {DISTRIBUTION_TYPE}
        dist: dict[str, tuple[str, str, str, str | None]] = {}
        for body in receiver.bodies("/dist"):
            event = body["events"][0]
            target = event["target"]
            assert target["url"].endswith(f"/v2/{target['repository']}/manifests/"
                                          f"{target['digest']}")
            assert target["size"] == target["length"] > 0
            dist.setdefault(event["id"], (event["action"].upper(), target["repository"],
                                          target["digest"], target.get("tag")))
        assert list(dist.values()) == wanted
        assert "receiver-secret" not in live.log()
    finally:
        live.stop()


def cli(live: LiveRegistry, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "registry", "events", *args, "--data-dir",
                           str(live.data_dir)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_failing_events_are_dead_lettered_and_replayed(tmp_path: Path) -> None:
    port = free_port()
    env = {"REGISTRY_GC_INTERVAL": "0", "REGISTRY_LIFECYCLE_INTERVAL": "0",
           "REGISTRY_EVENTS_ENDPOINTS": json.dumps([{
               "name": "flaky", "url": f"http://127.0.0.1:{port}/hook", "max_attempts": 2,
               "backoff": 0.1, "timeout": 1}])}
    live = start_registry(tmp_path / "data", env=env)
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            image = push_image(http, "dead/app", "v1")

        def dead() -> list[dict[str, Any]]:
            done = cli(live, env, "list", "--dead", "flaky")
            assert done.returncode == 0, done.stderr
            return [json.loads(line) for line in done.stdout.splitlines()]

        wait_for(lambda: len(dead()) == 1, timeout=30)
        record = dead()[0]
        assert record["event"]["digest"] == image.digest
        assert record["attempts"] == 2 and record["lastError"]
        pending = cli(live, env, "list", "flaky")
        assert pending.returncode == 0 and pending.stdout == ""

        receiver = Receiver(port)
        receiver.start()
        try:
            replayed = cli(live, env, "replay", "flaky")
            assert replayed.returncode == 0, replayed.stderr
            wait_for(lambda: len(receiver.bodies("/hook")) == 1, timeout=30)
            detail = receiver.bodies("/hook")[0]["detail"]
            assert (detail["action-type"], detail["repository-name"], detail["image-digest"],
                    detail["image-tag"]) == ("PUSH", "dead/app", image.digest, "v1")
            assert dead() == []
        finally:
            receiver.stop()
        unknown = cli(live, env, "list", "nowhere")
        assert unknown.returncode == 1 and "nowhere" in unknown.stderr
    finally:
        live.stop()
