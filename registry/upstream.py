"""A client of another registry's /v2/ API, as our own clients use one: anonymous, Basic, or
the Docker token flow (a 401 with a Bearer challenge names the realm; a token for the asked
scope is fetched, with Basic credentials when there are any, cached until it expires, and the
request is made again). Used by the pull-through cache."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from storage.content.jsontext import loads

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
_PARAM = re.compile(r'(\w+)="([^"]*)"')
MAX_MANIFEST = 4 * 1024 * 1024


class UpstreamError(Exception):
    """The upstream could not be reached or refused; `status` when it answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials({self.username!r}, <hidden>)"


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    raw: bytes
    media_type: str
    digest: str | None  # Docker-Content-Digest, when the upstream sent it


class Upstream:
    def __init__(self, url: str, credentials: Credentials | None = None,
                 timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.credentials = credentials
        self.client = httpx.AsyncClient(timeout=timeout, follow_redirects=True)
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (token, expires)

    async def close(self) -> None:
        await self.client.aclose()

    # -- requests --------------------------------------------------------------------------------

    async def _send(self, method: str, path: str, scope: str, headers: dict[str, str],
                    stream: bool = False) -> httpx.Response:
        url = f"{self.url}{path}"
        auth = self._authorization(scope)
        try:
            request = self.client.build_request(method, url, headers={**headers, **auth})
            response = await self.client.send(request, stream=stream)
            if response.status_code == 401:
                challenge = response.headers.get("www-authenticate", "")
                await response.aclose()
                answer = await self._answer(challenge, scope)
                if answer is None:
                    raise UpstreamError(f"upstream refused {method} {path}: authentication "
                                        "required", 401)
                request = self.client.build_request(method, url, headers={**headers, **answer})
                response = await self.client.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"upstream unreachable: {type(exc).__name__}") from None
        return response

    def _authorization(self, scope: str) -> dict[str, str]:
        cached = self._tokens.get(scope)
        if cached is not None and cached[1] > time.time() + 10:
            return {"Authorization": f"Bearer {cached[0]}"}
        return {}

    async def _answer(self, challenge: str, scope: str) -> dict[str, str] | None:
        kind = challenge.split(" ", 1)[0].lower()
        if kind == "basic" and self.credentials is not None:
            pair = f"{self.credentials.username}:{self.credentials.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        if kind != "bearer":
            return None
        params = dict(_PARAM.findall(challenge))
        realm = params.get("realm")
        if not realm:
            return None
        query = {"service": params.get("service", ""), "scope": scope}
        auth = (httpx.BasicAuth(self.credentials.username, self.credentials.password)
                if self.credentials is not None else None)
        try:
            answer = await self.client.get(realm, params=query, auth=auth)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"upstream token endpoint unreachable: "
                                f"{type(exc).__name__}") from None
        if answer.status_code != 200:
            return None
        try:  # a hostile upstream's answer is bounded like any JSON we take in
            body = loads(answer.content)
            token = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in", 60))
        except (ValueError, AttributeError, TypeError):
            return None
        if not isinstance(token, str):
            return None
        expires = time.time() + lifetime
        self._tokens[scope] = (token, expires)
        return {"Authorization": f"Bearer {token}"}

    # -- the API ---------------------------------------------------------------------------------

    async def ping(self) -> None:
        response = await self._send("GET", "/v2/", "registry:catalog:*", {})
        if response.status_code != 200:
            raise UpstreamError(f"upstream answered {response.status_code} at /v2/",
                                response.status_code)

    async def manifest(self, repository: str, reference: str) -> FetchedManifest:
        response = await self._send("GET", f"/v2/{repository}/manifests/{reference}",
                                    _scope(repository), {"Accept": MANIFEST_TYPES})
        if response.status_code != 200:
            raise UpstreamError(f"upstream answered {response.status_code} for "
                                f"{repository}:{reference}", response.status_code)
        if len(response.content) > MAX_MANIFEST:
            raise UpstreamError("upstream manifest too large")
        return FetchedManifest(response.content,
                               response.headers.get("content-type", "").split(";")[0].strip(),
                               response.headers.get("docker-content-digest"))

    async def manifest_digest(self, repository: str, reference: str) -> str | None:
        """HEAD: the digest the upstream's tag points at (None if it does not say)."""
        response = await self._send("HEAD", f"/v2/{repository}/manifests/{reference}",
                                    _scope(repository), {"Accept": MANIFEST_TYPES})
        if response.status_code != 200:
            raise UpstreamError(f"upstream answered {response.status_code} for "
                                f"{repository}:{reference}", response.status_code)
        digest: str | None = response.headers.get("docker-content-digest")
        return digest

    async def blob_size(self, repository: str, digest: str) -> int:
        response = await self._send("HEAD", f"/v2/{repository}/blobs/{digest}",
                                    _scope(repository), {})
        if response.status_code != 200:
            raise UpstreamError(f"upstream answered {response.status_code} for blob {digest}",
                                response.status_code)
        return int(response.headers.get("content-length", "0"))

    async def blob(self, repository: str, digest: str) -> tuple[int | None, AsyncIterator[bytes],
                                                                 httpx.Response]:
        """The blob's length (if known) and its bytes as they arrive; close the response."""
        response = await self._send("GET", f"/v2/{repository}/blobs/{digest}",
                                    _scope(repository), {}, stream=True)
        if response.status_code != 200:
            await response.aclose()
            raise UpstreamError(f"upstream answered {response.status_code} for blob {digest}",
                                response.status_code)
        length = response.headers.get("content-length")
        return (int(length) if length else None,
                response.aiter_bytes(1024 * 1024), response)


def _scope(repository: str) -> str:
    return f"repository:{repository}:pull"
