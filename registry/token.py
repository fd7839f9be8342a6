"""The Docker token endpoint (`GET`/`POST /token`) and the public signing keys (JWKS).

Scopes are parsed (and their repository names checked) before anything is read from storage or
any credential checked. No token issued here outlives the credential it was bought with: a
refresh token from an ECR authorization token ends when that token does, and every refresh
token carries its user's credential generation (auth/authorizer.py checks it)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from auth.actions import Scope, parse_scopes
from auth.authorizer import Login, parse_basic
from auth.errors import Unauthenticated
from auth.policy import Caller
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
    scopes = parse_scopes(params.getlist("scope"))
    address = client_address(request)
    header = request.headers.get("authorization")
    login = Login(Caller(auth.settings.account_id))
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            raise Unauthenticated("the token endpoint takes Basic credentials")
        name, password = parse_basic(value)
        login = await auth.authorizer.login(name, password, address)
    offline = params.get("offline_token", "").lower() == "true"
    return await _answer(request, auth, login, scopes, address, offline)


async def post_token(request: Request) -> Response:
    """OAuth2 form: `grant_type=password` or `refresh_token`; `access_type=offline` returns a
    refresh token."""
    _count(request)
    auth = _services(request)
    raw = await read_bounded(request, MAX_FORM, SizeInvalid("token request too large"))
    form = {k: v[0] for k, v in parse_qs(raw.decode(errors="replace")).items()}
    _check_service(auth, form.get("service"))
    scopes = parse_scopes(form.get("scope", "").split())
    address = client_address(request)
    grant = form.get("grant_type", "")
    offline = form.get("access_type") == "offline"
    if grant == "password":
        name, password = form.get("username", ""), form.get("password", "")
        if not name:
            raise Unauthenticated("username is required")
        login = await auth.authorizer.login(name, password, address)
    elif grant == "refresh_token":
        login = await auth.authorizer.refresh(form.get("refresh_token", ""))
        offline = False  # the client keeps the refresh token it has
    else:
        raise Unauthenticated("grant_type must be password or refresh_token")
    return await _answer(request, auth, login, scopes, address, offline)


async def _answer(request: Request, auth: AuthServices, login: Login, scopes: list[Scope],
                  address: str, offline: bool) -> Response:
    caller = login.caller
    granted = await auth.authorizer.grant(caller, scopes, address)
    issued = auth.tokens.issue(caller.user or "", granted, not_after=login.expires_at)
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
        body["refresh_token"] = auth.tokens.issue_refresh(caller.user, login.generation,
                                                          not_after=login.expires_at)
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
