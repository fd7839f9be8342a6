"""AWS Signature Version 4 verification, for the ECR control plane (`POST /` JSON 1.1).

Pure: the caller passes the request's parts and a way to find an access key's secret. The
errors carry the AWS error type the front-end answers with; they never contain the secret,
the signature or the string to sign.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = dt.timedelta(minutes=5)
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*$"
)
_SPACES = re.compile(r"\s+")


class SigV4Error(Exception):
    """`type` is the AWS error name (`__type`) the client should see."""

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message


@dataclass(frozen=True, slots=True)
class SignedRequest:
    access_key_id: str
    region: str
    service: str
    signed_headers: tuple[str, ...]


SecretLookup = Callable[[str], Awaitable[str | None]]


async def verify(method: str, path: str, query: Iterable[tuple[str, str]],
                 headers: Mapping[str, str], body: bytes, secret_of: SecretLookup, *,
                 service: str, expected_region: str | None = None,
                 now: dt.datetime | None = None) -> SignedRequest:
    """Check the request's SigV4 signature; the signer's access key id and scope.

    Beyond the signature itself: `X-Amz-Target` (which names the operation) must be signed
    when present, the body is always covered (no UNSIGNED-PAYLOAD outside S3), and the scope's
    region must be `expected_region` when one is given."""
    lowered = {k.lower(): v for k, v in headers.items()}
    authorization = lowered.get("authorization")
    if not authorization:
        raise SigV4Error("MissingAuthenticationTokenException",
                         "Missing Authentication Token")
    match = _AUTH.match(authorization.strip())
    if match is None:
        raise SigV4Error("IncompleteSignatureException",
                         "Authorization header requires Credential, SignedHeaders and Signature")
    parts = match["credential"].split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise SigV4Error("IncompleteSignatureException", "malformed Credential scope")
    key_id, date, region, scope_service, _ = parts
    if scope_service != service:
        raise SigV4Error("InvalidSignatureException",
                         f"Credential should be scoped to correct service: '{service}'")
    if expected_region is not None and region != expected_region:
        raise SigV4Error("InvalidSignatureException",
                         f"Credential should be scoped to a valid region: '{expected_region}'")
    signed = tuple(match["signed"].split(";"))
    if list(signed) != sorted(signed) or "host" not in signed or not (
            "x-amz-date" in signed or "date" in signed):
        raise SigV4Error("InvalidSignatureException",
                         "SignedHeaders must be sorted and include host and x-amz-date")
    if "x-amz-target" in lowered and "x-amz-target" not in signed:
        raise SigV4Error("InvalidSignatureException",
                         "SignedHeaders must include x-amz-target")
    missing = [h for h in signed if h not in lowered]
    if missing:
        raise SigV4Error("InvalidSignatureException", f"signed header {missing[0]!r} is missing")
    amz_date = lowered.get("x-amz-date") or ""
    moment = _parse_date(amz_date)
    current = now or dt.datetime.now(dt.UTC)
    if abs(current - moment) > MAX_SKEW:
        raise SigV4Error("InvalidSignatureException",
                         "Signature expired or not yet valid: the request time is more than "
                         "5 minutes from the server's")
    if moment.strftime("%Y%m%d") != date:
        raise SigV4Error("InvalidSignatureException", "Credential date does not match X-Amz-Date")
    secret = await secret_of(key_id)
    if secret is None:
        raise SigV4Error("UnrecognizedClientException",
                         "The security token included in the request is invalid.")
    body_hash = hashlib.sha256(body).hexdigest()
    claimed = lowered.get("x-amz-content-sha256")
    if claimed is not None and claimed != body_hash and not (
            service == "s3" and claimed == "UNSIGNED-PAYLOAD"):
        raise SigV4Error("InvalidSignatureException",
                         "The payload does not match its hash (x-amz-content-sha256)")
    payload_hash = claimed if claimed is not None else body_hash
    canonical = "\n".join([
        method.upper(),
        _canonical_path(path),
        _canonical_query(query),
        "".join(f"{h}:{_SPACES.sub(' ', lowered[h].strip())}\n" for h in signed),
        ";".join(signed),
        payload_hash,
    ])
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _signing_key(secret, date, region, service)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, match["signature"]):
        raise SigV4Error("InvalidSignatureException",
                         "The request signature we calculated does not match the signature "
                         "you provided. Check your AWS Secret Access Key and signing method.")
    return SignedRequest(key_id, region, service, signed)


def _parse_date(value: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise SigV4Error("IncompleteSignatureException",
                         "X-Amz-Date must be in the form YYYYMMDDTHHMMSSZ") from None


def _canonical_path(path: str) -> str:
    # Services other than S3 sign the URI-encoded path (each segment encoded once more).
    return quote(path or "/", safe="/~")


def _canonical_query(query: Iterable[tuple[str, str]]) -> str:
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in query)
    return "&".join(f"{k}={v}" for k, v in pairs)


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key
