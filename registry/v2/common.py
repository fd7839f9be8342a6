"""Helpers shared by the /v2/ handlers: parsing path parameters, bounded bodies, headers."""

from __future__ import annotations

from starlette.requests import Request

from auth.actions import PULL
from registry.auth import check_rate, client_address, identity, require
from storage.content.names import check_name
from storage.errors import RegistryError, SizeInvalid, Unsupported
from storage.store import Store

API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}


def store(request: Request) -> Store:
    s: Store = request.app.state.store
    return s


async def repository(request: Request, action: str) -> str:
    """The validated repository name, once the caller is allowed `action` (pull, push,
    delete) on it."""
    name = check_name(request.path_params["name"])
    await require(request, name, action)
    await check_rate(request)
    if action != PULL and request.app.state.settings.server.read_only:
        raise Unsupported("the registry is read-only for maintenance: pushes and deletes are "
                          "refused until it ends")
    return name


def url_path(request: Request, route: str, **params: str) -> str:
    """Relative URL of a named route; Location headers are always built with this."""
    return str(request.app.url_path_for(route, **params))


def content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise SizeInvalid("invalid Content-Length") from None
    if length < 0:
        raise SizeInvalid("invalid Content-Length")
    return length


def has_body(request: Request) -> bool:
    length = content_length(request)
    if length is not None:
        return length > 0
    return "chunked" in request.headers.get("transfer-encoding", "").lower()


async def read_bounded(request: Request, limit: int, error: RegistryError) -> bytes:
    """The whole body, refusing (with `error`) anything over `limit` bytes before reading it."""
    length = content_length(request)
    if length is not None and length > limit:
        raise error
    parts: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise error
        parts.append(chunk)
    return b"".join(parts)


async def audit_delete(request: Request, action: str, target: str) -> None:
    """Every delete goes into the audit trail: who (the caller), what, from where."""
    ident = await identity(request)
    actor = ident.caller.arn if ident is not None and ident.caller.user else "anonymous"
    await store(request).audit.record(actor, action, target, client_address(request))


def require_deletes(request: Request) -> None:
    if not request.app.state.settings.storage.delete_enabled:
        raise Unsupported("deletes are disabled on this registry")
