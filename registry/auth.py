"""HTTP side of authentication: building the auth services, challenges, and the per-request
checks the /v2/ handlers call (`require`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import Scope

from auth.actions import DELETE, PULL, challenge_scope, not_authorized, repository_arn
from auth.authorizer import Authorizer, DirectoryLike, Identity
from auth.errors import AccessDenied, Unauthenticated
from auth.keys import KeyRing
from auth.secrets import SecretBox
from auth.throttle import LoginThrottle
from auth.tokens import TokenService
from registry.limits import LocalLimits, SharedLimits
from registry.settings import AuthSettings, Settings
from storage.store import Store

log = logging.getLogger("registry")
KEY_REFRESH_INTERVAL = 60.0


@dataclass
class AuthServices:
    settings: AuthSettings
    public_url: str | None
    directory: DirectoryLike
    keyring: KeyRing
    tokens: TokenService
    authorizer: Authorizer


async def build_auth(settings: Settings, store: Store,
                     shared: SharedLimits | None = None) -> AuthServices | None:
    """`shared`: the memory the workers of `server.workers` share, where the login throttle
    keeps its failures so that it holds for all of them together."""
    auth = settings.auth
    if not auth.enabled:
        return None
    assert auth.secret_key is not None  # settings validation requires it
    from auth.identities import Directory

    box = SecretBox(auth.secret_key)
    directory = Directory(store.iam, box)
    keyring = await KeyRing.load(store.iam, box, auth.signing_algorithm)
    tokens = TokenService(keyring, auth.issuer, auth.service, auth.token_ttl,
                          auth.refresh_token_ttl)
    failures = (shared or LocalLimits()).failures
    throttle = LoginThrottle(auth.login_failures, auth.login_window, auth.login_address_failures,
                             failures)
    authorizer = Authorizer(directory, tokens, account=auth.account_id, region=auth.region,
                            throttle=throttle)
    return AuthServices(auth, settings.server.public_url, directory, keyring, tokens, authorizer)


@contextlib.asynccontextmanager
async def key_refresher(services: AuthServices | None) -> AsyncIterator[None]:
    """Replicas learn of key rotations made elsewhere by reloading the ring periodically."""
    if services is None:
        yield
        return

    async def loop() -> None:
        while True:
            await asyncio.sleep(KEY_REFRESH_INTERVAL)
            try:
                await services.keyring.refresh()
            except Exception:
                log.exception("could not refresh token signing keys")

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()


def services(request: Request) -> AuthServices | None:
    value: AuthServices | None = request.app.state.auth
    return value


def client_address(request: Request) -> str:
    """The peer, or the client a trusted proxy (`server.trusted_proxies`) forwarded for: the
    server (uvicorn's proxy headers, configured from that setting) has already decided which,
    so that logs, limits, the throttle and policies all see the same address."""
    client = request.scope.get("client")
    return str(client[0]) if client else ""


def realm(request: Request, auth: AuthServices) -> str:
    if auth.settings.realm:
        return auth.settings.realm
    base = auth.public_url or str(request.base_url)
    return base.rstrip("/") + "/token"


def challenge(request: Request, auth: AuthServices, scope: str | None,
              error: str | None) -> str:
    parts = [f'realm="{realm(request, auth)}"', f'service="{auth.settings.service}"']
    if scope:
        parts.append(f'scope="{scope}"')
    if error:
        parts.append(f'error="{error}"')
    return "Bearer " + ",".join(parts)


async def identity(request: Request) -> Identity | None:
    """The caller of this request (None when auth is off); computed once per request."""
    auth = services(request)
    if auth is None:
        return None
    state = request.scope.setdefault("state", {})  # what request.state reads
    cached: Identity | None = state.get("identity")
    if cached is None:
        cached = await auth.authorizer.identify(_authorization(request.scope),
                                                client_address(request))
        state["identity"] = cached
    return cached


def _authorization(scope: Scope) -> str | None:
    """The Authorization header (the first, as Starlette's `headers.get` answers), read from
    the raw headers: it is looked up on every request with auth on."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


async def require_login(request: Request) -> None:
    """`GET /v2/`: any authenticated caller; anonymous callers are challenged to log in."""
    ident = await identity(request)
    if ident is not None and ident.via == "anonymous":
        raise Unauthenticated("authentication required")


# The IAM action of each data-plane request, named when policy refuses it.
_REQUEST_ACTIONS = {
    ("blob_upload", "POST"): "ecr:InitiateLayerUpload",
    ("blob_upload", "PATCH"): "ecr:UploadLayerPart",
    ("blob_upload", "PUT"): "ecr:CompleteLayerUpload",
    ("blob", "HEAD"): "ecr:BatchCheckLayerAvailability",
    ("blob", "GET"): "ecr:GetDownloadUrlForLayer",
    ("manifest", "GET"): "ecr:BatchGetImage",
    ("manifest", "HEAD"): "ecr:BatchGetImage",
    ("manifest", "PUT"): "ecr:PutImage",
}


async def require(request: Request, name: str, action: str) -> None:
    auth = services(request)
    ident = await identity(request)
    if auth is None or ident is None:
        return
    address = client_address(request)
    if await auth.authorizer.permits(ident, name, action, address):
        return
    refusal = await _refusal(request, auth, ident, name, action, address)
    if ident.via == "basic":
        raise AccessDenied(refusal or f"requested access to the resource is denied ({action} "
                                      f"on {name})")
    scope = challenge_scope(name, (PULL, action) if action != PULL else (PULL,))
    if ident.via == "bearer":
        # The token lacks the access: policy's reason when policy refuses it (a new token
        # would not help), else the client may ask for a token with that scope.
        raise Unauthenticated(refusal or "requested access to the resource is denied",
                              scope=scope, error="insufficient_scope")
    raise Unauthenticated("authentication required", scope=scope)


async def _refusal(request: Request, auth: AuthServices, ident: Identity, name: str,
                   action: str, address: str) -> str | None:
    """ECR's sentence naming the caller, the IAM action policy refuses and the repository's
    ARN; None for an anonymous caller or when policy allows it all."""
    if ident.via == "anonymous":
        return None
    caller = await auth.authorizer.caller_of(ident)
    own = _REQUEST_ACTIONS.get((request.state.route, request.method)) \
        if hasattr(request.state, "route") else None
    if action == DELETE:
        own = "ecr:BatchDeleteImage"
    denied = await auth.authorizer.denied_action(caller, name, action, address, own)
    if denied is None:
        return None
    settings: Settings = request.app.state.settings
    return not_authorized(caller.arn, denied,
                          repository_arn(settings.auth.region, settings.auth.account_id, name))


async def check_rate(request: Request, api_class: str | None = None) -> None:
    """Count the request against its caller's rate for its API class (registry/limits.py):
    the authenticated user, else the client's address."""
    limiter = getattr(request.app.state, "limits", None)
    if limiter is None or not limiter.settings.enabled:
        return
    if api_class is None:
        route = getattr(request.state, "route", None)  # set by the request middleware
        api_class = limiter.class_of(route, request.method)
        if api_class is None:
            return
    ident = await identity(request)
    user = ident.caller.user if ident is not None else None
    limiter.check(api_class, f"user:{user}" if user else f"address:{client_address(request)}")


async def require_create(request: Request, name: str) -> None:
    """A push that creates its repository (a creation template's CREATE_ON_PUSH) needs
    `ecr:CreateRepository` on it, as in ECR."""
    auth = services(request)
    ident = await identity(request)
    if auth is None or ident is None:
        return
    settings: Settings = request.app.state.settings
    caller = await auth.authorizer.caller_of(ident)
    arn = repository_arn(settings.auth.region, settings.auth.account_id, name)
    if not await auth.authorizer.allows(caller, ["ecr:CreateRepository"], arn, name,
                                        client_address(request)):
        raise AccessDenied(not_authorized(caller.arn, "ecr:CreateRepository", arn)
                           + " (needed to create the repository on push)")


async def may_pull(request: Request, name: str) -> bool:
    """Whether the caller may read `name` (mount sources, catalog entries)."""
    auth = services(request)
    ident = await identity(request)
    if auth is None or ident is None:
        return True
    if ident.token_access is not None and await auth.authorizer.permits(
            ident, name, PULL, client_address(request)):
        return True
    caller = await auth.authorizer.caller_of(ident)
    return await auth.authorizer.policy_allows(caller, name, PULL, client_address(request))


async def pullable(request: Request, names: list[str]) -> list[str]:
    """The catalog entries the caller may read: as the token grants them, else by policy."""
    auth = services(request)
    ident = await identity(request)
    if auth is None or ident is None:
        return names
    address = client_address(request)
    granted = {name for name in names if ident.token_access is not None
               and await auth.authorizer.permits(ident, name, PULL, address)}
    caller = await auth.authorizer.caller_of(ident)
    by_policy = set(await auth.authorizer.pullable(
        caller, [n for n in names if n not in granted], address))
    return [name for name in names if name in granted or name in by_policy]


async def require_catalog(request: Request) -> None:
    auth = services(request)
    ident = await identity(request)
    if auth is None or ident is None:
        return
    if not auth.authorizer.token_permits_catalog(ident):
        raise Unauthenticated("authentication required", scope="registry:catalog:*",
                              error="insufficient_scope")
