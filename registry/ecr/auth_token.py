"""GetAuthorizationToken: a 12-hour registry password, used as `AWS:<token>`."""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any

from registry.auth import services

if TYPE_CHECKING:
    from registry.ecr import Context

TOKEN_TTL = 12 * 3600


async def get_authorization_token(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    auth = services(context.request)
    if auth is None or context.caller.user is None:
        # Auth off (loopback development): any credentials are accepted by the data plane.
        token, expires = "unauthenticated", int(time.time()) + TOKEN_TTL
    else:
        token, expires = auth.tokens.issue_login(context.caller.user, TOKEN_TTL)
    public = context.settings.server.public_url or str(context.request.base_url)
    return {"authorizationData": [{
        "authorizationToken": base64.b64encode(f"AWS:{token}".encode()).decode(),
        "expiresAt": float(expires),
        "proxyEndpoint": public.rstrip("/"),
    }]}
