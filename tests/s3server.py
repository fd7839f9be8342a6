"""Real S3 HTTP endpoints for tests, on free loopback ports: `moto_server` (a mock, started per
session as a subprocess) and Ceph's RADOS Gateway (a real object store, started by `.ci/rgw`).
Both are an `S3Endpoint`: a URL, credentials and a region, buckets made on demand, and the
settings that put a registry on one of its buckets."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass
class S3Endpoint:
    name: str  # "moto" or "rgw"
    url: str
    access_key_id: str
    secret_access_key: str
    region: str

    @property
    def credentials(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret_access_key}

    def client(self) -> Any:
        """A boto3 S3 client straight to the endpoint."""
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name=self.region,
                            aws_access_key_id=self.access_key_id,
                            aws_secret_access_key=self.secret_access_key)

    def create_bucket(self, name: str | None = None) -> str:
        bucket = name or f"registry-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def registry_env(self, bucket: str, **settings: str) -> dict[str, str]:
        """Environment for `registry serve` on this endpoint and bucket."""
        env = {
            **self.credentials,
            "AWS_DEFAULT_REGION": self.region,
            "REGISTRY_STORAGE_DRIVER": "s3",
            "REGISTRY_STORAGE_S3_BUCKET": bucket,
            "REGISTRY_STORAGE_S3_ENDPOINT_URL": self.url,
            "REGISTRY_STORAGE_S3_REGION": self.region,
            "REGISTRY_STORAGE_S3_ADDRESSING_STYLE": "path",
        }
        env.update({f"REGISTRY_STORAGE_S3_{k.upper()}": v for k, v in settings.items()})
        return env


@dataclass
class MotoServer(S3Endpoint):
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def stop(self) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_moto(log_dir: Path, port: int) -> MotoServer:
    executable = shutil.which("moto_server")
    args = [executable] if executable else [sys.executable, "-m", "moto.server"]
    log_path = log_dir / f"moto-{port}.log"
    env = {**os.environ, **CREDENTIALS}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*args, "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    server = MotoServer("moto", f"http://127.0.0.1:{port}", CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        CREDENTIALS["AWS_SECRET_ACCESS_KEY"], REGION, proc, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited:\n{log_path.read_text()}")
        try:
            httpx.get(server.url + "/", timeout=1)
            return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"moto_server did not start:\n{log_path.read_text()}")


RGW_SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "rgw"


@dataclass
class RgwServer(S3Endpoint):
    """A single-node Ceph RADOS Gateway that `.ci/rgw start DIR` runs; `stop` ends it."""

    state_dir: Path | None = None

    def stop(self) -> None:
        if self.state_dir is not None:
            subprocess.run(["bash", str(RGW_SCRIPT), "stop", str(self.state_dir)],
                           capture_output=True, timeout=120)

    def admin(self, *args: str) -> str:
        """Run `radosgw-admin` on this instance; its output."""
        assert self.state_dir is not None
        done = subprocess.run(["radosgw-admin", "-c", str(self.state_dir / "ceph.conf"), *args],
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"radosgw-admin {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def new_user(self) -> tuple[str, S3Endpoint]:
        """A user of its own (its uid, and the endpoint as that user), for tests that change
        what a user may do, such as its quota, without touching the shared user."""
        uid = f"user-{uuid.uuid4().hex[:12]}"
        key, secret = f"AK{uuid.uuid4().hex[:18].upper()}", uuid.uuid4().hex
        self.admin("user", "create", "--uid", uid, "--display-name", uid,
                   "--access-key", key, "--secret", secret)
        return uid, S3Endpoint(self.name, self.url, key, secret, self.region)


def rgw_available() -> bool:
    return all(shutil.which(tool) for tool in ("radosgw", "ceph-mon", "ceph-osd"))


def start_rgw(state_dir: Path) -> RgwServer:
    done = subprocess.run(["bash", str(RGW_SCRIPT), "start", str(state_dir)],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"RGW did not start:\n{done.stdout}\n{done.stderr}")
    env: dict[str, str] = {}
    for line in (state_dir / "env").read_text().splitlines():
        name, equals, value = line.removeprefix("export ").partition("=")
        if equals and not name.startswith("#"):
            env[name.strip()] = value.strip().strip("'\"")
    return RgwServer("rgw", env["RGW_ENDPOINT"], env["RGW_ACCESS_KEY_ID"],
                     env["RGW_SECRET_ACCESS_KEY"], env["RGW_REGION"], state_dir)
