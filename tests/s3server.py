"""A real S3 HTTP endpoint for tests: `moto_server` as a subprocess on a free loopback port."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass
class MotoServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def create_bucket(self, name: str | None = None) -> str:
        import boto3

        bucket = name or f"registry-{uuid.uuid4().hex[:12]}"
        client = boto3.client("s3", endpoint_url=self.url, region_name=REGION,
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=bucket)
        return bucket

    def registry_env(self, bucket: str, **settings: str) -> dict[str, str]:
        """Environment for `registry serve` on this endpoint and bucket."""
        env = {
            **CREDENTIALS,
            "AWS_DEFAULT_REGION": REGION,
            "REGISTRY_STORAGE_DRIVER": "s3",
            "REGISTRY_STORAGE_S3_BUCKET": bucket,
            "REGISTRY_STORAGE_S3_ENDPOINT_URL": self.url,
            "REGISTRY_STORAGE_S3_REGION": REGION,
            "REGISTRY_STORAGE_S3_ADDRESSING_STYLE": "path",
        }
        env.update({f"REGISTRY_STORAGE_S3_{k.upper()}": v for k, v in settings.items()})
        return env

    def stop(self) -> None:
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
    server = MotoServer(f"http://127.0.0.1:{port}", proc, log_path)
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
