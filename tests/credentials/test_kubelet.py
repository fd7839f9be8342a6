"""The kubelet image credential provider: kubelet's request on stdin, a response it accepts on
stdout, with a password that logs in to the registry as the node; every failure is one clean
line on stderr and a non-zero exit."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest

from registry.credentials.common import CredentialError, image_host
from tests.conftest import free_port
from tests.credentials.conftest import PROVIDER, Node, assert_clean_failure, run, script

V1 = "credentialprovider.kubelet.k8s.io/v1"
V1BETA1 = "credentialprovider.kubelet.k8s.io/v1beta1"


def request(image: str, version: str = V1) -> str:
    return json.dumps({"apiVersion": version, "kind": "CredentialProviderRequest",
                       "image": image})


def seconds(go_duration: str) -> int:
    """metav1.Duration as the provider writes it: XhYmZs with leading zero units dropped."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)", go_duration)
    assert match, go_duration
    hours, minutes, secs = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + secs


@pytest.mark.parametrize("version", [V1, V1BETA1])
def test_response_carries_a_password_that_logs_in_as_the_node(node: Node, version: str) -> None:
    host = node.live.host
    repo = f"kubelet/app-{uuid.uuid4().hex[:8]}"
    done = run([script(PROVIDER)], request(f"{host}/{repo}:v1", version), node.env())
    assert done.returncode == 0, done.stderr
    response = json.loads(done.stdout)
    assert response["kind"] == "CredentialProviderResponse"
    assert response["apiVersion"] == version
    assert response["cacheKeyType"] == "Registry"
    # Cached by kubelet for less than the password's 12 hours, but for hours, not minutes.
    assert 10 * 3600 < seconds(response["cacheDuration"]) < 12 * 3600
    assert list(response["auth"]) == [host]
    auth = response["auth"][host]
    assert auth["username"] == "AWS" and auth["password"]
    basic = (auth["username"], auth["password"])
    assert httpx.get(f"{node.live.url}/v2/", auth=basic).status_code == 200
    # A token flow with it gets what the node's policy allows: pull, not push.
    token = httpx.get(f"{node.live.url}/token", auth=basic,
                      params={"service": "registry", "scope": f"repository:{repo}:pull,push"})
    assert token.status_code == 200, token.text
    assert token.json()["scope"] == f"repository:{repo}:pull"
    bearer = {"Authorization": f"Bearer {token.json()['token']}"}
    tags = httpx.get(f"{node.live.url}/v2/{repo}/tags/list", headers=bearer)
    assert tags.status_code == 404, tags.text  # authorised; the repository is just not there
    assert httpx.get(f"{node.live.url}/v2/{repo}/tags/list").status_code == 401


def test_credentials_from_a_shared_file_and_profile(node: Node) -> None:
    """A node's usual setup: the kubelet config points the plugin at a credentials file."""
    credentials = node.home / "node-credentials"
    key = node.keys["node"]
    credentials.write_text(f"[registry-node]\naws_access_key_id = {key.key_id}\n"
                           f"aws_secret_access_key = {key.secret}\n")
    credentials.chmod(0o600)
    env = node.env(user="", AWS_SHARED_CREDENTIALS_FILE=str(credentials),
                   AWS_PROFILE="registry-node")
    image = f"{node.live.host}/team/app@sha256:{'0' * 64}"
    done = run([script(PROVIDER)], request(image), env)
    assert done.returncode == 0, done.stderr
    auth = json.loads(done.stdout)["auth"][node.live.host]
    assert httpx.get(f"{node.live.url}/v2/",
                     auth=(auth["username"], auth["password"])).status_code == 200


@pytest.mark.parametrize(("stdin", "says"), [
    ("not json", "not JSON"),
    (json.dumps({"apiVersion": V1, "kind": "ExecCredential", "image": "h.example/a:b"}),
     "not a CredentialProviderRequest"),
    (request("h.example:5000/a:b", "credentialprovider.kubelet.k8s.io/v9"),
     "unsupported apiVersion"),
    (json.dumps({"apiVersion": V1, "kind": "CredentialProviderRequest"}), "no image"),
    (request("library/nginx:1"), "no registry host"),
    (request("nginx:1.27"), "no registry host"),
], ids=["garbage", "wrong-kind", "wrong-version", "no-image", "hub-image", "bare-image"])
def test_bad_requests_fail_cleanly(node: Node, stdin: str, says: str) -> None:
    done = run([script(PROVIDER)], stdin, node.env())
    assert_clean_failure(done, node)
    assert says in done.stderr
    assert done.stdout == ""


def test_bad_arguments_fail_on_one_line(node: Node) -> None:
    done = run([script(PROVIDER), "--no-such-flag"], request(f"{node.live.host}/a:b"),
               node.env())
    assert_clean_failure(done, node)


def test_refused_unreachable_or_no_credentials_fail_cleanly(node: Node) -> None:
    body = request(f"{node.live.host}/team/app:v1")
    wrong = run([script(PROVIDER)], body, node.env(AWS_SECRET_ACCESS_KEY="not-the-secret"))
    assert_clean_failure(wrong, node)
    assert "InvalidSignatureException" in wrong.stderr

    down = run([script(PROVIDER), "--endpoint-url", f"http://127.0.0.1:{free_port()}"], body,
               node.env())
    assert_clean_failure(down, node)
    assert "cannot reach" in down.stderr

    anonymous = run([script(PROVIDER)], body, node.env(user=""))
    assert_clean_failure(anonymous, node)
    assert "no AWS credentials" in anonymous.stderr


@pytest.mark.parametrize(("image", "host"), [
    ("registry.example.com/team/app:v1", "registry.example.com"),
    ("registry.example.com:5000/team/app@sha256:" + "a" * 64, "registry.example.com:5000"),
    ("localhost/app", "localhost"),
    ("127.0.0.1:5000/a/b/c:1", "127.0.0.1:5000"),
    ("Registry.Example.com/app", "Registry.Example.com"),  # kubelet matches keys as written
])
def test_registry_host_of_an_image(image: str, host: str) -> None:
    assert image_host(image) == host


@pytest.mark.parametrize("image", ["nginx", "nginx:1.27", "library/nginx", "team/app:v1",
                                   "bad_host.example/app", ""])
def test_images_on_docker_hub_name_no_registry_host(image: str) -> None:
    with pytest.raises(CredentialError):
        image_host(image)
