"""`registry-credential-provider`: a kubelet image credential provider plugin.

kubelet runs it with a CredentialProviderRequest on stdin (`credentialprovider.kubelet.k8s.io`,
v1, or v1beta1 and v1alpha1 for older kubelets) and reads a CredentialProviderResponse of the
same apiVersion from stdout: a password for the image's registry host (`cacheKeyType:
Registry`), which kubelet may cache for `cacheDuration`, a safety margin short of the
password's life. Any failure is one line on stderr and exit status 1."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from registry.credentials.common import (
    CredentialError,
    endpoint_for,
    image_host,
    mint,
    one_line,
)

PROG = "registry-credential-provider"
API_GROUP = "credentialprovider.kubelet.k8s.io"
VERSIONS = (f"{API_GROUP}/v1", f"{API_GROUP}/v1beta1", f"{API_GROUP}/v1alpha1")
# kubelet stops using its cached copy this long before the password expires, so a pull that
# starts at the end of the cache period still has a valid password.
SAFETY_MARGIN = 30 * 60


def go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration prints it (and metav1.Duration parses it)."""
    whole = max(0, int(seconds))
    if whole == 0:
        return "0s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def respond(request_text: str, endpoint_override: str | None = None,
            now: float | None = None) -> dict[str, object]:
    try:
        request = json.loads(request_text)
    except ValueError:
        raise CredentialError("the request on stdin is not JSON") from None
    if not isinstance(request, dict) or request.get("kind") != "CredentialProviderRequest":
        raise CredentialError("the request on stdin is not a CredentialProviderRequest")
    version = request.get("apiVersion")
    if version not in VERSIONS:
        raise CredentialError(f"unsupported apiVersion {str(version)[:80]!r} "
                              f"(expected {VERSIONS[0]} or {VERSIONS[1]})")
    image = request.get("image")
    if not isinstance(image, str) or not image.strip():
        raise CredentialError("the request names no image")
    host = image_host(image)
    minted = mint(endpoint_for(host, endpoint_override))
    remaining = minted.expires_at - (time.time() if now is None else now)
    return {
        "kind": "CredentialProviderResponse",
        "apiVersion": version,
        "cacheKeyType": "Registry",
        "cacheDuration": go_duration(remaining - SAFETY_MARGIN),
        "auth": {host: {"username": minted.username, "password": minted.password}},
    }


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # kubelet logs stderr: one line, not a usage block.
        self.exit(2, f"{PROG}: {one_line(message)}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog=PROG, description="kubelet image credential provider: registry "
                                            "passwords through GetAuthorizationToken")
    parser.add_argument("--endpoint-url", help="the registry's API (default https://<host> "
                                               "of the image, or $REGISTRY_ENDPOINT_URL)")
    args = parser.parse_args(argv)
    try:
        response = respond(sys.stdin.read(), args.endpoint_url)
    except CredentialError as exc:
        print(f"{PROG}: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:  # never a traceback into kubelet's log
        print(f"{PROG}: unexpected {type(exc).__name__}: {one_line(str(exc))}", file=sys.stderr)
        return 1
    json.dump(response, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
