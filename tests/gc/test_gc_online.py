"""GC online: pushes keep landing while collections run back to back, and nothing a push was
told it stored is lost. Also: a collection killed mid-sweep leaves a registry that serves
every referenced image, and the next collection finishes the work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import httpx

from tests.conftest import LiveRegistry
from tests.gc.util import blobs_of, gc_registry, pull_fully, run_gc, stored_blobs
from tests.registry.util import OCI_MANIFEST, build_image, push_image, push_image_blobs, sha256

__all__ = ["gc_registry"]


def push_like_docker(http: httpx.Client, repo: str, tag: str, blobs: list[bytes],
                     manifest: bytes) -> bool:
    """HEAD each blob and upload only what is missing, then put the manifest; False when the
    registry answers MANIFEST_BLOB_UNKNOWN (a blob went away meanwhile: push again)."""
    for blob in blobs:
        digest = sha256(blob)
        if http.head(f"/v2/{repo}/blobs/{digest}").status_code == 200:
            continue
        done = http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=blob,
                         headers={"Content-Type": "application/octet-stream"})
        assert done.status_code == 201, f"{done.status_code} {done.text}"
    answer = http.put(f"/v2/{repo}/manifests/{tag}", content=manifest,
                      headers={"Content-Type": OCI_MANIFEST})
    if answer.status_code == 400 and answer.json()["errors"][0]["code"] == \
            "MANIFEST_BLOB_UNKNOWN":
        return False
    assert answer.status_code == 201, f"{answer.status_code} {answer.text}"
    return True


def image_with(layers: list[bytes]) -> tuple[bytes, bytes]:
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "nonce": os.urandom(8).hex()}).encode()
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                      "digest": sha256(config), "size": len(config)},
           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                       "digest": sha256(layer), "size": len(layer)} for layer in layers]}
    return config, json.dumps(doc).encode()


def test_pushes_survive_collections_running_back_to_back(gc_registry: LiveRegistry) -> None:
    live = gc_registry
    rounds = 12 if live.backend == "filesystem" else 6
    pushed: list[tuple[str, str, str]] = []
    retries = [0]
    failures: list[BaseException] = []
    stop = threading.Event()
    reports: list[dict[str, Any]] = []

    def pusher(worker: int) -> None:
        repo = f"online/w{worker}"
        try:
            with httpx.Client(base_url=live.url, timeout=60, follow_redirects=True) as http:
                base = os.urandom(3000)
                for i in range(rounds):
                    # Garbage first: an untagged image whose layer the next push reuses, so
                    # that collections keep deleting what pushes are about to rely on.
                    reused = os.urandom(2000)
                    config, manifest = image_with([base, reused])
                    while not push_like_docker(http, repo, sha256(manifest),
                                               [config, base, reused], manifest):
                        retries[0] += 1
                    for _attempt in range(20):
                        extra = os.urandom(1500)
                        config, manifest = image_with([base, reused, extra])
                        if push_like_docker(http, repo, f"t{i}", [config, base, reused, extra],
                                            manifest):
                            pushed.append((repo, f"t{i}", sha256(manifest)))
                            break
                        retries[0] += 1
                    else:
                        raise AssertionError(f"{repo}:t{i} never got through")
        except BaseException as exc:  # surfaced by the main thread
            failures.append(exc)

    def collector() -> None:
        try:
            while not stop.is_set():
                reports.append(run_gc(live, "--grace", "0"))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=pusher, args=(w,)) for w in range(2)]
    gc_thread = threading.Thread(target=collector)
    gc_thread.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    stop.set()
    gc_thread.join(timeout=600)
    assert not failures, failures
    assert len(pushed) == 2 * rounds
    assert reports, "no collection ran"
    assert sum(r["manifests_deleted"] for r in reports) > 0, "the collections found no garbage"

    final = run_gc(live, "--grace", "0")
    with httpx.Client(base_url=live.url, timeout=60, follow_redirects=True) as http:
        for repo, tag, digest in pushed:
            assert pull_fully(http, repo, tag) == digest
    # Nothing but what the tagged images hold is left.
    assert final["manifests_deleted"] + sum(r["manifests_deleted"] for r in reports) >= \
        2 * rounds


def test_a_killed_collection_loses_nothing_and_the_next_one_finishes(
        gc_registry: LiveRegistry) -> None:
    live = gc_registry
    kept, garbage = [], []
    with httpx.Client(base_url=live.url, timeout=60, follow_redirects=True) as http:
        for i in range(4):
            kept.append(push_image(http, "killed/app", f"v{i}"))
        for _ in range(40 if live.backend == "filesystem" else 15):
            image = build_image()
            push_image_blobs(http, "killed/app", image)
            assert http.put(f"/v2/killed/app/manifests/{image.digest}", content=image.manifest,
                            headers={"Content-Type": image.media_type}).status_code == 201
            garbage.append(image)
    before = stored_blobs(live)
    env = {**os.environ, **live.env}
    process = subprocess.Popen(
        [sys.executable, "-m", "registry", "gc", "--grace", "0", "--data-dir",
         str(live.data_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Kill it once it has started deleting.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if len(stored_blobs(live)) < len(before):
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()

    with httpx.Client(base_url=live.url, timeout=60, follow_redirects=True) as http:
        for image in kept:
            assert pull_fully(http, "killed/app", image.digest) == image.digest
        # Pushes keep working (a marker the dead run left only delays them until it lapses).
        late = push_image(http, "killed/other", "v1")
        report = run_gc(live, "--grace", "0", timeout=400)
        for image in [*kept, late]:
            repo = "killed/other" if image is late else "killed/app"
            assert pull_fully(http, repo, image.digest) == image.digest
        for image in garbage:
            assert http.get(f"/v2/killed/app/manifests/{image.digest}").status_code == 404
    held = set().union(*(blobs_of(i) | {i.digest} for i in [*kept, late]))
    assert stored_blobs(live) == held, report
