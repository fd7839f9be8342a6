"""Request parameter checks shared by the control-plane operations, with ECR's error names.

Constraints follow botocore's ECR model (lengths, patterns, list sizes), so a request the AWS
SDK would accept is accepted, and anything else is an `InvalidParameterException` that names
the parameter."""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING, Any

from registry.ecr import errors
from storage.content.digest import Digest
from storage.content.names import check_components, check_name
from storage.errors import DigestInvalid, NameInvalid

if TYPE_CHECKING:
    from registry.ecr import Context

MUTABILITY = ("MUTABLE", "IMMUTABLE", "MUTABLE_WITH_EXCLUSION", "IMMUTABLE_WITH_EXCLUSION")
_FILTER = re.compile(r"[0-9a-zA-Z._*-]{1,128}")
MAX_RESOURCE_TAGS = 50


def repository_name(params: dict[str, Any], key: str = "repositoryName") -> str:
    value = params.get(key)
    if not isinstance(value, str) or not 2 <= len(value) <= 256:
        raise errors.invalid(f"{key} must be a string of 2 to 256 characters")
    try:
        check_components(value)
    except NameInvalid as exc:
        raise errors.invalid(f"Invalid parameter at '{key}': {exc.message}") from None
    try:
        return check_name(value)
    except NameInvalid:
        raise errors.invalid(f"Invalid parameter at '{key}' failed to satisfy constraint: "
                             "'must satisfy regular expression '(?:[a-z0-9]+(?:[._-]"
                             "[a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*''") from None


async def existing_repository(context: Context,
                              params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The checked `registryId` and `repositoryName`, and the repository's settings record;
    RepositoryNotFoundException when it does not exist."""
    check_registry(context, params)
    name = repository_name(params)
    record = await context.store.repositories.get(name)
    if record is None:
        raise errors.repository_not_found(name, context.account)
    return name, record


def check_registry(context: Context, params: dict[str, Any]) -> None:
    registry_id = params.get("registryId")
    if registry_id is not None and registry_id != context.account:
        raise errors.invalid(f"registryId {str(registry_id)[:20]!r} is not this registry "
                             f"({context.account})")


def max_results(params: dict[str, Any], default: int, maximum: int) -> int:
    value = params.get("maxResults", default)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise errors.invalid(f"maxResults must be between 1 and {maximum}")
    return value


def encode_token(position: str) -> str:
    """An opaque `nextToken` for a listing position."""
    return base64.urlsafe_b64encode(position.encode()).decode()


def decode_token(params: dict[str, Any]) -> str | None:
    token = params.get("nextToken")
    if token is None:
        return None
    if not isinstance(token, str) or not token or len(token) > 2048:
        raise errors.invalid("invalid nextToken")
    try:
        position = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise errors.invalid("invalid nextToken") from None
    if encode_token(position) != token:  # b64decode skips what is not in its alphabet
        raise errors.invalid("invalid nextToken")
    return position


def digest(value: Any, key: str = "imageDigest") -> Digest:
    if not isinstance(value, str):
        raise errors.invalid(f"{key} must be a string")
    try:
        return Digest.parse(value)
    except DigestInvalid:
        raise errors.invalid(f"{key} {value[:100]!r} is not a valid digest") from None


def mutability(params: dict[str, Any], default: str | None = "MUTABLE") -> tuple[str, list[Any]]:
    """`imageTagMutability` and its `imageTagMutabilityExclusionFilters`, checked together:
    filters go with the *_WITH_EXCLUSION settings only, and those need at least one."""
    mode = params.get("imageTagMutability", default)
    if mode not in MUTABILITY:
        raise errors.invalid(f"imageTagMutability must be one of {', '.join(MUTABILITY)}")
    filters = params.get("imageTagMutabilityExclusionFilters")
    with_exclusion = str(mode).endswith("_WITH_EXCLUSION")
    if filters is None:
        if with_exclusion:
            raise errors.invalid(f"imageTagMutability {mode} needs "
                                 "imageTagMutabilityExclusionFilters")
        return str(mode), []
    if not with_exclusion:
        raise errors.invalid("imageTagMutabilityExclusionFilters can only be used with "
                             "MUTABLE_WITH_EXCLUSION or IMMUTABLE_WITH_EXCLUSION")
    if not isinstance(filters, list) or not 1 <= len(filters) <= 5:
        raise errors.invalid("imageTagMutabilityExclusionFilters must list 1 to 5 filters")
    checked = []
    for item in filters:
        if (not isinstance(item, dict) or item.get("filterType") != "WILDCARD"
                or not isinstance(item.get("filter"), str)
                or not _FILTER.fullmatch(item["filter"])):
            raise errors.invalid("each exclusion filter needs filterType WILDCARD and a filter "
                                 "of 1 to 128 characters from [0-9a-zA-Z._*-]")
        checked.append({"filterType": "WILDCARD", "filter": item["filter"]})
    return str(mode), checked


def resource_tags(value: Any, key: str = "tags") -> list[dict[str, str]]:
    """A list of `{Key, Value}` resource tags (at most 50, keys unique)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(
            isinstance(t, dict) and isinstance(t.get("Key"), str) and isinstance(t.get("Value"),
                                                                                 str)
            and 1 <= len(t["Key"]) <= 128 and len(t["Value"]) <= 256
            and not t["Key"].lower().startswith("aws:")
            for t in value):
        raise errors.EcrError("InvalidTagParameterException",
                              f"{key} must be a list of {{Key, Value}} strings (keys of 1 to 128 "
                              "characters not starting with aws:, values up to 256)")
    if len({t["Key"] for t in value}) != len(value):
        raise errors.EcrError("InvalidTagParameterException", f"{key} has a key more than once")
    if len(value) > MAX_RESOURCE_TAGS:
        raise errors.EcrError("TooManyTagsException",
                              f"a resource may have at most {MAX_RESOURCE_TAGS} tags")
    return [{"Key": t["Key"], "Value": t["Value"]} for t in value]
