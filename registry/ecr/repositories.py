"""Repository operations: CreateRepository, DescribeRepositories, DeleteRepository."""

from __future__ import annotations

import base64
import binascii
import time
from typing import TYPE_CHECKING, Any

from registry.ecr import errors
from storage.content.names import check_name
from storage.errors import NameInvalid

if TYPE_CHECKING:
    from registry.ecr import Context

MUTABILITY = ("MUTABLE", "IMMUTABLE", "MUTABLE_WITH_EXCLUSION", "IMMUTABLE_WITH_EXCLUSION")
ENCRYPTION = ("AES256", "KMS", "KMS_DSSE")
MAX_RESULTS = 1000


def _name(params: dict[str, Any], key: str = "repositoryName") -> str:
    value = params.get(key)
    if not isinstance(value, str) or not 2 <= len(value) <= 256:
        raise errors.invalid(f"{key} must be a string of 2 to 256 characters")
    try:
        return check_name(value)
    except NameInvalid:
        raise errors.invalid(f"Invalid parameter at '{key}' failed to satisfy constraint: "
                             "'must satisfy regular expression '(?:[a-z0-9]+(?:[._-]"
                             "[a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*''") from None


def _check_registry(context: Context, params: dict[str, Any]) -> None:
    registry_id = params.get("registryId")
    if registry_id is not None and registry_id != context.account:
        raise errors.invalid(f"registryId {str(registry_id)[:20]!r} is not this registry "
                             f"({context.account})")


def _describe(context: Context, name: str, record: dict[str, Any]) -> dict[str, Any]:
    return {
        "repositoryArn": context.repository_arn(name),
        "registryId": context.account,
        "repositoryName": name,
        "repositoryUri": context.repository_uri(name),
        "createdAt": float(record.get("createdAt", 0)),
        "imageTagMutability": record.get("imageTagMutability", "MUTABLE"),
        "imageTagMutabilityExclusionFilters": record.get("imageTagMutabilityExclusionFilters",
                                                         []),
        "imageScanningConfiguration": record.get("imageScanningConfiguration",
                                                 {"scanOnPush": False}),
        "encryptionConfiguration": record.get("encryptionConfiguration",
                                              {"encryptionType": "AES256"}),
    }


async def create_repository(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    _check_registry(context, params)
    name = _name(params)
    mutability = params.get("imageTagMutability", "MUTABLE")
    if mutability not in MUTABILITY:
        raise errors.invalid(f"imageTagMutability must be one of {', '.join(MUTABILITY)}")
    encryption = params.get("encryptionConfiguration", {"encryptionType": "AES256"})
    if not isinstance(encryption, dict) or encryption.get("encryptionType") not in ENCRYPTION:
        raise errors.invalid(f"encryptionType must be one of {', '.join(ENCRYPTION)}")
    scanning = params.get("imageScanningConfiguration", {"scanOnPush": False})
    if not isinstance(scanning, dict) or not isinstance(scanning.get("scanOnPush", False), bool):
        raise errors.invalid("imageScanningConfiguration.scanOnPush must be a boolean")
    tags = params.get("tags", [])
    if not isinstance(tags, list) or not all(
            isinstance(t, dict) and isinstance(t.get("Key"), str) and isinstance(t.get("Value"),
                                                                                 str)
            for t in tags):
        raise errors.EcrError("InvalidTagParameterException",
                              "tags must be a list of {Key, Value} strings")
    if len(tags) > 50:
        raise errors.EcrError("TooManyTagsException", "a repository may have at most 50 tags")
    record = {
        "createdAt": time.time(),
        "imageTagMutability": mutability,
        "imageTagMutabilityExclusionFilters": params.get("imageTagMutabilityExclusionFilters",
                                                         []),
        "imageScanningConfiguration": {"scanOnPush": bool(scanning.get("scanOnPush", False))},
        "encryptionConfiguration": encryption,
        "tags": tags,
    }
    if not await context.store.repositories.create(name, record):
        raise errors.EcrError(
            "RepositoryAlreadyExistsException",
            f"The repository with name '{name}' already exists in the registry with id "
            f"'{context.account}'")
    return {"repository": _describe(context, name, record)}


async def describe_repositories(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    _check_registry(context, params)
    names = params.get("repositoryNames")
    if names is not None:
        if not isinstance(names, list) or not 1 <= len(names) <= 100:
            raise errors.invalid("repositoryNames must list 1 to 100 names")
        if "maxResults" in params or "nextToken" in params:
            raise errors.invalid("repositoryNames cannot be used with maxResults or nextToken")
        found = []
        for raw in names:
            name = _name({"repositoryName": raw})
            record = await context.store.repositories.get(name)
            if record is None:
                raise errors.repository_not_found(name, context.account)
            found.append(_describe(context, name, record))
        return {"repositories": found}
    limit = params.get("maxResults", MAX_RESULTS)
    if not isinstance(limit, int) or not 1 <= limit <= MAX_RESULTS:
        raise errors.invalid("maxResults must be between 1 and 1000")
    last = _decode_token(params.get("nextToken"))
    page, more = await context.store.repositories.list(last, limit)
    result: dict[str, Any] = {"repositories": []}
    for name in page:
        record = await context.store.repositories.get(name)
        if record is not None:
            result["repositories"].append(_describe(context, name, record))
    if more and page:
        result["nextToken"] = base64.urlsafe_b64encode(page[-1].encode()).decode()
    return result


async def delete_repository(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    _check_registry(context, params)
    name = _name(params)
    repositories = context.store.repositories
    record = await repositories.get(name)
    if record is None:
        raise errors.repository_not_found(name, context.account)
    if not params.get("force") and not await repositories.is_empty(name):
        raise errors.EcrError(
            "RepositoryNotEmptyException",
            f"The repository with name '{name}' in registry with id '{context.account}' cannot "
            "be deleted because it still contains images")
    await repositories.delete(name)
    return {"repository": _describe(context, name, record)}


def _decode_token(token: Any) -> str | None:
    if token is None:
        return None
    if not isinstance(token, str) or len(token) > 1024:
        raise errors.invalid("invalid nextToken")
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise errors.invalid("invalid nextToken") from None
