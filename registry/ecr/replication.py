"""Replication operations: PutReplicationConfiguration, DescribeImageReplicationStatus
(DescribeRegistry, in repositories.py, returns the stored configuration).

A destination (`region`, `registryId`) must be one the settings configure
(`[[replication.destinations]]`): that is where this registry learns its URL and credentials.
An empty list of rules turns replication off."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from registry.ecr import errors
from registry.ecr.params import check_registry, repository_name
from registry.replication import replication_store
from storage.content.digest import Digest
from storage.content.names import check_tag
from storage.errors import DigestInvalid, TagInvalid

if TYPE_CHECKING:
    from registry.ecr import Context

MAX_RULES = 10
MAX_DESTINATIONS = 25  # per rule
MAX_FILTERS = 100  # per rule
_REGION = re.compile(r"[0-9a-z-]{2,25}")
_REGISTRY_ID = re.compile(r"[0-9]{12}")
_FILTER = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]*)*/)*[a-z0-9]*(?:[._-][a-z0-9]*)*")


def _list(value: Any, key: str, low: int, high: int) -> list[Any]:
    if not isinstance(value, list) or not low <= len(value) <= high:
        raise errors.invalid(f"{key} must list {low} to {high} items")
    return value


def _destination(context: Context, value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise errors.invalid(f"{where} must be an object with region and registryId")
    region, registry_id = value.get("region"), value.get("registryId")
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        raise errors.invalid(f"{where}.region must be 2 to 25 characters from [0-9a-z-]")
    if not isinstance(registry_id, str) or not _REGISTRY_ID.fullmatch(registry_id):
        raise errors.invalid(f"{where}.registryId must be 12 digits")
    if (region, registry_id) == (context.settings.auth.region, context.account):
        raise errors.invalid(f"{where}: a registry cannot replicate to itself "
                             f"({region}, {registry_id})")
    if replication_store(context.store, context.settings).target(region, registry_id) is None:
        known = ", ".join(f"({d.region}, {d.registry_id})"
                          for d in context.settings.replication.destinations) or "none"
        raise errors.invalid(f"{where}: no replication destination ({region}, {registry_id}) "
                             f"is configured on this registry ([[replication.destinations]] "
                             f"in its settings; configured: {known})")
    return {"region": region, "registryId": registry_id}


def _filter(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or value.get("filterType") != "PREFIX_MATCH":
        raise errors.invalid(f"{where} must be an object with filterType PREFIX_MATCH")
    text = value.get("filter")
    if not isinstance(text, str) or not 2 <= len(text) <= 256 or not _FILTER.fullmatch(text):
        raise errors.invalid(f"{where}.filter must be 2 to 256 characters of a repository name "
                             "prefix")
    return {"filter": text, "filterType": "PREFIX_MATCH"}


def _rule(context: Context, value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise errors.invalid(f"{where} must be an object")
    destinations = _list(value.get("destinations"), f"{where}.destinations", 1,
                         MAX_DESTINATIONS)
    rule: dict[str, Any] = {"destinations": []}
    for i, item in enumerate(destinations):
        destination = _destination(context, item, f"{where}.destinations[{i}]")
        if destination not in rule["destinations"]:
            rule["destinations"].append(destination)
    filters = value.get("repositoryFilters")
    if filters is not None:
        checked = [_filter(f, f"{where}.repositoryFilters[{i}]")
                   for i, f in enumerate(_list(filters, f"{where}.repositoryFilters", 0,
                                               MAX_FILTERS))]
        if checked:
            rule["repositoryFilters"] = checked
    return rule


async def put_replication_configuration(context: Context,
                                        params: dict[str, Any]) -> dict[str, Any]:
    config = params.get("replicationConfiguration")
    if not isinstance(config, dict):
        raise errors.invalid("replicationConfiguration must be an object with rules")
    rules = _list(config.get("rules"), "replicationConfiguration.rules", 0, MAX_RULES)
    checked = {"rules": [_rule(context, rule, f"replicationConfiguration.rules[{i}]")
                         for i, rule in enumerate(rules)]}
    await replication_store(context.store, context.settings).put_configuration(checked)
    return {"replicationConfiguration": checked}


async def describe_image_replication_status(context: Context,
                                            params: dict[str, Any]) -> dict[str, Any]:
    check_registry(context, params)
    name = repository_name(params)
    image_id = params.get("imageId")
    if not isinstance(image_id, dict):
        raise errors.invalid("imageId must be an object with imageDigest or imageTag")
    if await context.store.repositories.get(name) is None:
        raise errors.repository_not_found(name, context.account)
    digest = await _resolve(context, name, image_id)
    replication = replication_store(context.store, context.settings)
    statuses = []
    for target in replication.destinations(await replication.configuration(fresh=True), name):
        found = await replication.status(name, digest, target.name)
        if found is None:
            continue  # pushed before a rule sent it there: never replicated
        entry = {"region": target.region, "registryId": target.registry_id,
                 "status": found.status}
        if found.failure_code is not None:
            entry["failureCode"] = found.failure_code
        statuses.append(entry)
    shown: dict[str, str] = {"imageDigest": str(digest)}
    if isinstance(image_id.get("imageTag"), str):
        shown["imageTag"] = image_id["imageTag"]
    return {"repositoryName": name, "imageId": shown, "replicationStatuses": statuses}


async def _resolve(context: Context, name: str, image_id: dict[str, Any]) -> Digest:
    raw_digest, raw_tag = image_id.get("imageDigest"), image_id.get("imageTag")
    if raw_digest is None and raw_tag is None:
        raise errors.invalid("imageId needs an imageDigest or an imageTag")
    manifests = context.store.manifests
    found: Digest | None = None
    try:
        wanted = Digest.parse(str(raw_digest)) if raw_digest is not None else None
        if raw_tag is not None:
            found = await manifests.tag_digest(name, check_tag(str(raw_tag)))
        elif wanted is not None and await manifests.revision_record(name, wanted) is not None:
            found = wanted
    except DigestInvalid:
        raise errors.invalid("imageId.imageDigest is not a valid digest") from None
    except TagInvalid:
        raise errors.invalid("imageId.imageTag is not a valid tag") from None
    if found is None or (wanted is not None and found != wanted):
        shown = {k: v for k, v in image_id.items() if k in ("imageDigest", "imageTag")}
        raise errors.EcrError(
            "ImageNotFoundException",
            f"The image with imageId {shown} does not exist within the repository with name "
            f"'{name}' in the registry with id '{context.account}'")
    return found
