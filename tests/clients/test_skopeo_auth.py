"""skopeo against an auth-enabled registry: `skopeo login` stores credentials, pushes and pulls
go through the Docker token flow, pull-only users are refused pushes, and public repositories
need no credentials at all.

The registry is the session's auth registry from tests/auth/conftest.py (users alice, bob and
carol; public/base is public). Every skopeo run has its own auth file, registries.conf, temp
and config directories, so no credentials leak in from the machine running the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.auth.conftest import PASSWORDS, PUBLIC_REPO, AuthRegistry, shared_auth_registry
from tests.imagebuild import MEDIA_TYPE_MANIFEST, BuiltImage, build_image, read_blob, resolve

SKOPEO = shutil.which("skopeo")
if SKOPEO is None:
    if os.environ.get("CI"):
        pytest.fail("skopeo is not on PATH but CI is set: the client round-trips must run in CI",
                    pytrace=False)
    pytest.skip("skopeo is not on PATH", allow_module_level=True)

TIMEOUT = 120
APP = "team/app"
TAG = "skopeo"


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


@dataclass(frozen=True)
class Skopeo:
    """skopeo with a private environment; `authfile` is where `login` stores credentials."""

    executable: str
    env: dict[str, str]
    home: Path
    registry: AuthRegistry

    def run(self, *args: str, stdin: str | None = None, check: bool = True,
            timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        cmd = [self.executable, "--insecure-policy", "--tmpdir", str(self.home / "tmp"), *args]
        try:
            result = subprocess.run(cmd, input=stdin, capture_output=True, text=True,
                                    env=self.env, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"skopeo timed out after {timeout}s: {' '.join(cmd)}\n"
                                 f"stderr:\n{_text(exc.stderr)}\n{self.log_tail()}") from exc
        if check and result.returncode != 0:
            raise AssertionError(f"skopeo exited {result.returncode}: {' '.join(cmd)}\n"
                                 f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\n"
                                 f"{self.log_tail()}")
        return result

    def login(self, user: str, authfile: Path, password: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        secret = PASSWORDS[user] if password is None else password
        return self.run("login", "--tls-verify=false", "--authfile", str(authfile), "-u", user,
                        "--password-stdin", self.registry.host, stdin=secret + "\n",
                        check=check)

    def copy(self, src: str, dest: str, authfile: Path,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("copy", "--retry-times", "0", "--src-tls-verify=false",
                        "--dest-tls-verify=false", "--authfile", str(authfile), src, dest,
                        check=check)

    def ref(self, repo: str, tag: str = TAG) -> str:
        return f"docker://{self.registry.host}/{repo}:{tag}"

    def log_tail(self) -> str:
        return "registry log (tail):\n" + self.registry.log()[-4000:]


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthRegistry]:
    """The session's auth registry (tests/auth/conftest.py), started here if nothing else did."""
    registry = shared_auth_registry(tmp_path_factory)
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def skopeo(tmp_path_factory: pytest.TempPathFactory, auth_registry: AuthRegistry) -> Skopeo:
    assert SKOPEO is not None
    home = tmp_path_factory.mktemp("skopeo-auth")
    (home / "tmp").mkdir()
    (home / "docker-config").mkdir()
    registries_conf = home / "registries.conf"
    registries_conf.write_text("unqualified-search-registries = []\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REGISTRY_", "DOCKER_", "XDG_"))}
    env.update({
        "CONTAINERS_REGISTRIES_CONF": str(registries_conf),
        "REGISTRY_AUTH_FILE": str(home / "default-auth.json"),  # used by nothing: all explicit
        "DOCKER_CONFIG": str(home / "docker-config"),
        "XDG_RUNTIME_DIR": str(home / "run"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
    })
    return Skopeo(SKOPEO, env, home, auth_registry)


@pytest.fixture(autouse=True)
def no_server_tracebacks(auth_registry: AuthRegistry) -> Iterator[None]:
    before = len(auth_registry.log())
    yield
    new = auth_registry.log()[before:]
    assert "Traceback" not in new, new[-4000:]


def read_authfile(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture(scope="module")
def alice_authfile(skopeo: Skopeo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    authfile = tmp_path_factory.mktemp("alice") / "auth.json"
    skopeo.login("alice", authfile)
    return authfile


@pytest.fixture(scope="module")
def bob_authfile(skopeo: Skopeo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    authfile = tmp_path_factory.mktemp("bob") / "auth.json"
    skopeo.login("bob", authfile)
    return authfile


@pytest.fixture
def empty_authfile(tmp_path: Path) -> Path:
    authfile = tmp_path / "empty-auth.json"
    authfile.write_text('{"auths": {}}\n')
    return authfile


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    return build_image(tmp_path_factory.mktemp("skopeo-auth-image") / "layout", [4096, 70_000])


@pytest.fixture(scope="module")
def pushed(skopeo: Skopeo, alice_authfile: Path, image: BuiltImage) -> BuiltImage:
    """The image, pushed by alice to team/app:skopeo and public/base:skopeo."""
    for repo in (APP, PUBLIC_REPO):
        skopeo.copy(f"oci:{image.layout}:latest", skopeo.ref(repo), alice_authfile)
    return image


def assert_same_image(layout: Path, ref: str, built: BuiltImage) -> None:
    descriptor = resolve(layout, ref)
    assert descriptor["digest"] == built.manifest_digest, descriptor
    assert descriptor["mediaType"] == MEDIA_TYPE_MANIFEST, descriptor
    assert read_blob(layout, built.manifest_digest) == built.manifest
    assert read_blob(layout, built.config_digest) == built.config
    for digest in built.layer_digests:
        assert read_blob(layout, digest) == read_blob(built.layout, digest)


def test_login_stores_credentials(skopeo: Skopeo, alice_authfile: Path) -> None:
    auths = read_authfile(alice_authfile)["auths"]
    assert list(auths) == [skopeo.registry.host], auths
    result = skopeo.run("login", "--tls-verify=false", "--authfile", str(alice_authfile),
                        "--get-login", skopeo.registry.host)
    assert result.stdout.strip() == "alice"


def test_login_with_a_wrong_password_fails(skopeo: Skopeo, tmp_path: Path) -> None:
    authfile = tmp_path / "auth.json"
    result = skopeo.login("alice", authfile, password="not alice's password", check=False)
    assert result.returncode != 0, result.stderr
    assert "unauthorized" in result.stderr.lower() or "invalid" in result.stderr.lower(), \
        result.stderr
    assert not authfile.exists() or skopeo.registry.host not in read_authfile(authfile).get(
        "auths", {})


def test_alice_pushes_and_pulls_back(skopeo: Skopeo, alice_authfile: Path, pushed: BuiltImage,
                                     tmp_path: Path) -> None:
    pulled = tmp_path / "pulled"
    skopeo.copy(skopeo.ref(APP), f"oci:{pulled}:pulled", alice_authfile)
    assert_same_image(pulled, "pulled", pushed)
    raw = skopeo.run("inspect", "--raw", "--tls-verify=false", "--authfile", str(alice_authfile),
                     skopeo.ref(APP)).stdout
    assert raw.encode() == pushed.manifest


def test_pull_only_user_pulls_but_cannot_push(skopeo: Skopeo, bob_authfile: Path,
                                             pushed: BuiltImage, tmp_path: Path) -> None:
    pulled = tmp_path / "pulled"
    skopeo.copy(skopeo.ref(APP), f"oci:{pulled}:pulled", bob_authfile)
    assert_same_image(pulled, "pulled", pushed)

    fresh = build_image(tmp_path / "bobs", [1024])
    result = skopeo.copy(f"oci:{fresh.layout}:latest", skopeo.ref(APP, "bob"), bob_authfile,
                         check=False)
    assert result.returncode != 0, result.stdout + result.stderr
    stderr = result.stderr.lower()
    assert "denied" in stderr or "unauthorized" in stderr, result.stderr
    listing = json.loads(skopeo.run("list-tags", "--tls-verify=false", "--authfile",
                                    str(bob_authfile), f"docker://{skopeo.registry.host}/{APP}")
                         .stdout)
    assert "bob" not in listing["Tags"], listing


def test_anonymous_copy_from_a_public_repository(skopeo: Skopeo, empty_authfile: Path,
                                                 pushed: BuiltImage, tmp_path: Path) -> None:
    pulled = tmp_path / "pulled"
    skopeo.copy(skopeo.ref(PUBLIC_REPO), f"oci:{pulled}:public", empty_authfile)
    assert_same_image(pulled, "public", pushed)
    assert read_authfile(empty_authfile) == {"auths": {}}


def test_anonymous_copy_from_a_private_repository_is_refused(
        skopeo: Skopeo, empty_authfile: Path, pushed: BuiltImage, tmp_path: Path) -> None:
    result = skopeo.copy(skopeo.ref(APP), f"oci:{tmp_path / 'pulled'}:x", empty_authfile,
                         check=False)
    assert result.returncode != 0, result.stdout + result.stderr
    stderr = result.stderr.lower()
    assert "unauthorized" in stderr or "denied" in stderr, result.stderr


def test_list_tags_with_alices_credentials(skopeo: Skopeo, alice_authfile: Path,
                                           pushed: BuiltImage) -> None:
    result = skopeo.run("list-tags", "--tls-verify=false", "--authfile", str(alice_authfile),
                        f"docker://{skopeo.registry.host}/{APP}")
    listing = json.loads(result.stdout)
    assert listing["Repository"] == f"{skopeo.registry.host}/{APP}", listing
    assert TAG in listing["Tags"], listing
    # the same with credentials on the command line instead of the auth file
    creds = skopeo.run("list-tags", "--tls-verify=false", "--creds",
                       f"alice:{PASSWORDS['alice']}", f"docker://{skopeo.registry.host}/{APP}")
    assert json.loads(creds.stdout)["Tags"] == listing["Tags"]
