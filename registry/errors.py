"""The one table from domain exceptions to OCI error codes and HTTP statuses."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from auth.errors import AccessDenied, AuthError, TooManyAttempts, Unauthenticated
from storage import errors as e

log = logging.getLogger("registry")

# Most specific first: the handler walks the exception's class hierarchy.
OCI_ERRORS: dict[type[Exception], tuple[str, int]] = {
    e.NameInvalid: ("NAME_INVALID", 400),
    e.NameUnknown: ("NAME_UNKNOWN", 404),
    e.TagInvalid: ("TAG_INVALID", 400),
    e.DigestInvalid: ("DIGEST_INVALID", 400),
    e.SizeInvalid: ("SIZE_INVALID", 400),
    e.BlobUnknown: ("BLOB_UNKNOWN", 404),
    e.BlobUploadUnknown: ("BLOB_UPLOAD_UNKNOWN", 404),
    e.UploadOffsetMismatch: ("BLOB_UPLOAD_INVALID", 416),
    e.UploadBusy: ("BLOB_UPLOAD_INVALID", 409),
    e.BlobUploadInvalid: ("BLOB_UPLOAD_INVALID", 400),
    e.RangeNotSatisfiable: ("RANGE_INVALID", 416),
    e.ManifestTooLarge: ("SIZE_INVALID", 413),
    e.ManifestInvalid: ("MANIFEST_INVALID", 400),
    e.ManifestUnknown: ("MANIFEST_UNKNOWN", 404),
    e.ManifestBlobUnknown: ("MANIFEST_BLOB_UNKNOWN", 400),
    e.PaginationInvalid: ("PAGINATION_NUMBER_INVALID", 400),
    e.Unsupported: ("UNSUPPORTED", 405),
    e.RateLimited: ("TOOMANYREQUESTS", 429),
    e.StorageUnavailable: ("UNAVAILABLE", 503),
}

# Starlette's own errors (routing, methods) in the same shape.
HTTP_ERRORS: dict[int, str] = {
    404: "NAME_UNKNOWN",
    405: "UNSUPPORTED",
    413: "SIZE_INVALID",
}


def error_body(code: str, message: str, detail: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    error["detail"] = detail if detail is not None else {}
    return json.dumps({"errors": [error]}).encode()


def error_response(request: Request, code: str, status: int, message: str,
                   detail: Any = None, headers: dict[str, str] | None = None) -> Response:
    body = b"" if request.method == "HEAD" else error_body(code, message, detail)
    response = Response(body, status_code=status, media_type="application/json",
                        headers=headers)
    if request.method == "HEAD":
        response.headers["content-length"] = "0"
    return response


def lookup(exc: Exception) -> tuple[str, int]:
    for cls in type(exc).__mro__:
        if cls in OCI_ERRORS:
            return OCI_ERRORS[cls]
    return ("UNKNOWN", 500)


async def registry_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, e.RegistryError)
    code, status = lookup(exc)
    if status >= 500:
        log.warning("%s %s: %s %s", request.method, request.url.path, code, exc.message)
    headers: dict[str, str] = {}
    if isinstance(exc, e.RangeNotSatisfiable):
        headers["Content-Range"] = f"bytes */{exc.size}"
    if isinstance(exc, e.UploadOffsetMismatch):
        headers["Range"] = f"0-{max(exc.size - 1, 0)}"
    if isinstance(exc, e.RateLimited | e.StorageUnavailable):
        headers["Retry-After"] = str(exc.retry_after)
    message = exc.message
    if isinstance(exc, e.RepositoryNotCreated):
        message = exc.message_for(endpoint(request))
    return error_response(request, code, status, message, exc.detail, headers)


def endpoint(request: Request) -> str:
    """This registry's URL as its clients know it: `server.public_url`, else the request's."""
    settings = getattr(request.app.state, "settings", None)
    public = settings.server.public_url if settings is not None else None
    return (public or str(request.base_url)).rstrip("/")


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTP_ERRORS.get(exc.status_code, "UNSUPPORTED" if exc.status_code < 500 else "UNKNOWN")
    message = exc.detail if isinstance(exc.detail, str) else "request not supported"
    return error_response(request, code, exc.status_code, message, None, dict(exc.headers or {}))


async def auth_error_handler(request: Request, exc: Exception) -> Response:
    """401 with the Bearer challenge, 403 DENIED, or 429 with Retry-After."""
    from registry.auth import challenge, services

    assert isinstance(exc, AuthError)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.denials.labels(type(exc).__name__).inc()
    if isinstance(exc, TooManyAttempts):
        return error_response(request, "TOOMANYREQUESTS", 429, exc.message, None,
                              {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, AccessDenied):
        return error_response(request, "DENIED", 403, exc.message)
    assert isinstance(exc, Unauthenticated)
    auth = services(request)
    headers = {}
    if auth is not None and not request.url.path.startswith("/token"):
        headers["WWW-Authenticate"] = challenge(request, auth, exc.scope, exc.error)
    code = "DENIED" if exc.error == "insufficient_scope" else "UNAUTHORIZED"
    detail = [{"Type": t, "Name": n, "Action": a} for t, n, a in _scope_parts(exc.scope)]
    return error_response(request, code, 401, exc.message, detail or None, headers)


def _scope_parts(scope: str | None) -> list[tuple[str, str, str]]:
    if not scope:
        return []
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return [(kind, name, a) for a in actions.split(",") if a]


async def client_gone_handler(request: Request, exc: Exception) -> Response:
    # The client closed the connection mid-body; nothing will read this answer. What was
    # received stays in the upload session, which the client may resume.
    log.info("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=400)


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    # Starlette re-raises after this answer and uvicorn then drops the connection (the
    # request's body may be half read): say so, or the client's next request on it is reset.
    return error_response(request, "UNKNOWN", 500, "internal error", None,
                          {"Connection": "close"})
