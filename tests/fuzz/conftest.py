"""The registries the fuzzer sends to, the images pushed to them before it starts, and the
three ways it calls them (`target`): auth off; auth on without credentials; auth on as a user
who may do anything except change the seeded repositories.

Seeded images live under `seed/`. The fuzzer is pointed at them (their names, tags and digests
are mixed into generated requests), so what must keep them intact is the registry's own
checks: digests verified, blobs content-addressed, policies enforced. With auth off anything
goes, so there the seeded names go only into requests that read; with auth on the fuzzing
user's policy denies what would change them legitimately (deletes, pushes, their repository
policy), and everything else reaches them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from auth.secrets import generate_secret_key
from tests.auth.conftest import (
    bearer,
    get_token,
    in_parallel,
    push_image,
    registry_cli,
    sha256,
    write_policy,
)
from tests.conftest import LiveRegistry, start_registry
from tests.fuzz.clients import RegistryAuth, Stats
from tests.imagebuild import MEDIA_TYPE_MANIFEST

SECRET_KEY = generate_secret_key()
PASSWORDS = {"owner": "owner: pw-0wner", "fuzzer": "fuzzer-pw-f0zz"}
SEED_REPOS = ("seed/app", "seed/public")
SEED_TAG = "v1"
# Where the fuzzer may change anything: an image is pushed there too, and upload sessions are
# opened there on demand, so that requests reach existing state.
LIVE_REPO = "fuzz/live"

# What would change a seeded repository legitimately, which the fuzzing user may not do there;
# and what would change everyone's access (a registry policy can deny even the owner).
SEED_PROTECTION = ["ecr:BatchDeleteImage", "ecr:DeleteRepository", "ecr:PutImage",
                   "ecr:SetRepositoryPolicy", "ecr:DeleteRepositoryPolicy"]
POLICIES: dict[str, dict[str, Any]] = {
    "owner": {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]},
    "fuzzer": {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ecr:*", "Resource": "*"},
        {"Effect": "Deny", "Action": SEED_PROTECTION,
         "Resource": "arn:aws:ecr:*:*:repository/seed/*"},
        {"Effect": "Deny", "Action": ["ecr:PutRegistryPolicy", "ecr:DeleteRegistryPolicy"],
         "Resource": "*"}]},
}
PUBLIC_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Sid": "Public", "Effect": "Allow", "Principal": "*",
     "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                "ecr:BatchCheckLayerAvailability"]}]}

# Both servers: no periodic lifecycle runs (a fuzzed policy would expire images on its own
# clock), failed logins never throttle (the anonymous fuzzing sends many), fast writes.
SERVER_ENV = {
    "REGISTRY_LIFECYCLE_INTERVAL": "0",
    "REGISTRY_GC_INTERVAL": "0",
    "REGISTRY_STORAGE_FILESYSTEM_FSYNC": "false",
}
AUTH_ENV = {
    **SERVER_ENV,
    "REGISTRY_AUTH_ENABLED": "true",
    "REGISTRY_AUTH_SECRET_KEY": SECRET_KEY,
    "REGISTRY_AUTH_LOGIN_FAILURES": "1000000",
    "REGISTRY_AUTH_LOGIN_ADDRESS_FAILURES": "1000000",
}


@dataclass(frozen=True)
class Seed:
    """An image pushed before the fuzzing, as pushed."""

    repo: str
    tag: str
    manifest: bytes
    blobs: dict[str, bytes]

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


@dataclass
class Server:
    live: LiveRegistry
    seeds: list[Seed]  # checked after the fuzzing
    scratch: Seed  # in LIVE_REPO: not checked
    fuzzer: RegistryAuth | None = None  # the fuzzing user's credentials (auth on)

    @property
    def auth_on(self) -> bool:
        return self.fuzzer is not None

    def owner_headers(self, *scopes: str) -> dict[str, str]:
        if not self.auth_on:
            return {}
        response = get_token(self.live.url, "owner", *scopes, password=PASSWORDS["owner"])
        assert response.status_code == 200, response.text
        return bearer(response.json()["token"])

    def new_upload(self, repo: str) -> str:
        """The id of a new blob upload session in `repo`."""
        response = httpx.post(f"{self.live.url}/v2/{repo}/blobs/uploads/", timeout=30,
                              headers=self.owner_headers(f"repository:{repo}:pull,push"))
        assert response.status_code == 202, response.text
        return response.headers["location"].rstrip("/").rsplit("/", 1)[-1]

    def new_layer_upload(self, repo: str) -> str:
        """The uploadId of a new ECR layer upload in `repo`."""
        response = requests.post(
            self.live.url + "/", data=json.dumps({"repositoryName": repo}), timeout=30,
            auth=self.fuzzer, headers={
                "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.InitiateLayerUpload",
                "Content-Type": "application/x-amz-json-1.1"})
        assert response.status_code == 200, response.text
        return str(response.json()["uploadId"])


@dataclass
class Target:
    """One way of calling one server."""

    name: str
    server: Server
    auth: requests.auth.AuthBase | None
    session: requests.Session
    stats: Stats
    # Whether seeded repository names may go into requests that change things.
    seeds_writable: bool

    @property
    def url(self) -> str:
        return self.server.live.url


def push_seeds(live: LiveRegistry, headers_for: Any) -> list[Seed]:
    """An image in each of SEED_REPOS, then one in LIVE_REPO (last in the list)."""
    seeds = []
    with httpx.Client(base_url=live.url, timeout=60) as client:
        for repo in (*SEED_REPOS, LIVE_REPO):
            pushed = push_image(client, repo, SEED_TAG, headers_for(repo))
            blobs = {sha256(pushed.config): pushed.config, sha256(pushed.layer): pushed.layer}
            seeds.append(Seed(repo, SEED_TAG, pushed.manifest, blobs))
    return seeds


def pull_differences(server: Server) -> list[str]:
    """How the seeded images now differ from what was pushed: by tag, by digest, blob by blob."""
    problems = []
    with httpx.Client(base_url=server.live.url, timeout=60, follow_redirects=True) as client:
        for seed in server.seeds:
            headers = {**server.owner_headers(f"repository:{seed.repo}:pull"),
                       "Accept": MEDIA_TYPE_MANIFEST}
            for reference in (seed.tag, seed.digest):
                got = client.get(f"/v2/{seed.repo}/manifests/{reference}", headers=headers)
                if got.status_code != 200 or got.content != seed.manifest:
                    problems.append(f"{seed.repo}:{reference}: {got.status_code} "
                                    f"{got.content[:200]!r}")
            for digest, data in seed.blobs.items():
                got = client.get(f"/v2/{seed.repo}/blobs/{digest}", headers=headers)
                if got.status_code != 200 or got.content != data:
                    problems.append(f"{seed.repo}@{digest}: {got.status_code}, "
                                    f"{len(got.content)} bytes")
    return problems


@pytest.fixture(scope="session")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    live = start_registry(tmp_path_factory.mktemp("fuzz-open") / "data", env=SERVER_ENV)
    try:
        *seeds, scratch = push_seeds(live, lambda repo: {})
        yield Server(live, seeds, scratch)
    finally:
        live.stop()


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("fuzz-auth")
    data, policies = base / "data", base / "policies"
    keys: dict[str, str] = {}

    def user(name: str) -> None:
        cli(data, "user", "add", name, "--password-stdin", stdin=PASSWORDS[name] + "\n")
        cli(data, "policy", "attach", name, str(write_policy(policies, name, POLICIES[name])))
        if name == "fuzzer":
            keys.update(json.loads(cli(data, "user", "key", "create", name)))

    in_parallel(lambda: user("owner"), lambda: user("fuzzer"))
    live = start_registry(data, env=AUTH_ENV)
    try:
        def owner(repo: str) -> dict[str, str]:
            response = get_token(live.url, "owner", f"repository:{repo}:pull,push",
                                 password=PASSWORDS["owner"])
            assert response.status_code == 200, response.text
            return bearer(response.json()["token"])

        *seeds, scratch = push_seeds(live, owner)
        cli(data, "policy", "set", "seed/public",
            str(write_policy(policies, "public", PUBLIC_POLICY)))
        fuzzer = RegistryAuth(live.url, "fuzzer", PASSWORDS["fuzzer"], keys["AccessKeyId"],
                              keys["SecretAccessKey"])
        yield Server(live, seeds, scratch, fuzzer)
    finally:
        live.stop()


def cli(data_dir: Path, *args: str, stdin: str | None = None) -> str:
    return registry_cli(data_dir, *args, stdin=stdin, secret_key=SECRET_KEY).stdout


@pytest.fixture(scope="session", params=["open", "anonymous", "authorised"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    name: str = request.param
    server: Server
    auth: requests.auth.AuthBase | None = None
    if name == "open":
        server = request.getfixturevalue("open_server")
    else:
        server = request.getfixturevalue("auth_server")
        if name == "authorised":
            auth = server.fuzzer
    stats = request.config.stash.setdefault(STATS, {}).setdefault(name, Stats())
    with requests.Session() as session:
        yield Target(name, server, auth, session, stats, seeds_writable=server.auth_on)


STATS = pytest.StashKey[dict[str, Stats]]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    found = config.stash.get(STATS, {})
    if not found:
        return
    terminalreporter.section("fuzzing (tests/fuzz)")
    for name, stats in found.items():
        terminalreporter.write_line(f"{name}: {stats.summary()}")

