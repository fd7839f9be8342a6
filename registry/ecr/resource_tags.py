"""Resource tags on repositories: TagResource, UntagResource, ListTagsForResource.

Tags live in the repository's settings record under `tags`, as `[{Key, Value}]` in the order
they were first added. Changes are read-modify-write of that record: the backend has no
compare-and-swap, so of two changes to one repository's tags (or settings) at the same moment
the last writer wins and the other's change is lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from registry.ecr import errors
from registry.ecr.params import MAX_RESOURCE_TAGS, repository_name, resource_tags

if TYPE_CHECKING:
    from registry.ecr import Context

MAX_KEY = 128


async def _repository(context: Context, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The repository named by `resourceArn` (in this registry) and its settings record."""
    arn = params.get("resourceArn")
    prefix = context.repository_arn("")
    if not isinstance(arn, str) or not arn.startswith(prefix):
        shown = str(arn)[:300] if isinstance(arn, str) else type(arn).__name__
        raise errors.invalid(f"Invalid parameter at 'resourceArn': {shown!r} is not the ARN of "
                             f"a repository in this registry ({prefix}<name>)")
    name = repository_name({"resourceArn": arn[len(prefix):]}, "resourceArn")
    record = await context.store.repositories.get(name)
    if record is None:
        raise errors.repository_not_found(name, context.account)
    return name, record


async def tag_resource(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    if "tags" not in params:
        raise errors.invalid("tags is required")
    new = resource_tags(params["tags"])
    name, record = await _repository(context, params)
    merged = {t["Key"]: t["Value"] for t in record.get("tags", [])}
    merged.update((t["Key"], t["Value"]) for t in new)  # an existing key takes the new value
    if len(merged) > MAX_RESOURCE_TAGS:
        raise errors.EcrError("TooManyTagsException",
                              f"a repository may have at most {MAX_RESOURCE_TAGS} tags; this "
                              f"request would leave it {len(merged)}")
    record["tags"] = [{"Key": k, "Value": v} for k, v in merged.items()]
    await context.store.repositories.put(name, record)
    return {}


async def untag_resource(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    keys = params.get("tagKeys")
    if not isinstance(keys, list) or not all(
            isinstance(k, str) and 1 <= len(k) <= MAX_KEY for k in keys):
        raise errors.EcrError("InvalidTagParameterException",
                              f"tagKeys must be a list of keys of 1 to {MAX_KEY} characters")
    name, record = await _repository(context, params)
    removed = set(keys)
    kept = [t for t in record.get("tags", []) if t.get("Key") not in removed]
    if len(kept) != len(record.get("tags", [])):  # keys it does not have change nothing
        record["tags"] = kept
        await context.store.repositories.put(name, record)
    return {}


async def list_tags_for_resource(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    _, record = await _repository(context, params)
    return {"tags": list(record.get("tags", []))}
