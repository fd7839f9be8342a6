"""Repository operations: CreateRepository, DescribeRepositories, DeleteRepository,
PutImageTagMutability, PutImageScanningConfiguration, DescribeRegistry.

Settings changes are read-modify-write of the repository's settings record: the backend has
no compare-and-swap, so of two changes to one repository at the same moment the last wins."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from registry.ecr import errors
from registry.ecr.params import (
    check_registry,
    decode_token,
    encode_token,
    existing_repository,
    max_results,
    mutability,
    repository_name,
    resource_tags,
)
from registry.replication import replication_store

if TYPE_CHECKING:
    from registry.ecr import Context

ENCRYPTION = ("AES256", "KMS", "KMS_DSSE")
MAX_RESULTS = 1000


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
    check_registry(context, params)
    name = repository_name(params)
    mode, filters = mutability(params)
    encryption = params.get("encryptionConfiguration", {"encryptionType": "AES256"})
    if not isinstance(encryption, dict) or encryption.get("encryptionType") not in ENCRYPTION:
        raise errors.invalid(f"encryptionType must be one of {', '.join(ENCRYPTION)}")
    scanning = params.get("imageScanningConfiguration", {"scanOnPush": False})
    if not isinstance(scanning, dict) or not isinstance(scanning.get("scanOnPush", False), bool):
        raise errors.invalid("imageScanningConfiguration.scanOnPush must be a boolean")
    tags = resource_tags(params.get("tags"))
    record = {
        "createdAt": time.time(),
        "imageTagMutability": mode,
        "imageTagMutabilityExclusionFilters": filters,
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
    check_registry(context, params)
    names = params.get("repositoryNames")
    if names is not None:
        if not isinstance(names, list) or not 1 <= len(names) <= 100:
            raise errors.invalid("repositoryNames must list 1 to 100 names")
        if "maxResults" in params or "nextToken" in params:
            raise errors.invalid("repositoryNames cannot be used with maxResults or nextToken")
        found = []
        for raw in names:
            name = repository_name({"repositoryNames": raw}, "repositoryNames")
            record = await context.store.repositories.get(name)
            if record is None:
                raise errors.repository_not_found(name, context.account)
            found.append(_describe(context, name, record))
        return {"repositories": found}
    limit = max_results(params, MAX_RESULTS, MAX_RESULTS)
    last = decode_token(params)
    page, more = await context.store.repositories.list(last, limit)
    result: dict[str, Any] = {"repositories": []}
    for name in page:
        record = await context.store.repositories.get(name)
        if record is not None:
            result["repositories"].append(_describe(context, name, record))
    if more and page:
        result["nextToken"] = encode_token(page[-1])
    return result


async def delete_repository(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    check_registry(context, params)
    name = repository_name(params)
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



async def put_image_tag_mutability(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    name, record = await existing_repository(context, params)
    mode, filters = mutability(params, default=None)
    record["imageTagMutability"] = mode
    record["imageTagMutabilityExclusionFilters"] = filters
    await context.store.repositories.put(name, record)
    result: dict[str, Any] = {"registryId": context.account, "repositoryName": name,
                              "imageTagMutability": mode}
    if filters:
        result["imageTagMutabilityExclusionFilters"] = filters
    return result


async def put_image_scanning_configuration(context: Context,
                                           params: dict[str, Any]) -> dict[str, Any]:
    """The setting is kept and reported; this registry does not scan images."""
    scanning = params.get("imageScanningConfiguration")
    if not isinstance(scanning, dict) or not isinstance(scanning.get("scanOnPush", False), bool):
        raise errors.invalid("imageScanningConfiguration must be an object whose scanOnPush is "
                             "a boolean")
    name, record = await existing_repository(context, params)
    setting = {"scanOnPush": bool(scanning.get("scanOnPush", False))}
    record["imageScanningConfiguration"] = setting
    await context.store.repositories.put(name, record)
    return {"registryId": context.account, "repositoryName": name,
            "imageScanningConfiguration": setting}


async def describe_registry(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    """The registry id and the stored replication configuration (PutReplicationConfiguration)."""
    replication = replication_store(context.store, context.settings)
    return {"registryId": context.account,
            "replicationConfiguration": await replication.configuration(fresh=True)}
