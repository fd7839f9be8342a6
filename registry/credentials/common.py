"""What both credential tools share: where the registry's API is, and minting a password.

The password is what `aws ecr get-login-password` gives: GetAuthorizationToken through the
registry's ECR API, signed with the node's AWS credentials (the standard chain: environment,
shared files, profile). The endpoint is `https://<registry host>` unless `REGISTRY_ENDPOINT_URL`
(or the tool's `--endpoint-url`) says otherwise (plain http on test setups)."""

from __future__ import annotations

import base64
import datetime as dt
import os
from dataclasses import dataclass

DEFAULT_REGION = "us-east-1"


class CredentialError(Exception):
    """A one-line reason the tool could not produce credentials (never a secret)."""


@dataclass(frozen=True, slots=True)
class Minted:
    username: str
    password: str
    expires_at: float  # epoch seconds

    def __repr__(self) -> str:
        return f"Minted({self.username!r}, <hidden>, {self.expires_at})"


def registry_host(image_or_url: str) -> str:
    """The registry host (with port) of an image reference or a server URL."""
    value = image_or_url.strip()
    if "://" in value:
        value = value.split("://", 1)[1]
    first = value.split("/", 1)[0]
    if "/" not in value:  # a bare host[:port] (a server URL)
        return first.lower()
    if "." in first or ":" in first or first == "localhost":
        return first.lower()
    raise CredentialError(f"image {image_or_url[:200]!r} names no registry host")


def endpoint_for(host: str, override: str | None = None) -> str:
    explicit = override or os.environ.get("REGISTRY_ENDPOINT_URL")
    if explicit:
        return explicit.rstrip("/")
    return f"https://{host}"


def mint(endpoint: str, timeout: float = 20.0) -> Minted:
    """A registry password from GetAuthorizationToken."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or \
        DEFAULT_REGION
    try:
        client = boto3.client("ecr", endpoint_url=endpoint, region_name=region,
                              config=Config(connect_timeout=timeout, read_timeout=timeout,
                                            retries={"total_max_attempts": 2}))
        data = client.get_authorization_token()["authorizationData"][0]
    except NoCredentialsError:
        raise CredentialError("no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY, or a profile)") from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise CredentialError(f"the registry refused GetAuthorizationToken: "
                              f"{error.get('Code', 'error')}") from None
    except BotoCoreError as exc:
        raise CredentialError(f"cannot reach the registry at {endpoint}: "
                              f"{type(exc).__name__}") from None
    except ValueError as exc:
        raise CredentialError(f"invalid registry endpoint {endpoint!r}: {exc}") from None
    decoded = base64.b64decode(data["authorizationToken"]).decode()
    username, _, password = decoded.partition(":")
    expires = data["expiresAt"]
    expires_at = expires.timestamp() if isinstance(expires, dt.datetime) else float(expires)
    return Minted(username, password, expires_at)
