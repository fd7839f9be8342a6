"""The Docker token endpoint (`GET`/`POST /token`) and the public signing keys (JWKS)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from auth.actions import parse_scopes
from auth.authorizer import parse_basic
from auth.errors import Unauthenticated
from auth.policy import Caller
from auth.tokens import TokenError
from registry.auth import AuthServices, client_address, services
from registry.v2.common import read_bounded
from storage.errors import SizeInvalid, Unsupported

MAX_FORM = 64 * 1024


def _services(request: Request) -> AuthServices:
    auth = services(request)
    if auth is None:
        raise Unsupported("authentication is not enabled on this registry")
    return auth


def _check_service(auth: AuthServices, service: str | None) -> None:
    if service and service != auth.settings.service:
        raise Unauthenticated(f"unknown service {service[:64]!r}")


async def get_token(request: Request) -> Response:
    """Docker token flow: Basic credentials (or none: anonymous) and `scope` parameters."""
    _count(request)
    auth = _services(request)
    params = request.query_params
    _check_service(auth, params.get("service"))
    address = client_address(request)
    header = request.headers.get("authorization")
    caller = Caller(auth.settings.account_id)
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            raise Unauthenticated("the token endpoint takes Basic credentials")
        name, password = parse_basic(value)
        caller = await auth.authorizer.login(name, password, address)
    offline = params.get("offline_token", "").lower() == "true"
    return await _answer(request, auth, caller, params.getlist("scope"), address, offline)


async def post_token(request: Request) -> Response:
    """OAuth2 form: `grant_type=password` or `refresh_token`; `access_type=offline` returns a
    refresh token."""
    _count(request)
    auth = _services(request)
    raw = await read_bounded(request, MAX_FORM, SizeInvalid("token request too large"))
    form = {k: v[0] for k, v in parse_qs(raw.decode(errors="replace")).items()}
    _check_service(auth, form.get("service"))
    address = client_address(request)
    grant = form.get("grant_type", "")
    offline = form.get("access_type") == "offline"
    if grant == "password":
        name, password = form.get("username", ""), form.get("password", "")
        if not name:
            raise Unauthenticated("username is required")
        caller = await auth.authorizer.login(name, password, address)
    elif grant == "refresh_token":
        try:
            claims = await auth.tokens.verify(form.get("refresh_token", ""), kind="refresh")
        except TokenError as exc:
            raise Unauthenticated(f"invalid refresh token: {exc}") from None
        user = await auth.directory.get_user(claims.subject)
        if user is None:
            raise Unauthenticated("the refresh token's user no longer exists")
        caller = Caller(auth.settings.account_id, user.name, tuple(user.groups))
        offline = False  # the client keeps the refresh token it has
    else:
        raise Unauthenticated("grant_type must be password or refresh_token")
    return await _answer(request, auth, caller, form.get("scope", "").split(), address, offline)


async def _answer(request: Request, auth: AuthServices, caller: Caller,
                  scope_values: list[str], address: str, offline: bool) -> Response:
    granted = await auth.authorizer.grant(caller, parse_scopes(scope_values), address)
    issued = auth.tokens.issue(caller.user or "", granted)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.tokens.labels("access").inc()
    body: dict[str, Any] = {
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued.issued_at,
    }
    if granted:
        body["scope"] = " ".join(
            f"{a.type}:{a.name}:{','.join(a.actions)}" for a in granted)
    if offline and caller.user:
        body["refresh_token"] = auth.tokens.issue_refresh(caller.user)
        if metrics is not None:
            metrics.tokens.labels("refresh").inc()
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


def _count(request: Request) -> None:
    """Token requests are rate-limited per address (before any password is checked)."""
    limiter = getattr(request.app.state, "limits", None)
    if limiter is not None:
        limiter.check("GetAuthorizationToken", f"address:{client_address(request)}")


async def jwks(request: Request) -> Response:
    auth = _services(request)
    return JSONResponse(auth.keyring.public_jwks(),
                        headers={"Cache-Control": "public, max-age=300"})
