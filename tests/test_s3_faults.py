"""The registry on S3 when S3 misbehaves: throttling, outages longer than the retries, dropped
connections before and after a request took effect.

One registry (`REGISTRY_STORAGE_S3_MAX_ATTEMPTS=2`, 5 MiB parts) talks to `moto_server` through
`tests/faultproxy.py`, which answers chosen requests with `503 SlowDown` or closes their
connection. botocore backs off up to 2**(n-1) s before its n-th retry, so few attempts keep
the file fast; tests that wait on back-off run their clients concurrently. What must hold:

- throttling that botocore's retries outlive is invisible to clients (monolithic and chunked
  pushes complete, pulls are byte-identical);
- a fault that outlasts the retries gives a clean OCI error (503 UNAVAILABLE, JSON body, no
  traceback in the log), the session's status names the bytes it kept, and the client
  resumes from there once the fault clears;
- a connection dropped before S3 saw the request is retried invisibly; one dropped after S3
  applied it (the retry repeats a request that already happened) is survived, or fails
  cleanly and resumably;
- after every test, every blob in the bucket matches its digest, every blob the registry
  serves is the pushed bytes, and a digest whose upload never completed is not visible.

Server bugs these tests found are strict xfails whose reason names the cause: when one is
fixed, its test passes and the marker must go.

Blobs are a few MiB: moto_server is slow, and 5 MiB parts make every push multipart.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.conftest import LiveRegistry, start_registry
from tests.faultproxy import FaultProxy, Request
from tests.s3server import CREDENTIALS, REGION, MotoServer

MiB = 1024 * 1024
PART = 5 * MiB
MAX_ATTEMPTS = 2  # REGISTRY_STORAGE_S3_MAX_ATTEMPTS
OCTET = {"Content-Type": "application/octet-stream"}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Stack:
    moto: MotoServer
    bucket: str
    proxy: FaultProxy
    registry: LiveRegistry
    client: httpx.Client
    s3: Any  # boto3 client straight to moto, bypassing the proxy
    # digest -> (repository, bytes, whether a push of it got 201)
    pushed: dict[str, tuple[str, bytes, bool]] = field(default_factory=dict, repr=False)
    verified: set[tuple[str, str]] = field(default_factory=set, repr=False)  # (key, etag)
    served: set[str] = field(default_factory=set, repr=False)  # digests pulled back intact

    def expect(self, repo: str, data: bytes) -> str:
        digest = sha256(data)
        self.pushed.setdefault(digest, (repo, data, False))
        return digest

    def completed(self, repo: str, data: bytes) -> None:
        self.pushed[sha256(data)] = (repo, data, True)


@pytest.fixture(scope="module")
def stack(moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import boto3

    bucket = moto.create_bucket()
    proxy = FaultProxy(moto.url, seed=1234).start()
    env = moto.registry_env(bucket, endpoint_url=proxy.url, max_attempts=str(MAX_ATTEMPTS),
                            part_size=str(PART))
    registry = start_registry(tmp_path_factory.mktemp("s3-faults") / "data", env=env)
    s3 = boto3.client("s3", endpoint_url=moto.url, region_name=REGION,
                      aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    client = httpx.Client(base_url=registry.url, timeout=120, follow_redirects=True)
    try:
        yield Stack(moto, bucket, proxy, registry, client, s3)
    finally:
        client.close()
        registry.stop()
        proxy.stop()


@pytest.fixture(autouse=True)
def checked(stack: Stack) -> Iterator[Stack]:
    """Each test starts without faults; afterwards, with faults cleared, nothing is corrupt
    or half-visible and the registry logged no traceback."""
    stack.proxy.clear()
    stack.proxy.reset_log()
    yield stack
    stack.proxy.clear()
    check_bucket(stack)
    check_served(stack)
    log = stack.registry.log()
    assert "Traceback" not in log, log[-4000:]


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    name = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())
    return f"faults/{'-'.join(filter(None, name.split('-')))[:60]}-{os.urandom(2).hex()}"


# -- integrity -------------------------------------------------------------------------------


def check_bucket(stack: Stack) -> None:
    """Every object under blobs/ is a plain object whose bytes hash to its key."""
    pages = stack.s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket,
                                                               Prefix="blobs/")
    for obj in (o for page in pages for o in page.get("Contents", [])):
        key, etag = obj["Key"], obj["ETag"]
        if (key, etag) in stack.verified:
            continue
        response = stack.s3.get_object(Bucket=stack.bucket, Key=key)
        assert "appendable" not in response.get("Metadata", {}), f"{key} is an append state"
        data = response["Body"].read()
        algorithm, _, hex_ = key.split("/", 3)[1:]
        assert algorithm == "sha256" and hashlib.sha256(data).hexdigest() == hex_, \
            f"{key} holds {len(data)} bytes that do not match its digest"
        stack.verified.add((key, etag))


def check_served(stack: Stack) -> None:
    """A blob HEADs 200 only if its push completed, and then GET (307 to the bucket, or
    streamed through the registry with a Range) returns exactly the pushed bytes."""
    for digest, (repo, data, completed) in stack.pushed.items():
        head = stack.client.head(f"/v2/{repo}/blobs/{digest}")
        if not completed:
            assert head.status_code == 404, f"{digest} never completed but HEADs {head}"
            continue
        assert head.status_code == 200, f"{digest} completed but HEADs {head.status_code}"
        assert int(head.headers["content-length"]) == len(data)
        if digest in stack.served:
            continue
        redirected = stack.client.get(f"/v2/{repo}/blobs/{digest}")
        assert redirected.status_code == 200 and sha256(redirected.content) == digest
        streamed = stack.client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=0-"})
        assert streamed.status_code == 206 and sha256(streamed.content) == digest
        stack.served.add(digest)


# -- client ----------------------------------------------------------------------------------


def assert_oci_error(response: httpx.Response, status: int, *codes: str) -> str:
    context = f"{response.request.method} {response.request.url.path} -> " \
        f"{response.status_code}: {response.text[:300]!r}"
    assert response.status_code == status, context
    assert response.headers.get("content-type", "").startswith("application/json"), context
    errors = response.json()["errors"]
    assert errors and isinstance(errors[0]["message"], str), context
    assert "Traceback" not in response.text, context
    if codes:
        assert errors[0]["code"] in codes, context
    return str(errors[0]["code"])


def start(client: httpx.Client, repo: str) -> str:
    response = client.post(f"/v2/{repo}/blobs/uploads/")
    assert response.status_code == 202, response.text
    return response.headers["location"]


def patch(client: httpx.Client, location: str, data: bytes, offset: int) -> httpx.Response:
    return client.patch(location, content=data, headers={
        **OCTET, "Content-Range": f"{offset}-{offset + len(data) - 1}",
        "Content-Length": str(len(data))})


def put(client: httpx.Client, location: str, digest: str, data: bytes = b"") -> httpx.Response:
    return client.put(location, params={"digest": digest}, content=data, headers=OCTET)


def status(client: httpx.Client, location: str) -> tuple[int, str]:
    """The upload's size from GET on its location, and the location to continue at."""
    response = client.get(location)
    assert response.status_code == 204, response.text
    last = int(response.headers["range"].split("-")[1])
    size = 0 if last == 0 and response.headers["range"] == "0-0" else last + 1
    return size, response.headers.get("location", location)


def push_chunked(client: httpx.Client, repo: str, data: bytes, chunk: int) -> httpx.Response:
    location = start(client, repo)
    for offset in range(0, len(data), chunk):
        response = patch(client, location, data[offset:offset + chunk], offset)
        assert response.status_code == 202, response.text
        assert response.headers["range"] == f"0-{offset + len(data[offset:offset + chunk]) - 1}"
        location = response.headers["location"]
    return put(client, location, sha256(data))


@dataclass
class Outcome:
    errors: list[tuple[int, str]] = field(default_factory=list)  # (status, OCI code) seen
    resumed_at: list[int] = field(default_factory=list)


def push_resumably(client: httpx.Client, repo: str, data: bytes, chunk: int,
                   tries: int = 3) -> Outcome:
    """A careful client: chunked push; after any error (which must be a clean OCI error) it
    asks the session for its size and continues from there; at most `tries` errors."""
    outcome = Outcome()
    digest = sha256(data)
    location = start(client, repo)
    offset = 0
    while len(outcome.errors) < tries:
        if offset < len(data):
            response = patch(client, location, data[offset:offset + chunk], offset)
            if response.status_code == 202:
                location = response.headers["location"]
                offset = int(response.headers["range"].split("-")[1]) + 1
                continue
        else:
            response = put(client, location, digest)
            if response.status_code == 201:
                assert response.headers["docker-content-digest"] == digest
                return outcome
        code = assert_oci_error(response, response.status_code)
        assert response.status_code in (409, 416, 503), response.text
        outcome.errors.append((response.status_code, code))
        offset, location = status(client, location)
        outcome.resumed_at.append(offset)
    raise AssertionError(f"push did not complete after {tries} errors: {outcome}")


def pull_identical(stack: Stack, repo: str, data: bytes) -> None:
    """GET the whole blob (307 to a presigned URL, through the proxy to moto) and GET it with
    `Range: bytes=0-` (streamed through the registry): both must be exactly `data`."""
    digest = sha256(data)
    for headers in ({}, {"Range": "bytes=0-"}):
        response = stack.client.get(f"/v2/{repo}/blobs/{digest}", headers=headers)
        assert response.status_code in (200, 206), response.text
        assert response.content == data
    stack.served.add(digest)


# -- (a) throttling that the retries outlive --------------------------------------------------


def test_throttling_is_retried_invisibly(checked: Stack, repo: str) -> None:
    stack, proxy = checked, checked.proxy
    # 20 % of all requests fail, never a retry: every request succeeds on its second attempt.
    fault = proxy.slow_down(fraction=0.2, spare_retries=True)
    blobs = {"monolithic": os.urandom(11 * MiB), "chunked": os.urandom(11 * MiB + 17),
             "post": os.urandom(3 * MiB)}
    for data in blobs.values():
        stack.expect(repo, data)

    def push(kind: str) -> None:
        data = blobs[kind]
        with httpx.Client(base_url=stack.registry.url, timeout=120) as client:
            if kind == "monolithic":  # POST, then one PUT with the whole body
                response = put(client, start(client, repo), sha256(data), data)
            elif kind == "chunked":  # PATCHes that straddle part boundaries
                response = push_chunked(client, repo, data, 4 * MiB + 1)
            else:  # a single POST ?digest= (below one part)
                response = client.post(f"/v2/{repo}/blobs/uploads/",
                                       params={"digest": sha256(data)}, content=data,
                                       headers=OCTET)
            assert response.status_code == 201, f"{kind}: {response.text}"
            stack.completed(repo, data)
            # streamed through the registry (its GetObject is retried) while faults go on
            response = client.get(f"/v2/{repo}/blobs/{sha256(data)}",
                                  headers={"Range": "bytes=0-"})
            assert response.status_code == 206 and response.content == data, kind

    # Concurrently: the retries' back-off (up to 1 s each) dominates the time, not the bytes.
    with ThreadPoolExecutor(len(blobs)) as pool:
        for done in [pool.submit(push, kind) for kind in blobs]:
            done.result()
    assert fault.fired >= 10, f"only {fault.fired} of {fault.matched} requests failed"
    assert proxy.count(action="503") == fault.fired
    assert proxy.count(retries_only=True) >= fault.fired
    proxy.clear()
    for data in blobs.values():
        pull_identical(stack, repo, data)


# -- (b) faults that outlast the retries -----------------------------------------------------


def test_part_outage_chunked_push_resumes(checked: Stack, repo: str) -> None:
    stack, client, proxy = checked, checked.client, checked.proxy
    data = os.urandom(14 * MiB + 5)
    digest = stack.expect(repo, data)
    location = start(client, repo)
    response = patch(client, location, data[:6 * MiB], 0)  # part 1 stored, 1 MiB tail
    assert response.status_code == 202, response.text
    location = response.headers["location"]

    outage = proxy.slow_down(operation="UploadPart")  # every attempt, until cleared
    response = patch(client, location, data[6 * MiB:12 * MiB], 6 * MiB)
    assert_oci_error(response, 503, "UNAVAILABLE")
    assert outage.fired >= MAX_ATTEMPTS  # one part, retried to the limit, then given up
    # Nothing received is lost: the part that could not be stored is kept with the tail.
    size, location = status(client, location)
    assert size == 12 * MiB
    response = put(client, location, digest, data[size:])  # completing needs a part too
    assert_oci_error(response, 503, "UNAVAILABLE")
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
    size, location = status(client, location)
    assert 12 * MiB <= size <= len(data)

    proxy.remove(outage)
    if size < len(data):
        response = patch(client, location, data[size:], size)
        assert response.status_code == 202, response.text
        location = response.headers["location"]
    response = put(client, location, digest)
    assert response.status_code == 201, response.text
    stack.completed(repo, data)
    pull_identical(stack, repo, data)


def test_part_outage_monolithic_push_resumes(checked: Stack, repo: str) -> None:
    stack, client, proxy = checked, checked.client, checked.proxy
    data = os.urandom(8 * MiB + 3)  # one full part and a tail: the part fails at the end
    digest = stack.expect(repo, data)
    location = start(client, repo)
    outage = proxy.slow_down(operation="UploadPart")
    response = put(client, location, digest, data)
    assert_oci_error(response, 503, "UNAVAILABLE")
    assert outage.fired >= MAX_ATTEMPTS
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
    size, location = status(client, location)
    assert size == len(data)  # the whole body arrived and is kept

    proxy.remove(outage)
    response = put(client, location, digest)
    assert response.status_code == 201, response.text
    stack.completed(repo, data)
    pull_identical(stack, repo, data)


def test_completion_outage_is_retryable(checked: Stack, repo: str) -> None:
    """CompleteMultipartUpload, then the server-side copy to the content address, fail for
    longer than the retries: each PUT ?digest= is a clean 503 and the next one succeeds."""
    stack, client, proxy = checked, checked.client, checked.proxy
    data = os.urandom(7 * MiB)
    digest = stack.expect(repo, data)
    location = start(client, repo)
    response = patch(client, location, data, 0)
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    for operation in ("CompleteMultipartUpload", "CopyObject"):
        outage = proxy.slow_down(operation=operation)
        response = put(client, location, digest)
        assert_oci_error(response, 503, "UNAVAILABLE")
        assert outage.fired >= MAX_ATTEMPTS, operation
        assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
        assert status(client, location)[0] == len(data)
        proxy.remove(outage)
    response = put(client, location, digest)
    assert response.status_code == 201, response.text
    stack.completed(repo, data)
    pull_identical(stack, repo, data)


def _if_match(request: Request) -> bool:
    return "if-match" in request.headers


def _layer_link(request: Request) -> bool:
    return "/_layers/" in request.path


def test_state_record_outage_leaves_session_resumable(checked: Stack, repo: str) -> None:
    stack, client, proxy = checked, checked.client, checked.proxy
    data = os.urandom(9 * MiB)
    digest = stack.expect(repo, data)
    location = start(client, repo)
    response = patch(client, location, data[:6 * MiB], 0)  # part 1 and a 1 MiB tail
    assert response.status_code == 202, response.text
    location = response.headers["location"]

    # The new tail object is written, then the state record that would name it fails.
    outage = proxy.slow_down(operation="PutObject", predicate=_if_match)
    response = patch(client, location, data[6 * MiB:8 * MiB], 6 * MiB)  # tail only
    assert_oci_error(response, 503, "UNAVAILABLE")
    assert outage.fired >= MAX_ATTEMPTS
    size, location = status(client, location)
    assert size == 6 * MiB  # the record was not updated: the client sends those bytes again

    proxy.remove(outage)
    response = patch(client, location, data[size:], size)
    assert response.status_code == 202, response.text
    response = put(client, response.headers["location"], digest)
    assert response.status_code == 201, response.text
    stack.completed(repo, data)
    pull_identical(stack, repo, data)


def test_link_outage_completion_is_retryable(checked: Stack, repo: str) -> None:
    stack, client, proxy = checked, checked.client, checked.proxy
    data = os.urandom(2 * MiB)
    digest = stack.expect(repo, data)
    location = start(client, repo)
    outage = proxy.slow_down(operation="PutObject", predicate=_layer_link)
    response = put(client, location, digest, data)
    assert_oci_error(response, 503, "UNAVAILABLE")
    assert outage.fired >= MAX_ATTEMPTS
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
    proxy.remove(outage)
    response = put(client, location, digest)
    assert response.status_code == 201, response.text  # 400 DIGEST_INVALID here
    stack.completed(repo, data)


# -- (d) dropped connections -----------------------------------------------------------------

# Which S3 request of a chunked push loses its connection, once.
DROP_TARGETS: dict[str, dict[str, Any]] = {
    "tail-PutObject": {"operation": "PutObject",  # `<key>#tail-<random>` (`#` is %23)
                       "predicate": lambda r: "%23tail" in r.path or "#tail" in r.path},
    "state-create-PutObject": {"operation": "PutObject",
                               "predicate": lambda r: "if-none-match" in r.headers},
    "state-update-PutObject": {"operation": "PutObject", "predicate": _if_match},
    "UploadPart": {"operation": "UploadPart"},
    "CompleteMultipartUpload": {"operation": "CompleteMultipartUpload"},
    "CopyObject": {"operation": "CopyObject"},
    "link-PutObject": {"operation": "PutObject", "predicate": _layer_link},
}

KNOWN_DROP_AFTER_BUGS: dict[str, pytest.MarkDecorator] = {}


def test_dropped_before_forwarding_is_invisible(checked: Stack, repo: str) -> None:
    """Every kind of request of a chunked push loses its connection once before S3 saw it:
    botocore's retries hide all of it."""
    stack, client, proxy = checked, checked.client, checked.proxy
    faults = {target: proxy.drop("before", count=1, **match)
              for target, match in DROP_TARGETS.items()}
    data = os.urandom(6 * MiB + 7)  # PATCH 4 MiB (a tail), PATCH 2 MiB (a part), PUT
    stack.expect(repo, data)
    response = push_chunked(client, repo, data, 4 * MiB)
    assert response.status_code == 201, response.text
    stack.completed(repo, data)
    assert {t: f.fired for t, f in faults.items()} == {t: 1 for t in faults}
    pull_identical(stack, repo, data)


@pytest.mark.parametrize("target", [
    pytest.param(t, marks=[KNOWN_DROP_AFTER_BUGS[t]] if t in KNOWN_DROP_AFTER_BUGS else [])
    for t in DROP_TARGETS])
def test_dropped_after_forwarding(checked: Stack, repo: str, target: str) -> None:
    """One S3 request takes effect but its answer is lost (botocore retries a request that
    already happened): the push completes, or fails with a clean OCI error (409/416/503) and
    resumes from the size the session reports."""
    stack, client, proxy = checked, checked.client, checked.proxy
    data = os.urandom(6 * MiB + 7)
    stack.expect(repo, data)
    fault = proxy.drop("after", count=1, **DROP_TARGETS[target])
    outcome = push_resumably(client, repo, data, 4 * MiB)
    stack.completed(repo, data)
    assert fault.fired == 1, f"the {target} request was never dropped"
    pull_identical(stack, repo, data)
    assert all(offset <= len(data) for offset in outcome.resumed_at), outcome


def test_dropped_connections_on_monolithic_push(checked: Stack, repo: str) -> None:
    """Each kind of request of a single-PUT push drops once, alternately before and after."""
    stack, client, proxy = checked, checked.client, checked.proxy
    faults = [proxy.drop("before" if i % 2 else "after", count=1, **DROP_TARGETS[target])
              for i, target in enumerate(("UploadPart", "tail-PutObject",
                                          "CompleteMultipartUpload", "CopyObject"))]
    faults.append(proxy.drop("before", count=1, operation="PutObject", predicate=_if_match))
    data = os.urandom(12 * MiB)
    digest = stack.expect(repo, data)
    location = start(client, repo)
    response = put(client, location, digest, data)
    assert response.status_code == 201, response.text
    stack.completed(repo, data)
    assert [f.fired for f in faults] == [1] * len(faults)
    pull_identical(stack, repo, data)


def test_max_attempts_counts_every_attempt(checked: Stack, repo: str) -> None:
    stack, client, proxy = checked, checked.client, checked.proxy
    data = os.urandom(1 * MiB)
    digest = stack.expect(repo, data)
    location = start(client, repo)
    outage = proxy.slow_down(operation="PutObject", predicate=_layer_link)
    response = put(client, location, digest, data)
    assert_oci_error(response, 503, "UNAVAILABLE")
    assert outage.fired == MAX_ATTEMPTS  # fires MAX_ATTEMPTS + 1 times


# -- the proxy itself ------------------------------------------------------------------------


def test_proxy_streams_bodies_and_counts(checked: Stack) -> None:
    """Bodies pass through intact (Expect: 100-continue, multi-MiB); faults fire as asked, and
    the client's retries are recognised by what arrives."""
    import boto3
    from botocore.config import Config

    stack, proxy = checked, checked.proxy
    s3 = boto3.client(
        "s3", endpoint_url=proxy.url, region_name=REGION,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"mode": "standard", "total_max_attempts": 3},
                      s3={"addressing_style": "path"}))
    proxy.reset_log()
    data = os.urandom(6 * MiB + 1)
    proxy.drop("before", count=1, operation="PutObject")
    proxy.drop("after", count=1, operation="GetObject")
    s3.put_object(Bucket=stack.bucket, Key="proxy-test/object", Body=data)
    assert s3.get_object(Bucket=stack.bucket, Key="proxy-test/object")["Body"].read() == data
    puts = [s for s in proxy.requests if s.path.endswith("/proxy-test/object")]
    assert [(s.operation, s.action, s.body_bytes, s.retry) for s in puts] == [
        ("PutObject", "drop-before", len(data), False), ("PutObject", "forward", len(data), True),
        ("GetObject", "drop-after", 0, False), ("GetObject", "forward", 0, True)]

    fault = proxy.slow_down(count=1, operation="HeadObject")
    with pytest.raises(ClientError) as caught:  # a fault, then the real answer: 404
        s3.head_object(Bucket=stack.bucket, Key="proxy-test/absent")
    assert caught.value.response["Error"]["Code"] == "404"
    assert fault.fired == 1 and proxy.count(operation="HeadObject", action="503") == 1
    heads = [s for s in proxy.requests if s.path.endswith("/proxy-test/absent")]
    assert [(s.action, s.status, s.retry) for s in heads] == [("503", None, False),
                                                             ("forward", 404, True)]
    assert proxy.count(path=f"/{stack.bucket}/proxy-test/absent", retries_only=True) == 1
    stack.s3.delete_object(Bucket=stack.bucket, Key="proxy-test/object")
