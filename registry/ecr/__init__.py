"""Amazon ECR's API (AWS JSON 1.1): `POST /` with `X-Amz-Target`, SigV4-signed when auth is on.

The contract is botocore's ECR service model: operation names, shapes and error names.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from auth.actions import repository_arn
from auth.policy import Caller
from auth.sigv4 import SigV4Error, verify
from registry.auth import client_address, services
from registry.ecr import errors
from registry.settings import Settings
from registry.v2.common import read_bounded
from storage.content.names import check_name
from storage.errors import RegistryError, SizeInvalid
from storage.store import Store

log = logging.getLogger("registry")
TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."
CONTENT_TYPE = "application/x-amz-json-1.1"
MAX_BODY = 1024 * 1024
GLOBAL_OPERATIONS = frozenset({"GetAuthorizationToken"})  # authorised on resource "*"


@dataclass
class Context:
    request: Request
    store: Store
    settings: Settings
    caller: Caller

    @property
    def account(self) -> str:
        return self.settings.auth.account_id

    def repository_uri(self, name: str) -> str:
        public = self.settings.server.public_url or str(self.request.base_url)
        host = public.split("://", 1)[-1].rstrip("/")
        return f"{host}/{name}"

    def repository_arn(self, name: str) -> str:
        return repository_arn(self.settings.auth.region, self.account, name)


Operation = Callable[[Context, dict[str, Any]], Awaitable[dict[str, Any]]]


def operations() -> dict[str, Operation]:
    from registry.ecr import auth_token, repositories

    return {
        "GetAuthorizationToken": auth_token.get_authorization_token,
        "CreateRepository": repositories.create_repository,
        "DescribeRepositories": repositories.describe_repositories,
        "DeleteRepository": repositories.delete_repository,
    }


async def handle(request: Request) -> Response:
    try:
        target = request.headers.get("x-amz-target", "")
        if not target.startswith(TARGET_PREFIX):
            raise errors.EcrError("UnknownOperationException", "unknown operation")
        name = target[len(TARGET_PREFIX):]
        operation = operations().get(name)
        if operation is None:
            raise errors.EcrError("UnknownOperationException", f"unknown operation {name[:64]}")
        body = await read_bounded(request, MAX_BODY, SizeInvalid("request body too large"))
        caller = await _authenticate(request, body, name)
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            raise errors.EcrError("SerializationException", "request body is not JSON") \
                from None
        if not isinstance(params, dict):
            raise errors.EcrError("SerializationException", "request body must be an object")
        settings: Settings = request.app.state.settings
        context = Context(request, request.app.state.store, settings, caller)
        await _authorize(context, name, params)
        result = await operation(context, params)
        return Response(json.dumps(result).encode(),
                        media_type=CONTENT_TYPE)
    except errors.EcrError as exc:
        return _error(exc.type, exc.message, exc.status)
    except RegistryError as exc:
        type_, status = errors.lookup(exc)
        return _error(type_, exc.message, status)


async def _authenticate(request: Request, body: bytes, operation: str) -> Caller:
    settings: Settings = request.app.state.settings
    auth = services(request)
    if auth is None:
        return Caller(settings.auth.account_id, "admin")  # auth off: loopback development

    owner: list[str] = []

    async def secret_of(key_id: str) -> str | None:
        found = await auth.directory.lookup_access_key(key_id)
        if found is None:
            return None
        owner.append(found.user)
        return found.secret

    try:
        await verify(request.method, request.url.path, request.query_params.multi_items(),
                     dict(request.headers), body, secret_of, service="ecr")
    except SigV4Error as exc:
        status = 403 if exc.type != "UnrecognizedClientException" else 400
        raise errors.EcrError(exc.type, exc.message, status) from None
    user = await auth.directory.get_user(owner[0])
    if user is None:
        raise errors.EcrError("UnrecognizedClientException",
                              "The security token included in the request is invalid.")
    return Caller(settings.auth.account_id, user.name, tuple(user.groups))


async def _authorize(context: Context, operation: str, params: dict[str, Any]) -> None:
    """The same IAM evaluation as the data plane, for `ecr:<Operation>` on the repository."""
    auth = services(context.request)
    if auth is None:
        return
    name = params.get("repositoryName")
    if isinstance(name, str):
        check_name(name)
    if operation in GLOBAL_OPERATIONS:
        resource = "*"
    else:
        resource = context.repository_arn(name if isinstance(name, str) else "*")
    caller = context.caller
    if not await auth.authorizer.allows(caller, [f"ecr:{operation}"], resource,
                                        name if isinstance(name, str) else None,
                                        client_address(context.request)):
        raise errors.EcrError(
            "AccessDeniedException",
            f"User: {caller.arn} is not authorized to perform: ecr:{operation} on resource: "
            f"{resource}", 400)


def _error(type_: str, message: str, status: int) -> Response:
    body = json.dumps({"__type": type_, "message": message}).encode()
    return Response(body, status_code=status, media_type=CONTENT_TYPE,
                    headers={"x-amzn-ErrorType": type_})

