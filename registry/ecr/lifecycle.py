"""Lifecycle policy operations: Put/Get/DeleteLifecyclePolicy, Start/GetLifecyclePolicyPreview.

A preview is computed when it is started (the result is stored, so any replica can answer
GetLifecyclePolicyPreview) and is COMPLETE at once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from registry.ecr import errors
from registry.ecr.params import (
    decode_token,
    encode_token,
    existing_repository,
)
from storage.lifecycle import MAX_POLICY_TEXT

if TYPE_CHECKING:
    from registry.ecr import Context

MAX_PREVIEW_RESULTS = 100



def _text(params: dict[str, Any], required: bool = True) -> str | None:
    text = params.get("lifecyclePolicyText")
    if text is None and not required:
        return None
    if not isinstance(text, str) or not 100 <= len(text) <= MAX_POLICY_TEXT:
        raise errors.invalid(f"lifecyclePolicyText must be 100 to {MAX_POLICY_TEXT} characters")
    return text


def _not_found(context: Context, name: str) -> errors.EcrError:
    return errors.EcrError(
        "LifecyclePolicyNotFoundException",
        f"Lifecycle policy does not exist for the repository with name '{name}' in the "
        f"registry with id '{context.account}'")


async def put_lifecycle_policy(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    name, _ = await existing_repository(context, params)
    text = _text(params)
    assert text is not None
    await context.store.lifecycle.put_policy(name, text)
    return {"registryId": context.account, "repositoryName": name, "lifecyclePolicyText": text}


async def get_lifecycle_policy(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    name, _ = await existing_repository(context, params)
    text = await context.store.lifecycle.policy(name)
    if text is None:
        raise _not_found(context, name)
    result: dict[str, Any] = {"registryId": context.account, "repositoryName": name,
                              "lifecyclePolicyText": text}
    state = await context.store.lifecycle.state(name)
    if state and state.get("lastEvaluatedAt"):
        result["lastEvaluatedAt"] = float(state["lastEvaluatedAt"])
    return result


async def delete_lifecycle_policy(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    result = await get_lifecycle_policy(context, params)
    await context.store.lifecycle.delete_policy(result["repositoryName"])
    return result


async def start_lifecycle_policy_preview(context: Context,
                                         params: dict[str, Any]) -> dict[str, Any]:
    name, _ = await existing_repository(context, params)
    lifecycle = context.store.lifecycle
    text = _text(params, required=False) or await lifecycle.policy(name)
    if text is None:
        raise _not_found(context, name)
    result = await lifecycle.evaluate(name, text)
    record = await lifecycle.save_preview(name, text, result)
    return {"registryId": context.account, "repositoryName": name,
            "lifecyclePolicyText": text, "status": record["status"]}


async def get_lifecycle_policy_preview(context: Context,
                                       params: dict[str, Any]) -> dict[str, Any]:
    name, _ = await existing_repository(context, params)
    record = await context.store.lifecycle.preview(name)
    if record is None:
        raise errors.EcrError(
            "LifecyclePolicyPreviewNotFoundException",
            f"There is no lifecycle policy preview for the repository with name '{name}' in "
            f"the registry with id '{context.account}'")
    results = [r for r in record.get("results", []) if not r.get("inUse")]
    wanted = params.get("imageIds")
    if wanted is not None:
        if not isinstance(wanted, list) or not 1 <= len(wanted) <= 100:
            raise errors.invalid("imageIds must list 1 to 100 image identifiers")
        digests = {i.get("imageDigest") for i in wanted if isinstance(i, dict)}
        tags = {i.get("imageTag") for i in wanted if isinstance(i, dict)}
        results = [r for r in results
                   if r["imageDigest"] in digests or tags & set(r.get("imageTags", []))]
    status = (params.get("filter") or {}).get("tagStatus", "ANY")
    if status == "TAGGED":
        results = [r for r in results if r.get("imageTags")]
    elif status == "UNTAGGED":
        results = [r for r in results if not r.get("imageTags")]
    limit = params.get("maxResults", MAX_PREVIEW_RESULTS)
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PREVIEW_RESULTS:
        raise errors.invalid(f"maxResults must be between 1 and {MAX_PREVIEW_RESULTS}")
    start = int(decode_token(params) or 0)
    page = results[start:start + limit]
    response: dict[str, Any] = {
        "registryId": context.account, "repositoryName": name,
        "lifecyclePolicyText": record.get("lifecyclePolicyText", ""),
        "status": record.get("status", "COMPLETE"),
        "previewResults": [_preview_result(r) for r in page],
        "summary": {"expiringImageTotalCount": len(results)},
    }
    if start + limit < len(results):
        response["nextToken"] = encode_token(str(start + limit))
    return response


def _preview_result(result: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"imageDigest": result["imageDigest"],
                            "imagePushedAt": float(result["imagePushedAt"]),
                            "action": {"type": "EXPIRE"},
                            "appliedRulePriority": int(result["appliedRulePriority"])}
    if result.get("imageTags"):
        item["imageTags"] = result["imageTags"]
    return item
