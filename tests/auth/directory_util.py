"""Helpers for the identity directory tests: a Directory on a real filesystem-backed IAM store
under tmp_path, and a snapshot of everything stored."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from auth.identities import Directory
from auth.secrets import SecretBox, generate_secret_key
from storage.drivers.filesystem import FilesystemDriver
from storage.iam import IamStore

T = TypeVar("T")
PULL = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["ecr:BatchGetImage"], "Resource": "*"}]})
DENY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Deny", "Action": "ecr:PutImage", "Resource": "*"}]})
REPO_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": "*", "Action": "ecr:BatchGetImage"}]}, indent=2)
BOX = SecretBox(generate_secret_key())


def run(tmp_path: Path, body: Callable[[Directory], Awaitable[T]],
        box: SecretBox | None = BOX) -> T:
    """`body` with a Directory on the store under tmp_path, in a fresh event loop."""
    async def main() -> T:
        driver = FilesystemDriver(tmp_path / "data", fsync=False)
        try:
            return await body(Directory(IamStore(driver), box))
        finally:
            await driver.close()

    return asyncio.run(main())


def snapshot(tmp_path: Path) -> dict[str, bytes]:
    """Every stored object, to show that a refused change wrote nothing."""
    root = tmp_path / "data"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}
