"""What every answer must be, whatever was asked: never a server error, and an error body in
the shape of the front-end that gave it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import requests

REPRODUCTION_BODY = 600  # bytes of a request body shown in a report


def oci_codes(document: Mapping[str, Any]) -> frozenset[str]:
    """The error codes docs/openapi.yaml lists."""
    schema = document["components"]["schemas"]["OciErrors"]
    return frozenset(schema["properties"]["errors"]["items"]["properties"]["code"]["enum"])


def problems(request: requests.PreparedRequest, status: int, headers: Mapping[str, str],
             body: bytes, codes: frozenset[str], auth_on: bool) -> list[str]:
    """What is wrong with this answer to `request`; `headers` with lower-case names."""
    found = []
    if status >= 500:
        found.append(f"server error {status}")
    if status < 400:
        return found
    method = str(request.method or "")
    path = str(request.path_url).split("?", 1)[0]
    if method == "HEAD":
        if body:
            found.append("an error answer to HEAD has a body")
    elif path == "/" and method == "POST":
        found += aws_error_problems(headers, body)
    else:
        found += oci_error_problems(headers, body, codes)
    if (auth_on and status == 401 and path.startswith("/v2/")
            and not headers.get("www-authenticate", "").startswith("Bearer realm=")):
        found.append("401 without a Bearer challenge")
    return found


def oci_error_problems(headers: Mapping[str, str], body: bytes,
                       codes: frozenset[str]) -> list[str]:
    if not headers.get("content-type", "").startswith("application/json"):
        return [f"OCI error with Content-Type {headers.get('content-type')!r}"]
    try:
        parsed = json.loads(body)
    except ValueError:
        return [f"OCI error body is not JSON: {body[:200]!r}"]
    errors = parsed.get("errors") if isinstance(parsed, dict) else None
    if not isinstance(errors, list) or not errors:
        return [f"OCI error body without an errors list: {body[:200]!r}"]
    found = []
    for error in errors:
        if not isinstance(error, dict):
            found.append(f"an OCI error is not an object: {error!r}")
            continue
        if error.get("code") not in codes:
            found.append(f"OCI error code {error.get('code')!r} is not a documented one")
        if not isinstance(error.get("message"), str):
            found.append(f"OCI error without a message: {error!r}")
    return found


def aws_error_problems(headers: Mapping[str, str], body: bytes) -> list[str]:
    if headers.get("content-type", "") != "application/x-amz-json-1.1":
        return [f"ECR error with Content-Type {headers.get('content-type')!r}: {body[:200]!r}"]
    try:
        parsed = json.loads(body)
    except ValueError:
        return [f"ECR error body is not JSON: {body[:200]!r}"]
    if not isinstance(parsed, dict):
        return [f"ECR error body is not an object: {body[:200]!r}"]
    found = []
    type_, message = parsed.get("__type"), parsed.get("message")
    if not isinstance(type_, str) or not type_:
        found.append(f"ECR error without __type: {body[:200]!r}")
    elif headers.get("x-amzn-errortype") != type_:
        found.append(f"X-Amzn-ErrorType {headers.get('x-amzn-errortype')!r} is not the "
                     f"__type {type_!r}")
    if not isinstance(message, str):
        found.append(f"ECR error without a message: {body[:200]!r}")
    return found


def reproduction(request: requests.PreparedRequest, status: int, body: bytes) -> str:
    """The request as sent (credentials elided) and the start of the answer."""
    lines = [f"{request.method!s} {request.path_url!s}"]
    for name, value in request.headers.items():
        shown = value.decode("latin-1") if isinstance(value, bytes) else value
        if name.lower() == "authorization":
            shown = shown.split(" ", 1)[0] + " ..."
        lines.append(f"{name}: {shown}")
    raw = request.body or b""
    sent = raw.encode() if isinstance(raw, str) else raw if isinstance(raw, bytes) else b""
    if sent:
        more = f" ... ({len(sent)} bytes)" if len(sent) > REPRODUCTION_BODY else ""
        lines.append(f"body: {sent[:REPRODUCTION_BODY]!r}{more}")
    lines.append(f"-> {status} {body[:300]!r}")
    return "\n".join(lines)

