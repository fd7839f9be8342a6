"""HTTP client for the runner: records every exchange and answers auth challenges.

On a `401` carrying `WWW-Authenticate: Bearer realm=...,service=...,scope=...` the client asks
the realm for a token (with Basic credentials when it has them) and retries once; on a `Basic`
challenge it retries with Basic credentials. Tokens are cached per repository, so a later
request that needs a wider scope simply gets challenged again and fetches a new one.
Credentials are only ever sent to the registry's own origin (and the token realm).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

import httpx

_SCHEME_START = re.compile(r"(?:^|,)\s*(bearer|basic)\s+", re.IGNORECASE)
_PARAM = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')
_REPO_PATH = re.compile(r"^/v2/(.+?)/(?:blobs|manifests|tags|referrers)(?:/|$)")
SNIPPET = 400


@dataclass(frozen=True)
class Challenge:
    scheme: str
    params: dict[str, str]


@dataclass
class Exchange:
    """One request/response pair, kept small enough to print."""

    method: str
    url: str
    request_headers: dict[str, str]
    request_size: int
    status: int
    response_headers: list[tuple[str, str]]
    body: bytes
    note: str = ""

    def summary(self) -> str:
        url = self.url if len(self.url) <= 160 else self.url[:150] + "..."
        text = f"{self.method} {url} -> {self.status}"
        snippet = body_text(self.body)
        return f"{text} {snippet}" if snippet else text

    def detail(self) -> str:
        lines = [f"> {self.method} {self.url} ({self.request_size} bytes)"]
        lines += [f">   {k}: {v}" for k, v in self.request_headers.items()]
        lines.append(f"< {self.status}")
        lines += [f"<   {k}: {v}" for k, v in self.response_headers]
        snippet = body_text(self.body)
        if snippet:
            lines.append(f"<   body: {snippet}")
        if self.note:
            lines.append(f"    ({self.note})")
        return "\n".join(lines)


def body_text(body: bytes) -> str:
    if not body:
        return ""
    text = body[:SNIPPET].decode("utf-8", errors="replace")
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else " " for ch in text)
        if sum(ch == " " for ch in text) > len(text) // 2:
            return f"<{len(body)} bytes of binary>"
    text = " ".join(text.split())
    return text + ("..." if len(body) > SNIPPET else "")


def parse_challenges(values: list[str]) -> list[Challenge]:
    """Parse `WWW-Authenticate` header values into Bearer/Basic challenges."""
    found: list[Challenge] = []
    for value in values:
        starts = list(_SCHEME_START.finditer(value))
        for i, match in enumerate(starts):
            end = starts[i + 1].start() if i + 1 < len(starts) else len(value)
            chunk = value[match.end():end]
            params = {
                m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                for m in _PARAM.finditer(chunk)
            }
            found.append(Challenge(match.group(1).lower(), params))
        if not starts and value.strip().lower() in ("basic", "bearer"):
            found.append(Challenge(value.strip().lower(), {}))
    return found


@dataclass
class RegistryClient:
    base_url: str
    username: str | None = None
    password: str | None = None
    timeout: float = 60.0
    exchanges: list[Exchange] = field(default_factory=list)
    auth_notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self._origin = httpx.URL(self.base_url)
        self._http = httpx.Client(timeout=self.timeout, follow_redirects=True)
        self._tokens: dict[str, str] = {}
        self._basic = False

    def close(self) -> None:
        self._http.close()

    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return self.base_url + path_or_url

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        url = httpx.URL(self.url(path_or_url))
        headers = dict(headers or {})
        if content is None and method in ("POST", "PUT", "PATCH"):
            content = b""
        resp = self._send(method, url, headers, content)
        if resp.status_code == 401 and self._same_origin(url) and self._answer_challenge(resp, url):
            resp = self._send(method, url, headers, content)
        return resp

    def _send(
        self, method: str, url: httpx.URL, headers: dict[str, str], content: bytes | None
    ) -> httpx.Response:
        sent = dict(headers)
        if self._same_origin(url):
            sent.update(self._auth_header(url))
        resp = self._http.request(method, url, headers=sent, content=content)
        self._record(method, url, headers, content, resp)
        return resp

    def _record(
        self,
        method: str,
        url: httpx.URL,
        headers: dict[str, str],
        content: bytes | None,
        resp: httpx.Response,
        note: str = "",
    ) -> None:
        keep_body = method != "HEAD" and not note  # never keep token responses
        self.exchanges.append(
            Exchange(
                method=method,
                url=str(url),
                request_headers={k: v for k, v in headers.items() if k.lower() != "authorization"},
                request_size=len(content or b""),
                status=resp.status_code,
                response_headers=list(resp.headers.multi_items()),
                body=self._kept_body(resp) if keep_body else b"",
                note=note,
            )
        )

    @staticmethod
    def _kept_body(resp: httpx.Response) -> bytes:
        """Error bodies are kept whole (up to 64 KiB) so they can be validated later."""
        limit = 65536 if resp.status_code >= 400 else SNIPPET + 1
        return resp.content[:limit]

    def _same_origin(self, url: httpx.URL) -> bool:
        o = self._origin
        return (url.scheme, url.host, url.port) == (o.scheme, o.host, o.port)

    @staticmethod
    def _cache_key(url: httpx.URL) -> str:
        match = _REPO_PATH.match(url.path)
        return match.group(1) if match else url.path

    def _auth_header(self, url: httpx.URL) -> dict[str, str]:
        token = self._tokens.get(self._cache_key(url))
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self._basic and self.username is not None:
            pair = f"{self.username}:{self.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        return {}

    def _answer_challenge(self, resp: httpx.Response, url: httpx.URL) -> bool:
        """Prepare credentials for a retry; False when there is nothing new to try."""
        challenges = parse_challenges(resp.headers.get_list("www-authenticate"))
        for challenge in sorted(challenges, key=lambda c: c.scheme != "bearer"):
            if challenge.scheme == "bearer":
                token = self._fetch_token(challenge)
                if token:
                    self._tokens[self._cache_key(url)] = token
                    return True
            elif challenge.scheme == "basic" and self.username is not None and not self._basic:
                self._basic = True
                return True
        return False

    def _fetch_token(self, challenge: Challenge) -> str | None:
        realm = challenge.params.get("realm")
        if not realm:
            self.auth_notes.append("Bearer challenge without a realm")
            return None
        params: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.params.get("service"):
            params.append(("service", challenge.params["service"]))
        params += [("scope", s) for s in challenge.params.get("scope", "").split()]
        auth = (self.username, self.password or "") if self.username is not None else None
        try:
            resp = self._http.get(realm, params=params, auth=auth)
        except httpx.HTTPError as exc:
            self.auth_notes.append(f"token request to {realm} failed: {exc!r}")
            return None
        self._record("GET", resp.request.url, {}, None, resp, note="token request")
        if resp.status_code != 200:
            self.auth_notes.append(f"token endpoint {realm} answered {resp.status_code}")
            return None
        try:
            body = resp.json()
        except ValueError:
            self.auth_notes.append(f"token endpoint {realm} did not answer JSON")
            return None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            self.auth_notes.append(f"token endpoint {realm} answered without a token")
            return None
        return token
