"""Fixtures for end-to-end authentication tests: auth-enabled `registry serve` processes on the
filesystem backend, with users and policies made the way an operator makes them (the
`registry user|policy` CLI, one process per command, on the same data directory).

The session registry (`auth_registry`) is shared with tests/clients/test_skopeo_auth.py, whose
fixture of the same name calls `shared_auth_registry` too: whichever asks first starts it, and
there is only ever one.

Who may do what there:

- alice: `ecr:*` on `team/*` and `public/*` (added before the server starts)
- bob:   pull-only actions on `team/*` (added before the server starts)
- carol: `ecr:*` on `secret/*` (added while the server runs)
- `public/base` has a repository policy letting `"Principal": "*"` pull: it is public.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from auth.keys import KeyRing, SigningKey
from auth.secrets import SecretBox, generate_secret_key
from storage.drivers.filesystem import FilesystemDriver
from storage.iam import IamStore
from tests.conftest import LiveRegistry, start_registry
from tests.imagebuild import MEDIA_TYPE_CONFIG, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_MANIFEST

ROOT = Path(__file__).resolve().parents[2]
SECRET_KEY = generate_secret_key()
SERVICE = "registry"  # AuthSettings.service
ISSUER = "registry-token-issuer"  # AuthSettings.issuer
ACCOUNT = "000000000000"  # AuthSettings.account_id
CLI_TIMEOUT = 60

PASSWORDS = {
    "alice": "alice: correct horse",  # a colon in the password: Basic splits at the first
    "bob": "bob-battery-staple",
    "carol": "carol-s3cret",
}

PULL_ACTIONS = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
BOB_ACTIONS = [*PULL_ACTIONS, "ecr:BatchCheckLayerAvailability"]


def repository_arns(*patterns: str) -> list[str]:
    return [f"arn:aws:ecr:*:*:repository/{p}" for p in patterns]


def identity_policy(actions: str | list[str], resources: list[str]) -> dict[str, Any]:
    return {"Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": actions, "Resource": resources}]}


POLICIES: dict[str, dict[str, Any]] = {
    "alice": identity_policy("ecr:*", repository_arns("team/*", "public/*")),
    "bob": identity_policy(BOB_ACTIONS, repository_arns("team/*")),
    "carol": identity_policy("ecr:*", repository_arns("secret/*")),
}
PUBLIC_REPOSITORY_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Sid": "PublicPull", "Effect": "Allow", "Principal": "*",
                   "Action": BOB_ACTIONS}],
}
PUBLIC_REPO = "public/base"


# --------------------------------------------------------------------------- the CLI


def cli_env(secret_key: str = SECRET_KEY) -> dict[str, str]:
    """The caller's environment without any REGISTRY_* setting, plus the secret key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env["REGISTRY_AUTH_SECRET_KEY"] = secret_key
    return env


def registry_cli(data_dir: Path, *args: str, stdin: str | None = None, check: bool = True,
                 secret_key: str = SECRET_KEY) -> subprocess.CompletedProcess[str]:
    """`python -m registry ARGS --data-dir DATA_DIR`; with `check`, it must exit 0."""
    cmd = [sys.executable, "-m", "registry", *args, "--data-dir", str(data_dir)]
    result = subprocess.run(cmd, input=stdin or "", capture_output=True, text=True,
                            env=cli_env(secret_key), cwd=ROOT, timeout=CLI_TIMEOUT, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    if check:
        assert result.returncode == 0, (
            f"{' '.join(args)} exited {result.returncode}\nstdout: {result.stdout}\n"
            f"stderr: {result.stderr}")
    return result


def add_user(data_dir: Path, name: str, password: str) -> None:
    registry_cli(data_dir, "user", "add", name, "--password-stdin", stdin=password + "\n")


def write_policy(directory: Path, name: str, document: Mapping[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def add_user_with_policy(data_dir: Path, policy_dir: Path, name: str) -> None:
    """`user add` then `policy attach NAME <policy_dir>/NAME-policy.json` (policy NAME-policy)."""
    add_user(data_dir, name, PASSWORDS[name])
    registry_cli(data_dir, "policy", "attach", name,
                 str(write_policy(policy_dir, f"{name}-policy", POLICIES[name])))


def in_parallel(*jobs: Any) -> None:
    """Run independent CLI chains at once (each is a few ~0.4 s processes); re-raise failures."""
    errors: list[BaseException] = []

    def run(job: Any) -> None:
        try:
            job()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


# --------------------------------------------------------------------------- servers


def auth_env(**settings: str | int) -> dict[str, str]:
    """Server environment: auth on, the shared secret key, and AuthSettings overrides
    (`login_failures=3` -> REGISTRY_AUTH_LOGIN_FAILURES=3)."""
    env = {"REGISTRY_AUTH_ENABLED": "true", "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY,
           "REGISTRY_STORAGE_FILESYSTEM_FSYNC": "false"}
    env.update({f"REGISTRY_AUTH_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def start_auth_registry(data_dir: Path, **settings: str | int) -> LiveRegistry:
    return start_registry(data_dir, env=auth_env(**settings))


def basic(user: str, password: str | None = None) -> dict[str, str]:
    secret = PASSWORDS[user] if password is None else password
    value = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {value}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class AuthRegistry:
    """A live auth-enabled registry plus what the tests need to talk to it."""

    live: LiveRegistry
    data_dir: Path
    policy_dir: Path
    _tokens: dict[tuple[str | None, tuple[str, ...]], str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return self.live.url

    @property
    def host(self) -> str:
        return self.live.host

    def log(self) -> str:
        return self.live.log()

    def stop(self) -> None:
        self.live.stop()

    def client(self, **options: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **options)

    def cli(self, *args: str, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        return registry_cli(self.data_dir, *args, stdin=stdin, check=check)

    def token_response(self, user: str | None, *scopes: str,
                       password: str | None = None) -> httpx.Response:
        """`GET /token?service=registry&scope=...` with Basic credentials (None: anonymous)."""
        return get_token(self.url, user, *scopes, password=password)

    def token(self, user: str | None, *scopes: str) -> str:
        """A fresh-enough access token (cached per user and scopes; they live 300 s)."""
        key = (user, scopes)
        with self._lock:
            cached = self._tokens.get(key)
        if cached is None:
            response = self.token_response(user, *scopes)
            assert response.status_code == 200, response.text
            cached = str(response.json()["token"])
            with self._lock:
                self._tokens[key] = cached
        return cached

    def signing_key(self) -> SigningKey:
        return server_signing_key(self.data_dir)


def get_token(url: str, user: str | None, *scopes: str,
              password: str | None = None) -> httpx.Response:
    params = httpx.QueryParams([("service", SERVICE), *(("scope", scope) for scope in scopes)])
    headers = basic(user, password) if user is not None else {}
    return httpx.get(url + "/token", params=params, headers=headers, timeout=30)


def server_signing_key(data_dir: Path) -> SigningKey:
    """The key the servers on `data_dir` sign with, read from storage with the secret key (as
    an operator holding the key could): lets tests mint tokens that differ from real ones in
    exactly one respect."""

    async def load() -> SigningKey:
        driver = FilesystemDriver(data_dir, fsync=False)
        try:
            ring = await KeyRing.load(IamStore(driver), SecretBox(SECRET_KEY), "ES256")
            return ring.current
        finally:
            await driver.close()

    return asyncio.run(load())


def unverified_claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


# --------------------------------------------------------------------------- pushing over HTTP


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class PushedImage:
    repo: str
    tag: str
    manifest: bytes
    manifest_digest: str
    config: bytes
    layer: bytes

    @property
    def layer_digest(self) -> str:
        return sha256(self.layer)


def make_image() -> tuple[bytes, bytes, bytes]:
    """(config, layer, manifest) of a small random OCI image."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []},
                         "nonce": os.urandom(8).hex()}).encode()
    layer = os.urandom(2048)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MEDIA_TYPE_MANIFEST,
        "config": {"mediaType": MEDIA_TYPE_CONFIG, "digest": sha256(config),
                   "size": len(config)},
        "layers": [{"mediaType": MEDIA_TYPE_LAYER_GZIP, "digest": sha256(layer),
                    "size": len(layer)}],
    }).encode()
    return config, layer, manifest


def upload_blob(client: httpx.Client, repo: str, blob: bytes,
                headers: Mapping[str, str]) -> httpx.Response:
    """Monolithic upload: `POST /v2/<repo>/blobs/uploads/?digest=...` with the bytes."""
    return client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(blob)},
                       content=blob,
                       headers={**headers, "Content-Type": "application/octet-stream"})


def push_image(client: httpx.Client, repo: str, tag: str,
               headers: Mapping[str, str]) -> PushedImage:
    config, layer, manifest = make_image()
    for blob in (config, layer):
        response = upload_blob(client, repo, blob, headers)
        assert response.status_code == 201, (response.status_code, response.headers,
                                              response.text)
    response = client.put(f"/v2/{repo}/manifests/{tag}", content=manifest,
                          headers={**headers, "Content-Type": MEDIA_TYPE_MANIFEST})
    assert response.status_code == 201, (response.status_code, response.headers, response.text)
    return PushedImage(repo, tag, manifest, sha256(manifest), config, layer)


# --------------------------------------------------------------------------- fixtures

_shared: dict[str, AuthRegistry] = {}
_shared_lock = threading.Lock()


def shared_auth_registry(tmp_path_factory: pytest.TempPathFactory) -> AuthRegistry:
    """The session's one auth registry, started on first use.

    alice and bob are added (and their policies attached) before the server starts; carol and
    the repository policy of public/base while it runs: identities live in storage, so both
    orders must work."""
    with _shared_lock:
        if "registry" in _shared:
            return _shared["registry"]
        base = tmp_path_factory.mktemp("auth-registry")
        data_dir, policy_dir = base / "data", base / "policies"
        in_parallel(lambda: add_user_with_policy(data_dir, policy_dir, "alice"),
                    lambda: add_user_with_policy(data_dir, policy_dir, "bob"))
        # Failed logins from 127.0.0.1 count for every user on this server together too (the
        # throttle's looser per-address allowance); the tests make a handful on purpose, so
        # leave room above them.
        live = start_auth_registry(data_dir, login_failures=20, login_address_failures=100)
        registry = AuthRegistry(live, data_dir, policy_dir)
        try:
            public = write_policy(policy_dir, "public-base", PUBLIC_REPOSITORY_POLICY)
            in_parallel(lambda: add_user_with_policy(data_dir, policy_dir, "carol"),
                        lambda: registry_cli(data_dir, "policy", "set", PUBLIC_REPO,
                                             str(public)))
        except BaseException:
            live.stop()
            raise
        _shared["registry"] = registry
        return registry


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthRegistry]:
    registry = shared_auth_registry(tmp_path_factory)
    yield registry
    registry.stop()  # idempotent: tests/clients/test_skopeo_auth.py's fixture stops it too
