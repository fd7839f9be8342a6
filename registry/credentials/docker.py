"""`docker-credential-registry`: a docker credential helper (docker's `credHelpers`, and the
containers tools' `credHelpers` in auth.json).

Protocol (docker-credential-helpers): `get` reads a server URL on stdin and prints
`{"ServerURL", "Username", "Secret"}`; `store` (credentials are minted, not stored: accepted and
ignored), `erase` (forget the cached password), `list` (cached servers), `version`. Passwords
are minted through GetAuthorizationToken and cached in `$XDG_CACHE_HOME/registry-credentials`
(0700; files 0600, written atomically) until 15 minutes before they expire."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from registry.credentials.common import (
    CredentialError,
    Minted,
    endpoint_for,
    mint,
    registry_host,
)

VERSION = "registry-credential-helper 1.0"
NOT_FOUND = "credentials not found in native keychain"
REFRESH_BEFORE = 15 * 60


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "registry-credentials"


def _cache_file(host: str) -> Path:
    safe = "".join(c if c.isalnum() or c in ".-_" else "_" for c in host)
    return cache_dir() / f"{safe}.json"


def _read_cache(host: str) -> Minted | None:
    try:
        data = json.loads(_cache_file(host).read_text())
        minted = Minted(str(data["Username"]), str(data["Secret"]), float(data["ExpiresAt"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if minted.expires_at - time.time() < REFRESH_BEFORE:
        return None
    return minted


def _write_cache(host: str, server_url: str, minted: Minted) -> None:
    directory = cache_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    body = json.dumps({"ServerURL": server_url, "Username": minted.username,
                       "Secret": minted.password, "ExpiresAt": minted.expires_at})
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(body)
        os.replace(temp, _cache_file(host))
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def get(server_url: str) -> dict[str, str]:
    host = registry_host(server_url)
    minted = _read_cache(host)
    if minted is None:
        minted = mint(endpoint_for(host))
        _write_cache(host, server_url, minted)
    return {"ServerURL": server_url, "Username": minted.username, "Secret": minted.password}


def erase(server_url: str) -> None:
    _cache_file(registry_host(server_url)).unlink(missing_ok=True)


def listing() -> dict[str, str]:
    found: dict[str, str] = {}
    directory = cache_dir()
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            found[str(data["ServerURL"])] = str(data["Username"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    action = args[0] if args else ""
    try:
        if action == "get":
            server = sys.stdin.read().strip()
            if not server:
                raise CredentialError("no server URL on stdin")
            try:
                print(json.dumps(get(server)))
            except CredentialError as exc:
                print(f"docker-credential-registry: {exc}", file=sys.stderr)
                print(NOT_FOUND)
                return 1
        elif action == "store":
            sys.stdin.read()  # minted on demand: nothing to keep
        elif action == "erase":
            erase(sys.stdin.read().strip())
        elif action == "list":
            print(json.dumps(listing()))
        elif action == "version":
            print(VERSION)
        else:
            print("usage: docker-credential-registry get|store|erase|list|version",
                  file=sys.stderr)
            return 2
    except CredentialError as exc:
        print(f"docker-credential-registry: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
