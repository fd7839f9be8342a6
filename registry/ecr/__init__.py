"""Amazon ECR's API (AWS JSON 1.1): `POST /` with `X-Amz-Target`, SigV4-signed when auth is on.

The contract is botocore's ECR service model: operation names, shapes and error names.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from auth.actions import not_authorized, repository_arn
from auth.policy import Caller
from auth.sigv4 import SigV4Error, verify
from registry.auth import client_address, services
from registry.ecr import errors
from registry.settings import Settings
from registry.v2.common import read_bounded
from storage.content.jsontext import JsonInvalid, loads
from storage.content.names import check_name
from storage.errors import RegistryError, SizeInvalid, StorageUnavailable
from storage.store import Store

log = logging.getLogger("registry")
TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."
CONTENT_TYPE = "application/x-amz-json-1.1"
MAX_BODY = 1024 * 1024
# UploadLayerPart carries a part of up to partSize (10 MiB) base64'd in JSON.
BODY_LIMITS = {"UploadLayerPart": 15 * 1024 * 1024}


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

    async def for_push(self, name: str) -> dict[str, Any]:
        """The settings of the repository an image or layer goes to; creates it when a
        creation template allows create-on-push and the caller may create repositories."""
        return await self.store.repositories.for_push(name, lambda: self._may_create(name))

    async def _may_create(self, name: str) -> None:
        auth = services(self.request)
        if auth is None:
            return
        resource = self.repository_arn(name)
        if not await auth.authorizer.allows(self.caller, ["ecr:CreateRepository"], resource,
                                            name, client_address(self.request)):
            raise errors.EcrError(
                "AccessDeniedException",
                not_authorized(self.caller.arn, "ecr:CreateRepository", resource)
                + " (needed to create the repository on push)")


Operation = Callable[[Context, dict[str, Any]], Awaitable[dict[str, Any]]]


# Operation name -> "module:function" under registry.ecr, imported when first called.
OPERATIONS: dict[str, str] = {
    "GetAuthorizationToken": "auth_token:get_authorization_token",
    # repositories
    "CreateRepository": "repositories:create_repository",
    "DescribeRepositories": "repositories:describe_repositories",
    "DeleteRepository": "repositories:delete_repository",
    "PutImageTagMutability": "repositories:put_image_tag_mutability",
    "PutImageScanningConfiguration": "repositories:put_image_scanning_configuration",
    "DescribeRegistry": "repositories:describe_registry",
    "TagResource": "resource_tags:tag_resource",
    "UntagResource": "resource_tags:untag_resource",
    "ListTagsForResource": "resource_tags:list_tags_for_resource",
    # images
    "ListImages": "images:list_images",
    "DescribeImages": "images:describe_images",
    "BatchGetImage": "images:batch_get_image",
    "BatchDeleteImage": "images:batch_delete_image",
    "PutImage": "images:put_image",
    "ListImageReferrers": "images:list_image_referrers",
    # layers
    "BatchCheckLayerAvailability": "layers:batch_check_layer_availability",
    "InitiateLayerUpload": "layers:initiate_layer_upload",
    "UploadLayerPart": "layers:upload_layer_part",
    "CompleteLayerUpload": "layers:complete_layer_upload",
    "GetDownloadUrlForLayer": "layers:get_download_url_for_layer",
    # policies
    "SetRepositoryPolicy": "policies:set_repository_policy",
    "GetRepositoryPolicy": "policies:get_repository_policy",
    "DeleteRepositoryPolicy": "policies:delete_repository_policy",
    "PutRegistryPolicy": "policies:put_registry_policy",
    "GetRegistryPolicy": "policies:get_registry_policy",
    "DeleteRegistryPolicy": "policies:delete_registry_policy",
    # lifecycle
    "PutLifecyclePolicy": "lifecycle:put_lifecycle_policy",
    "GetLifecyclePolicy": "lifecycle:get_lifecycle_policy",
    "DeleteLifecyclePolicy": "lifecycle:delete_lifecycle_policy",
    "StartLifecyclePolicyPreview": "lifecycle:start_lifecycle_policy_preview",
    "GetLifecyclePolicyPreview": "lifecycle:get_lifecycle_policy_preview",
    # pull-through cache
    "CreatePullThroughCacheRule": "pull_through:create_pull_through_cache_rule",
    "DescribePullThroughCacheRules": "pull_through:describe_pull_through_cache_rules",
    "UpdatePullThroughCacheRule": "pull_through:update_pull_through_cache_rule",
    "DeletePullThroughCacheRule": "pull_through:delete_pull_through_cache_rule",
    "ValidatePullThroughCacheRule": "pull_through:validate_pull_through_cache_rule",
    # repository creation templates
    "CreateRepositoryCreationTemplate": "templates:create_repository_creation_template",
    "DescribeRepositoryCreationTemplates": "templates:describe_repository_creation_templates",
    "UpdateRepositoryCreationTemplate": "templates:update_repository_creation_template",
    "DeleteRepositoryCreationTemplate": "templates:delete_repository_creation_template",
    # replication
    "PutReplicationConfiguration": "replication:put_replication_configuration",
    "DescribeImageReplicationStatus": "replication:describe_image_replication_status",
}
# What a read-only registry (maintenance) still answers.
READ_ONLY_PREFIXES = ("Describe", "List", "Get", "BatchGet", "BatchCheck", "Validate")
# Authorised on resource "*" rather than on a repository ARN.
GLOBAL_OPERATIONS = frozenset({
    "GetAuthorizationToken", "DescribeRegistry", "PutRegistryPolicy", "GetRegistryPolicy",
    "DeleteRegistryPolicy", "CreateRepositoryCreationTemplate",
    "DescribeRepositoryCreationTemplates", "UpdateRepositoryCreationTemplate",
    "DeleteRepositoryCreationTemplate", "CreatePullThroughCacheRule",
    "DescribePullThroughCacheRules", "UpdatePullThroughCacheRule", "DeletePullThroughCacheRule",
    "ValidatePullThroughCacheRule", "PutReplicationConfiguration",
})


def operation(name: str) -> Operation | None:
    target = OPERATIONS.get(name)
    if target is None:
        return None
    module_name, _, function = target.partition(":")
    try:
        module = importlib.import_module(f"registry.ecr.{module_name}")
    except ModuleNotFoundError:
        return None
    found: Operation | None = getattr(module, function, None)
    return found


async def handle(request: Request) -> Response:
    try:
        target = request.headers.get("x-amz-target", "")
        if not target.startswith(TARGET_PREFIX):
            raise errors.EcrError("UnknownOperationException", "unknown operation")
        name = target[len(TARGET_PREFIX):]
        run = operation(name)
        if run is None:
            raise errors.EcrError("UnknownOperationException", f"unknown operation {name[:64]}")
        limit = BODY_LIMITS.get(name, MAX_BODY)
        settings_: Settings = request.app.state.settings
        if settings_.server.read_only and not name.startswith(READ_ONLY_PREFIXES):
            raise errors.EcrError("UnsupportedOperationException",
                                  f"the registry is read-only for maintenance: {name} is refused "
                                  "until it ends", 405)
        body = await read_bounded(request, limit,
                                  SizeInvalid(f"request body larger than {limit} bytes"))
        caller = await _authenticate(request, body, name)
        request.state.caller = caller  # for the refused-request log line
        limiter = request.app.state.limits
        limiter.check(name, f"user:{caller.user}" if caller.user and services(request)
                      else f"address:{client_address(request)}")
        try:
            params = loads(body or b"{}")
        except JsonInvalid as exc:
            raise errors.EcrError("SerializationException",
                                  f"request body is not JSON we accept: {exc}") from None
        if not isinstance(params, dict):
            raise errors.EcrError("SerializationException", "request body must be an object")
        settings: Settings = request.app.state.settings
        context = Context(request, request.app.state.store, settings, caller)
        await _authorize(context, name, params)
        result = await run(context, params)
        if not name.startswith(READ_ONLY_PREFIXES) and name not in UNAUDITED:
            await _audit(context, name, params)
        return Response(json.dumps(result).encode(),
                        media_type=CONTENT_TYPE)
    except errors.EcrError as exc:
        return _error(exc.type, exc.message, exc.status, exc.fields)
    except RegistryError as exc:
        type_, status = errors.lookup(exc)
        response = _error(type_, exc.message, status)
        if isinstance(exc, StorageUnavailable):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except ClientDisconnect:
        raise  # nobody is left to answer (the app's handler notes it)
    except Exception:
        # Still the control plane's answer, in AWS's shape (SDKs retry a ServerException).
        log.exception("unhandled error in ECR %s", request.headers.get("x-amz-target", "")[:100])
        type_, status = errors.UNEXPECTED
        return _error(type_, "internal error", status)


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
                     dict(request.headers), body, secret_of, service="ecr",
                     expected_region=settings.auth.region)
    except SigV4Error as exc:
        status = 403 if exc.type != "UnrecognizedClientException" else 400
        raise errors.EcrError(exc.type, exc.message, status) from None
    user = await auth.directory.get_user(owner[0])
    if user is None:
        raise errors.EcrError("UnrecognizedClientException",
                              "The security token included in the request is invalid.")
    return Caller(settings.auth.account_id, user.name, tuple(user.groups))


async def _authorize(context: Context, operation: str, params: dict[str, Any]) -> None:
    """The same IAM evaluation as the data plane, for `ecr:<Operation>` on each repository the
    request names (`repositoryName`, `repositoryNames`, a repository `resourceArn`), else on
    `repository/*`; registry-wide operations on `*`."""
    auth = services(context.request)
    if auth is None:
        return
    names: list[str | None] = []
    targets: list[tuple[str, str | None]]
    if operation in GLOBAL_OPERATIONS:
        targets = [("*", None)]
    else:
        name = params.get("repositoryName")
        arn = params.get("resourceArn")
        if name is None and isinstance(arn, str) and ":repository/" in arn:
            name = arn.split(":repository/", 1)[1]
        listed = params.get("repositoryNames")
        if isinstance(name, str):
            names = [name]
        elif isinstance(listed, list) and listed and all(isinstance(n, str) for n in listed):
            names = list(listed[:100])
        else:
            names = [None]
        for each in names:
            if each is not None:
                check_name(each)
        targets = [(context.repository_arn(n if n is not None else "*"), n) for n in names]
    caller = context.caller
    address = client_address(context.request)
    for resource, repository in targets:
        if not await auth.authorizer.allows(caller, [f"ecr:{operation}"], resource, repository,
                                            address):
            raise errors.EcrError("AccessDeniedException",
                                  not_authorized(caller.arn, f"ecr:{operation}", resource), 400)


# Not changes of configuration or content on their own (a layer part; a token for oneself).
UNAUDITED = frozenset({"UploadLayerPart", "InitiateLayerUpload", "CompleteLayerUpload",
                       "GetAuthorizationToken", "StartLifecyclePolicyPreview"})
# Parameters an audit entry leaves out: bulky, or not the trail's business.
_UNRECORDED = frozenset({"imageManifest", "layerPartBlob", "policyText",
                         "lifecyclePolicyText", "repositoryPolicy", "lifecyclePolicy"})


async def _audit(context: Context, operation: str, params: dict[str, Any]) -> None:
    target = params.get("repositoryName") or params.get("resourceArn") or params.get(
        "prefix") or params.get("ecrRepositoryPrefix") or "*"
    detail = {k: v for k, v in params.items()
              if k not in _UNRECORDED and k not in ("repositoryName", "registryId")}
    await context.store.audit.record(context.caller.arn, f"ecr:{operation}", str(target),
                                     client_address(context.request), detail or None)


def _error(type_: str, message: str, status: int,
           fields: dict[str, Any] | None = None) -> Response:
    body = json.dumps({**(fields or {}), "__type": type_, "message": message}).encode()
    return Response(body, status_code=status, media_type=CONTENT_TYPE,
                    headers={"x-amzn-ErrorType": type_})

