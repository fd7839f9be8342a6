"""GetAuthorizationToken: a 12-hour registry password, used as `AWS:<token>`.

The token carries its user's credential generation, so deleting or deactivating the access key
that signed the request, a new password, disabling the user or `registry user revoke-tokens`
ends it (and the refresh tokens docker buys with it) before its 12 hours are up."""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any

from registry.auth import services
from registry.ecr import errors

if TYPE_CHECKING:
    from registry.ecr import Context

TOKEN_TTL = 12 * 3600


async def get_authorization_token(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    auth = services(context.request)
    if auth is None or context.caller.user is None:
        # Auth off (loopback development): any credentials are accepted by the data plane.
        token, expires = "unauthenticated", int(time.time()) + TOKEN_TTL
    else:
        # The generation is read after the signature was checked, so a key deleted in
        # between (milliseconds) is missed; the request names its key only to the SigV4 check.
        user = await auth.directory.get_user(context.caller.user)
        if user is None or user.disabled:
            raise errors.EcrError("UnrecognizedClientException",
                                  "The security token included in the request is invalid.")
        token, expires = auth.tokens.issue_login(user.name, TOKEN_TTL, user.token_generation)
    public = context.settings.server.public_url or str(context.request.base_url)
    return {"authorizationData": [{
        "authorizationToken": base64.b64encode(f"AWS:{token}".encode()).decode(),
        "expiresAt": float(expires),
        "proxyEndpoint": public.rstrip("/"),
    }]}
