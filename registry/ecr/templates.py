"""Repository creation templates: CreateRepositoryCreationTemplate,
DescribeRepositoryCreationTemplates, UpdateRepositoryCreationTemplate,
DeleteRepositoryCreationTemplate.

A template is stored as its ECR fields (`storage/templates.py` keeps it, and applies it when a
push reaches a missing repository and the template is applied for `CREATE_ON_PUSH`). Prefixes
are kept without a trailing `/`: ECR reads `team` and `team/` alike. Updates are
read-modify-write of the template's record: of two updates at the same moment the last wins.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from auth.iam_records import parse_policy
from auth.policy import PolicyInvalid
from registry.ecr import errors
from registry.ecr.params import (
    decode_token,
    encode_token,
    max_results,
    mutability,
    resource_tags,
)
from storage import lifecycle
from storage.content.names import check_components
from storage.errors import NameInvalid
from storage.templates import ROOT, normalise

if TYPE_CHECKING:
    from registry.ecr import Context

# botocore's pattern for the shape Prefix, lengths 1 to 256.
_SEGMENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_PREFIX = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*/?|{ROOT}")
_KMS_KEY = re.compile(r"arn:aws[a-z0-9-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[a-z0-9-]+")
_ROLE = re.compile(r"arn:aws[a-z0-9-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}")
APPLIED_FOR = ("REPLICATION", "PULL_THROUGH_CACHE", "CREATE_ON_PUSH")
ENCRYPTION = ("AES256", "KMS", "KMS_DSSE")
DEFAULT_RESULTS = 100
MAX_RESULTS = 1000
MAX_DESCRIPTION = 256
MAX_REPOSITORY_POLICY = 10240
MAX_LIFECYCLE_POLICY = 30720
MAX_ROLE_ARN = 2048
# The fields a request may set, each with its check; `prefix` and the times are ours to set.
_OPTIONAL = ("description", "encryptionConfiguration", "resourceTags", "repositoryPolicy",
             "lifecyclePolicy", "appliedFor", "customRoleArn")


def prefix(value: Any, key: str = "prefix") -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 256 or not _PREFIX.fullmatch(value):
        raise errors.invalid(
            f"Invalid parameter at '{key}' failed to satisfy constraint: 'must satisfy regular "
            "expression '^([a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(\\/[a-z0-9]+((\\.|_|__|-+)"
            "[a-z0-9]+)*)*\\/?|ROOT)$''")
    try:
        check_components(value)  # a prefix of names: the same limit on its components
    except NameInvalid as exc:
        raise errors.invalid(f"Invalid parameter at '{key}': {exc.message}") from None
    return normalise(value)


def _not_found(context: Context, name: str) -> errors.EcrError:
    return errors.EcrError(
        "TemplateNotFoundException",
        f"The repository creation template with prefix '{name}' does not exist in the registry "
        f"with id '{context.account}'")


def _applied_for(value: Any) -> list[str]:
    if not isinstance(value, list) or not value or not all(v in APPLIED_FOR for v in value):
        raise errors.invalid(f"appliedFor must list one or more of {', '.join(APPLIED_FOR)}")
    return list(dict.fromkeys(value))


def _encryption(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or value.get("encryptionType") not in ENCRYPTION:
        raise errors.invalid(f"encryptionConfiguration.encryptionType must be one of "
                             f"{', '.join(ENCRYPTION)}")
    checked = {"encryptionType": str(value["encryptionType"])}
    key = value.get("kmsKey")
    if key is not None and key != "":
        if not isinstance(key, str) or len(key) > 2048 or not _KMS_KEY.fullmatch(key):
            raise errors.invalid("encryptionConfiguration.kmsKey must be a KMS key ARN")
        if checked["encryptionType"] == "AES256":
            raise errors.invalid("encryptionConfiguration.kmsKey needs encryptionType KMS or "
                                 "KMS_DSSE")
        checked["kmsKey"] = key
    return checked


def _repository_policy(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_REPOSITORY_POLICY:
        raise errors.invalid(f"repositoryPolicy must be a string of at most "
                             f"{MAX_REPOSITORY_POLICY} characters")
    if value:
        try:
            parse_policy(value, True)
        except PolicyInvalid as exc:
            raise errors.invalid(f"Invalid parameter at 'repositoryPolicy': {exc}") from None
    return value


def _lifecycle_policy(value: Any) -> str:
    """Checked by the same rules as PutLifecyclePolicy."""
    if not isinstance(value, str) or len(value) > MAX_LIFECYCLE_POLICY:
        raise errors.invalid(f"lifecyclePolicy must be a string of at most "
                             f"{MAX_LIFECYCLE_POLICY} characters")
    if value:
        try:
            lifecycle.parse(value)
        except lifecycle.LifecyclePolicyInvalid as exc:
            raise errors.invalid(f"Invalid parameter at 'lifecyclePolicy': {exc}") from None
    return value


def _description(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise errors.invalid(f"description must be a string of at most {MAX_DESCRIPTION} "
                             "characters")
    return value


def _role(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_ROLE_ARN or (
            value and not _ROLE.fullmatch(value)):
        raise errors.invalid("customRoleArn must be the ARN of an IAM role")
    return value


def _tags(value: Any) -> list[dict[str, str]]:
    try:
        return resource_tags(value, "resourceTags")
    except errors.EcrError as exc:  # these operations name no tag exceptions
        raise errors.invalid(exc.message) from None


_CHECKS = {"description": _description, "encryptionConfiguration": _encryption,
           "resourceTags": _tags, "repositoryPolicy": _repository_policy,
           "lifecyclePolicy": _lifecycle_policy, "appliedFor": _applied_for,
           "customRoleArn": _role}


def _apply(record: dict[str, Any], params: dict[str, Any]) -> None:
    """Check every field the request sets, then set them on `record` (an empty policy, role
    or description removes it)."""
    changes = {key: _CHECKS[key](params[key]) for key in _OPTIONAL if key in params}
    if "imageTagMutability" in params or "imageTagMutabilityExclusionFilters" in params:
        mode = params.get("imageTagMutability", record.get("imageTagMutability", "MUTABLE"))
        filters = params.get("imageTagMutabilityExclusionFilters")
        if filters is None and "imageTagMutability" not in params:
            filters = record.get("imageTagMutabilityExclusionFilters") or None
        changes["imageTagMutability"], changes["imageTagMutabilityExclusionFilters"] = \
            mutability({"imageTagMutability": mode,
                        "imageTagMutabilityExclusionFilters": filters}, default=None)
    for key, value in changes.items():
        if key in ("description", "repositoryPolicy", "lifecyclePolicy", "customRoleArn") \
                and not value:
            record.pop(key, None)
        else:
            record[key] = value


def _shape(record: dict[str, Any]) -> dict[str, Any]:
    template = {k: v for k, v in record.items()
                if k != "imageTagMutabilityExclusionFilters" or v}
    template["createdAt"] = float(record.get("createdAt", 0))
    template["updatedAt"] = float(record.get("updatedAt", template["createdAt"]))
    return template


async def create_repository_creation_template(context: Context,
                                              params: dict[str, Any]) -> dict[str, Any]:
    name = prefix(params.get("prefix"))
    if "appliedFor" not in params:
        raise errors.invalid("appliedFor is required")
    now = time.time()
    record: dict[str, Any] = {
        "prefix": name,
        "encryptionConfiguration": {"encryptionType": "AES256"},
        "resourceTags": [],
        "imageTagMutability": "MUTABLE",
        "imageTagMutabilityExclusionFilters": [],
        "createdAt": now,
        "updatedAt": now,
    }
    _apply(record, params)
    if not await context.store.templates.create(name, record):
        raise errors.EcrError(
            "TemplateAlreadyExistsException",
            f"A repository creation template with prefix '{name}' already exists in the "
            f"registry with id '{context.account}'")
    return {"registryId": context.account,
            "repositoryCreationTemplate": _shape(record)}


async def describe_repository_creation_templates(context: Context,
                                                 params: dict[str, Any]) -> dict[str, Any]:
    limit = max_results(params, DEFAULT_RESULTS, MAX_RESULTS)
    last = decode_token(params)
    templates = context.store.templates
    wanted = params.get("prefixes")
    if wanted is not None:
        if not isinstance(wanted, list):
            raise errors.invalid("prefixes must be a list of prefixes")
        # Key order is the prefixes' own order (`+` sorts before every prefix character).
        names = sorted({prefix(p, "prefixes") for p in wanted})
        after = [n for n in names if last is None or n > last]
        page, more = after[:limit], len(after) > limit
    else:
        page, more = await templates.list(last, limit)
    result: dict[str, Any] = {"registryId": context.account, "repositoryCreationTemplates": []}
    for name in page:
        record = await templates.get(name)
        if record is not None:
            result["repositoryCreationTemplates"].append(_shape(record))
    if more and page:
        result["nextToken"] = encode_token(page[-1])
    return result


async def update_repository_creation_template(context: Context,
                                              params: dict[str, Any]) -> dict[str, Any]:
    name = prefix(params.get("prefix"))
    record = await context.store.templates.get(name)
    if record is None:
        raise _not_found(context, name)
    _apply(record, params)
    record["updatedAt"] = time.time()
    await context.store.templates.put(name, record)
    return {"registryId": context.account,
            "repositoryCreationTemplate": _shape(record)}


async def delete_repository_creation_template(context: Context,
                                              params: dict[str, Any]) -> dict[str, Any]:
    name = prefix(params.get("prefix"))
    record = await context.store.templates.get(name)
    if record is None or not await context.store.templates.delete(name):
        raise _not_found(context, name)
    return {"registryId": context.account,
            "repositoryCreationTemplate": _shape(record)}
