"""What the command line says: `--version`, the settings `serve --help` describes, and the one
line every changing command prints naming what it changed (a secret, or data scripts parse,
stays alone on stdout, the line beside it on stderr). Each command runs as its own process on
one data directory, as an administrator runs them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from auth.secrets import generate_secret_key
from storage.drivers.filesystem import FilesystemDriver
from storage.store import Store
from tests.test_cli_iam import lookup_key

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = generate_secret_key()
DIGEST = "sha256:" + "ab" * 32
IDENTITY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "ecr:BatchGetImage", "Resource": "*"}]}
RESOURCE = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": "*", "Action": "ecr:BatchGetImage"}]}
LIFECYCLE = {"rules": [{"rulePriority": 1, "selection": {
    "tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 5},
    "action": {"type": "expire"}}]}


def registry(*args: str, data_dir: Path | None = None, stdin: str = "",
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    environ |= {"REGISTRY_AUTH_SECRET_KEY": SECRET_KEY, "COLUMNS": "100", **(env or {})}
    where = ["--data-dir", str(data_dir)] if data_dir is not None else []
    result = subprocess.run([sys.executable, "-m", "registry", *args, *where], input=stdin,
                            capture_output=True, text=True, env=environ, cwd=ROOT, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def said(*args: str, data_dir: Path, stdin: str = "") -> str:
    """The one line a successful change prints on stdout (and nothing on stderr)."""
    result = registry(*args, data_dir=data_dir, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    return lines[0]


def refused(*args: str, data_dir: Path) -> str:
    """The one `registry: ...` line a refused command prints on stderr (exit 1)."""
    result = registry(*args, data_dir=data_dir)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("registry: "), result.stderr
    return lines[0]


def create_key(data_dir: Path, user: str) -> tuple[str, str]:
    result = registry("user", "key", "create", user, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)  # stdout is still nothing but the JSON
    key_id, secret = created["AccessKeyId"], created["SecretAccessKey"]
    assert result.stderr == f"created access key {key_id} for user {user}\n"
    assert secret not in result.stderr
    return key_id, secret


def create_repository(data_dir: Path, name: str) -> None:
    async def main() -> None:
        store = Store(FilesystemDriver(data_dir, fsync=False))
        try:
            assert await store.repositories.create(name, {"createdAt": time.time()})
        finally:
            await store.close()

    asyncio.run(main())


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def files(tmp_path: Path) -> Path:
    for name, document in (("pull-only", IDENTITY), ("public", RESOURCE),
                           ("lifecycle", LIFECYCLE)):
        (tmp_path / f"{name}.json").write_text(json.dumps(document))
    return tmp_path


def test_version_names_the_project_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    result = registry("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"registry {project['version']}\n"


def test_serve_help_describes_the_settings_file_and_environment() -> None:
    result = registry("serve", "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for words in ("--config FILE", "without it no file is read", "REGISTRY_<SECTION>_<KEY>",
                  "REGISTRY_SERVER_PORT", "REGISTRY_SERVER_TLS_CERT_FILE",
                  "unknown\nREGISTRY_* variable is ignored with a warning"):
        assert words in text, words


def test_what_serve_help_says_of_the_environment_holds(tmp_path: Path) -> None:
    checked = registry("config", "check", data_dir=tmp_path, env={
        "REGISTRY_SERVER_PORT": "5999", "REGISTRY_SERVER_TLS_CERT_FILE": "/c.pem",
        "REGISTRY_SERVER_TLS_KEY_FILE": "/k.pem", "REGISTRY_NO_SUCH_KEY": "1"})
    assert checked.returncode == 0, checked.stderr
    server = json.loads(checked.stdout)["server"]
    assert server["port"] == 5999 and server["tls"]["cert_file"] == "/c.pem"
    assert "ignoring environment variable REGISTRY_NO_SUCH_KEY" in checked.stderr


def test_key_delete_takes_the_user_and_refuses_another_users_key(data: Path) -> None:
    for user in ("alice", "bob"):
        said("user", "add", user, "--password-stdin", data_dir=data, stdin="pw")
    key_id, secret = create_key(data, "alice")

    assert refused("user", "key", "delete", "bob", key_id, data_dir=data) == (
        f"registry: user 'bob' has no access key {key_id!r}")
    assert refused("user", "key", "update", "bob", key_id, "--status", "Inactive",
                   data_dir=data) == f"registry: user 'bob' has no access key {key_id!r}"
    assert "no user named 'carol'" in refused("user", "key", "delete", "carol", key_id,
                                              data_dir=data)
    # still active, still alice's
    assert lookup_key(data, key_id, SECRET_KEY) == ("alice", secret)
    assert registry("user", "key", "list", "alice", data_dir=data).stdout.startswith(
        f"{key_id}\tActive\t")

    assert said("user", "key", "delete", "alice", key_id, data_dir=data) == (
        f"deleted access key {key_id} of user alice")
    assert lookup_key(data, key_id, SECRET_KEY) is None
    assert registry("user", "key", "list", "alice", data_dir=data).stdout == ""
    assert refused("user", "key", "delete", "alice", key_id, data_dir=data) == (
        f"registry: user 'alice' has no access key {key_id!r}")


def test_key_commands_still_take_a_key_id_alone(data: Path) -> None:
    said("user", "add", "alice", "--password-stdin", data_dir=data, stdin="pw")
    key_id, _ = create_key(data, "alice")
    assert said("user", "key", "update", key_id, "--status", "Inactive", data_dir=data) == (
        f"deactivated access key {key_id}")
    assert said("user", "key", "delete", key_id, data_dir=data) == (
        f"deleted access key {key_id}")
    assert "no access key" in refused("user", "key", "delete", key_id, data_dir=data)


def test_user_and_group_changes_print_what_they_did(data: Path) -> None:
    said_by = {
        ("user", "add", "alice", "--password-stdin"): "added user alice",
        ("user", "passwd", "alice", "--password-stdin"): "set the password of user alice",
        ("user", "revoke-tokens", "alice"):
            "revoked the refresh and authorization tokens of user alice",
        ("user", "disable", "alice"): "disabled user alice",
        ("user", "enable", "alice"): "enabled user alice",
        ("group", "add", "devs"): "added group devs",
        ("group", "member", "add", "devs", "alice"): "added user alice to group devs",
        ("group", "member", "remove", "devs", "alice"): "removed user alice from group devs",
        ("group", "remove", "devs"): "removed group devs",
    }
    for args, line in said_by.items():
        assert said(*args, data_dir=data, stdin="pw") == line
    key_id, _ = create_key(data, "alice")
    for status, verb in (("Inactive", "deactivated"), ("Active", "activated")):
        line = said("user", "key", "update", "alice", key_id, "--status", status, data_dir=data)
        assert line == f"{verb} access key {key_id} of user alice"
    assert said("user", "remove", "alice", data_dir=data) == (
        "removed user alice and its access keys")
    assert registry("user", "list", data_dir=data).stdout == ""


def test_policy_changes_print_what_they_did(data: Path, files: Path) -> None:
    said("user", "add", "alice", "--password-stdin", data_dir=data, stdin="pw")
    said("group", "add", "devs", data_dir=data)
    said_by = {
        ("policy", "attach", "alice", str(files / "pull-only.json")):
            "attached policy pull-only to user alice",
        ("policy", "attach", "devs", str(files / "pull-only.json"), "--name", "readers"):
            "attached policy readers to group devs",
        ("policy", "detach", "alice", "pull-only"): "detached policy pull-only from user alice",
        ("policy", "detach", "devs", "readers", "--group"):
            "detached policy readers from group devs",
        ("policy", "set", "team/app", str(files / "public.json")):
            "set the policy of repository team/app",
        ("policy", "delete", "team/app"): "deleted the policy of repository team/app",
        ("policy", "set-registry", str(files / "public.json")): "set the registry policy",
        ("policy", "delete-registry",): "deleted the registry policy",
    }
    for args, line in said_by.items():
        assert said(*args, data_dir=data) == line
    assert registry("policy", "list", "alice", data_dir=data).stdout == ""


def test_lifecycle_changes_print_what_they_did(data: Path, files: Path) -> None:
    create_repository(data, "team/app")
    policy = str(files / "lifecycle.json")
    said_by = {
        ("lifecycle", "put", "team/app", policy):
            "set the lifecycle policy of repository team/app: 1 rule(s)",
        ("lifecycle", "protect", "team/app", DIGEST, "--reason", "task 42"):
            f"marked {DIGEST} in repository team/app in use (holder cli)",
        ("lifecycle", "protect", "team/app", DIGEST, "--holder", "api"):
            f"marked {DIGEST} in repository team/app in use (holder api)",
        ("lifecycle", "unprotect", "team/app", DIGEST, "--holder", "api"):
            f"removed holder api's in-use mark on {DIGEST} in repository team/app",
        ("lifecycle", "unprotect", "team/app", DIGEST):
            f"removed every in-use mark on {DIGEST} in repository team/app",
    }
    for args, line in said_by.items():
        assert said(*args, data_dir=data) == line
    assert registry("lifecycle", "in-use", "team/app", data_dir=data).stdout == ""

    ran = registry("lifecycle", "run", "team/app", data_dir=data)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == ""  # one JSON line per image, and there are none
    assert ran.stderr == "repository team/app: 0 image(s) expired, 0 kept in use\n"
    assert said("lifecycle", "delete", "team/app", data_dir=data) == (
        "deleted the lifecycle policy of repository team/app")
    assert "has no lifecycle policy" in refused("lifecycle", "get", "team/app", data_dir=data)


def test_upstream_secret_changes_print_what_they_did(data: Path) -> None:
    put = registry("upstream-secret", "put", "hub", "--username", "mirror", "--password-stdin",
                   data_dir=data, stdin="t0ken-value\n")
    assert put.returncode == 0, put.stderr
    # stdout stays the ARN alone, as scripts read it
    assert put.stdout == ("arn:aws:secretsmanager:us-east-1:000000000000:secret:"
                          "ecr-pullthroughcache/hub\n")
    assert put.stderr == "stored upstream secret hub (user mirror)\n"
    assert said("upstream-secret", "delete", "hub", data_dir=data) == (
        "deleted upstream secret hub")
    assert refused("upstream-secret", "delete", "hub", data_dir=data) == (
        "registry: no upstream secret named hub")
