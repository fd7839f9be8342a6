"""Property-based fuzzing of every operation in docs/openapi.yaml against live registries.

schemathesis turns each operation's description into Hypothesis strategies: requests that fit
it (positive) and requests that break it in one place or more (negative: wrong types, values
out of range, missing or extra parameters, bodies of another shape). Each request goes to a
real `registry serve`, auth off and on (anonymous, then as a user), and whatever it was:

- the answer is never a 5xx;
- an error has its front-end's shape (OCI `errors` on /v2/ and /token, AWS `__type` on ECR);
- a success fits the documented response;
- and after the run, every image pushed before it pulls byte-identical.

CI runs FUZZ_EXAMPLES (default 8) examples per operation and way of calling, with
Hypothesis's derandomised seed so a failure reproduces; a longer, random run:

    FUZZ_EXAMPLES=200 FUZZ_RANDOM=1 python -m pytest tests/fuzz   # about 40 minutes here
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import pytest
import requests
import schemathesis
import yaml  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from registry.ecr import READ_ONLY_PREFIXES, TARGET_PREFIX
from tests.fuzz.answers import oci_codes, problems, reproduction
from tests.fuzz.conftest import Target, pull_differences
from tests.fuzz.ecr_openapi import DOCUMENT

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"
# A pull-through cache rule's upstream is where the server then fetches from: always a
# closed loopback port, so no fuzzed request sends the server anywhere else.
UPSTREAM = "http://127.0.0.1:9"

# ECR's bodies are JSON under their own media type.
schemathesis.serializer.alias(["application/x-amz-json-1.1"], "application/json")
SCHEMA = schemathesis.openapi.from_path(str(DOCUMENT))
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]  # type: ignore[union-attr]
CODES = oci_codes(yaml.safe_load(DOCUMENT.read_text()))
METHODS = ("get", "head", "post", "put", "patch", "delete", "options", "trace")
METHODS_SENT = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


def operation_id(operation: Any) -> str:
    return str(operation.definition.raw["operationId"])


def cases(operation: Any) -> st.SearchStrategy[Any]:
    return st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                     operation.as_strategy(GenerationMode.NEGATIVE))


@pytest.mark.parametrize("operation", OPERATIONS, ids=operation_id)
def test_fuzz(target: Target, operation: Any) -> None:
    started = time.monotonic()
    name = operation_id(operation)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not RANDOM,
              suppress_health_check=list(HealthCheck), print_blob=RANDOM)
    @given(case=cases(operation), data=st.data())
    def run(case: Any, data: st.DataObject) -> None:
        aim(case, data, target)
        raw = mutated_body(case, data)
        response = case.call(base_url=target.url, session=target.session, auth=target.auth,
                             timeout=60, allow_redirects=False,
                             **({"data": raw} if raw is not None else {}))
        target.stats.count(name, response.status_code)
        headers = {k.lower(): v[0] for k, v in response.headers.items()}
        found = problems(response.request, response.status_code, headers, response.content,
                         CODES, target.server.auth_on)
        if response.status_code < 500:
            try:
                case.validate_response(response, checks=CHECKS)
            except FailureGroup as group:
                found += [f"{f.title}: {f.message}"[:400] for f in group.exceptions]
            except AssertionError as exc:
                found.append(str(exc)[:400])
        assert not found, "\n".join([*found, reproduction(response.request,
                                                          response.status_code,
                                                          response.content)])

    try:
        run()
    finally:
        target.stats.seconds += time.monotonic() - started


def test_undescribed_methods_are_refused_in_shape(target: Target) -> None:
    """Every path with every method it does not describe: a 4xx in its front-end's shape."""
    document = yaml.safe_load(DOCUMENT.read_text())
    found = []
    with requests.Session() as session:
        for template, item in document["paths"].items():
            if template.startswith("/#"):
                continue
            path = template.format(name="fuzz/other", digest="sha256:" + "0" * 64,
                                   reference="v1", uuid=str(uuid.uuid4()))
            described = {m.upper() for m in item if m in METHODS}
            for method in sorted(set(METHODS_SENT) - described):
                if method == "HEAD" and "GET" in described:
                    continue
                response = session.request(method, target.url + path, auth=target.auth,
                                           timeout=60, allow_redirects=False)
                target.stats.count("(methods not described)", response.status_code)
                headers = {k.lower(): v for k, v in response.headers.items()}
                wrong = problems(response.request, response.status_code, headers,
                                 response.content, CODES, target.server.auth_on)
                if response.status_code < 400:
                    wrong.append(f"{method} of an undescribed method answered "
                                 f"{response.status_code}")
                if wrong:
                    found.append("\n".join([*wrong, reproduction(
                        response.request, response.status_code, response.content)]))
    assert not found, "\n\n".join(found)


def test_seeded_images_still_pull_byte_identical(target: Target) -> None:
    """After every fuzzed request of this way of calling (pytest orders the items so)."""
    assert not pull_differences(target.server)


# --------------------------------------------------------------------------- aiming


def aim(case: Any, data: st.DataObject, target: Target) -> None:
    """Now and then put an existing repository, tag, digest or upload where the case has one,
    so that the fuzzing reaches stored state: the seeded images, or the scratch repository
    (where upload sessions are opened for it). Seeded names go into requests that change
    things only where policy guards them (auth on)."""
    if isinstance(case.body, dict) and isinstance(case.body.get("upstreamRegistryUrl"), str):
        case.body["upstreamRegistryUrl"] = UPSTREAM
    if not data.draw(st.booleans(), label="aim at stored state"):
        return
    server = target.server
    seed = data.draw(st.sampled_from([*server.seeds, server.scratch]), label="image")
    blob = data.draw(st.sampled_from(sorted(seed.blobs)), label="blob")
    writes = seed is server.scratch or target.seeds_writable or not changes(case)
    path = case.path_parameters if isinstance(case.path_parameters, dict) else {}
    if "uuid" in path:
        path["name"] = server.scratch.repo
        path["uuid"] = server.new_upload(server.scratch.repo)
    elif "name" in path and writes:
        path["name"] = seed.repo
    if "digest" in path:
        path["digest"] = data.draw(st.sampled_from([blob, seed.digest]), label="digest")
    if "reference" in path:
        path["reference"] = data.draw(st.sampled_from([seed.tag, seed.digest]),
                                      label="reference")
    query = case.query if isinstance(case.query, dict) else {}
    for key in ("digest", "mount"):
        if key in query:
            query[key] = blob
    if "from" in query:
        query["from"] = seed.repo
    body = case.body
    if isinstance(body, dict):
        if "uploadId" in body:
            body["repositoryName"] = server.scratch.repo
            body["uploadId"] = server.new_layer_upload(server.scratch.repo)
        elif "repositoryName" in body and writes:
            body["repositoryName"] = seed.repo
        if "imageIds" in body:
            body["imageIds"] = [{"imageDigest": seed.digest}, {"imageTag": seed.tag}]
        if "layerDigests" in body:
            body["layerDigests"] = sorted(seed.blobs)
        if "layerDigest" in body:
            body["layerDigest"] = blob


def mutated_body(case: Any, data: st.DataObject) -> bytes | None:
    """Now and then, bytes instead of the body the case describes: random, the generated
    body cut short, or JSON of another kind. None: send the case's own body."""
    if case.method.upper() in ("GET", "HEAD") or data.draw(st.integers(0, 4),
                                                           label="mutate body") != 0:
        return None
    try:
        serialized = json.dumps(case.body).encode()
    except (TypeError, ValueError):
        serialized = b"{}"
    body: bytes = data.draw(st.one_of(
        st.binary(max_size=512),
        st.integers(0, max(len(serialized) - 1, 0)).map(lambda n: serialized[:n]),
        st.sampled_from([b"null", b"[]", b"1", b'"text"', b"{", b"\xff\xfe{}", b"{}{}",
                         b'{"a":' * 200])), label="body bytes")
    return body


def changes(case: Any) -> bool:
    """Whether the request may change what is stored (a write or a delete)."""
    if case.method.upper() in ("GET", "HEAD"):
        return False
    target = (case.headers or {}).get("X-Amz-Target", "")
    if case.path == "/" or case.path.startswith("/#"):
        operation = str(target).removeprefix(TARGET_PREFIX)
        return not operation.startswith(READ_ONLY_PREFIXES)
    return True
