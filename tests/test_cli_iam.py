"""`registry user|group|policy ...` as an administrator runs them: one process per command on
one data directory, so every command also shows that the next process sees what the last one
wrote. Mistakes exit 1 (2 for usage) with `registry: <message>` and never a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from auth.identities import Directory, KeyOwner
from auth.secrets import SecretBox, generate_secret_key
from storage.drivers.filesystem import FilesystemDriver
from storage.iam import IamStore

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = generate_secret_key()
PULL = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "ecr:BatchGetImage", "Resource": "*"}]}
REPO_POLICY = ('{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
               '"Principal": "*", "Action": "ecr:BatchGetImage"}]}\n')


def registry(*args: str, data_dir: Path | None, stdin: str | None = None,
             secret_key: str | None = SECRET_KEY) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    if secret_key is not None:
        env["REGISTRY_AUTH_SECRET_KEY"] = secret_key
    where = ["--data-dir", str(data_dir)] if data_dir is not None else []
    result = subprocess.run([sys.executable, "-m", "registry", *args, *where], input=stdin or "",
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def ok(*args: str, data_dir: Path, stdin: str | None = None) -> str:
    result = registry(*args, data_dir=data_dir, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


def fails(*args: str, data_dir: Path | None, status: int = 1, stdin: str | None = None,
          secret_key: str | None = SECRET_KEY) -> str:
    result = registry(*args, data_dir=data_dir, stdin=stdin, secret_key=secret_key)
    assert result.returncode == status, (result.stdout, result.stderr)
    if status == 1:
        assert result.stderr.startswith("registry: "), result.stderr
    return result.stderr


def authenticate(data_dir: Path, name: str, password: str) -> bool:
    async def main() -> bool:
        driver = FilesystemDriver(data_dir, fsync=False)
        try:
            return await Directory(IamStore(driver)).authenticate(name, password) is not None
        finally:
            await driver.close()

    return asyncio.run(main())


def lookup_key(data_dir: Path, key_id: str, secret_key: str = SECRET_KEY) -> KeyOwner | None:
    """Who owns `key_id` and its secret, read from storage as the server would."""
    async def main() -> KeyOwner | None:
        driver = FilesystemDriver(data_dir, fsync=False)
        try:
            return await Directory(IamStore(driver), SecretBox(secret_key)).lookup_access_key(
                key_id)
        finally:
            await driver.close()

    return asyncio.run(main())


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_users_added_by_one_process_are_listed_by_the_next(data: Path) -> None:
    ok("user", "add", "bob", "--password-stdin", data_dir=data, stdin="hunter2\n")
    ok("user", "add", "alice", "--password-stdin", data_dir=data, stdin="s3cret")
    assert ok("user", "list", data_dir=data) == "alice\nbob\n"
    assert "user 'alice' already exists" in fails("user", "add", "alice", "--password-stdin",
                                                  data_dir=data, stdin="other\n")
    ok("user", "remove", "bob", data_dir=data)
    assert ok("user", "list", data_dir=data) == "alice\n"
    assert "no user named 'bob'" in fails("user", "remove", "bob", data_dir=data)


def test_password_stdin_strips_one_trailing_newline(data: Path) -> None:
    ok("user", "add", "alice", "--password-stdin", data_dir=data, stdin="pw\n")
    ok("user", "add", "bob", "--password-stdin", data_dir=data, stdin="pw\n\n")
    assert authenticate(data, "alice", "pw")
    assert authenticate(data, "bob", "pw\n") and not authenticate(data, "bob", "pw")
    ok("user", "passwd", "alice", "--password-stdin", data_dir=data, stdin="new pw\r\n")
    assert authenticate(data, "alice", "new pw") and not authenticate(data, "alice", "pw")


def test_password_mistakes(data: Path) -> None:
    assert "must not be empty" in fails("user", "add", "alice", "--password-stdin",
                                        data_dir=data, stdin="\n")
    assert "--password-stdin" in fails("user", "add", "alice", data_dir=data, status=2)
    assert "invalid user name" in fails("user", "add", "a/b", "--password-stdin",
                                        data_dir=data, stdin="pw")
    assert ok("user", "list", data_dir=data) == ""


def test_key_create_prints_the_secret_as_json(data: Path) -> None:
    ok("user", "add", "alice", "--password-stdin", data_dir=data, stdin="pw")
    created = json.loads(ok("user", "key", "create", "alice", data_dir=data))
    assert created["UserName"] == "alice" and created["Status"] == "Active"
    assert re.fullmatch(r"AKIA[A-Z2-7]{16}", created["AccessKeyId"])
    assert len(created["SecretAccessKey"]) == 40
    owner = lookup_key(data, created["AccessKeyId"])
    assert owner == ("alice", created["SecretAccessKey"])
    listed = ok("user", "key", "list", "alice", data_dir=data)
    assert listed.startswith(created["AccessKeyId"] + "\tActive\t")
    assert created["SecretAccessKey"] not in listed

    ok("user", "key", "update", created["AccessKeyId"], "--status", "Inactive", data_dir=data)
    assert lookup_key(data, created["AccessKeyId"]) is None
    ok("user", "key", "create", "alice", data_dir=data)
    assert "already has 2 access keys" in fails("user", "key", "create", "alice", data_dir=data)
    ok("user", "key", "delete", created["AccessKeyId"], data_dir=data)
    assert len(ok("user", "key", "list", "alice", data_dir=data).splitlines()) == 1
    assert "no access key" in fails("user", "key", "delete", created["AccessKeyId"],
                                    data_dir=data)


def test_key_create_without_a_secret_key_says_how_to_set_one(data: Path) -> None:
    ok("user", "add", "alice", "--password-stdin", data_dir=data, stdin="pw")
    message = fails("user", "key", "create", "alice", data_dir=data, secret_key=None)
    assert "auth.secret_key" in message and "REGISTRY_AUTH_SECRET_KEY" in message


def test_groups_and_members(data: Path) -> None:
    ok("user", "add", "alice", "--password-stdin", data_dir=data, stdin="pw")
    ok("group", "add", "ops", data_dir=data)
    ok("group", "add", "devs", data_dir=data)
    assert ok("group", "list", data_dir=data) == "devs\nops\n"
    ok("group", "member", "add", "devs", "alice", data_dir=data)
    assert ok("group", "member", "list", "devs", data_dir=data) == "alice\n"
    assert "no group named 'qa'" in fails("group", "member", "add", "qa", "alice",
                                          data_dir=data)
    ok("group", "member", "remove", "devs", "alice", data_dir=data)
    assert ok("group", "member", "list", "devs", data_dir=data) == ""
    ok("group", "remove", "devs", data_dir=data)
    assert ok("group", "list", data_dir=data) == "ops\n"


def test_policy_attach_with_a_malformed_file_names_the_problem(data: Path,
                                                               tmp_path: Path) -> None:
    ok("user", "add", "alice", "--password-stdin", data_dir=data, stdin="pw")
    bad = tmp_path / "bad.json"
    bad.write_text('{"Version": "2012-10-17", "Statement": [\n')
    message = fails("policy", "attach", "alice", str(bad), data_dir=data)
    assert str(bad) in message and "not valid JSON" in message
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"Statement": [{"Effect": "Maybe", "Action": "ecr:*",
                                                "Resource": "*"}]}))
    assert "Effect must be Allow or Deny" in fails("policy", "attach", "alice", str(wrong),
                                                   data_dir=data)
    assert "cannot read" in fails("policy", "attach", "alice", str(tmp_path / "missing.json"),
                                  data_dir=data)
    assert ok("policy", "list", "alice", data_dir=data) == ""


def test_policy_attach_names_users_and_groups(data: Path, tmp_path: Path) -> None:
    policy = tmp_path / "pull-only.json"
    policy.write_text(json.dumps(PULL))
    ok("user", "add", "alice", "--password-stdin", data_dir=data, stdin="pw")
    ok("group", "add", "alice", data_dir=data)
    ok("group", "add", "devs", data_dir=data)
    assert "both a user and a group" in fails("policy", "attach", "alice", str(policy),
                                              data_dir=data)
    ok("policy", "attach", "alice", str(policy), "--user", data_dir=data)
    ok("policy", "attach", "devs", str(policy), "--name", "readers", data_dir=data)
    assert ok("policy", "list", "alice", "--user", data_dir=data) == "pull-only\n"
    assert ok("policy", "list", "alice", "--group", data_dir=data) == ""
    assert ok("policy", "list", "devs", data_dir=data) == "readers\n"
    assert "no user or group named 'carol'" in fails("policy", "attach", "carol", str(policy),
                                                     data_dir=data)
    ok("policy", "detach", "devs", "readers", data_dir=data)
    assert "no policy named 'readers'" in fails("policy", "detach", "devs", "readers",
                                                data_dir=data)


def test_repository_policy_set_get_delete(data: Path, tmp_path: Path) -> None:
    policy = tmp_path / "public.json"
    policy.write_text(REPO_POLICY)
    identity = tmp_path / "identity.json"
    identity.write_text(json.dumps(PULL))
    ok("policy", "set", "team/app", str(policy), data_dir=data)
    assert ok("policy", "get", "team/app", data_dir=data) == REPO_POLICY
    assert "needs a Principal" in fails("policy", "set", "team/app", str(identity),
                                        data_dir=data)
    assert ok("policy", "get", "team/app", data_dir=data) == REPO_POLICY
    ok("policy", "delete", "team/app", data_dir=data)
    assert "has no policy" in fails("policy", "get", "team/app", data_dir=data)
    assert "invalid repository name" in fails("policy", "get", "Team/App", data_dir=data)


def test_usage_errors_exit_2(data: Path) -> None:
    assert "usage:" in fails("user", data_dir=None, status=2)
    assert "usage:" in fails("policy", "attach", "alice", data_dir=data, status=2)


def test_config_file_names_the_storage_and_secret_key(tmp_path: Path) -> None:
    data = tmp_path / "configured"
    config = tmp_path / "registry.toml"
    config.write_text(f'[storage.filesystem]\nroot = "{data}"\n\n'
                      f'[auth]\nsecret_key = "{SECRET_KEY}"\n')
    result = registry("user", "add", "alice", "--password-stdin", "--config", str(config),
                      data_dir=None, stdin="pw", secret_key=None)
    assert result.returncode == 0, result.stderr
    result = registry("user", "key", "create", "alice", "--config", str(config),
                      data_dir=None, secret_key=None)
    assert result.returncode == 0, result.stderr
    assert lookup_key(data, json.loads(result.stdout)["AccessKeyId"]) is not None
