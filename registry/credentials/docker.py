"""`docker-credential-registry`: a docker credential helper (docker's `credHelpers`, and the
containers tools' `credHelpers` in auth.json).

Protocol (docker-credential-helpers): `get` reads a server URL on stdin and prints
`{"ServerURL", "Username", "Secret"}`, or "credentials not found in native keychain" and exit
status 1, which clients take as "no credentials" (the reason goes to stderr). `store` reads
credentials on stdin and ignores them: passwords are minted, never stored from a login.
`erase` forgets the cached password of a server, `list` prints the cached servers and their
usernames, `version` the helper's version.

Passwords are minted through GetAuthorizationToken and cached in
`$XDG_CACHE_HOME/registry-credentials/<host>.json` (directory 0700, files 0600, written
atomically) until 15 minutes before they expire; a cache that cannot be written costs a
mint per `get`, never a failure."""

from __future__ import annotations

import contextlib
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
    one_line,
    server_host,
)

PROG = "docker-credential-registry"
VERSION = "docker-credential-registry 1.0"
NOT_FOUND = "credentials not found in native keychain"
REFRESH_BEFORE = 15 * 60


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec: relative paths are ignored
        base = str(Path.home() / ".cache")
    return Path(base) / "registry-credentials"


def _cache_file(host: str) -> Path:
    # host is [A-Za-z0-9.-:] or [IPv6]:port; ":" and brackets are kept out of file names.
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in host)
    return cache_dir() / f"{safe}.json"


def _read_cache(host: str, now: float) -> Minted | None:
    try:
        data = json.loads(_cache_file(host).read_text())
        minted = Minted(str(data["Username"]), str(data["Secret"]), float(data["ExpiresAt"]))
    except (OSError, RuntimeError, ValueError, KeyError, TypeError):
        return None
    if minted.expires_at - now < REFRESH_BEFORE:
        return None
    return minted


def _write_cache(host: str, server_url: str, minted: Minted) -> None:
    directory = cache_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    body = json.dumps({"ServerURL": server_url, "Username": minted.username,
                       "Secret": minted.password, "ExpiresAt": minted.expires_at})
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".tmp-")  # created 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, _cache_file(host))
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def get(server_url: str) -> dict[str, str]:
    host = server_host(server_url)
    minted = _read_cache(host, time.time())
    if minted is None:
        minted = mint(endpoint_for(host))
        # No cache (read-only home, no home) costs a mint per get, not the answer.
        with contextlib.suppress(OSError, RuntimeError):
            _write_cache(host, server_url, minted)
    return {"ServerURL": server_url, "Username": minted.username, "Secret": minted.password}


def erase(server_url: str) -> None:
    _cache_file(server_host(server_url)).unlink(missing_ok=True)


def listing() -> dict[str, str]:
    found: dict[str, str] = {}
    try:
        paths = sorted(cache_dir().glob("*.json"))
    except (OSError, RuntimeError):
        return found
    for path in paths:
        try:
            data = json.loads(path.read_text())
            found[str(data["ServerURL"])] = str(data["Username"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def _server_on_stdin() -> str:
    server = sys.stdin.read().strip()
    if not server:
        raise CredentialError("no server URL on stdin")
    return server


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    action = args[0] if len(args) == 1 else ""
    try:
        if action == "get":
            try:
                answer = get(_server_on_stdin())
            except CredentialError as exc:
                # The protocol's "nothing for this server": clients go on without credentials.
                print(f"{PROG}: {one_line(str(exc))}", file=sys.stderr)
                print(NOT_FOUND)
                return 1
            print(json.dumps(answer))
        elif action == "store":
            sys.stdin.read()  # minted on demand: a login's password is not kept
        elif action == "erase":
            erase(_server_on_stdin())
        elif action == "list":
            print(json.dumps(listing()))
        elif action == "version":
            print(VERSION)
        else:
            print(f"usage: {PROG} get|store|erase|list|version", file=sys.stderr)
            return 2
    except CredentialError as exc:
        print(f"{PROG}: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:  # never a traceback into the client's output
        print(f"{PROG}: unexpected {type(exc).__name__}: {one_line(str(exc))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
