"""A full disk is the operator's to fix: 503 with Retry-After, never 500; stored blobs
unharmed; /readyz not ready until writes work again (it probes by itself)."""

from __future__ import annotations

import collections
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_registry


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_answers_503_and_recovers(small_disk: Path) -> None:
    live = start_registry(small_disk / "data")
    try:
        http = httpx.Client(base_url=live.url, timeout=30)
        statuses: collections.Counter[int] = collections.Counter()
        stored = []
        for _ in range(12):  # 12 MiB into 8
            data = os.urandom(1024 * 1024)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            answer = http.post("/v2/full/app/blobs/uploads/", params={"digest": digest},
                               content=data)
            statuses[answer.status_code] += 1
            if answer.status_code == 201:
                stored.append(digest)
            else:
                assert answer.status_code == 503, answer.text
                assert int(answer.headers["retry-after"]) > 0
                assert answer.json()["errors"][0]["code"] == "UNAVAILABLE"
                assert "full" in answer.json()["errors"][0]["message"]
        assert statuses[201] and statuses[503], statuses
        ready = http.get("/readyz")
        assert ready.status_code == 503 and "full" in ready.text
        for digest in stored:
            blob = http.get(f"/v2/full/app/blobs/{digest}")
            assert hashlib.sha256(blob.content).hexdigest() == digest[7:]
        for blob in (small_disk / "data" / "blobs").rglob("*"):
            if blob.is_file() and blob.name != stored[0][7:]:
                blob.unlink()  # the operator frees space
        assert http.get("/readyz").status_code == 200
        data = os.urandom(1024 * 1024)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        assert http.post("/v2/full/app/blobs/uploads/", params={"digest": digest},
                         content=data).status_code == 201
        assert not live.server_errors().get(("blob_upload", "POST", "500"))
        assert "Traceback" not in live.log()
    finally:
        live.stop()


def test_storage_turned_read_only_refuses_writes_and_serves_reads(small_disk: Path) -> None:
    """A volume remounted read-only under a running server: writes 503 naming why, reads
    and /readyz's answer follow the volume, and it is ready again once writable."""
    live = start_registry(small_disk)  # its log beside the volume, not on it
    try:
        http = httpx.Client(base_url=live.url, timeout=30)
        kept = os.urandom(64 * 1024)
        digest = "sha256:" + hashlib.sha256(kept).hexdigest()
        assert http.post("/v2/ro/app/blobs/uploads/", params={"digest": digest},
                         content=kept).status_code == 201
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        data = os.urandom(64 * 1024)
        refused = http.post("/v2/ro/app/blobs/uploads/", content=data,
                            params={"digest": "sha256:" + hashlib.sha256(data).hexdigest()})
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) > 0
        assert "read-only" in refused.json()["errors"][0]["message"]
        assert http.get(f"/v2/ro/app/blobs/{digest}").content == kept
        assert http.get("/readyz").status_code == 503
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
        assert http.get("/readyz").status_code == 200
        assert http.post("/v2/ro/app/blobs/uploads/", content=data,
                         params={"digest": "sha256:" + hashlib.sha256(data).hexdigest()}
                         ).status_code == 201
        assert not any(status == "500" for (_, _, status) in live.server_errors())
        assert "Traceback" not in live.log()
    finally:
        live.stop()
