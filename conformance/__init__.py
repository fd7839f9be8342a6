"""Our own OCI Distribution Spec conformance runner.

Run it as `python -m conformance <base-url> [options]`; README.md lists what it checks.
Checks live in one module per workflow (pull, push_blobs, push_manifests, discovery,
management, referrers) and register themselves with `framework.check`.
"""

from __future__ import annotations

__all__ = ["main"]


def main() -> int:
    from .runner import main as run_main

    return run_main()
