"""Credentials for fuzzed requests, added to each as it goes out, and counts of what was sent."""

from __future__ import annotations

import base64
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

TOKEN_LIFE = 240.0  # seconds a token is reused (the server's live 300)
_V2_NAME = re.compile(r"^/v2/(?P<name>.+?)/(?:blobs|manifests|tags|referrers)/")


class RegistryAuth(requests.auth.AuthBase):
    """A user's credentials on every front-end: a Bearer token from /token (Basic credentials,
    scope for the repository the path names) on /v2/, Basic on /token, SigV4 on the ECR API.
    Whatever Authorization header the generated request had is replaced."""

    def __init__(self, url: str, user: str, password: str, key_id: str, secret: str,
                 region: str = "us-east-1") -> None:
        self.url = url
        self.user, self.password = user, password
        self.credentials = Credentials(key_id, secret)
        self.region = region
        self._tokens: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        path = urlsplit(request.url or "").path
        if path.startswith("/v2/"):
            request.headers["Authorization"] = f"Bearer {self.token(self.scope(path))}"
        elif path.startswith("/token"):
            request.headers["Authorization"] = self.basic()
        elif path == "/" and request.method == "POST":
            self.sign(request)
        return request

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

    @staticmethod
    def scope(path: str) -> str:
        if path.startswith("/v2/_catalog"):
            return "registry:catalog:*"
        match = _V2_NAME.match(path)
        if match is None:
            return ""
        return f"repository:{unquote(match['name'])}:pull,push,delete"

    def token(self, scope: str) -> str:
        now = time.monotonic()
        with self._lock:
            found = self._tokens.get(scope)
        if found is not None and now - found[0] < TOKEN_LIFE:
            return found[1]
        params = {"service": "registry", **({"scope": scope} if scope else {})}
        answer = httpx.get(self.url + "/token", params=params, timeout=30,
                           headers={"Authorization": self.basic()})
        # A scope the server cannot read is granted nothing; the request then fails its
        # authorisation, which is an answer worth fuzzing too.
        token = str(answer.json().get("token", "")) if answer.status_code == 200 else "none"
        with self._lock:
            if len(self._tokens) > 4096:
                self._tokens.clear()
            self._tokens[scope] = (now, token)
        return token

    def sign(self, request: requests.PreparedRequest) -> None:
        parts = urlsplit(request.url or "")
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        signed = {k: v for k, v in request.headers.items()
                  if k.lower() in ("content-type", "x-amz-target")}
        aws = AWSRequest(method="POST", url=url, data=body, headers=signed)
        SigV4Auth(self.credentials, "ecr", self.region).add_auth(aws)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if name in aws.headers:
                request.headers[name] = aws.headers[name]


@dataclass
class Stats:
    """What one way of calling sent: requests per operation and answers per status."""

    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0

    def count(self, operation: str, status: int) -> None:
        self.requests[operation] += 1
        self.statuses[status] += 1

    def summary(self) -> str:
        total = sum(self.requests.values())
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return (f"{total} requests to {len(self.requests)} operations in "
                f"{self.seconds:.0f} s; statuses {statuses}")
