"""What both credential tools share: which registry a name points at, where its API is, and
minting a password.

The password is what `aws ecr get-login-password` gives: GetAuthorizationToken through the
registry's ECR API, signed with the node's AWS credentials (the standard chain: environment,
shared files, `AWS_PROFILE`). The API is `https://<registry host>` unless `REGISTRY_ENDPOINT_URL`
(or the tool's `--endpoint-url`) says otherwise (plain http on test setups)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import os
import re
from dataclasses import dataclass
from typing import Any

DEFAULT_REGION = "us-east-1"
ENDPOINT_ENV = "REGISTRY_ENDPOINT_URL"
# host[:port] as the docker reference grammar has it (a name or an IPv4 address), or [IPv6]:port.
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])"
                   r"(?::[0-9]{1,5})?")
# Environment values that must never reach a message, whatever produced it.
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


class CredentialError(Exception):
    """A one-line reason the tool could not produce credentials (never a secret)."""


@dataclass(frozen=True, slots=True)
class Minted:
    username: str
    password: str
    expires_at: float  # epoch seconds

    def __repr__(self) -> str:
        return f"Minted({self.username!r}, <hidden>, {self.expires_at})"


def one_line(message: str, limit: int = 300) -> str:
    """`message` on one line, shortened, with any secret from the environment blanked out."""
    text = " ".join(message.split())
    for name in _SECRET_ENV:
        secret = os.environ.get(name)
        if secret and len(secret) >= 8:  # shorter ones are no secret, and would mangle words
            text = text.replace(secret, "<hidden>")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def image_host(image: str) -> str:
    """The registry host (with port, as written) of an image reference.

    The reference grammar: the first path component names a registry only if it contains a
    "." or a ":" or is "localhost"; otherwise the image is on Docker Hub, not on us."""
    first, slash, _ = image.strip().partition("/")
    if slash and ("." in first or ":" in first or first == "localhost") \
            and _HOST.fullmatch(first):
        return first
    raise CredentialError(f"image {image[:200]!r} names no registry host")


def server_host(server_url: str) -> str:
    """The registry host of a server URL as docker and the containers tools pass it:
    `host:port`, `https://host:port`, `http://host:port/v1/`."""
    value = server_url.strip()
    scheme, sep, rest = value.partition("://")
    if sep:
        if scheme.lower() not in ("http", "https"):
            raise CredentialError(f"server URL {server_url[:200]!r} is not http(s)")
        value = rest
    host = value.split("/", 1)[0].rpartition("@")[2]
    if not _HOST.fullmatch(host):
        raise CredentialError(f"server URL {server_url[:200]!r} names no registry host")
    return host.lower()


def endpoint_for(host: str, override: str | None = None) -> str:
    explicit = override or os.environ.get(ENDPOINT_ENV)
    if explicit:
        return explicit.rstrip("/")
    return f"https://{host}"


def mint(endpoint: str, timeout: float = 10.0) -> Minted:
    """A registry password from GetAuthorizationToken at `endpoint`."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        CredentialRetrievalError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
        ProfileNotFound,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") \
        or DEFAULT_REGION
    try:
        client = boto3.client("ecr", endpoint_url=endpoint, region_name=region,
                              config=Config(connect_timeout=timeout, read_timeout=timeout,
                                            retries={"total_max_attempts": 2}))
        response = client.get_authorization_token()
    except NoCredentialsError:
        raise CredentialError("no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY, a credentials file or AWS_PROFILE)") from None
    except (PartialCredentialsError, ProfileNotFound, CredentialRetrievalError) as exc:
        raise CredentialError(f"unusable AWS credentials: {one_line(str(exc))}") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code") or "error"
        reason = one_line(str(error.get("Message") or ""), 200)
        raise CredentialError(f"the registry at {endpoint} refused GetAuthorizationToken: "
                              f"{code}{': ' + reason if reason else ''}") from None
    except (BotoConnectionError, HTTPClientError) as exc:  # refused, timed out, TLS
        raise CredentialError(f"cannot reach the registry at {endpoint}: "
                              f"{one_line(str(exc))}") from None
    except BotoCoreError as exc:
        raise CredentialError(f"GetAuthorizationToken at {endpoint} failed: "
                              f"{one_line(str(exc))}") from None
    except ValueError as exc:  # a malformed endpoint URL
        raise CredentialError(f"invalid registry endpoint {endpoint!r}: "
                              f"{one_line(str(exc))}") from None
    return _parse(response, endpoint)


def _parse(response: dict[str, Any], endpoint: str) -> Minted:
    try:
        data = response["authorizationData"][0]
        decoded = base64.b64decode(data["authorizationToken"], validate=True).decode()
        username, colon, password = decoded.partition(":")
        expires = data["expiresAt"]
        expires_at = expires.timestamp() if isinstance(expires, dt.datetime) \
            else float(expires)
    except (KeyError, IndexError, TypeError, ValueError, binascii.Error):
        raise CredentialError(f"the registry at {endpoint} answered GetAuthorizationToken "
                              f"with no usable token") from None
    if not colon or not username or not password:
        raise CredentialError(f"the registry at {endpoint} answered GetAuthorizationToken "
                              f"with no usable token")
    return Minted(username, password, expires_at)
