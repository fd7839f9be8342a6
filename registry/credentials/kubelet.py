"""`registry-credential-provider`: a kubelet image credential provider plugin.

kubelet runs it with a CredentialProviderRequest on stdin (`credentialprovider.kubelet.k8s.io`,
v1 or v1beta1) and reads a CredentialProviderResponse from stdout: credentials for the image's
registry host (`cacheKeyType: Registry`), cached by kubelet for less than the password's life.
Any failure is one line on stderr and exit status 1."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from registry.credentials.common import CredentialError, endpoint_for, mint, registry_host

API_GROUP = "credentialprovider.kubelet.k8s.io"
VERSIONS = (f"{API_GROUP}/v1", f"{API_GROUP}/v1beta1", f"{API_GROUP}/v1alpha1")
SAFETY_MARGIN = 30 * 60  # kubelet stops using cached credentials this long before they expire


def go_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s"


def respond(request_text: str, endpoint_override: str | None = None,
            now: float | None = None) -> dict[str, object]:
    try:
        request = json.loads(request_text)
    except ValueError:
        raise CredentialError("the request on stdin is not JSON") from None
    if not isinstance(request, dict) or request.get("kind") != "CredentialProviderRequest":
        raise CredentialError("the request is not a CredentialProviderRequest")
    version = request.get("apiVersion")
    if version not in VERSIONS:
        raise CredentialError(f"unsupported apiVersion {str(version)[:80]!r}")
    image = request.get("image")
    if not isinstance(image, str) or not image:
        raise CredentialError("the request names no image")
    host = registry_host(image)
    minted = mint(endpoint_for(host, endpoint_override))
    remaining = minted.expires_at - (time.time() if now is None else now)
    return {
        "kind": "CredentialProviderResponse",
        "apiVersion": version,
        "cacheKeyType": "Registry",
        "cacheDuration": go_duration(max(0.0, remaining - SAFETY_MARGIN)),
        "auth": {host: {"username": minted.username, "password": minted.password}},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="registry-credential-provider",
                                     description="kubelet image credential provider")
    parser.add_argument("--endpoint-url", help="the registry's API (default https://<host>, "
                                               "or REGISTRY_ENDPOINT_URL)")
    args = parser.parse_args(argv)
    try:
        response = respond(sys.stdin.read(), args.endpoint_url)
    except CredentialError as exc:
        print(f"registry-credential-provider: {exc}", file=sys.stderr)
        return 1
    json.dump(response, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
