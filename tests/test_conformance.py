"""Run our OCI Distribution Spec conformance runner against a live registry."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.conftest import LiveRegistry

REPO_ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"^(\d+) passed, 0 failed(, \d+ skipped)?$")


def test_conformance_runner_passes(registry_server: LiveRegistry) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "conformance", registry_server.url],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, output
    summary = SUMMARY.match(lines[-1]) if lines else None
    assert summary is not None, output
    assert int(summary.group(1)) > 0, output
