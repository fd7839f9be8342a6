"""Short-lived signed URLs for blob downloads (ECR's GetDownloadUrlForLayer on storage that
cannot presign, such as the filesystem).

A URL carries `expires` (epoch seconds) and `signature`: HMAC-SHA256 over the method, the
canonical path and the expiry, under a key derived from `auth.secret_key` with a fixed label,
so the configured key itself is never used directly and never leaves the process. A signature
grants reading exactly one path until it expires; nothing else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping
from urllib.parse import urlencode

from auth.errors import AccessDenied
from registry.settings import AuthSettings

EXPIRES = "expires"
SIGNATURE = "signature"
DEFAULT_TTL = 20 * 60
_LABEL = b"registry signed download URLs v1"
_MAX_EXPIRES_DIGITS = 12


class UrlSigner:
    __slots__ = ("_key",)

    def __init__(self, secret_key: str) -> None:
        try:
            raw = base64.b64decode(secret_key, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("auth.secret_key must be base64") from None
        self._key = hmac.new(raw, _LABEL, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "UrlSigner(<hidden>)"

    def sign(self, method: str, path: str, expires: int) -> str:
        message = f"{_method(method)}\n{path}\n{expires}".encode()
        mac = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def query(self, method: str, path: str, ttl: int = DEFAULT_TTL,
              now: float | None = None) -> str:
        """The query string (without `?`) that lets `method` on `path` through for `ttl` s."""
        expires = int(time.time() if now is None else now) + ttl
        return urlencode({EXPIRES: str(expires), SIGNATURE: self.sign(method, path, expires)})

    def verify(self, method: str, path: str, params: Mapping[str, str],
               now: float | None = None) -> None:
        """AccessDenied unless `params` hold a valid, unexpired signature for `path`."""
        expires_text = params.get(EXPIRES, "")
        given = params.get(SIGNATURE, "")
        if (not expires_text.isascii() or not expires_text.isdigit()
                or len(expires_text) > _MAX_EXPIRES_DIGITS or not given.isascii()):
            raise AccessDenied("the signed URL is malformed")
        expires = int(expires_text)
        expected = self.sign(method, path, expires)
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise AccessDenied("the signed URL's signature does not match")
        if expires < (time.time() if now is None else now):
            raise AccessDenied("the signed URL has expired")


def is_signed(params: Mapping[str, str]) -> bool:
    """Whether a request presents a signed URL (valid or not)."""
    return EXPIRES in params or SIGNATURE in params


def signer(settings: AuthSettings) -> UrlSigner | None:
    """The signer for this registry, or None when auth is off (no credentials are needed then)."""
    if not settings.enabled or not settings.secret_key:
        return None
    return UrlSigner(settings.secret_key)


def _method(method: str) -> str:
    # HEAD reveals nothing GET does not, so a URL signed for GET serves both.
    upper = method.upper()
    return "GET" if upper == "HEAD" else upper
