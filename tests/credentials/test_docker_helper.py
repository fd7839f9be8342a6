"""The docker credential helper's protocol (get, store, erase, list, version) and its cache:
private files, reused while the password is good, refreshed before it expires, forgotten on
erase."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import httpx
import pytest

from registry.credentials.common import CredentialError, server_host
from tests.conftest import free_port
from tests.credentials.conftest import HELPER, Node, assert_clean_failure, run, script

NOT_FOUND = "credentials not found in native keychain"


def helper(node: Node, action: str, stdin: str, env: dict[str, str]) -> tuple[int, str, str]:
    done = run([script(HELPER), action], stdin, env)
    assert "Traceback" not in done.stderr
    for secret in node.secrets:
        assert secret not in done.stderr
    return done.returncode, done.stdout, done.stderr


def test_get_mints_caches_privately_and_reuses(node: Node, tmp_path: Path) -> None:
    env = node.env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    server = node.live.host
    code, out, err = helper(node, "get", server + "\n", env)
    assert code == 0, err
    answer = json.loads(out)
    assert answer["ServerURL"] == server and answer["Username"] == "AWS"
    assert httpx.get(f"{node.live.url}/v2/",
                     auth=(answer["Username"], answer["Secret"])).status_code == 200

    cache = tmp_path / "cache" / "registry-credentials"
    files = list(cache.glob("*.json"))
    assert len(files) == 1
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert list(cache.iterdir()) == files  # no temporary file left behind

    # The registry is not asked again while the password is good: with its API unreachable,
    # every spelling of the server is answered from the cache.
    offline = {**env, "REGISTRY_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    for spelling in (f"https://{server}", f"http://{server}/v1/", server.upper()):
        code, out, err = helper(node, "get", spelling, offline)
        assert code == 0, err
        again = json.loads(out)
        assert again == {"ServerURL": spelling, "Username": "AWS", "Secret": answer["Secret"]}

    code, out, _ = helper(node, "list", "", env)
    assert code == 0 and json.loads(out) == {server: "AWS"}

    # store is accepted and ignored: a login's password does not replace minted ones.
    code, _, _ = helper(node, "store", json.dumps(
        {"ServerURL": server, "Username": "someone", "Secret": "typed-at-login"}), env)
    assert code == 0
    code, out, _ = helper(node, "get", server, offline)
    assert code == 0 and json.loads(out)["Secret"] == answer["Secret"]

    # erase forgets it: the next get must ask the registry, which is out of reach.
    code, _, _ = helper(node, "erase", f"https://{server}/v1/", env)
    assert code == 0
    assert list(cache.glob("*.json")) == []
    assert json.loads(helper(node, "list", "", env)[1]) == {}
    missing = run([script(HELPER), "get"], server, offline)
    assert_clean_failure(missing, node)
    assert missing.returncode == 1 and missing.stdout.strip() == NOT_FOUND
    assert "cannot reach" in missing.stderr


def test_a_password_about_to_expire_is_minted_again(node: Node, tmp_path: Path) -> None:
    env = node.env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    server = node.live.host
    cache = tmp_path / "cache" / "registry-credentials"
    code, _, err = helper(node, "get", server, env)
    assert code == 0, err
    [entry] = cache.glob("*.json")
    stale = json.loads(entry.read_text())
    stale.update(Secret="stale-password", ExpiresAt=time.time() + 10 * 60)
    entry.write_text(json.dumps(stale))

    code, out, err = helper(node, "get", server, env)
    assert code == 0, err
    fresh = json.loads(out)["Secret"]
    assert fresh != "stale-password"
    assert httpx.get(f"{node.live.url}/v2/", auth=("AWS", fresh)).status_code == 200
    refreshed = json.loads(entry.read_text())
    assert refreshed["Secret"] == fresh and refreshed["ExpiresAt"] > time.time() + 11 * 3600
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600


def test_unknown_or_refused_servers_are_not_found(node: Node, tmp_path: Path) -> None:
    env = node.env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    # No endpoint override: the API is https://<host>, and nothing answers there.
    elsewhere = {k: v for k, v in env.items() if k != "REGISTRY_ENDPOINT_URL"}
    nowhere = run([script(HELPER), "get"], f"127.0.0.1:{free_port()}", elsewhere)
    assert_clean_failure(nowhere, node)
    assert nowhere.stdout.strip() == NOT_FOUND

    refused = run([script(HELPER), "get"], node.live.host,
                  node.env(XDG_CACHE_HOME=str(tmp_path / "cache"),
                           AWS_SECRET_ACCESS_KEY="not-the-secret"))
    assert_clean_failure(refused, node)
    assert refused.stdout.strip() == NOT_FOUND
    assert "InvalidSignatureException" in refused.stderr
    assert not (tmp_path / "cache" / "registry-credentials").exists() or \
        list((tmp_path / "cache" / "registry-credentials").glob("*.json")) == []


def test_version_and_unknown_actions(node: Node) -> None:
    code, out, _ = helper(node, "version", "", node.env())
    assert code == 0 and out.strip()
    code, out, err = helper(node, "frobnicate", "", node.env())
    assert code != 0 and out == "" and "usage" in err


@pytest.mark.parametrize(("url", "host"), [
    ("registry.example.com", "registry.example.com"),
    ("registry.example.com:5000", "registry.example.com:5000"),
    ("https://Registry.Example.com:5000", "registry.example.com:5000"),
    ("http://127.0.0.1:5000/v1/", "127.0.0.1:5000"),
    ("https://registry.example.com/v2/team/app", "registry.example.com"),
    ("  localhost:5000\n", "localhost:5000"),
])
def test_server_urls_normalise_to_the_host(url: str, host: str) -> None:
    assert server_host(url) == host


@pytest.mark.parametrize("url", ["", "https://", "ftp://registry.example.com",
                                 "../../etc/passwd", "host with spaces"])
def test_server_urls_without_a_host_are_refused(url: str) -> None:
    with pytest.raises(CredentialError):
        server_host(url)
