"""`registry taskdef resolve|release` against a live registry's storage, on both backends: the
content is pushed over /v2/, the command runs as a subprocess on the same data directory or
bucket, and the pins it records are seen by `registry lifecycle in-use` and `run`."""

from __future__ import annotations

import asyncio
import copy
import json
import os
from pathlib import Path
from typing import Any

import httpx

from registry.app import build_driver
from storage import paths
from storage.store import Store
from tests.conftest import LiveRegistry
from tests.registry.util import build_image, push_image
from tests.taskdef.util import (
    arm64_image,
    in_use,
    lifecycle,
    push,
    push_index,
    taskdef,
    write_json,
)

EXPIRE_ALL_BUT_NEWEST = json.dumps({"rules": [{
    "rulePriority": 1, "description": "keep only the newest image",
    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
    "action": {"type": "expire"}}]})


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(3).hex()}"


def task(family: str, images: dict[str, str], arch: str | None = None,
         os_family: str | None = None) -> dict[str, Any]:
    """A RegisterTaskDefinition input with one container per `images` entry."""
    doc: dict[str, Any] = {
        "family": family, "networkMode": "awsvpc", "cpu": "256", "memory": "512",
        "requiresCompatibilities": ["FARGATE"],
        "containerDefinitions": [
            {"name": name, "image": image, "essential": index == 0, "cpu": 0,
             "portMappings": [{"containerPort": 8080 + index, "protocol": "tcp"}],
             "environment": [{"name": "MODE", "value": "prod"}]}
            for index, (name, image) in enumerate(images.items())],
    }
    if arch or os_family:
        doc["runtimePlatform"] = {"cpuArchitecture": arch or "X86_64",
                                  "operatingSystemFamily": os_family or "LINUX"}
    return doc


def test_resolve_pins_our_image_and_leaves_others(live: LiveRegistry, http: httpx.Client,
                                                  tmp_path: Path) -> None:
    repo = unique("shop/web")
    image = push_image(http, repo, "v1")
    family = unique("web")
    doc = task(family, {"web": f"{live.host}/{repo}:v1",
                        "proxy": "docker.io/library/nginx:1.27"})
    source = write_json(tmp_path / "task.json", doc)
    pinned = tmp_path / "pinned.json"

    done = taskdef(live, "resolve", str(source), "-o", str(pinned), "--registry", live.host)

    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    expected = copy.deepcopy(doc)
    expected["containerDefinitions"][0]["image"] = f"{live.host}/{repo}@{image.digest}"
    assert json.loads(pinned.read_text()) == expected
    skipped = [line for line in done.stderr.splitlines() if "proxy" in line]
    assert skipped and "docker.io/library/nginx:1.27" in skipped[0]
    assert "skipped" in skipped[0]
    assert in_use(live, repo) == {image.digest}

    # Without --registry, the host of server.public_url names this registry.
    doc["containerDefinitions"][0]["image"] = f"registry.example.test/{repo}:v1"
    write_json(source, doc)
    done = taskdef(live, "resolve", str(source),
                   env={"REGISTRY_SERVER_PUBLIC_URL": "https://Registry.Example.test"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["containerDefinitions"][0]["image"] == \
        f"registry.example.test/{repo}@{image.digest}"


def test_arm64_task_refuses_amd64_only_images(live: LiveRegistry, http: httpx.Client,
                                              tmp_path: Path) -> None:
    repo = unique("shop/api")
    push_image(http, repo, "v1")  # an image manifest whose config says linux/amd64
    push_index(http, repo, "multi", [build_image()])  # an index with only linux/amd64
    images = {"api": f"{live.host}/{repo}:v1", "jobs": f"{live.host}/{repo}:multi"}
    source = write_json(tmp_path / "task.json", task(unique("api"), images, arch="ARM64"))
    pinned = tmp_path / "pinned.json"

    done = taskdef(live, "resolve", str(source), "-o", str(pinned), "--registry", live.host)

    assert done.returncode == 1
    for name, image in images.items():
        problems = [line for line in done.stderr.splitlines() if f"container {name}:" in line]
        assert len(problems) == 1, done.stderr
        assert image in problems[0]
        assert "linux/arm64" in problems[0] and "linux/amd64" in problems[0]
    assert not pinned.exists()
    assert in_use(live, repo) == set()


def test_arm64_task_pins_a_multi_platform_index(live: LiveRegistry, http: httpx.Client,
                                                tmp_path: Path) -> None:
    repo = unique("shop/worker")
    amd64, arm64 = build_image(), arm64_image()
    index = push_index(http, repo, "multi", [amd64, arm64])
    family = unique("worker")
    host = f"localhost:{live.port}"
    described: dict[str, Any] = {"taskDefinition": {
        **task(family, {"worker": f"{host}/{repo}:multi"}, arch="ARM64"),
        "taskDefinitionArn": f"arn:aws:ecs:us-east-1:123456789012:task-definition/{family}:3",
        "revision": 3, "status": "ACTIVE"}, "tags": [{"key": "team", "value": "shop"}]}
    source = write_json(tmp_path / "described.json", described)

    # Without --registry or public_url: localhost with the configured port is this registry.
    done = taskdef(live, "resolve", str(source), env={"REGISTRY_SERVER_PORT": str(live.port)})

    assert done.returncode == 0, done.stderr
    expected = copy.deepcopy(described)
    expected["taskDefinition"]["containerDefinitions"][0]["image"] = f"{host}/{repo}@{index}"
    assert json.loads(done.stdout) == expected
    # The index is the image: its children are owned by it and need no marks of their own.
    assert in_use(live, repo) == {index}


def test_every_problem_is_reported_and_nothing_is_written(live: LiveRegistry,
                                                          http: httpx.Client,
                                                          tmp_path: Path) -> None:
    repo = unique("shop/cart")
    good = push_image(http, repo, "v1").digest
    push(http, repo, "arm", arm64_image())
    host = live.host
    missing = "sha256:" + "0" * 64
    broken = {
        "no-repo": f"{host}/{repo}-gone:v1",
        "no-tag": f"{host}/{repo}:v9",
        "no-digest": f"{host}/{repo}@{missing}",
        "wrong-platform": f"{host}/{repo}:arm",
        "bad-name": f"{host}/Shop/Cart:v1",
        "bad-tag": f"{host}/{repo}:v1!",
    }
    source = write_json(tmp_path / "task.json", task(unique("cart"), {
        "good": f"{host}/{repo}:v1", **broken, "sidecar": "public.ecr.aws/nginx/nginx:1"}))
    pinned = tmp_path / "pinned.json"

    done = taskdef(live, "resolve", str(source), "-o", str(pinned), "--registry", host)

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    for name, image in broken.items():
        assert any(f"container {name}:" in line and image in line for line in lines), \
            f"{name} not reported:\n{done.stderr}"
    assert not any("container good:" in line for line in lines), done.stderr
    assert "tag v9 not found" in done.stderr
    assert f"manifest {missing} not found" in done.stderr
    assert "does not exist" in done.stderr
    assert not pinned.exists()
    assert done.stdout == ""
    assert in_use(live, repo) == set()  # the good image is not marked either

    # An OS this cannot check is a problem too, even when every image exists.
    windows = write_json(tmp_path / "windows.json", task(
        unique("cart"), {"good": f"{host}/{repo}@{good}"}, os_family="WINDOWS_SERVER_2022_CORE"))
    done = taskdef(live, "resolve", str(windows), "-o", str(pinned), "--registry", host)
    assert done.returncode == 1
    assert "WINDOWS_SERVER_2022_CORE" in done.stderr
    assert not pinned.exists()
    assert in_use(live, repo) == set()


def test_pins_survive_lifecycle_until_every_family_releases(live: LiveRegistry,
                                                             http: httpx.Client,
                                                             tmp_path: Path) -> None:
    repo = unique("shop/search")
    v1, v2, v3 = (push_image(http, repo, tag).digest for tag in ("v1", "v2", "v3"))
    web, api = unique("web"), unique("api")

    def resolve(family: str, tag: str, digest: str) -> None:
        source = write_json(tmp_path / f"{family}.json",
                            task(family, {"app": f"{live.host}/{repo}:{tag}"}))
        done = taskdef(live, "resolve", str(source), "--registry", live.host)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["containerDefinitions"][0]["image"] == \
            f"{live.host}/{repo}@{digest}"

    resolve(web, "v1", v1)
    resolve(api, "v1", v1)
    assert in_use(live, repo) == {v1}

    # A policy that keeps only the newest image expires v2, and keeps v1 because it is in use.
    policy = tmp_path / "policy.json"
    policy.write_text(EXPIRE_ALL_BUT_NEWEST)
    assert lifecycle(live, "put", repo, str(policy)).returncode == 0
    ran = lifecycle(live, "run", repo)
    assert ran.returncode == 0, ran.stderr
    actions = {r["imageDigest"]: r["action"] for r in map(json.loads, ran.stdout.splitlines())}
    assert actions == {v1: "keep (in use)", v2: "expired"}
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    assert http.get(f"/v2/{repo}/manifests/{v1}", headers=accept).status_code == 200
    assert http.get(f"/v2/{repo}/manifests/{v2}", headers=accept).status_code == 404

    # Releasing web leaves api's mark on the same image.
    done = taskdef(live, "release", web)
    assert done.returncode == 0, done.stderr
    assert in_use(live, repo) == {v1}

    # Resolving api again moves its mark: v1 is no longer held by anyone.
    resolve(api, "v3", v3)
    assert in_use(live, repo) == {v3}

    done = taskdef(live, "release", api)
    assert done.returncode == 0, done.stderr
    assert in_use(live, repo) == set()

    done = taskdef(live, "release", api)
    assert done.returncode == 1
    assert api in done.stderr and "unknown" in done.stderr


def test_storage_errors_are_reported_without_a_traceback(live: LiveRegistry, http: httpx.Client,
                                                         tmp_path: Path) -> None:
    repo = unique("shop/broken")
    push_image(http, repo, "v1")

    async def corrupt() -> None:
        store = Store(build_driver(live.settings()))
        try:
            await store.driver.put(paths.tag(repo, "v1"), b"not a record")
        finally:
            await store.close()

    asyncio.run(corrupt())
    source = write_json(tmp_path / "task.json",
                        task(unique("broken"), {"app": f"{live.host}/{repo}:v1"}))
    pinned = tmp_path / "pinned.json"

    done = taskdef(live, "resolve", str(source), "-o", str(pinned), "--registry", live.host)

    assert done.returncode == 1
    assert done.stderr.startswith("registry: storage: "), done.stderr
    assert "Traceback" not in done.stderr
    assert not pinned.exists()
